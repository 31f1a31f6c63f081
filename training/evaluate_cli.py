"""``geopt-train evaluate-disps`` and ``export-gt``: Monodepth2's Eigen evaluation from the command line.

Two plain commands; the ``geopt-train`` group registers them. Input errors end as one-line messages.
"""
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from geopt_io import write_json_atomic
from training.evaluation import evaluate_disparities, export_gt_depths, format_table, summarize_ratios
from training.kitti import load_gt_depths, read_split_file

DATA_PREFIX = "kitti:"


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
    if not data.startswith(DATA_PREFIX):
        raise click.ClickException(f"--data must look like kitti:PATH, got {data!r}")
    kitti_root = Path(data[len(DATA_PREFIX):])
    if not kitti_root.is_dir():
        raise click.ClickException(f"KITTI root {kitti_root} is not a folder")
    split_file = kitti_root / "splits" / split / "test_files.txt"
    if not split_file.is_file():
        raise click.ClickException(f"no split file {split_file}")
    try:
        with tqdm(total=len(read_split_file(split_file)), unit="frame", desc="export-gt") as bar:
            count = export_gt_depths(kitti_root, split_file, out_path, bar.update)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error))
    click.echo(f"wrote {count} ground-truth depth maps to {out_path}")
