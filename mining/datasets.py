"""Image-sequence datasets on disk (KITTI raw, Cityscapes sequences) -> the same shards as mined video.

Each sequence (a KITTI drive seen by one colour camera, a Cityscapes 30-frame snippet) goes through the
mining chain after decoding (`mining.chain.mine_source`) with the known intrinsics of its camera in
every sample's ``extra``, normalised by the stored image size as Monodepth2 normalises them. Frames of
KITTI's Eigen test split, and every frame of its drives, are left out by default: pretraining on test
scenes would leak into the depth benchmark.
"""
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from mining.chain import ChainConfig, FrameSource, VideoReport, mine_source
from formats.camera import intrinsics_normalised
from formats.video import UnusableVideo
from formats.shard_schema import safe_video_id
from formats.kitti import read_calib_file, read_split_file

KITTI_FPS = 10.0
CITYSCAPES_FPS = 17.0
"""Cityscapes sequences were recorded at 17 Hz."""
_CITYSCAPES_NAME = re.compile(r"^(?P<city>[a-z_]+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$")


@dataclass
class Sequence:
    """One monocular stream of consecutive image files."""

    sequence_id: str
    images: list[Path]
    fps: float
    intrinsics_px: np.ndarray
    """(3, 3) K at the original image size."""
    crop_bottom_fraction: float = 0.0
    extra: dict = field(default_factory=dict)


def kitti_sequences(root: Path, exclude_split: Path | None, only_split: Path | None = None
                    ) -> tuple[list[Sequence], dict]:
    """Every drive x camera (image_02, image_03) under a KITTI raw root, minus excluded drives.

    Returns the sequences and a note of what was excluded and why.
    """
    root = Path(root)
    drives = sorted(p for p in root.glob("*/*_drive_*_sync") if p.is_dir())
    if not drives:
        raise FileNotFoundError(f"no KITTI raw drives (<date>/<date>_drive_<NNNN>_sync) under {root}")
    excluded = {e.folder for e in read_split_file(exclude_split)} if exclude_split else set()
    wanted = {e.folder for e in read_split_file(only_split)} if only_split else None
    sequences, skipped = [], []
    for drive in drives:
        folder = f"{drive.parent.name}/{drive.name}"
        if folder in excluded or (wanted is not None and folder not in wanted):
            skipped.append(folder)
            continue
        calib_path = drive.parent / "calib_cam_to_cam.txt"
        if not calib_path.is_file():
            raise FileNotFoundError(f"missing {calib_path} (KITTI calibration of {drive.parent.name})")
        calib = read_calib_file(calib_path)
        for camera in (2, 3):
            images = sorted(p for p in (drive / f"image_0{camera}" / "data").glob("*") if p.suffix in (".png", ".jpg"))
            if len(images) < 2:
                continue
            projection = calib[f"P_rect_0{camera}"].reshape(3, 4)
            sequences.append(Sequence(
                sequence_id=safe_video_id(f"kitti-{drive.name}-{camera:02d}"), images=images, fps=KITTI_FPS,
                intrinsics_px=projection[:, :3], extra={"dataset": "kitti", "drive": folder, "camera": camera}))
    return sequences, {"excluded_drives": skipped}


def cityscapes_sequences(root: Path, crop_bottom_fraction: float = 0.25) -> tuple[list[Sequence], dict]:
    """Every snippet of ``leftImg8bit_sequence/{train,val,test}/<city>/`` as one sequence.

    Intrinsics come from ``camera/<split>/<city>/<city>_<seq>_<frame>_camera.json`` when present, else
    Cityscapes' typical camera (fx = fy = 2262.5 px, principal point 1096.98, 513.14 at 2048x1024).
    """
    base = Path(root) / "leftImg8bit_sequence"
    if not base.is_dir():
        raise FileNotFoundError(f"no leftImg8bit_sequence/ folder under {root}")
    snippets: dict[tuple[str, str, str], list[tuple[int, Path]]] = {}
    for path in sorted(base.glob("*/*/*_leftImg8bit.png")):
        match = _CITYSCAPES_NAME.match(path.name)
        if match:
            key = (path.parent.parent.name, match["city"], match["seq"])
            snippets.setdefault(key, []).append((int(match["frame"]), path))
    if not snippets:
        raise FileNotFoundError(f"no <city>_<seq>_<frame>_leftImg8bit.png images under {base}")
    sequences = []
    for (split, city, seq), frames in sorted(snippets.items()):
        frames.sort()
        runs, current = [], [frames[0]]
        for previous, item in zip(frames, frames[1:]):
            if item[0] != previous[0] + 1:
                runs.append(current)
                current = []
            current.append(item)
        runs.append(current)
        for run in runs:
            if len(run) < 2:
                continue
            first = run[0][0]
            sequences.append(Sequence(
                sequence_id=safe_video_id(f"cityscapes-{split}-{city}-{seq}-{first:06d}"),
                images=[p for _, p in run], fps=CITYSCAPES_FPS,
                intrinsics_px=_cityscapes_intrinsics(Path(root), split, city, seq, first),
                crop_bottom_fraction=crop_bottom_fraction,
                extra={"dataset": "cityscapes", "split": split, "city": city, "sequence": seq}))
    return sequences, {}


def _cityscapes_intrinsics(root: Path, split: str, city: str, seq: str, frame: int) -> np.ndarray:
    import json

    path = root / "camera" / split / city / f"{city}_{seq}_{frame:06d}_camera.json"
    if path.is_file():
        k = json.loads(path.read_text())["intrinsic"]
        fx, fy, cx, cy = k["fx"], k["fy"], k["u0"], k["v0"]
    else:
        fx, fy, cx, cy = 2262.52, 2265.30, 1096.98, 513.14
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _frames(sequence: Sequence, width_px: int, report: VideoReport) -> tuple[Iterator[np.ndarray], dict]:
    """Frames resized to the working width (bottom crop first), and the normalised intrinsics they have."""
    first = cv2.imread(str(sequence.images[0]), cv2.IMREAD_COLOR)
    if first is None:
        raise UnusableVideo(f"cannot read image {sequence.images[0]}")
    height, width = first.shape[:2]
    kept_rows = height - int(round(height * sequence.crop_bottom_fraction))
    out_height = int(round(kept_rows * width_px / width / 2)) * 2
    normalised = intrinsics_normalised(sequence.intrinsics_px, width, kept_rows).tolist()

    def generate():
        for path in sequence.images:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None or image.shape[:2] != (height, width):
                raise UnusableVideo(f"unreadable or differently sized image {path}")
            image = cv2.resize(image[:kept_rows], (width_px, out_height), interpolation=cv2.INTER_AREA)
            yield image[..., ::-1]

    report.duration_s = len(sequence.images) / sequence.fps
    return generate(), {"intrinsics_normalised": normalised, "original_size": (width, height)}


def import_sequence(sequence: Sequence, staging_dir: Path, config: ChainConfig, filter_motion: bool,
                    on_frame: Callable[[int], None] | None = None) -> VideoReport:
    """One sequence through the mining chain into the staging folder (skipped by the caller when done)."""

    def open_source(report: VideoReport) -> FrameSource:
        frames, facts = _frames(sequence, config.decode.width_px, report)
        return FrameSource(frames, sequence.fps, facts["original_size"], detect_bars=False,
                           filter_motion=filter_motion, find_copies=False,
                           extra={**sequence.extra, "intrinsics_normalised": facts["intrinsics_normalised"]})

    return mine_source(open_source, sequence.sequence_id, sequence.images[0].parent.resolve().as_uri(), staging_dir,
                       config, on_frame)
