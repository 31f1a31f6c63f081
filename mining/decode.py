"""Stages 2 and 3, probe and decode: what a video holds, then each video decoded once, at the working
size and a normalised frame rate (`formats.video` does the ffmpeg work).

Mining refuses videos narrower than the working width (upscaling adds nothing) and files that ffmpeg
reports damaged and that deliver under 90 % of the frames their duration promises (a truncated file).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from formats.video import DecodeReport, UnusableVideo, VideoInfo, decode_frames as decode_video


@dataclass(frozen=True)
class DecodeConfig:
    width_px: int = 640
    """Working width; height follows the aspect ratio (rounded to even)."""
    fps: float = 10.0
    """Output frame rate: frame i is the source at time i / fps."""


def working_size(info: VideoInfo, config: DecodeConfig) -> tuple[int, int]:
    """(width, height) the frames come out at; refuses videos narrower than the working width."""
    if info.width_px < config.width_px:
        raise UnusableVideo(f"smaller than the working size: {info.width_px}x{info.height_px} is narrower "
                            f"than {config.width_px} px (lower --width to mine it)")
    height = int(round(info.height_px * config.width_px / info.width_px / 2)) * 2
    return config.width_px, max(2, height)


def decode_frames(path: Path, info: VideoInfo, config: DecodeConfig) -> Iterator[np.ndarray]:
    """Yield (H, W, 3) uint8 RGB frames at `config.fps` and the working size.

    Raises UnusableVideo after the last good frame if ffmpeg fails, or reports errors and delivers under
    90 % of the frames the duration promises (a truncated file). Minor codec complaints are tolerated.
    """
    report = DecodeReport()
    yield from decode_video(path, info, config.fps, working_size(info, config), report)
    expected = int(info.duration_s * config.fps)
    if report.messages and report.frames < 0.9 * expected:
        raise UnusableVideo(f"truncated or damaged: decoded {report.frames} of about {expected} frames "
                            f"({report.messages[-1]})")
