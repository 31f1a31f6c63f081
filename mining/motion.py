"""Stage 6, motion filter: is the camera moving between two consecutive frames?

Each consecutive pair of frames of one scene is measured on small grey copies (`GREY_WIDTH_PX` wide):
median optical-flow magnitude by OpenCV's DIS (robust to a few moving cars and a burnt-in clock),
mean absolute difference, and mean brightness. A pair is usable unless it is

- ``duplicate``: (nearly) the same picture twice, e.g. a low-rate source repeated by rate conversion;
- ``static``: median flow below `min_motion_px` (working-size pixels): the camera stands still;
- ``flash``: one frame far brighter or darker than both neighbours, which agree with each other;
- ``cut``: the scene detector saw a cut and the flow cannot explain the change (see `cut_residual`).

Flashes need the next frame, so results come out one frame late; `flush` releases the last one.
"""
from dataclasses import dataclass

import cv2
import numpy as np

GREY_WIDTH_PX = 160
OK, CUT, STATIC, DUPLICATE, FLASH, START = "ok", "cut", "static", "duplicate", "flash", "start"


@dataclass(frozen=True)
class MotionConfig:
    min_motion_px: float = 1.0
    """Median flow, in working-size pixels per output frame, below which the camera counts as still."""
    duplicate_diff: float = 0.4
    """Mean absolute grey difference (0..255) below which two frames are the same picture."""
    flash_delta: float = 30.0
    """Mean brightness jump (0..255) that makes a frame brighter or darker than both neighbours a flash."""
    cut_residual: float = 8.0
    """A cut reported by the scene detector stands only if the flow cannot explain the change: the mean
    grey difference (0..255) left after warping by the flow must exceed this. Fast pans over detailed
    texture fool colour-histogram detectors at 10 fps; they do not fool this check."""


@dataclass
class PairVerdict:
    """What the filter says about frame `index` and the frame before it."""

    index: int
    frame: np.ndarray
    label: str
    motion_px: float


class MotionFilter:
    """Push frames of one video in order with the scene detector's opinion; get verdicts one frame late."""

    def __init__(self, working_width_px: int, config: MotionConfig = MotionConfig()):
        self.config = config
        self.scale = working_width_px / GREY_WIDTH_PX
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self.previous_grey: np.ndarray | None = None
        self.pending: PairVerdict | None = None
        self.pending_brightness = self.previous_brightness = 0.0

    def _grey(self, frame_rgb: np.ndarray) -> np.ndarray:
        h, w = frame_rgb.shape[:2]
        small = cv2.resize(frame_rgb, (GREY_WIDTH_PX, max(8, round(h * GREY_WIDTH_PX / w))), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)

    def _measure(self, grey: np.ndarray, detector_cut: bool) -> tuple[str, float]:
        previous = self.previous_grey
        if np.abs(grey.astype(np.int16) - previous).mean() < self.config.duplicate_diff:
            return DUPLICATE, 0.0
        flow = self.flow.calc(previous, grey, None)
        if detector_cut and self._warp_residual(previous, grey, flow) > self.config.cut_residual:
            return CUT, 0.0
        motion_px = float(np.median(np.hypot(flow[..., 0], flow[..., 1]))) * self.scale
        return (STATIC if motion_px < self.config.min_motion_px else OK), motion_px

    @staticmethod
    def _warp_residual(previous: np.ndarray, grey: np.ndarray, flow: np.ndarray) -> float:
        """Mean |previous - grey warped back by the flow|, away from the borders where flow leaves the view."""
        h, w = previous.shape
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        warped = cv2.remap(grey, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        m = max(2, w // 20)
        return float(np.abs(warped.astype(np.float32) - previous)[m:-m, m:-m].mean())

    def push(self, index: int, frame_rgb: np.ndarray, detector_cut: bool) -> PairVerdict | None:
        """Take the next frame and whether the scene detector saw a cut before it; return the verdict on
        the frame before it (None for the first frame)."""
        grey = self._grey(frame_rgb)
        brightness = float(grey.mean())
        if self.previous_grey is None:
            label, motion_px = START, 0.0
        else:
            label, motion_px = self._measure(grey, detector_cut)
        verdict = PairVerdict(index, frame_rgb, label, motion_px)
        released = self.pending
        if released is not None and released.label not in (CUT, START) and label not in (CUT, START):
            delta = self.config.flash_delta
            if (abs(self.pending_brightness - self.previous_brightness) > delta
                    and abs(self.pending_brightness - brightness) > delta
                    and abs(brightness - self.previous_brightness) < delta / 2):
                released.label = verdict.label = FLASH  # both pairs touching the flashed frame
        if released is not None:
            self.previous_brightness = self.pending_brightness
        self.pending, self.pending_brightness, self.previous_grey = verdict, brightness, grey
        return released

    def flush(self) -> PairVerdict | None:
        released, self.pending = self.pending, None
        return released
