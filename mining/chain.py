"""One video through the whole chain: probe -> decode once -> crop -> scenes -> motion filter -> pack.

The samples go into the video's own tar (``<video id>.tar``) and its report into ``<video id>.json``,
both in a staging folder and both written atomically, the report last: a video whose report exists is
done, and a rerun skips it. Frames are decoded once and never held beyond a short window.
"""
import itertools
import json
import tarfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from formats.files import atomic_path, write_json_atomic
from mining.crop import FixedCrop, content_box
from mining.decode import DecodeConfig, decode_frames
from mining.motion import DUPLICATE, FLASH, OK, START, STATIC, MotionConfig, MotionFilter, PairVerdict
from mining.pack import PackConfig, RunPacker
from formats.video import UnusableVideo, probe
from mining.scenes import SceneCutter
from formats.shard_schema import SampleMeta, sample_dict, sample_key, write_sample

LETTERBOX_PROBE_FRAMES = 20
"""Frames looked at (and held) before the crop is fixed: 2 s at the default 10 fps."""


@dataclass(frozen=True)
class ChainConfig:
    decode: DecodeConfig = DecodeConfig()
    motion: MotionConfig = MotionConfig()
    pack: PackConfig = PackConfig()
    fixed_crop: FixedCrop = FixedCrop()
    scene_threshold: float = 27.0


@dataclass
class VideoReport:
    video_id: str
    source: str
    status: str
    """'ok' (samples written), 'empty' (usable but nothing moving), or 'failed'."""
    reason: str = ""
    frames_decoded: int = 0
    frames_kept: int = 0
    dropped: dict = field(default_factory=dict)
    """Frames in no sample, per reason: static, duplicate, flash, short_run (scene or run too short)."""
    samples: int = 0
    scenes: int = 0
    duration_s: float = 0.0
    crop_box: tuple | None = None
    sample_bytes: list = field(default_factory=list)
    """Payload bytes of each sample in stream order: the shard writer plans shard boundaries from it."""

    @classmethod
    def load(cls, path: Path) -> "VideoReport":
        return cls.from_json(Path(path).read_bytes())

    @classmethod
    def from_json(cls, data: bytes) -> "VideoReport":
        return cls(**json.loads(data))


def _drop_reasons(labels: list[str], kept: list[bool]) -> Counter:
    """Why each frame outside every sample was dropped: its own pair's verdict, else the next one's."""
    reasons = Counter()
    for i, (label, is_kept) in enumerate(zip(labels, kept)):
        if is_kept:
            continue
        candidates = [label, labels[i + 1] if i + 1 < len(labels) else OK]
        reasons[next((c for c in candidates if c in (STATIC, DUPLICATE, FLASH)), "short_run")] += 1
    return reasons


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
    extra: dict = field(default_factory=dict)
    """Copied into every sample's SampleMeta.extra (dataset, drive, known intrinsics)."""


def mine_video(path: Path, video_id: str, source_url: str, staging_dir: Path, config: ChainConfig = ChainConfig(),
               on_frame: Callable[[int], None] | None = None) -> VideoReport:
    """Mine one video into `staging_dir`/<video_id>.tar and .json; failures are reported, not raised."""

    def open_source(report: VideoReport) -> FrameSource:
        info = probe(path)
        report.duration_s = info.duration_s
        return FrameSource(decode_frames(path, info, config.decode), config.decode.fps,
                           (info.width_px, info.height_px))

    return mine_source(open_source, video_id, source_url, staging_dir, config, on_frame)


def mine_source(open_source: Callable[[VideoReport], FrameSource], video_id: str, source_url: str,
                staging_dir: Path, config: ChainConfig = ChainConfig(),
                on_frame: Callable[[int], None] | None = None) -> VideoReport:
    """The chain after decoding: crop -> scenes -> motion filter -> pack -> the video's staging tar.

    `open_source(report)` gives the frames (and may fill the report's duration); raising UnusableVideo
    there or while frames are read ends the video as 'failed' with that reason.
    """
    report = VideoReport(video_id=video_id, source=source_url, status="failed")
    staging_dir = Path(staging_dir)
    try:
        source = open_source(report)
        frames = iter(source.frames)
        head = list(itertools.islice(frames, LETTERBOX_PROBE_FRAMES))
        if not head:
            raise UnusableVideo("no frames could be decoded")
        height, width = head[0].shape[:2]
        try:
            x, y, w, h = report.crop_box = (content_box(head, config.fixed_crop) if source.detect_bars
                                            else (0, 0, width // 2 * 2, height // 2 * 2))
        except ValueError as error:
            raise UnusableVideo(str(error))
        cutter = SceneCutter(source.fps, config.scene_threshold)
        motion = MotionFilter(w, config.motion)
        packer = RunPacker(config.pack)
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
                report.sample_bytes.append(
                    write_sample(tar, sample_dict(sample_key(video_id, run.frame_indices[0]), run.jpegs, meta)))
                report.samples += 1

        with atomic_path(staging_dir / f"{video_id}.tar") as tmp, \
                tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
            for index, frame in enumerate(itertools.chain(head, frames)):
                cropped = frame[y:y + h, x:x + w]
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
        report.frames_kept = sum(kept)
        report.dropped = dict(sorted(_drop_reasons(labels, kept).items()))
        report.status = "ok" if report.samples else "empty"
        if not report.samples:
            report.reason = "no usable run of moving frames (all static, all cuts or too short)"
    except UnusableVideo as error:
        report.reason, report.samples, report.sample_bytes = str(error), 0, []
    write_json_atomic(staging_dir / f"{video_id}.json", asdict(report))
    if report.status == "failed":
        (staging_dir / f"{video_id}.tar").unlink(missing_ok=True)
    return report
