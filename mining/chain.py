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
from typing import Callable

from geopt_io import atomic_path, write_json_atomic
from mining.crop import FixedCrop, content_box
from mining.decode import DecodeConfig, decode_frames, working_size
from mining.motion import CUT, DUPLICATE, FLASH, OK, STATIC, MotionConfig, MotionFilter
from mining.pack import PackConfig, RunPacker
from mining.probe import UnusableVideo, probe
from mining.scenes import SceneCutter
from mining.schema import SampleMeta, sample_dict, sample_key, write_sample

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

    @classmethod
    def load(cls, path: Path) -> "VideoReport":
        return cls(**json.loads(Path(path).read_text()))


def _drop_reasons(labels: list[str], kept: list[bool]) -> Counter:
    """Why each frame outside every sample was dropped: its own pair's verdict, else the next one's."""
    reasons = Counter()
    for i, (label, is_kept) in enumerate(zip(labels, kept)):
        if is_kept:
            continue
        candidates = [label, labels[i + 1] if i + 1 < len(labels) else OK]
        reasons[next((c for c in candidates if c in (STATIC, DUPLICATE, FLASH)), "short_run")] += 1
    return reasons


def mine_video(path: Path, video_id: str, source_url: str, staging_dir: Path, config: ChainConfig = ChainConfig(),
               on_frame: Callable[[int], None] | None = None) -> VideoReport:
    """Mine one video into `staging_dir`/<video_id>.tar and .json; failures are reported, not raised."""
    report = VideoReport(video_id=video_id, source=source_url, status="failed")
    try:
        info = probe(path)
        report.duration_s = info.duration_s
        width, height = working_size(info, config.decode)
        frames = decode_frames(path, info, config.decode)
        head = list(itertools.islice(frames, LETTERBOX_PROBE_FRAMES))
        if not head:
            raise UnusableVideo("no frames could be decoded")
        try:
            x, y, w, h = report.crop_box = content_box(head, config.fixed_crop)
        except ValueError as error:
            raise UnusableVideo(str(error))
        cutter = SceneCutter(config.decode.fps, config.scene_threshold)
        motion = MotionFilter(w, config.motion)
        packer = RunPacker(config.pack)
        labels, kept = [], []
        fps = config.decode.fps

        def pack(verdict, tar):
            if verdict is None:
                return
            labels.append(verdict.label)
            kept.append(False)
            for run in packer.push(verdict):
                for i in run.frame_indices:
                    kept[i] = True
                meta = SampleMeta(video_id=video_id, source_url=source_url, frame_indices=run.frame_indices,
                                  timestamps_s=[round(i / fps, 6) for i in run.frame_indices], fps_out=fps,
                                  scene_index=run.scene_index, motion_px=[round(m, 3) for m in run.motion_px],
                                  crop_box=(x, y, w, h), working_size=(width, height),
                                  original_size=(info.width_px, info.height_px))
                write_sample(tar, sample_dict(sample_key(video_id, run.frame_indices[0]), run.jpegs, meta))
                report.samples += 1

        staging_dir = Path(staging_dir)
        with atomic_path(staging_dir / f"{video_id}.tar") as tmp, tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
            for index, frame in enumerate(itertools.chain(head, frames)):
                cropped = frame[y:y + h, x:x + w]
                pack(motion.push(index, cropped, cutter.is_cut(index, cropped)), tar)
                report.frames_decoded += 1
                if on_frame:
                    on_frame(1)
            pack(motion.flush(), tar)
        report.scenes = packer.scene_index + 1
        report.frames_kept = sum(kept)
        report.dropped = dict(sorted(_drop_reasons(labels, kept).items()))
        report.status = "ok" if report.samples else "empty"
        if not report.samples:
            report.reason = "no usable run of moving frames (all static, all cuts or too short)"
    except UnusableVideo as error:
        report.reason, report.samples = str(error), 0
    report_dict = asdict(report)
    write_json_atomic(Path(staging_dir) / f"{video_id}.json", report_dict)
    if report.status == "failed":
        (Path(staging_dir) / f"{video_id}.tar").unlink(missing_ok=True)
    return report
