"""One video through the whole chain: probe -> decode once -> crop -> static regions -> scenes -> motion
filter -> pack, fingerprinting the stored frames on the way (re-uploads are found when shards are planned).

The samples go into the video's own tar (``<video id>.tar``), a picture of its first frame with what was
cropped into ``<video id>.preview.jpg`` and its report into ``<video id>.json``, all in a staging folder
and all written atomically, the report last: a video whose report exists is done, and a rerun skips it.
Frames are decoded once and held only until the crop and the mask are fixed: the first `HEAD_FRAMES` of a
drive, longer when it starts parked (until the camera has moved enough, at most `MAX_HELD_BYTES`).
"""
import itertools
import json
import tarfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from formats.files import atomic_path, write_bytes_atomic, write_json_atomic
from formats.shard_schema import SampleMeta, encode_jpeg, encode_mask, sample_dict, sample_key, write_sample
from formats.video import UnusableVideo, probe
from mining.crop import FixedCrop, content_box
from mining.decode import DecodeConfig, DecodeOutcome, decode_frames
from mining.fingerprint import FingerprintBuilder
from mining.motion import CUT, DUPLICATE, FLASH, OK, START, STATIC, MotionConfig, MotionFilter, PairVerdict
from mining.pack import PackConfig, RunPacker
from mining.scenes import SceneCutter
from mining.static_regions import HEAD_FRAMES, StaticRegionConfig, StaticRegionFinder

LETTERBOX_PROBE_FRAMES = 20
"""Frames whose mean brightness finds black bars: 2 s at the default 10 fps."""
PREVIEW_WIDTH_PX = 320
MAX_HELD_BYTES = 384 * 2**20
"""Decoded frames held while the static regions are unknown (a video that starts parked), beyond the first
`HEAD_FRAMES`: 55 s of frames at 640x360 and 10 frames/s, 14 s at 1280x720. Past it the crop and mask are
fixed from what was seen."""


@dataclass(frozen=True)
class ChainConfig:
    decode: DecodeConfig = DecodeConfig()
    motion: MotionConfig = MotionConfig()
    pack: PackConfig = PackConfig()
    fixed_crop: FixedCrop = FixedCrop()
    scene_threshold: float = 27.0
    static_regions: StaticRegionConfig = StaticRegionConfig()


@dataclass
class VideoReport:
    video_id: str
    source: str
    status: str
    """'ok' (samples written), 'partial' (samples from the part of a damaged file that decoded cleanly),
    'empty' (usable but nothing moving), or 'failed'."""
    reason: str = ""
    frames_decoded: int = 0
    frames_expected: int = 0
    """Frames the duration promises at the output rate (0 when unknown, e.g. image sequences)."""
    frames_kept: int = 0
    dropped: dict = field(default_factory=dict)
    """Frames in no sample, per reason: static, duplicate, flash, short_run (scene or run too short)."""
    samples: int = 0
    scenes: int = 0
    duration_s: float = 0.0
    working_size: tuple | None = None
    """(width, height) of the decoded frames."""
    crop_box: tuple | None = None
    """(x, y, w, h) of the stored frames in the working-size frame: bars, fixed crop and edge bands removed."""
    static_regions: list = field(default_factory=list)
    """Overlays found (`mining.static_regions`), boxes in working-size pixels; 'inside' ones are masked."""
    timeline: list = field(default_factory=list)
    """[first frame, end frame, label] runs over the decoded frames: 'kept' or why frames were dropped."""
    fps_out: float = 0.0
    fingerprint: dict | None = None
    """`mining.fingerprint.Fingerprint` of the stored frames, to find re-uploads of the same drive."""
    sample_bytes: list = field(default_factory=list)
    """Payload bytes of each sample in stream order: the shard writer plans shard boundaries from it."""

    @classmethod
    def load(cls, path: Path) -> "VideoReport":
        return cls.from_json(Path(path).read_bytes())

    @classmethod
    def from_json(cls, data: bytes) -> "VideoReport":
        return cls(**json.loads(data))


def _frame_labels(labels: list[str], kept: list[bool]) -> list[str]:
    """'kept' for each frame in a sample, else why it was dropped: its own pair's verdict, else the next one's."""
    reasons = []
    for i, (label, is_kept) in enumerate(zip(labels, kept)):
        candidates = [label, labels[i + 1] if i + 1 < len(labels) else OK]
        reasons.append("kept" if is_kept else next((c for c in candidates if c in (STATIC, DUPLICATE, FLASH, CUT)),
                                                    "short_run"))
    return reasons


def _runs(values: list[str]) -> list[list]:
    """[first, end, value] for each run of equal values."""
    runs = []
    for i, value in enumerate(values):
        if runs and runs[-1][2] == value:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1, value])
    return runs


@dataclass
class FrameSource:
    """Frames of one video or image sequence at the working size, and what its samples should say."""

    frames: Iterator[np.ndarray]
    """(H, W, 3) uint8 RGB frames in time order, all the same size."""
    fps: float
    original_size: tuple[int, int]
    detect_bars: bool = True
    """Look for letterbox bars (videos); image datasets are cropped by their importer instead."""
    filter_motion: bool = True
    """Run scene cuts and the motion filter; off, every consecutive pair is used."""
    find_copies: bool = True
    """Fingerprint the frames so a re-upload of the same drive is found (videos). Datasets hold distinct
    recordings by construction, and the two cameras of one KITTI drive look alike to a fingerprint."""
    extra: dict = field(default_factory=dict)
    """Copied into every sample's SampleMeta.extra (dataset, drive, known intrinsics)."""
    decode: DecodeOutcome | None = None
    """How decoding went (videos): damage stops it early and makes the video 'partial'."""


def mine_video(path: Path, video_id: str, source_url: str, staging_dir: Path, config: ChainConfig = ChainConfig(),
               on_frame: Callable[[int], None] | None = None) -> VideoReport:
    """Mine one video into `staging_dir`/<video_id>.tar and .json; failures are reported, not raised."""

    def open_source(report: VideoReport) -> FrameSource:
        info = probe(path)
        report.duration_s = info.duration_s
        outcome = DecodeOutcome()
        return FrameSource(decode_frames(path, info, config.decode, outcome), config.decode.fps,
                           (info.width_px, info.height_px), decode=outcome)

    return mine_source(open_source, video_id, source_url, staging_dir, config, on_frame)


def _crop_and_mask(frames: Iterator[np.ndarray], source: FrameSource, config: ChainConfig, report: VideoReport
                   ) -> tuple[list[np.ndarray], tuple[int, int, int, int], np.ndarray | None]:
    """Read `frames` (at least one) until the crop is fixed: (the frames read, to be mined first; the stored
    frames' box in the working frame, bars, the fixed crop and overlay bands removed; the (h, w) bool overlay
    mask inside it, None where nothing is masked). Fills the report's working size, crop and regions.

    Frames are read until `StaticRegionFinder` is done (the camera seen moving long enough), the video
    ends, or `MAX_HELD_BYTES` are held (at least `HEAD_FRAMES` frames)."""
    held = list(itertools.islice(frames, LETTERBOX_PROBE_FRAMES))
    height, width = held[0].shape[:2]
    report.working_size = (width, height)
    if not source.detect_bars:
        report.crop_box = (0, 0, width // 2 * 2, height // 2 * 2)
        return held, report.crop_box, None
    try:
        x, y, w, h = content_box(held, config.fixed_crop)
    except ValueError as error:
        raise UnusableVideo(str(error))
    finder = StaticRegionFinder(config.static_regions)
    for frame in held:
        finder.push(frame[y:y + h, x:x + w])
    max_held = max(HEAD_FRAMES, MAX_HELD_BYTES // held[0].nbytes)
    while not finder.done and len(held) < max_held:
        frame = next(frames, None)
        if frame is None:
            break
        held.append(frame)
        finder.push(frame[y:y + h, x:x + w])
    found = finder.result()
    top, bottom, left, right = found.crop
    report.static_regions = [{**r, "box": [r["box"][0] + x, r["box"][1] + y, *r["box"][2:]]} for r in found.regions]
    mask = found.mask
    x, y = x + left, y + top
    w, h = (w - left - right) // 2 * 2, (h - top - bottom) // 2 * 2
    report.crop_box = (x, y, w, h)
    return held, report.crop_box, mask[:h, :w] if mask is not None else None


def _release(held: list[np.ndarray]) -> Iterator[np.ndarray]:
    """The held frames in order, each dropped from `held` as it is yielded: their memory goes as they are mined."""
    held.reverse()
    while held:
        yield held.pop()


def _write_preview(path: Path, frame: np.ndarray) -> None:
    """The first decoded frame, uncropped, `PREVIEW_WIDTH_PX` wide: the report page draws the crop on it."""
    height, width = frame.shape[:2]
    size = (PREVIEW_WIDTH_PX, max(2, round(height * PREVIEW_WIDTH_PX / width)))
    write_bytes_atomic(path, encode_jpeg(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), 85))


def mine_source(open_source: Callable[[VideoReport], FrameSource], video_id: str, source_url: str,
                staging_dir: Path, config: ChainConfig = ChainConfig(),
                on_frame: Callable[[int], None] | None = None) -> VideoReport:
    """The chain after decoding: crop -> static regions -> scenes -> motion filter -> pack -> the video's
    staging tar.

    `open_source(report)` gives the frames (and may fill the report's duration); raising UnusableVideo
    there or while frames are read ends the video as 'failed' with that reason. A decode that stops early
    on damage keeps what decoded cleanly: 'partial' when that gave samples.
    """
    report = VideoReport(video_id=video_id, source=source_url, status="failed")
    staging_dir = Path(staging_dir)
    try:
        source = open_source(report)
        report.fps_out = source.fps
        frames = iter(source.frames)
        first = next(frames, None)
        if first is None:
            raise UnusableVideo("no frames could be decoded")
        _write_preview(staging_dir / f"{video_id}.preview.jpg", first)
        head, (x, y, w, h), overlay = _crop_and_mask(itertools.chain([first], frames), source, config, report)
        width, height = report.working_size
        mask_png = encode_mask(~overlay) if overlay is not None else None
        cutter = SceneCutter(source.fps, config.scene_threshold)
        motion = MotionFilter(w, config.motion, overlay)
        packer = RunPacker(config.pack)
        fingerprint = FingerprintBuilder() if source.find_copies else None
        labels, kept = [], []

        def pack(verdict, tar):
            if verdict is None:
                return
            labels.append(verdict.label)
            kept.append(False)
            for run in packer.push(verdict):
                for i in run.frame_indices:
                    kept[i] = True
                meta = SampleMeta(video_id=video_id, source_url=source_url, frame_indices=run.frame_indices,
                                  timestamps_s=[round(i / source.fps, 6) for i in run.frame_indices],
                                  fps_out=source.fps, scene_index=run.scene_index,
                                  motion_px=[round(m, 3) for m in run.motion_px], crop_box=(x, y, w, h),
                                  working_size=(width, height), original_size=source.original_size,
                                  extra=source.extra)
                report.sample_bytes.append(write_sample(tar, sample_dict(
                    sample_key(video_id, run.frame_indices[0]), run.jpegs, meta, mask_png=mask_png)))
                report.samples += 1

        with atomic_path(staging_dir / f"{video_id}.tar") as tmp, \
                tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
            for index, frame in enumerate(itertools.chain(_release(head), frames)):
                cropped = frame[y:y + h, x:x + w]
                if fingerprint:
                    fingerprint.push(cropped)
                if source.filter_motion:
                    pack(motion.push(index, cropped, cutter.is_cut(index, cropped)), tar)
                else:
                    pack(PairVerdict(index, cropped, START if index == 0 else OK, 0.0), tar)
                report.frames_decoded += 1
                if on_frame:
                    on_frame(1)
            pack(motion.flush(), tar)
        if not report.duration_s:
            report.duration_s = report.frames_decoded / source.fps
        report.scenes = packer.scene_index + 1
        report.fingerprint = asdict(fingerprint.result()) if fingerprint else None
        report.frames_kept = sum(kept)
        frame_labels = _frame_labels(labels, kept)
        report.timeline = _runs(frame_labels)
        report.dropped = dict(sorted(Counter(label for label in frame_labels if label != "kept").items()))
        damage = source.decode.damage if source.decode else ""
        if source.decode:
            report.frames_expected = source.decode.frames_expected
        if damage and not report.samples:
            raise UnusableVideo(damage)
        report.status = "partial" if damage else "ok" if report.samples else "empty"
        if damage:
            report.reason = f"{damage}; kept the {report.frames_decoded} frames before it"
        elif not report.samples:
            report.reason = "no usable run of moving frames (all static, all cuts or too short)"
    except UnusableVideo as error:
        report.reason, report.samples, report.sample_bytes = str(error), 0, []
    write_json_atomic(staging_dir / f"{video_id}.json", asdict(report))
    if report.status == "failed":
        (staging_dir / f"{video_id}.tar").unlink(missing_ok=True)
    return report
