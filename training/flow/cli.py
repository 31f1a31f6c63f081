"""``geopt-train pretrain``, ``export`` and ``convert-checkpoint``: geometric pretraining from the command line.

Each command parses its options into the config dataclasses (`training.options.fields_of`), calls one
library function and prints a short summary; input errors end as one-line messages.
"""
import os
from pathlib import Path

import click

from formats.files import fields_of
from training.flow.data import DataConfig
from training.flow.loss import FlowLossConfig
from training.flow.pretrain import PretrainConfig
from training.options import loop_options, size_callback


@click.command("pretrain")
@click.option("--shards", required=True,
              help="Training shards: 'shards/<0000..0999>.tar', '{0000..0999}', globs, folders, or several "
                   "separated by commas or spaces. Members of a range that do not exist are skipped. URLs "
                   "stream as in webdataset: 'http://host/{0000..0099}.tar' (curl), 'pipe:COMMAND', "
                   "'file:///...', and through fsspec any other scheme with its backend installed "
                   "(s3:// with s3fs, ...). Sources mix by weight as name=SHARDS:WEIGHT,... or a YAML file.")
@click.option("--val-shards", default=PretrainConfig.val_shards,
              help="Validation shards, same forms (e.g. shards/val). World shards (geopt-world shards) also "
                   "give the flow end-point error against the true flow.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=PretrainConfig.run_dir, show_default=True,
              help="Folder for config.json, last.pt, log.jsonl and TensorBoard events.")
@click.option("--arch", type=click.Choice(["resnet18", "resnet50"]), default=PretrainConfig.arch, show_default=True,
              help="Structure encoder (a stock torchvision ResNet).")
@click.option("--motion-dim", type=click.IntRange(1), default=PretrainConfig.motion_dim, show_default=True,
              help="Width of the motion code: narrow, so scene geometry must come from the structure encoder.")
@click.option("--size", default=f"{DataConfig.width_px}x{DataConfig.height_px}", show_default=True,
              callback=size_callback, help="Training size WIDTHxHEIGHT (multiples of 32).")
@click.option("--batch-size", type=click.IntRange(1), default=DataConfig.batch_size, show_default=True,
              help="Pairs per step per process.")
@click.option("--steps", type=click.IntRange(1), default=PretrainConfig.steps, show_default=True,
              help="Optimiser steps; the run stops there and the cosine schedule spans them.")
@click.option("--epochs", type=click.IntRange(1), default=PretrainConfig.epochs,
              help="Also stop after this many epochs (whichever of --steps and --epochs comes first).")
@click.option("--exact-epochs", is_flag=True,
              help="An epoch reads every training sample exactly once over all processes: each epoch the "
                   "shard list is shuffled alike on every rank and split between ranks and loader workers "
                   "(give at least processes x workers shards per source). Default: shards are drawn at "
                   "random without end and an epoch is --epoch-batches batches. A run resumed with "
                   "--resume restarts the interrupted epoch.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=PretrainConfig.lr, show_default=True,
              help=f"Peak AdamW learning rate for a global batch of {PretrainConfig.lr_reference_batch}, scaled "
                   "linearly with the real global batch.")
@click.option("--weight-decay", type=click.FloatRange(0), default=PretrainConfig.weight_decay, show_default=True,
              help="AdamW weight decay.")
@click.option("--warmup-steps", type=click.IntRange(0), default=PretrainConfig.warmup_steps, show_default=True,
              help="Linear warm-up steps before the cosine decay.")
@click.option("--grad-clip", type=click.FloatRange(0, min_open=True), default=PretrainConfig.grad_clip,
              show_default=True, help="Gradient norm clipping.")
@click.option("--smoothness", type=click.FloatRange(0), default=FlowLossConfig.smoothness, show_default=True,
              help="Weight of edge-aware flow smoothness.")
@click.option("--smoothness-order", type=click.Choice(["1", "2"]), default=str(FlowLossConfig.smoothness_order),
              show_default=True, callback=lambda _ctx, _param, value: int(value),
              help="1: first derivatives of the flow at every scale (Monodepth2). 2: second derivatives of the flow at "
                   "1/4 size only (UFlow, SMURF), which leave the steady growth of flow when driving forward free.")
@click.option("--error", type=click.Choice(["ssim_l1", "census"]), default=FlowLossConfig.error, show_default=True,
              help="How a warped pixel is compared with the target: 0.85 SSIM + 0.15 L1 (Monodepth2), or the soft "
                   "Hamming distance of 7x7 census transforms (UFlow, SMURF; robust to exposure changes).")
@click.option("--pyramid/--no-pyramid", default=FlowLossConfig.pyramid, show_default=True,
              help="Score each scale's flow on the frames downsampled to that scale (long displacements become a few "
                   "pixels there), or upsample every scale's flow to full size first (Monodepth2's way for depth).")
@click.option("--full-image-margin", type=click.FloatRange(0, 0.4), default=FlowLossConfig.full_image_margin,
              show_default=True,
              help="Share of the frame's width and height, on each side, that the net does not see but the loss "
                   "warps into (SMURF's full-image warping): pixels moving out of the net's view still teach it "
                   "where they go. 0 (the default) turns it off: it helped on the 5 Hz world proxy and hurt on mined "
                   "video (README).")
@click.option("--extrapolation", type=click.FloatRange(0), default=FlowLossConfig.extrapolation, show_default=True,
              help="With --stretch: weight of carrying each frame's flow to one neighbour over to the other (a still "
                   "point under the camera's step forward, principal point at the frame's centre) where a pixel "
                   "leaves the view, which teaches its stretch: the near road leaving through the bottom going "
                   "forward is seen coming back. Trains on each sample's middle frame with both neighbours (samples "
                   "of 3 frames or more), from a quarter of the steps on. With --stretch it met the 5 Hz proxy's "
                   "target (0.29x the zero-flow score both ways against 0.38x; README). 0 turns it off (needed with "
                   "--no-stretch or --occlusion-mask); resume runs from before 2026-12-05 (night) with 0.")
@click.option("--coarse-to-fine/--no-coarse-to-fine", default=PretrainConfig.coarse_to_fine, show_default=True,
              help="Each scale's flow adds the coarser scale's flow, upsampled: the fine scales only refine the long "
                   "motion the coarse scales find. Off by default: measured worse on the long-displacement proxy (README).")
@click.option("--motion-head/--no-motion-head", default=PretrainConfig.motion_head, show_default=True,
              help="Add a coarse flow read off the motion code alone to every scale's flow, so the motion encoder "
                   "learns from the first step and the decoder adds what depends on depth. Without it mined video "
                   "never taught flow: the decoder guessed one direction for every pair (README, Results). "
                   "Resume runs from before 2026-12-05 with --no-motion-head.")
@click.option("--antisymmetric/--no-antisymmetric", default=PretrainConfig.antisymmetric, show_default=True,
              help="The flow is the decoder's output under the pair's motion code minus its output under the "
                   "reversed pair's (the motion head reads the code difference): a frame paired with itself gets "
                   "exactly no flow, so nothing guessed from the target frame alone survives. A second decoder "
                   "pass per pair. Without it, every net on the 5 Hz proxy guessed one direction from the target "
                   "frame and scored worse than no motion on the other (README, Results). Resume runs from "
                   "before 2026-12-05 (late) with --no-antisymmetric --no-stretch --extrapolation 0.")
@click.option("--stretch/--no-stretch", default=PretrainConfig.stretch, show_default=True,
              help="With --antisymmetric: the decoder also gives each pixel a stretch a (antisymmetric too) and the flow "
                   "is the antisymmetric one times (1 + a), so a near pixel can move further going forward than coming "
                   "back, as driving forward makes it. Without it a pair's flow and its reverse's have the same length. "
                   "Alone it scored as without it on the 5 Hz proxy; with --extrapolation, 0.29x the zero-flow "
                   "score both ways against 0.38x (README, Results). --no-stretch needs --extrapolation 0.")
@click.option("--rigid-flow", is_flag=True,
              help="Add the flow of a still scene under the camera's translation, from an inverse depth decoded from "
                   "the target frame alone and a translation read off the motion code: a pixel that leaves the view "
                   "going forward is in view going backward, and the depth both directions share says where it "
                   "goes. A second decoder (without the code) per pair. Off by default: beside the flow decoder it "
                   "carried almost nothing on the 5 Hz proxy (README, Results).")
@click.option("--flow-decoder/--no-flow-decoder", default=PretrainConfig.flow_decoder, show_default=True,
              help="The flow decoder modulated by the motion code. --no-flow-decoder (with --rigid-flow) leaves the "
                   "motion head's and the rigid flow alone, so each pixel's motion must come through its inverse depth.")
@click.option("--half-size-steps", type=click.IntRange(0), default=PretrainConfig.half_size_steps, show_default=True,
              help="Resolution curriculum: train the first N steps on frames downsampled to half size (where pixels "
                   "move half as far). The size must be a multiple of 64 each way and at least 128x128.")
@click.option("--frame-gap", type=click.IntRange(1), default=DataConfig.frame_gap, show_default=True,
              help="Pair the middle frame of each sample with the one this many frames before or after it; samples "
                   "need 2 x GAP + 1 frames (geopt-mine shard --frames).")
@click.option("--short-gap-steps", type=click.IntRange(0), default=PretrainConfig.short_gap_steps, show_default=True,
              help="Frame-gap curriculum: neighbouring frames for the first N steps, then --frame-gap apart (the switch "
                   "waits for the next epoch boundary: make --epoch-batches divide N).")
@click.option("--occlusion-mask", "occlusion_masking", is_flag=True,
              help="Also mask pixels failing the forward-backward check (charged like pixels leaving the view). "
                   "Only for fine-tuning a net that already predicts flow (with --resume): from scratch it "
                   "masks every pixel and nothing is learned.")
@click.option("--workers", type=click.IntRange(0), default=DataConfig.workers, show_default=True,
              help="Data loader processes.")
@click.option("--shuffle-buffer", type=click.IntRange(1), default=DataConfig.shuffle_buffer, show_default=True,
              help="Samples in the shuffle buffer of each loader worker.")
@click.option("--epoch-batches", "batches_per_epoch", type=click.IntRange(1), default=DataConfig.batches_per_epoch,
              show_default=True, help="Batches per epoch of the endless stream (all processes together); unused "
                                      "with --exact-epochs.")
@click.option("--val-every", type=click.IntRange(1), default=PretrainConfig.val_every, show_default=True,
              help="Steps between validations.")
@loop_options(PretrainConfig, "frames, flow, warped frame, error")
def pretrain_command(size, **options):
    """Geometric pretraining: learn optical flow through a narrow motion code, so the structure encoder
    learns scene geometry. Runs under torchrun for several GPUs (or CPU processes with gloo):
    `torchrun --nproc_per_node 4 -m training.cli pretrain ...`; --batch-size is per process and the
    learning rate follows the global batch."""
    from training.checkpoints import CheckpointError
    from training.flow.pretrain import pretrain
    from training.finite_guard import TrainingDiverged

    width, height = size
    config = PretrainConfig(data=DataConfig(width_px=width, height_px=height, **fields_of(DataConfig, options)),
                            loss=FlowLossConfig(**fields_of(FlowLossConfig, options)),
                            **fields_of(PretrainConfig, options))
    try:
        result = pretrain(config)
    except (ValueError, FileNotFoundError, TrainingDiverged, CheckpointError) as error:
        raise click.ClickException(str(error))
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    scores = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
    click.echo(f"pretrained to step {result['step']} (epoch {result['epoch']}, {result['samples']} samples in this "
               f"run): {scores}\ncheckpoint: {config.run_dir / 'last.pt'}")


@click.command("export")
@click.option("--ckpt", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="A pretraining checkpoint, e.g. runs/pretrain/last.pt.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Where to write the backbone state dict (e.g. backbone.pth).")
@click.option("--format", "fmt", type=click.Choice(["torchvision", "monodepth2"]), default="torchvision",
              show_default=True, help="torchvision: loads into torchvision.models.resnet18/50 (fc aside); "
                                      "monodepth2: Monodepth2's encoder.pth layout.")
def export_command(ckpt, out, fmt):
    """Export the pretrained structure encoder as a backbone others can load."""
    from training.flow.export import export_backbone

    try:
        info = export_backbone(ckpt, out, fmt)
    except (ValueError, KeyError) as error:
        raise click.ClickException(f"cannot export {ckpt}: {error}")
    click.echo(f"wrote {out}: {info['arch']} encoder from step {info['step']} ({info['tensors']} tensors, "
               f"{info['format']} layout)")


@click.command("convert-checkpoint")
@click.argument("old", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("new", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--trust-pickle", is_flag=True,
              help="Required: reading an older checkpoint unpickles it, which runs any code it holds. Only for "
                   "files you (or GeoPt on your machine) made.")
def convert_checkpoint_command(old, new, trust_pickle):
    """Rewrite a checkpoint of an older GeoPt (pickled configs and RNG state) in today's format, which loads
    without running code."""
    from training.checkpoints import convert_legacy_checkpoint

    if not trust_pickle:
        raise click.ClickException("converting unpickles OLD, which runs any code it holds: add --trust-pickle "
                                   "if you made the file yourself")
    try:
        state = convert_legacy_checkpoint(old, new)
    except (ValueError, KeyError, OSError) as error:
        raise click.ClickException(f"cannot convert {old}: {error}")
    click.echo(f"wrote {new}: {state['kind']} checkpoint at step {state['step']}, loads without unpickling")
