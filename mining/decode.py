"""Stages 2 and 3, probe and decode: what a video holds, then each video decoded once, at the working
size and a normalised frame rate (`formats.video` does the ffmpeg work).

Mining refuses videos narrower than the working width (upscaling adds nothing). A damaged or truncated
file keeps what decodes cleanly: decoding stops at the damage (ffmpeg fails, or reports errors and
delivers under 90 % of the frames the duration promises) and `DecodeOutcome.damage` says why, so the
chain can keep the frames before it ('partial').
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


@dataclass
class DecodeOutcome(DecodeReport):
    """`formats.video.DecodeReport` plus what mining makes of it."""

    frames_expected: int = 0
    """Frames the duration promises at the output rate."""
    damage: str = ""
    """Why decoding stopped early ('' when it did not); the frames before it were delivered."""


def working_size(info: VideoInfo, config: DecodeConfig) -> tuple[int, int]:
    """(width, height) the frames come out at; refuses videos narrower than the working width."""
    if info.width_px < config.width_px:
        raise UnusableVideo(f"smaller than the working size: {info.width_px}x{info.height_px} is narrower "
                            f"than {config.width_px} px (lower --width to mine it)")
    height = int(round(info.height_px * config.width_px / info.width_px / 2)) * 2
    return config.width_px, max(2, height)


def decode_frames(path: Path, info: VideoInfo, config: DecodeConfig,
                  outcome: DecodeOutcome | None = None) -> Iterator[np.ndarray]:
    """Yield (H, W, 3) uint8 RGB frames at `config.fps` and the working size, filling `outcome`.

    Raises UnusableVideo when not one frame decodes. Damage after some frames ends the stream quietly
    with `outcome.damage` set; minor codec complaints that cost few frames are tolerated.
    """
    outcome = outcome if outcome is not None else DecodeOutcome()
    outcome.frames_expected = int(info.duration_s * config.fps)
    try:
        yield from decode_video(path, info, config.fps, working_size(info, config), outcome)
    except UnusableVideo as error:
        if not outcome.frames:
            raise
        outcome.damage = f"damaged after {outcome.frames} of about {outcome.frames_expected} frames ({error})"
        return
    if outcome.messages and outcome.frames < 0.9 * outcome.frames_expected:
        outcome.damage = (f"truncated or damaged: decoded {outcome.frames} of about {outcome.frames_expected} "
                          f"frames ({outcome.messages[-1]})")
