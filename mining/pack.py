"""Stage 7, pack: runs of consecutive usable frames -> samples of `frames_per_sample` frames.

A run is broken by every pair the motion filter rejects and by every cut, so a sample never spans a
cut or a dropped stretch. Windows start every `stride` frames of a run; the default stride of
n - 1 makes neighbouring samples share one frame, so every usable consecutive pair is stored exactly once.
Each frame is JPEG-encoded at most once, even when two samples hold it.
"""
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from formats.shard_schema import encode_jpeg
from mining.motion import OK, PairVerdict


@dataclass(frozen=True)
class PackConfig:
    frames_per_sample: int = 3
    stride: int | None = None
    """Frames between the starts of neighbouring samples of a run; None means frames_per_sample - 1."""
    jpeg_quality: int = 92

    def __post_init__(self):
        if self.frames_per_sample < 2:
            raise ValueError("a sample needs at least 2 frames")
        if self.stride is not None and self.stride < 1:
            raise ValueError("stride must be at least 1")

    @property
    def step(self) -> int:
        return self.stride or self.frames_per_sample - 1


@dataclass
class PackedRun:
    """One sample's frames: indices at the output rate, JPEG bytes, and the n - 1 pair motions."""

    frame_indices: list[int]
    jpegs: list[bytes]
    motion_px: list[float]
    scene_index: int


class RunPacker:
    """Push verdicts in frame order; get the samples completed by each. Holds at most n frames."""

    def __init__(self, config: PackConfig = PackConfig()):
        self.config = config
        self.window: deque = deque(maxlen=config.frames_per_sample)
        self.run_length = 0
        self.scene_index = -1

    def push(self, verdict: PairVerdict) -> list[PackedRun]:
        """Take the next frame (already cropped) and its verdict; return the sample it completes, if any."""
        if verdict.label in ("cut", "start"):
            self.scene_index += 1
        if verdict.label != OK:
            self.window.clear()
            self.run_length = 0
        # Frames are encoded only when a sample takes them (static stretches never are), and only once.
        self.window.append([verdict.index, verdict.frame, verdict.motion_px, None])
        self.run_length += 1
        n = self.config.frames_per_sample
        if self.run_length < n or (self.run_length - n) % self.config.step:
            return []
        for entry in self.window:
            if entry[3] is None:
                entry[3] = encode_jpeg(np.ascontiguousarray(entry[1]), self.config.jpeg_quality)
        return [PackedRun(frame_indices=[e[0] for e in self.window], jpegs=[e[3] for e in self.window],
                          motion_px=[e[2] for e in list(self.window)[1:]], scene_index=self.scene_index)]
