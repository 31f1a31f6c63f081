"""``geopt-train transfer``, ``evaluate``, ``predict``, ``evaluate-disps`` and ``export-gt``: depth from the
command line.

Plain commands that the ``geopt-train`` group registers. Each parses its options (into `TransferConfig`
for transfer, by keyword), calls one library function and prints a short summary; input errors end as
one-line messages.
"""
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from formats.files import fields_of, write_json_atomic
from formats.kitti import IMAGE_EXTENSIONS, image_path, load_gt_depths, read_split_file
from formats.video import VIDEO_EXTENSIONS
from training.depth.evaluate import evaluate_disparities, export_gt_depths, format_table, summarize_ratios
from training.depth.transfer import TransferConfig
from training.options import loop_options, size_callback

KITTI_PREFIX = "kitti:"


def _kitti_root(data: str) -> Path:
    if not data.startswith(KITTI_PREFIX):
        raise click.ClickException(f"--data must look like kitti:PATH, got {data!r}")
    root = Path(data[len(KITTI_PREFIX):])
    if not root.is_dir():
        raise click.ClickException(f"KITTI root {root} is not a folder")
    return root


def _load(ckpt: Path) -> dict:
    from training.depth.predict import read_transfer_checkpoint

    try:
        return read_transfer_checkpoint(ckpt)
    except (OSError, ValueError, RuntimeError) as error:
        raise click.ClickException(f"cannot use {ckpt}: {error}")


@click.command("transfer")
@click.option("--data", required=True,
              help="kitti:PATH (KITTI raw root with splits/<split>/train_files.txt) or shards:SPEC (mined "
                   "triplets; SPEC as for pretrain --shards; mode M only).")
@click.option("--split", default=TransferConfig.split, show_default=True, help="KITTI split folder under PATH/splits.")
@click.option("--mode", type=click.Choice(["M", "S", "MS"]), default=TransferConfig.mode, show_default=True,
              help="Supervision: M frames -1/+1 with learned pose, S the stereo partner, MS both.")
@click.option("--init", default=TransferConfig.init, show_default=True,
              help="Depth encoder start: scratch, imagenet (torch hub cache only, never downloaded), "
                   "geopt:BACKBONE.pth (from geopt-train export), or a pretraining/transfer checkpoint path.")
@click.option("--pose-init", default=TransferConfig.pose_init, show_default=True,
              help="Pose ResNet18 start: same (as --init), scratch, imagenet or geopt:BACKBONE.pth.")
@click.option("--pose-seed", type=int, default=TransferConfig.pose_seed,
              help="Draw the pose network's initial weights from this seed, alike in every run whatever --seed "
                   "and --init (with --pose-init scratch: the same pose network in every arm). Default: from "
                   "--seed, as Monodepth2.")
@click.option("--freeze-encoder", is_flag=True,
              help="Depth probe: the encoder stays as --init gave it (weights and BatchNorm statistics); only "
                   "the depth decoder and the pose network learn.")
@click.option("--arch", type=click.Choice(["resnet18", "resnet50"]), default=TransferConfig.arch, show_default=True,
              help="Depth encoder architecture.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=TransferConfig.run_dir, show_default=True,
              help="Folder for config.json, last.pt, log.jsonl and TensorBoard events.")
@click.option("--size", default=f"{TransferConfig.width_px}x{TransferConfig.height_px}", show_default=True,
              callback=size_callback,
              help="Training size WIDTHxHEIGHT, multiples of 32 (Monodepth2: 640x192, 1024x320).")
@click.option("--batch-size", type=click.IntRange(1), default=TransferConfig.batch_size, show_default=True,
              help="Frames per step per process.")
@click.option("--steps", type=click.IntRange(1), default=TransferConfig.steps, show_default=True,
              help="Optimiser steps (66 000 = Monodepth2's 20 epochs of eigen_zhou at batch 12).")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=TransferConfig.lr, show_default=True,
              help="Adam learning rate, x0.1 after 75% of the steps.")
@click.option("--recipe", type=click.Choice(["monodepth2", "stable"]), default="monodepth2", show_default=True,
              help="monodepth2: its defaults, as below. stable: reliable at short budgets (bench/transfer_collapse.py): "
                   "in M and MS a pose network from scratch drawn from seed 0 (the same in every run, so runs differ "
                   "only by --init and --seed), warm-up over the first 15 % of --steps, no auto-masking for the first "
                   "30 %; any of --pose-init, --pose-seed, --warmup-steps, --automask-after given still wins.")
@click.option("--warmup-steps", type=click.IntRange(0), default=TransferConfig.warmup_steps, show_default=True,
              help="Linear learning-rate warm-up over the first steps (0: none, Monodepth2).")
@click.option("--automask-after", type=click.IntRange(0), default=TransferConfig.automask_after, show_default=True,
              help="Score every pixel without auto-masking for the first N steps (0: auto-masking from the "
                   "start, Monodepth2).")
@click.option("--min-depth", type=click.FloatRange(0, min_open=True), default=None,
              help="Nearest depth of the sigmoid disparity, in the depth unit (default 0.1 in M, 0.54 m with stereo).")
@click.option("--max-depth", type=click.FloatRange(0, min_open=True), default=None,
              help="Farthest depth of the sigmoid disparity (default 100 in M, 540 m with stereo).")
@click.option("--fov-deg", type=click.FloatRange(0, 180, min_open=True, max_open=True), default=TransferConfig.fov_deg,
              help="Horizontal field of view of shard frames (fx = 0.5 W / tan(fov/2)); with learned "
                   "intrinsics the focal length's prior.")
@click.option("--intrinsics", type=click.Choice(["fixed", "learned"]), default=TransferConfig.intrinsics,
              show_default=True,
              help="fixed: the data's intrinsics (KITTI's, or from --fov-deg); learned: predicted per sample.")
@click.option("--train-fraction", type=click.FloatRange(0, 1, min_open=True), default=TransferConfig.train_fraction,
              show_default=True,
              help="Use only the first fraction of the training entries (shards: of the shard list), for "
                   "few-shot runs.")
@click.option("--workers", type=click.IntRange(0), default=TransferConfig.workers, show_default=True,
              help="Data loader processes.")
@loop_options(TransferConfig, "frame, coloured disparity")
def transfer_command(size, recipe, **options):
    """Train monocular depth from a backbone the Monodepth2 way (runs under torchrun too)."""
    from training.checkpoints import CheckpointError
    from training.depth.collapse import describe
    from training.depth.transfer import RECIPE_FIELDS, stable_recipe, transfer
    from training.finite_guard import TrainingDiverged

    width, height = size
    config = TransferConfig(width_px=width, height_px=height, **fields_of(TransferConfig, options))
    if recipe == "stable":
        context = click.get_current_context()
        given = frozenset(f for f in RECIPE_FIELDS
                          if context.get_parameter_source(f) is not click.core.ParameterSource.DEFAULT)
        config = stable_recipe(config, given)
    try:
        result = transfer(config)
    except (ValueError, FileNotFoundError, TrainingDiverged, CheckpointError) as error:
        raise click.ClickException(str(error))
    scores = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
    click.echo(f"trained to step {result['step']}: {scores}\n{describe(result['collapse'])}\n"
               f"checkpoint: {config.run_dir / 'last.pt'}")


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
    from training.depth.evaluate import evaluate_checkpoint, evaluation_scaling

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
@click.option("--size", default=None, callback=size_callback,
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
    from formats.video import UnusableVideo, probe
    from training.depth.predict import DepthPredictor, predict_images, predict_video

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
    infos = {}
    for path in videos:
        try:
            infos[path] = probe(path)
        except UnusableVideo as error:
            raise click.ClickException(f"cannot read video {path}: {error}")
    frame_count = 0
    try:
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


def _load_disparities(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise click.ClickException(f"cannot read predicted disparities {path}: {error}")


def _check_split_count(split_file: Path, image_count: int) -> None:
    try:
        entries = read_split_file(split_file)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error))
    if len(entries) != image_count:
        raise click.ClickException(f"{split_file} lists {len(entries)} frames but there are {image_count} "
                                   "predicted disparity maps")


@click.command("evaluate-disps")
@click.option("--disps", "disps_path", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="Predicted disparities, .npy of shape (N, H, W) in test-split order (Monodepth2's disps.npy).")
@click.option("--gt", "gt_path", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="Ground-truth depths in metres, Monodepth2's gt_depths.npz (see export-gt).")
@click.option("--split-file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="The split's test_files.txt; only used to check that it lists N frames.")
@click.option("--stereo", is_flag=True,
              help="Stereo-trained model: scale depth by 5.4 instead of per-image median scaling.")
@click.option("--no-crop", is_flag=True, help="Score the whole image instead of Garg's Eigen crop.")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the errors and settings to this JSON file.")
def evaluate_disps_command(disps_path, gt_path, split_file, stereo, no_crop, out_path):
    """Score predicted disparities against gt_depths.npz exactly as Monodepth2's evaluate_depth.py does."""
    pred_disps = _load_disparities(disps_path)
    try:
        gt_depths_m = load_gt_depths(gt_path)
    except (OSError, ValueError, KeyError) as error:
        raise click.ClickException(f"cannot read ground-truth depths {gt_path}: {error}")
    if split_file is not None:
        _check_split_count(split_file, len(pred_disps))
    try:
        errors, ratios = evaluate_disparities(pred_disps, gt_depths_m, eigen_crop=not no_crop, stereo=stereo)
    except ValueError as error:
        raise click.ClickException(str(error))
    summary = {"disps": disps_path, "gt": gt_path, "images": len(pred_disps), "stereo": stereo,
               "eigen_crop": not no_crop, "median_scaling": not stereo, "errors": errors}
    click.echo(f"{'stereo (x5.4)' if stereo else 'mono (median scaling)'} evaluation of {len(pred_disps)} images"
               f"{'' if no_crop else ', Garg crop'}")
    report_scores(errors, ratios if not stereo else None, summary, out_path)


def report_scores(errors: dict, ratios, summary: dict, out_path: Path | None) -> None:
    """Print the median-scaling ratios (when scaled) and Monodepth2's table; write `summary` + ratios as JSON."""
    if ratios is not None:
        median, std = summarize_ratios(ratios)
        summary |= {"scaling_ratio_median": median, "scaling_ratio_std": std}
        click.echo(f"median scaling ratios: median {median:.3f} std {std:.3f}")
    click.echo(format_table(errors))
    if out_path is not None:
        write_json_atomic(out_path, summary)
        click.echo(f"wrote {out_path}")


@click.command("export-gt")
@click.option("--data", required=True, help="KITTI raw root as kitti:PATH (date folders and splits/ inside).")
@click.option("--split", default="eigen", show_default=True,
              help="Split whose PATH/splits/<split>/test_files.txt lists the frames.")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Where to write gt_depths.npz (depth in metres from the velodyne, 0 where no point).")
def export_gt_command(data, split, out_path):
    """Build gt_depths.npz from the velodyne scans as Monodepth2's export_gt_depth.py does."""
    kitti_root = _kitti_root(data)
    split_file = kitti_root / "splits" / split / "test_files.txt"
    if not split_file.is_file():
        raise click.ClickException(f"no split file {split_file}")
    try:
        with tqdm(total=len(read_split_file(split_file)), unit="frame", desc="export-gt") as bar:
            count = export_gt_depths(kitti_root, split_file, out_path, bar.update)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error))
    click.echo(f"wrote {count} ground-truth depth maps to {out_path}")
