"""Depth scores on KITTI's Eigen test split, computed the way Monodepth2's ``evaluate_depth.py`` does:
of anyone's predicted disparities (`evaluate_disparities`) or of a transfer checkpoint (`evaluate_checkpoint`).

Every choice that moves a number is Monodepth2's, so a table printed here can sit next to the literature:
disparities resized to the ground truth with bilinear ``cv2.resize``, depth = 1 / disparity, the Garg crop,
valid ground truth in (1 mm, 80 m), per-image median scaling (mono) or a fixed x5.4 (stereo, trained
with a 0.1-unit baseline against KITTI's 0.54 m), predictions clamped to [1 mm, 80 m], and the seven
errors computed per image and then averaged over images. Arrays keep the caller's dtype throughout, as
Monodepth2's do (float32 from a network and from ``gt_depths.npz``), so results match it to the digit.
"""
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from formats.kitti import generate_depth_map, load_gt_depths, read_split_file, save_gt_depths, velodyne_path
from training.depth.predict import predict_disparities, read_transfer_checkpoint

MIN_DEPTH_M = 1e-3
MAX_DEPTH_M = 80
STEREO_SCALE_FACTOR = 5.4
"""Monodepth2's stereo models see a 0.1-unit baseline; KITTI's is 0.54 m."""
SCALINGS = ("auto", "median", "metric")
ERROR_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
"""Monodepth2's column order."""
GARG_CROP_FRACTIONS = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
"""Top, bottom, left, right of Garg et al.'s crop as fractions of the image height and width."""


def compute_errors(gt_depth_m: np.ndarray, pred_depth_m: np.ndarray) -> dict[str, float]:
    """The seven standard errors between matching (N,) valid ground-truth and predicted depths in metres.

    a1..a3 are the fractions of pixels whose ratio max(gt/pred, pred/gt) is below 1.25, 1.25^2, 1.25^3.
    """
    ratio = np.maximum(gt_depth_m / pred_depth_m, pred_depth_m / gt_depth_m)
    squared_error = (gt_depth_m - pred_depth_m) ** 2
    squared_log_error = (np.log(gt_depth_m) - np.log(pred_depth_m)) ** 2
    return {
        "abs_rel": float(np.mean(np.abs(gt_depth_m - pred_depth_m) / gt_depth_m)),
        "sq_rel": float(np.mean(squared_error / gt_depth_m)),
        "rmse": float(np.sqrt(squared_error.mean())),
        "rmse_log": float(np.sqrt(squared_log_error.mean())),
        "a1": float((ratio < 1.25).mean()),
        "a2": float((ratio < 1.25 ** 2).mean()),
        "a3": float((ratio < 1.25 ** 3).mean()),
    }


def garg_crop_mask(height_px: int, width_px: int) -> np.ndarray:
    """(H, W) bool, True inside Garg's crop; bounds truncate to int as Monodepth2's do (375x1242 ->
    rows 153..370, cols 44..1196)."""
    top, bottom, left, right = (np.array(GARG_CROP_FRACTIONS) * [height_px, height_px, width_px, width_px]
                                ).astype(np.int32)
    mask = np.zeros((height_px, width_px), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def _check_disparities(pred_disps: np.ndarray, image_count: int) -> None:
    if pred_disps.ndim != 3:
        raise ValueError(f"predicted disparities must be (N, H, W), got shape {pred_disps.shape}")
    if pred_disps.dtype not in (np.float32, np.float64):
        raise ValueError(f"predicted disparities must be float32 or float64, got {pred_disps.dtype}")
    if len(pred_disps) != image_count:
        raise ValueError(f"{len(pred_disps)} predicted disparity maps but {image_count} ground-truth depth maps")
    bad = ~np.isfinite(pred_disps) | (pred_disps <= 0)
    if bad.any():
        index = int(np.flatnonzero(bad.any(axis=(1, 2)))[0])
        raise ValueError(f"predicted disparity of image {index} has NaN, inf or non-positive values")


def evaluate_disparities(pred_disps: np.ndarray, gt_depths: list[np.ndarray], eigen_crop: bool = True,
                         stereo: bool = False, median_scaling: bool = True) -> tuple[dict[str, float], np.ndarray]:
    """Mean errors over images of (N, h, w) predicted disparities against N sparse (H, W) depths in metres.

    `stereo` scales depth by `STEREO_SCALE_FACTOR` and turns median scaling off, as ``--eval_stereo``
    does; otherwise `median_scaling` multiplies each image's depth by median(gt) / median(pred) over its
    valid pixels. Returns the mean errors and the (N,) per-image scaling ratios (empty when not scaled).
    """
    pred_disps = np.asarray(pred_disps)
    _check_disparities(pred_disps, len(gt_depths))
    scale_by_median = median_scaling and not stereo
    per_image, ratios = [], []
    for index, (pred_disp, gt_depth_m) in enumerate(zip(pred_disps, gt_depths)):
        height_px, width_px = gt_depth_m.shape
        pred_depth_m = 1 / cv2.resize(np.ascontiguousarray(pred_disp), (width_px, height_px))
        valid = (gt_depth_m > MIN_DEPTH_M) & (gt_depth_m < MAX_DEPTH_M)
        if eigen_crop:
            valid &= garg_crop_mask(height_px, width_px)
        if not valid.any():
            raise ValueError(f"image {index} has no ground-truth depth in ({MIN_DEPTH_M}, {MAX_DEPTH_M}) m"
                             + (" inside the Garg crop" if eigen_crop else ""))
        gt_valid_m, pred_valid_m = gt_depth_m[valid], pred_depth_m[valid]
        if stereo:
            pred_valid_m *= STEREO_SCALE_FACTOR
        if scale_by_median:
            ratio = np.median(gt_valid_m) / np.median(pred_valid_m)
            ratios.append(ratio)
            pred_valid_m *= ratio
        pred_valid_m = np.clip(pred_valid_m, MIN_DEPTH_M, MAX_DEPTH_M)
        errors = compute_errors(gt_valid_m, pred_valid_m)
        per_image.append([errors[name] for name in ERROR_NAMES])
    mean_errors = np.array(per_image).mean(axis=0)
    return dict(zip(ERROR_NAMES, mean_errors.tolist())), np.array(ratios)


def summarize_ratios(ratios: np.ndarray) -> tuple[float, float]:
    """Median of the (N,) median-scaling ratios and the std of ratios / median, the spread Monodepth2 prints."""
    median = np.median(ratios)
    return float(median), float(np.std(ratios / median))


def format_table(errors: dict[str, float]) -> str:
    """Two lines in Monodepth2's layout: the error names, then the values to 3 decimals, LaTeX-ready."""
    header = "  " + " | ".join(f"{name:>8}" for name in ERROR_NAMES)
    values = "  ".join(f"&{errors[name]: 8.3f}" for name in ERROR_NAMES)
    return f"{header}\n{values}  \\\\"


def export_gt_depths(kitti_root: Path, split_file: Path, out_path: Path,
                     progress: Callable[[int], None] | None = None) -> int:
    """Write ``gt_depths.npz`` for a test split as Monodepth2's ``export_gt_depth.py`` does for Eigen.

    One (H, W) float32 depth map in metres per split line, projected from its velodyne scan into the left
    colour camera (02) with the velodyne's forward distance as depth. Returns the number of maps.
    """
    kitti_root = Path(kitti_root)
    entries = read_split_file(split_file)
    if not entries:
        raise ValueError(f"split file {split_file} lists no frames")
    depths_m = []
    for entry in entries:
        scan = velodyne_path(kitti_root, entry)
        if not scan.is_file():
            raise FileNotFoundError(f"no velodyne scan for {entry.folder} frame {entry.frame_index}: {scan}")
        depths_m.append(generate_depth_map(kitti_root / entry.date, scan, camera=2, velodyne_depth=True))
        if progress:
            progress(1)
    save_gt_depths(out_path, depths_m)
    return len(depths_m)


def evaluation_scaling(mode: str) -> str:
    """Monodepth2's choice: 'median' per-image scaling for monocular models, 'metric' for stereo-supervised ones."""
    return "median" if mode == "M" else "metric"


def evaluate_checkpoint(checkpoint_path: Path | dict, kitti_root: Path, split: str = "eigen", scaling: str = "auto",
                        batch_size: int = 8, device: str = "auto") -> tuple[dict[str, float], np.ndarray]:
    """Monodepth2's errors of a transfer checkpoint on splits/<split>/test_files.txt against gt_depths.npz.

    `scaling` 'auto' follows `evaluation_scaling` of the checkpoint's mode; 'median' scales each image by
    median(gt) / median(pred); 'metric' uses depth as predicted (Monodepth2's --eval_stereo with a stereo
    factor of 0.54 m / 0.54 m = 1). Returns the mean errors and the median-scaling ratios (empty if metric).
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    state = read_transfer_checkpoint(checkpoint_path)
    split_dir = Path(kitti_root) / "splits" / split
    entries = read_split_file(split_dir / "test_files.txt")
    gt_depths_m = load_gt_depths(split_dir / "gt_depths.npz")
    disps = predict_disparities(state, entries, kitti_root=kitti_root, batch_size=batch_size, device=device)
    if scaling == "auto":
        scaling = evaluation_scaling(state["mode"])
    return evaluate_disparities(disps, gt_depths_m, median_scaling=scaling == "median")
