"""``geopt-train transfer``, ``evaluate`` and ``predict``: depth transfer from the command line.

Three plain commands; the ``geopt-train`` group registers them. Each parses its options, calls one
function of `training.transfer` and prints a short summary; input errors end as one-line messages.
"""
import pickle
from pathlib import Path

import click
import numpy as np

from geopt_io import atomic_path, write_json_atomic
from training.evaluation import format_table, summarize_ratios
from training.kitti import IMAGE_EXTENSIONS, read_split_file

KITTI_PREFIX = "kitti:"


def _size(ctx, param, text: str | None) -> tuple[int, int] | None:
    """WIDTHxHEIGHT, checked by the group's own parser (imported here: the group module imports this one)."""
    if text is None:
        return None
    from training.cli import parse_size

    return parse_size(text)


def _kitti_root(data: str) -> Path:
    if not data.startswith(KITTI_PREFIX):
        raise click.ClickException(f"--data must look like kitti:PATH, got {data!r}")
    root = Path(data[len(KITTI_PREFIX):])
    if not root.is_dir():
        raise click.ClickException(f"KITTI root {root} is not a folder")
    return root


def _load(ckpt: Path) -> dict:
    from training.transfer import read_transfer_checkpoint

    try:
        return read_transfer_checkpoint(ckpt)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as error:
        raise click.ClickException(f"cannot use {ckpt}: {error}")


@click.command("transfer")
@click.option("--data", required=True,
              help="kitti:PATH (KITTI raw root with splits/<split>/train_files.txt) or shards:SPEC (mined "
                   "triplets; SPEC as for pretrain --shards; mode M only).")
@click.option("--split", default="eigen_zhou", show_default=True, help="KITTI split folder under PATH/splits.")
@click.option("--mode", type=click.Choice(["M", "S", "MS"]), default="M", show_default=True,
              help="Supervision: M frames -1/+1 with learned pose, S the stereo partner, MS both.")
@click.option("--init", default="imagenet", show_default=True,
              help="Depth encoder start: scratch, imagenet (torch hub cache only, never downloaded), "
                   "geopt:BACKBONE.pth (from geopt-train export), or a pretraining/transfer checkpoint path.")
@click.option("--pose-init", default="same", show_default=True,
              help="Pose ResNet18 start: same (as --init), scratch, imagenet or geopt:BACKBONE.pth.")
@click.option("--arch", type=click.Choice(["resnet18", "resnet50"]), default="resnet18", show_default=True,
              help="Depth encoder architecture.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=Path("runs/transfer"), show_default=True,
              help="Folder for config.json, last.pt, log.jsonl and TensorBoard events.")
@click.option("--size", default="640x192", show_default=True, callback=_size,
              help="Training size WIDTHxHEIGHT, multiples of 32 (Monodepth2: 640x192, 1024x320).")
@click.option("--batch-size", type=click.IntRange(1), default=12, show_default=True,
              help="Frames per step per process.")
@click.option("--steps", type=click.IntRange(1), default=66_000, show_default=True,
              help="Optimiser steps (66 000 = Monodepth2's 20 epochs of eigen_zhou at batch 12).")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-4, show_default=True,
              help="Adam learning rate, x0.1 after 75% of the steps.")
@click.option("--fov-deg", type=click.FloatRange(0, 180, min_open=True, max_open=True), default=None,
              help="Horizontal field of view of shard frames (fx = 0.5 W / tan(fov/2)); with learned "
                   "intrinsics the focal length's prior.")
@click.option("--intrinsics", type=click.Choice(["fixed", "learned"]), default="fixed", show_default=True,
              help="fixed: the data's intrinsics (KITTI's, or from --fov-deg); learned: predicted per sample.")
@click.option("--train-fraction", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Use only the first fraction of the training entries (shards: of the shard list), for "
                   "few-shot runs.")
@click.option("--workers", type=click.IntRange(0), default=4, show_default=True, help="Data loader processes.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:1...")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
              help="auto: bf16 autocast on CUDA, float32 on CPU.")
@click.option("--checkpoint-every", type=click.IntRange(1), default=1000, show_default=True,
              help="Steps between checkpoints (RUN/last.pt, written atomically).")
@click.option("--log-every", type=click.IntRange(1), default=50, show_default=True, help="Steps between scalar logs.")
@click.option("--image-every", type=click.IntRange(1), default=1000, show_default=True,
              help="Steps between TensorBoard pictures (frame, coloured disparity).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--resume", is_flag=True, help="Continue RUN/last.pt: step, optimiser, schedule and RNG.")
def transfer_command(data, split, mode, init, pose_init, arch, run_dir, size, batch_size, steps, lr, fov_deg,
                     intrinsics, train_fraction, workers, device, precision, checkpoint_every, log_every,
                     image_every, seed, resume):
    """Train monocular depth from a backbone the Monodepth2 way (runs under torchrun too)."""
    from training.pretrain import TrainingDiverged
    from training.transfer import TransferConfig, transfer

    width, height = size
    config = TransferConfig(data=data, run_dir=run_dir, split=split, mode=mode, init=init, pose_init=pose_init,
                            arch=arch, width_px=width, height_px=height, batch_size=batch_size, steps=steps, lr=lr,
                            fov_deg=fov_deg, intrinsics=intrinsics, train_fraction=train_fraction, workers=workers,
                            device=device, precision=precision, checkpoint_every=checkpoint_every,
                            log_every=log_every, image_every=image_every, seed=seed, resume=resume)
    try:
        result = transfer(config)
    except (ValueError, FileNotFoundError, TrainingDiverged) as error:
        raise click.ClickException(str(error))
    scores = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
    click.echo(f"trained to step {result['step']}: {scores}\ncheckpoint: {run_dir / 'last.pt'}")


@click.command("evaluate")
@click.option("--data", required=True, help="KITTI raw root as kitti:PATH (date folders and splits/ inside).")
@click.option("--split", default="eigen", show_default=True,
              help="Test split: PATH/splits/<split>/test_files.txt and gt_depths.npz (see export-gt).")
@click.option("--ckpt", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="A transfer checkpoint, e.g. runs/transfer/last.pt.")
@click.option("--scaling", type=click.Choice(["auto", "median", "metric"]), default="auto", show_default=True,
              help="auto: per-image median scaling for M models, metric depth for S and MS (Monodepth2's "
                   "choice; our stereo baseline is in metres, so no x5.4).")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True, help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda...")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the errors and settings to this JSON file.")
def evaluate_command(data, split, ckpt, scaling, batch_size, device, out_path):
    """Predict the test split with a transfer checkpoint and print Monodepth2's error table."""
    from training.transfer import evaluate_checkpoint, evaluation_scaling

    root = _kitti_root(data)
    state = _load(ckpt)
    used = evaluation_scaling(state["mode"]) if scaling == "auto" else scaling
    try:
        errors, ratios = evaluate_checkpoint(state, root, split, used, batch_size, device)
    except (OSError, ValueError, KeyError) as error:
        raise click.ClickException(str(error))
    summary = {"ckpt": ckpt, "data": data, "split": split, "mode": state["mode"], "step": state["step"],
               "scaling": used, "errors": errors}
    click.echo(f"{state['mode']} model at step {state['step']}, {split} split, "
               f"{'per-image median scaling' if used == 'median' else 'metric depth (no scaling)'}")
    if used == "median":
        median, std = summarize_ratios(ratios)
        summary |= {"scaling_ratio_median": median, "scaling_ratio_std": std}
        click.echo(f"median scaling ratios: median {median:.3f} std {std:.3f}")
    click.echo(format_table(errors))
    if out_path is not None:
        write_json_atomic(out_path, summary)
        click.echo(f"wrote {out_path}")


def _image_files(items: tuple[Path, ...]) -> list[Path]:
    files = []
    for item in items:
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS + (".jpeg",))
        elif item.is_file():
            files.append(item)
        else:
            raise click.ClickException(f"no image file or folder {item}")
    if not files:
        raise click.ClickException("no .png/.jpg images found in " + ", ".join(str(i) for i in items))
    return files


@click.command("predict")
@click.option("--ckpt", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="A transfer checkpoint, e.g. runs/transfer/last.pt.")
@click.option("--images", type=click.Path(path_type=Path), multiple=True,
              help="Image files or folders of .png/.jpg (repeatable).")
@click.option("--data", default=None, help="Instead of --images: KITTI raw root as kitti:PATH.")
@click.option("--split", default="eigen", show_default=True,
              help="With --data: predict the frames of PATH/splits/<split>/test_files.txt.")
@click.option("--size", default=None, callback=_size, help="Input size WIDTHxHEIGHT; default the training size.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True, help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda...")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder for disps.npy ((N, H, W) scaled disparities, Monodepth2's layout) and magma PNGs.")
def predict_command(ckpt, images, data, split, size, batch_size, device, out_dir):
    """Predict disparities of images (or a KITTI split) and save them as .npy and coloured PNGs."""
    from training.transfer import predict_disparities, save_depth_images

    if bool(images) == bool(data):
        raise click.ClickException("give either --images or --data")
    state = _load(ckpt)
    root = None
    if data:
        root = _kitti_root(data)
        try:
            items = read_split_file(root / "splits" / split / "test_files.txt")
        except (OSError, ValueError) as error:
            raise click.ClickException(str(error))
        names = [f"{i:06d}_{e.folder.split('/')[-1]}_{e.frame_index:010d}_{e.side}" for i, e in enumerate(items)]
    else:
        items = _image_files(images)
        names = [f"{i:06d}_{p.stem}" for i, p in enumerate(items)]
    try:
        disps = predict_disparities(state, items, size, root, batch_size, device)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error))
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "disps.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, disps)
    save_depth_images(disps, out_dir, names)
    click.echo(f"wrote {len(disps)} disparity maps {disps.shape[1]}x{disps.shape[2]} to {out_dir}/disps.npy "
               f"and {len(disps)} PNGs")
