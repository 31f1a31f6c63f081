"""Stage 3, decode: each video decoded once, at the working size and a normalised frame rate.

One ffmpeg process (ffmpeg-python) resamples time with the ``fps`` filter (which also evens out variable
frame rate), scales to the working width keeping the aspect, applies the file's rotation (ffmpeg's
autorotate) and pipes raw RGB frames; Python reads one frame at a time, so memory does not depend on
the video's length.
"""
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ffmpeg
import numpy as np

from mining.probe import UnusableVideo, VideoInfo


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
    """Yield (H, W, 3) uint8 RGB frames at `config.fps`.

    Raises UnusableVideo after the last good frame if ffmpeg fails, or reports errors and delivers under
    90 % of the frames the duration promises (a truncated file). Minor codec complaints are tolerated.
    """
    width, height = working_size(info, config)
    command = ffmpeg.compile(
        ffmpeg.input(str(path))
        .video.filter("fps", fps=config.fps)
        .filter("scale", width, height, flags="area")
        .output("pipe:", format="rawvideo", pix_fmt="rgb24")
        .global_args("-nostdin", "-loglevel", "error", "-threads", "1")
    )
    frame_bytes = width * height * 3
    # ffmpeg's messages go to a file, not a pipe: a damaged video can print more than a pipe holds.
    with tempfile.TemporaryFile() as messages, subprocess.Popen(command, stdout=subprocess.PIPE,
                                                                stderr=messages) as process:
        try:
            count = 0
            while True:
                data = process.stdout.read(frame_bytes)
                if len(data) < frame_bytes:
                    break
                count += 1
                yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
            returncode = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
        messages.seek(0)
        lines = messages.read().decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else "no message"
        if returncode != 0 or data:
            raise UnusableVideo(f"decoding failed: {last}")
        expected = int(info.duration_s * config.fps)
        if lines and count < 0.9 * expected:
            raise UnusableVideo(f"truncated or damaged: decoded {count} of about {expected} frames ({last})")
