"""``geopt-train transfer``, ``evaluate`` and ``predict``: depth transfer from the command line.

Three plain commands; the ``geopt-train`` group registers them. Each parses its options, calls one
function of `training.transfer` and prints a short summary; input errors end as one-line messages.
"""
import pickle
from pathlib import Path

import click
from tqdm import tqdm

from training.depth_data import VIDEO_EXTENSIONS, probe_video
from training.evaluate_cli import report_scores
from training.kitti import IMAGE_EXTENSIONS, image_path, read_split_file

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
    report_scores(errors, ratios if used == "median" else None, summary, out_path)


PREDICT_IMAGE_EXTENSIONS = IMAGE_EXTENSIONS + (".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _prediction_inputs(inputs: tuple[Path, ...]) -> tuple[list[Path], list[Path]]:
    """INPUT arguments -> (image files, video files), folders listed (not recursively) in name order."""
    images, videos = [], []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in PREDICT_IMAGE_EXTENSIONS)
            if not found:
                raise click.ClickException(f"no images ({', '.join(PREDICT_IMAGE_EXTENSIONS)}) in folder {item}")
            images += found
        elif not item.is_file():
            raise click.ClickException(f"no such file or folder: {item}")
        elif item.suffix.lower() in PREDICT_IMAGE_EXTENSIONS:
            images.append(item)
        elif item.suffix.lower() in VIDEO_EXTENSIONS:
            videos.append(item)
        else:
            raise click.ClickException(f"{item} is neither an image ({', '.join(PREDICT_IMAGE_EXTENSIONS)}) nor a "
                                       f"video ({', '.join(VIDEO_EXTENSIONS)})")
    return images, videos


def _check_unique(outputs: dict[Path, Path]) -> None:
    """`outputs` maps input -> output file; two inputs must never write the same file."""
    seen = {}
    for source, target in outputs.items():
        if target in seen:
            raise click.ClickException(f"{seen[target]} and {source} would both write {target}; "
                                       "predict them into different --out folders")
        seen[target] = source


@click.command("predict")
@click.argument("inputs", metavar="[INPUT]...", nargs=-1, type=click.Path(path_type=Path))
@click.option("--ckpt", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="A transfer checkpoint, e.g. runs/transfer/last.pt.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder for NAME_depth.png per image and NAME_depth.mp4 per video (created if missing).")
@click.option("--data", default=None,
              help="Instead of INPUTs: a KITTI raw root as kitti:PATH, whose --split test frames are predicted.")
@click.option("--split", default="eigen", show_default=True,
              help="With --data: predict the frames of PATH/splits/<split>/test_files.txt.")
@click.option("--save-npy", is_flag=True,
              help="Also save the scaled disparities at the network size (1 / depth in metres for S and MS "
                   "models): NAME_disp.npy (H, W) per image, NAME_disps.npy (frames, H, W) per video, and with "
                   "--data one disps.npy (N, H, W) in split order, as evaluate-disps reads it.")
@click.option("--size", default=None, callback=_size,
              help="Network input size WIDTHxHEIGHT, multiples of 32; default the training size. Frames are "
                   "resized to it without keeping their aspect, as Monodepth2 does.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True, help="Frames per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda...")
def predict_command(inputs, ckpt, out_dir, data, split, save_npy, size, batch_size, device):
    """Predict depth of images, folders of images or videos (INPUT...), or of a KITTI test split.

    Each INPUT is an image (.png, .jpg, ...), a folder of images (not searched recursively) or a video
    (.mp4, .mov, .mkv, .avi, .webm, ...). Each result shows the input at its own size beside its
    disparity in magma, from its minimum to its 95th percentile, as Monodepth2 shows it: OUT/NAME_depth.png
    for an image, OUT/NAME_depth.mp4 (H.264, every frame, the input's frame rate) for a video, NAME being
    the input's file name without its extension.
    """
    from training.transfer import DepthPredictor, predict_images, predict_video

    if bool(inputs) == bool(data):
        raise click.ClickException("give either INPUT files and folders or --data kitti:PATH")
    if data:
        root = _kitti_root(data)
        try:
            entries = read_split_file(root / "splits" / split / "test_files.txt")
            images = [image_path(root, e) for e in entries]
        except (OSError, ValueError) as error:
            raise click.ClickException(str(error))
        names = [f"{i:06d}_{e.folder.split('/')[-1]}_{e.frame_index:010d}_{e.side}" for i, e in enumerate(entries)]
        videos = []
    else:
        images, videos = _prediction_inputs(inputs)
        names = [p.stem for p in images]
        _check_unique({**{p: out_dir / f"{p.stem}_depth.png" for p in images},
                       **{p: out_dir / f"{p.stem}_depth.mp4" for p in videos}})
    state = _load(ckpt)
    frame_count = 0
    try:
        infos = {path: probe_video(path) for path in videos}
        predictor = DepthPredictor(state, size, device)
        out_dir.mkdir(parents=True, exist_ok=True)
        if images:
            with tqdm(total=len(images), unit="image", desc="predict") as bar:
                predict_images(predictor, images, out_dir, names, batch_size,
                               npy=("stack" if data else "each") if save_npy else "none", progress=bar.update)
        for path, info in infos.items():
            with tqdm(total=info.frame_count, unit="frame", desc=path.name) as bar:
                frame_count += predict_video(predictor, path, info, out_dir / f"{path.stem}_depth.mp4", batch_size,
                                             out_dir / f"{path.stem}_disps.npy" if save_npy else None, bar.update)
    except (OSError, ValueError, RuntimeError) as error:
        raise click.ClickException(str(error))
    click.echo(f"wrote {len(images)} pictures and {len(videos)} videos ({frame_count} frames) to {out_dir}, "
               f"depth at {predictor.width_px}x{predictor.height_px}" + (", disparities as .npy" if save_npy else ""))
