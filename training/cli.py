"""`geopt-train`: geometric pretraining on shards, backbone export, depth transfer, evaluation, prediction."""
import os
from pathlib import Path

import click

from training.data import DataConfig
from training.evaluate_cli import evaluate_disps_command, export_gt_command
from training.transfer_cli import evaluate_command, predict_command, transfer_command
from training.losses import FlowLossConfig


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 640x192, got {text!r}")
    if width % 32 or height % 32 or width < 64 or height < 64:
        raise click.BadParameter(f"{width}x{height}: both sides must be multiples of 32 and at least 64")
    return width, height


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Train GeoPt: pretrain a structure encoder on mined video, export it, evaluate depth."""


@main.command()
@click.option("--shards", required=True,
              help="Training shards: 'shards/<0000..0999>.tar', '{0000..0999}', globs, folders, or several "
                   "separated by commas or spaces. Members of a range that do not exist are skipped. URLs "
                   "stream as in webdataset: 'http://host/{0000..0099}.tar' (curl), 'pipe:COMMAND', "
                   "'file:///...', and through fsspec any other scheme with its backend installed "
                   "(s3:// with s3fs, ...).")
@click.option("--val-shards", default=None, help="Validation shards, same forms (e.g. shards/val).")
@click.option("--run-dir", type=click.Path(path_type=Path), default=Path("runs/pretrain"), show_default=True,
              help="Folder for config.json, last.pt, log.jsonl and TensorBoard events.")
@click.option("--arch", type=click.Choice(["resnet18", "resnet50"]), default="resnet18", show_default=True,
              help="Structure encoder (a stock torchvision ResNet).")
@click.option("--motion-dim", type=click.IntRange(1), default=128, show_default=True,
              help="Width of the motion code: narrow, so scene geometry must come from the structure encoder.")
@click.option("--size", default="640x192", show_default=True, help="Training size WIDTHxHEIGHT (multiples of 32).")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True, help="Pairs per step per process.")
@click.option("--steps", type=click.IntRange(1), default=20000, show_default=True,
              help="Optimiser steps; the run stops there and the cosine schedule spans them.")
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="Also stop after this many epochs (whichever of --steps and --epochs comes first).")
@click.option("--exact-epochs", is_flag=True,
              help="An epoch reads every training sample exactly once over all processes: each epoch the "
                   "shard list is shuffled alike on every rank and split between ranks and loader workers "
                   "(give at least processes x workers shards per source). Default: shards are drawn at "
                   "random without end and an epoch is --epoch-batches batches. A run resumed with "
                   "--resume restarts the interrupted epoch.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=2e-4, show_default=True,
              help="Peak AdamW learning rate for a global batch of 8, scaled linearly with the real global batch.")
@click.option("--weight-decay", type=click.FloatRange(0), default=1e-4, show_default=True, help="AdamW weight decay.")
@click.option("--warmup-steps", type=click.IntRange(0), default=500, show_default=True,
              help="Linear warm-up steps before the cosine decay.")
@click.option("--grad-clip", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="Gradient norm clipping.")
@click.option("--smoothness", type=click.FloatRange(0), default=0.05, show_default=True,
              help="Weight of edge-aware flow smoothness.")
@click.option("--occlusion-mask", is_flag=True,
              help="Also mask pixels failing the forward-backward check (charged the occlusion penalty). Only "
                   "for fine-tuning a net that already predicts flow (with --resume): from scratch it masks "
                   "every pixel and nothing is learned.")
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True, help="Data loader processes.")
@click.option("--shuffle-buffer", type=click.IntRange(1), default=256, show_default=True,
              help="Samples in the shuffle buffer of each loader worker.")
@click.option("--epoch-batches", type=click.IntRange(1), default=1000, show_default=True,
              help="Batches per epoch of the endless stream (all processes together); unused with "
                   "--exact-epochs.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:1...")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
              help="auto: bf16 autocast on CUDA, float32 on CPU.")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model.")
@click.option("--checkpoint-every", type=click.IntRange(1), default=1000, show_default=True,
              help="Steps between checkpoints (RUN/last.pt, written atomically).")
@click.option("--val-every", type=click.IntRange(1), default=1000, show_default=True, help="Steps between validations.")
@click.option("--log-every", type=click.IntRange(1), default=20, show_default=True, help="Steps between scalar logs.")
@click.option("--image-every", type=click.IntRange(1), default=500, show_default=True,
              help="Steps between TensorBoard pictures (frames, flow, warped frame, error).")
@click.option("--nan-patience", type=click.IntRange(1), default=20, show_default=True,
              help="Non-finite losses in a row tolerated (each step skipped) before the run stops.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--resume", is_flag=True, help="Continue RUN/last.pt: step, optimiser, schedule and RNG.")
def pretrain(shards, val_shards, run_dir, arch, motion_dim, size, batch_size, steps, epochs, exact_epochs, lr,
             weight_decay, warmup_steps, grad_clip, smoothness, occlusion_mask, workers, shuffle_buffer,
             epoch_batches, device, precision, compile_model, checkpoint_every, val_every, log_every, image_every,
             nan_patience, seed, resume):
    """Geometric pretraining: learn optical flow through a narrow motion code, so the structure encoder
    learns scene geometry. Runs under torchrun for several GPUs (or CPU processes with gloo):
    `torchrun --nproc_per_node 4 -m training.cli pretrain ...`; --batch-size is per process and the
    learning rate follows the global batch."""
    from training.pretrain import PretrainConfig, TrainingDiverged, pretrain as run_pretrain

    width, height = parse_size(size)
    config = PretrainConfig(
        data=DataConfig(shards=shards, width_px=width, height_px=height, batch_size=batch_size, workers=workers,
                        shuffle_buffer=shuffle_buffer, batches_per_epoch=epoch_batches, exact_epochs=exact_epochs,
                        seed=seed),
        run_dir=run_dir, val_shards=val_shards, arch=arch, motion_dim=motion_dim, steps=steps, epochs=epochs, lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup_steps, grad_clip=grad_clip,
        loss=FlowLossConfig(smoothness=smoothness, occlusion_masking=occlusion_mask), device=device,
        precision=precision, compile=compile_model, checkpoint_every=checkpoint_every, val_every=val_every,
        log_every=log_every, image_every=image_every, nan_patience=nan_patience, seed=seed, resume=resume)
    try:
        result = run_pretrain(config)
    except (ValueError, FileNotFoundError, TrainingDiverged) as error:
        raise click.ClickException(str(error))
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    scores = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
    click.echo(f"pretrained to step {result['step']} (epoch {result['epoch']}, {result['samples']} samples in this "
               f"run): {scores}\ncheckpoint: {run_dir / 'last.pt'}")


@main.command()
@click.option("--ckpt", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="A pretraining checkpoint, e.g. runs/pretrain/last.pt.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Where to write the backbone state dict (e.g. backbone.pth).")
@click.option("--format", "fmt", type=click.Choice(["torchvision", "monodepth2"]), default="torchvision",
              show_default=True, help="torchvision: loads into torchvision.models.resnet18/50 (fc aside); "
                                      "monodepth2: Monodepth2's encoder.pth layout.")
def export(ckpt, out, fmt):
    """Export the pretrained structure encoder as a backbone others can load."""
    from training.export import export_backbone

    try:
        info = export_backbone(ckpt, out, fmt)
    except (ValueError, KeyError) as error:
        raise click.ClickException(f"cannot export {ckpt}: {error}")
    click.echo(f"wrote {out}: {info['arch']} encoder from step {info['step']} ({info['tensors']} tensors, "
               f"{info['format']} layout)")


for command in (transfer_command, evaluate_command, predict_command, evaluate_disps_command, export_gt_command):
    main.add_command(command)


if __name__ == "__main__":
    main()
