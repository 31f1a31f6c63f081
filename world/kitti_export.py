"""The world written out in KITTI raw's layout, so code written for real KITTI runs on it unchanged.

Per drive: ``<date>/<date>_drive_<NNNN>_sync/image_02|image_03/data/%010d.png`` (left and right colour
cameras, 0.54 m apart), ``velodyne_points/data/%010d.bin`` (float32 x, y, z, reflectance) and
``timestamps.txt``; per date ``calib_cam_to_cam.txt`` and ``calib_velo_to_cam.txt``. Beside them,
Monodepth2-format split files and ``splits/eigen/gt_depths.npz`` built from the scans the way
Monodepth2's ``export_gt_depth.py`` builds it, and ``world_truth.json`` naming the seed and time of
every frame, so anyone can render the exact dense depth again.

Conventions of the synthetic sensors:
- The velodyne sits `VELODYNE_ABOVE_CAMERA_M` above the left camera, axes x forward, y left, z up, with no
  forward offset, so a point's velodyne x equals its camera z-depth.
- Its points are pixel centres of image_02 on `SCAN_LINES` rows (the laser rings), at their exact rendered
  depth, plus a ring behind the car that a projection must discard (x < 0).
- ``P_rect`` maps to 1-based pixel coordinates as KITTI's MATLAB devkit reads them; Monodepth2's
  ``round(u) - 1`` then lands every point on the 0-based pixel it was taken from.
"""
import contextlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from formats.files import atomic_path, write_bytes_atomic, write_json_atomic
from formats.camera import KITTI_STEREO_BASELINE_M
from formats.kitti import SplitEntry, generate_depth_map, save_gt_depths, write_split_file
from world.camera import PinholeCamera, offset_pose
from world.drive import Drive, DriveSpec
from world.render import Renderer

DATE = "2011_09_26"
"""KITTI's own first recording day; any date works, this one reads familiar."""
FRAME_RATE_HZ = 10.0
VELODYNE_ABOVE_CAMERA_M = 0.08
SCAN_LINES = 64
MAX_RANGE_M = 120.0
VELO_TO_CAM_ROTATION = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
"""Camera coordinates of the velodyne axes: forward -> z, left -> -x, up -> -y."""


@dataclass(frozen=True)
class KittiExportSpec:
    """Drives `first_seed`, `first_seed` + 1, ...: the first `train_drives` feed eigen_zhou train/val,
    the rest the Eigen-style test split (every `test_stride`-th frame)."""

    out_dir: Path
    train_drives: int = 3
    test_drives: int = 1
    frames_per_drive: int = 30
    width_px: int = 1242
    height_px: int = 375
    first_seed: int = 100
    val_fraction: float = 0.1
    test_stride: int = 3
    stop_in_first_drive: bool = True
    """A few seconds standing still in drive 0, as KITTI drives have."""
    test_kind: str = "street"
    """Kind of the test drives (`world.drive.DRIVE_KINDS`): "highway" makes a test of generalisation to
    scenes never seen in training, as the seed tests KITTI-trained nets on Cityscapes."""

    def __post_init__(self):
        PinholeCamera.kitti_like(self.width_px, self.height_px)
        if self.train_drives < 1 or self.test_drives < 1:
            raise ValueError("need at least one train drive and one test drive")
        if self.frames_per_drive < 3:
            raise ValueError("a drive needs at least 3 frames (Monodepth2 uses frames -1, 0, +1)")
        if self.test_kind not in ("street", "highway"):
            raise ValueError(f"test drives are street or highway drives, got {self.test_kind!r}")


def drive_folder(index: int) -> str:
    return f"{DATE}/{DATE}_drive_{index + 1:04d}_sync"


def calib_cam_to_cam_text(camera: PinholeCamera) -> str:
    """Rectified calibration of cameras 00..03; 02 is the left colour camera, 03 sits 0.54 m right of it."""
    K = camera.K.copy()
    K[0, 2] += 1.0
    K[1, 2] += 1.0
    lines = ["calib_time: 01-Jan-2011 00:00:00", "corner_dist: 9.950000e-02"]
    numbers = lambda a: " ".join(f"{x:.12e}" for x in np.ravel(a))
    for cam in range(4):
        projection = np.concatenate([K, np.zeros((3, 1))], axis=1)
        if cam in (1, 3):
            projection[0, 3] = -K[0, 0] * KITTI_STEREO_BASELINE_M
        lines += [f"S_rect_0{cam}: {numbers([camera.width_px, camera.height_px])}",
                  f"R_rect_0{cam}: {numbers(np.eye(3))}",
                  f"P_rect_0{cam}: {numbers(projection)}"]
    return "\n".join(lines) + "\n"


def calib_velo_to_cam_text() -> str:
    translation = np.array([0.0, -VELODYNE_ABOVE_CAMERA_M, 0.0])
    numbers = lambda a: " ".join(f"{x:.12e}" for x in np.ravel(a))
    return (f"calib_time: 01-Jan-2011 00:00:00\nR: {numbers(VELO_TO_CAM_ROTATION)}\nT: {numbers(translation)}\n"
            "delta_f: 0.000000e+00 0.000000e+00\ndelta_c: 0.000000e+00 0.000000e+00\n")


def velodyne_scan(depth_m: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """(N, 4) float32 velodyne points from a rendered depth map: `SCAN_LINES` rows of image pixels, plus a
    ring of points behind the car."""
    rows = np.unique(np.linspace(camera.height_px * 0.3, camera.height_px - 1, SCAN_LINES).astype(np.int64))
    v, u = np.meshgrid(rows, np.arange(camera.width_px), indexing="ij")
    z = depth_m[v, u].astype(np.float64)
    keep = np.isfinite(z) & (z < MAX_RANGE_M)
    u, v, z = u[keep], v[keep], z[keep]
    points_cam = np.stack([(u - camera.cx_px) / camera.fx_px * z, (v - camera.cy_px) / camera.fy_px * z, z], 1)
    translation = np.array([0.0, -VELODYNE_ABOVE_CAMERA_M, 0.0])
    points_velo = (points_cam - translation) @ VELO_TO_CAM_ROTATION
    angle = np.linspace(0.6 * np.pi, 1.4 * np.pi, 360)
    behind = np.stack([8.0 * np.cos(angle), 8.0 * np.sin(angle), np.full_like(angle, -1.0)], 1)
    points = np.concatenate([points_velo, behind])
    return np.concatenate([points, np.ones((len(points), 1))], axis=1).astype(np.float32)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok, "OpenCV could not encode a PNG"
    write_bytes_atomic(path, encoded.tobytes())


def _timestamps_text(frame_count: int) -> str:
    return "".join(f"2011-09-26 13:{i // 600:02d}:{(i % 600) / FRAME_RATE_HZ:012.9f}\n" for i in range(frame_count))


def _render_drive(spec: KittiExportSpec, d: int) -> dict:
    """Write drive `d` (images, scans, timestamps), skipping frames already complete; returns its truth."""
    root = Path(spec.out_dir)
    camera = PinholeCamera.kitti_like(spec.width_px, spec.height_px)
    duration_s = spec.frames_per_drive / FRAME_RATE_HZ
    seed = spec.first_seed + d
    stops = ((0.3 * duration_s, 0.2 * duration_s),) if d == 0 and spec.stop_in_first_drive else ()
    kind = "street" if d < spec.train_drives else spec.test_kind
    drive = Drive(DriveSpec(seed=seed, duration_s=duration_s + (stops[0][1] if stops else 0.0), stops=stops,
                            kind=kind))
    folder = drive_folder(d)
    drive_dir = root / folder
    times_s = np.arange(spec.frames_per_drive) / FRAME_RATE_HZ
    poses, exposures = drive.poses(times_s), drive.exposure(times_s)
    left, right = Renderer(drive.scene, camera), Renderer(drive.scene, camera)
    for side in ("image_02", "image_03", "velodyne_points"):
        write_bytes_atomic(drive_dir / side / "timestamps.txt", _timestamps_text(spec.frames_per_drive).encode())
    for i in range(spec.frames_per_drive):
        name = f"{i:010d}"
        paths = [drive_dir / "image_02" / "data" / f"{name}.png", drive_dir / "image_03" / "data" / f"{name}.png",
                 drive_dir / "velodyne_points" / "data" / f"{name}.bin"]
        if not all(p.is_file() for p in paths):
            frame = left.render(poses[i], float(exposures[i]))
            right_rgb = right.render(offset_pose(poses[i], KITTI_STEREO_BASELINE_M), float(exposures[i])).rgb
            _write_png(paths[0], frame.rgb)
            _write_png(paths[1], right_rgb)
            write_bytes_atomic(paths[2], velodyne_scan(frame.depth_m, camera).tobytes())
    return {"folder": folder, "seed": seed, "duration_s": drive.spec.duration_s, "stops": list(stops),
            "times_s": times_s.tolist(), "poses": poses.tolist(), "split": "train" if d < spec.train_drives else "test",
            "kind": kind}


def export_kitti(spec: KittiExportSpec, progress: Callable[[int], None] | None = None, workers: int = 1) -> dict:
    """Render every drive (`workers` processes render drives side by side) and write the whole tree;
    returns the truth also written to ``world_truth.json``. `progress` is called with each drive's frame
    count as it completes. Frames already complete from an earlier run are not rendered again (a rerun
    resumes); the tree is the same whatever `workers`.
    """
    root = Path(spec.out_dir)
    camera = PinholeCamera.kitti_like(spec.width_px, spec.height_px)
    date_dir = root / DATE
    date_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(date_dir / "calib_cam_to_cam.txt", calib_cam_to_cam_text(camera).encode())
    write_bytes_atomic(date_dir / "calib_velo_to_cam.txt", calib_velo_to_cam_text().encode())
    truth = {"spec": spec, "frame_rate_hz": FRAME_RATE_HZ, "intrinsics_px": camera.K.tolist(), "drives": []}
    drives = range(spec.train_drives + spec.test_drives)
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")))
            rendered = pool.map(_render_drive, [spec] * len(drives), drives)
        else:
            rendered = (_render_drive(spec, d) for d in drives)
        for drive_truth in rendered:
            truth["drives"].append(drive_truth)
            if progress:
                progress(spec.frames_per_drive)
    train, val, test = [], [], []
    rng = np.random.default_rng(spec.first_seed)
    usable = range(1, spec.frames_per_drive - 1)
    for d, drive_truth in enumerate(truth["drives"]):
        folder, poses = drive_truth["folder"], np.array(drive_truth["poses"])
        if d < spec.train_drives:
            moving = [i for i in usable if not np.array_equal(poses[i - 1], poses[i])
                      and not np.array_equal(poses[i], poses[i + 1])]
            for i in moving:  # Zhou et al. drop static frames from training, so do we
                for side in ("l", "r"):
                    (val if rng.random() < spec.val_fraction else train).append(SplitEntry(folder, i, side))
        else:
            test += [SplitEntry(folder, i, "l") for i in usable[::spec.test_stride]]
    if not val:
        val.append(train.pop())
    for name, entries, pad in (("eigen_zhou/train_files.txt", train, False), ("eigen_zhou/val_files.txt", val, False),
                               ("eigen/test_files.txt", test, True)):
        path = root / "splits" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            write_split_file(tmp, entries, zero_pad_frames=pad)
    gt = [generate_depth_map(root / e.date, root / e.folder / "velodyne_points" / "data" / f"{e.frame_index:010d}.bin",
                             camera=2, velodyne_depth=True) for e in test]
    save_gt_depths(root / "splits" / "eigen" / "gt_depths.npz", gt)
    truth["split_sizes"] = {"train": len(train), "val": len(val), "test": len(test)}
    write_json_atomic(root / "world_truth.json", truth)
    return truth
