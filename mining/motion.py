"""Stage 6, motion filter: is the camera moving between two consecutive frames?

Each consecutive pair of frames of one scene is measured on small grey copies (`GREY_WIDTH_PX` wide):
optical flow by OpenCV's DIS, mean absolute difference, and mean brightness. The camera's motion is
measured where flow means something, on textured pixels (`TEXTURE_MIN_GREY`) off the overlays
(`mining.static_regions`), and where it is spread: the picture is cut into a `GRID` x `GRID` grid, each
cell with enough texture gives the 90th percentile of its flow, and the camera's motion is the median
over those cells. Flat sky and asphalt show no flow whatever the camera does, and sky, clouds and far
field, most of a highway frame, barely move: a frame-wide median fell under a pixel on highways at
speed (69 % of a real highway clip's pairs), while near the car every cell moves. Cars passing a parked
camera move in a few cells only, and a close one that fills a quarter of the picture's texture no
longer passes for a moving camera. A hood or a clock never moves.

A dark or flat pair is stretched to a daylight contrast (`REFERENCE_SPREAD_GREY`) before its frames are
compared and its flow measured: at night most of the picture is black, and a moving pair differed by
0.3-0.5 grey levels on average, under the duplicate threshold (a lit highway at night lost 23 % of its
moving frames as duplicates). Which pixels are textured is still judged on the unstretched grey: codec
noise does not grow with the stretch, and stretched night clouds would pass for texture whose still flow
outvotes the road's. A pair is usable unless it is

- ``duplicate``: (nearly) the same picture twice, e.g. a low-rate source repeated by rate conversion;
- ``static``: camera motion below `min_motion_px` (working-size pixels, and never under
  `MIN_GRID_MOTION_PX` of the flow grid, which the flow cannot resolve): the camera stands still;
- ``flash``: one frame far brighter or darker than both neighbours, which agree with each other;
- ``cut``: the scene detector saw a cut and the flow cannot explain the change (see `cut_residual`).

Flashes need the next frame, so results come out one frame late; `flush` releases the last one.
"""
from dataclasses import dataclass

import cv2
import numpy as np

GREY_WIDTH_PX = 160
GRID = 4
MIN_CELL_TEXTURE = 0.1
"""Share of a cell's pixels that must be informative for the cell to count."""
TEXTURE_MIN_GREY = 4.0
"""Grey gradient (per grey-copy pixel) above which a pixel's flow is measured rather than guessed."""
REFERENCE_SPREAD_GREY = 100.0
"""Grey spread (1st to 99th percentile, 0..255) below which a pair is stretched up to it before its grey
levels are compared: night frames spread 35-60, daylight ones ~200 (left as they are)."""
MAX_GAIN = 4.0
"""Stretch no pair further: a black frame's codec noise would pass for texture and motion."""
MIN_GRID_MOTION_PX = 0.25
"""Camera motion (flow-grid pixels, `GREY_WIDTH_PX` wide) below which a camera counts as still whatever
`min_motion_px` says: 1 px at a working width of 640, 2 px at 1280. DIS on the grid measures a parked
camera with traffic passing at up to ~0.3 grid px, so a threshold that did not scale with the grid took
such a camera for a moving one at widths above 640."""
OK, CUT, STATIC, DUPLICATE, FLASH, START = "ok", "cut", "static", "duplicate", "flash", "start"


@dataclass(frozen=True)
class MotionConfig:
    min_motion_px: float = 1.0
    """Camera motion (the median over grid cells of their flow's 90th percentile, in working-size pixels per
    output frame) below which the camera counts as still; raised to `MIN_GRID_MOTION_PX` grid pixels."""
    duplicate_diff: float = 0.4
    """Mean absolute grey difference (0..255, after the contrast stretch) below which two frames are the same
    picture."""
    flash_delta: float = 30.0
    """Mean brightness jump (0..255) that makes a frame brighter or darker than both neighbours a flash."""
    cut_residual: float = 8.0
    """A cut reported by the scene detector stands only if the flow cannot explain the change: the mean
    grey difference (0..255, after the contrast stretch) left after warping by the flow must exceed this.
    Fast pans over detailed texture fool colour-histogram detectors at 10 fps; they do not fool this check."""


@dataclass
class PairVerdict:
    """What the filter says about frame `index` and the frame before it."""

    index: int
    frame: np.ndarray
    label: str
    motion_px: float


class MotionFilter:
    """Push frames of one video in order with the scene detector's opinion; get verdicts one frame late."""

    def __init__(self, working_width_px: int, config: MotionConfig = MotionConfig(),
                 overlay: np.ndarray | None = None):
        """`overlay`: (H, W) bool at the working size, True on static overlays, left out of the motion."""
        self.config = config
        self.scale = working_width_px / GREY_WIDTH_PX
        self.min_motion_px = max(config.min_motion_px, MIN_GRID_MOTION_PX * self.scale)
        self.overlay_working = overlay
        self.overlay_grey: np.ndarray | None = None  # (h, w) bool at grey size, made with the first frame
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self.previous_grey: np.ndarray | None = None
        self.previous_gain = 1.0
        self.pending: PairVerdict | None = None
        self.pending_brightness = self.previous_brightness = 0.0

    def _grey(self, frame_rgb: np.ndarray) -> np.ndarray:
        h, w = frame_rgb.shape[:2]
        small = cv2.resize(frame_rgb, (GREY_WIDTH_PX, max(8, round(h * GREY_WIDTH_PX / w))), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)

    @staticmethod
    def _gain(grey: np.ndarray) -> float:
        """Contrast stretch (>= 1) that brings the (h, w) uint8 grey copy's 1st-99th percentile spread up to
        `REFERENCE_SPREAD_GREY`, at most `MAX_GAIN`."""
        values = grey.ravel()
        low, high = int(0.01 * (values.size - 1)), int(0.99 * (values.size - 1))
        ordered = np.partition(values, (low, high))
        spread = float(ordered[high]) - float(ordered[low])
        return float(np.clip(REFERENCE_SPREAD_GREY / max(spread, 1.0), 1.0, MAX_GAIN))

    def _measure(self, grey: np.ndarray, detector_cut: bool) -> tuple[str, float]:
        """(label, camera motion in working pixels) of the pair (previous grey, `grey`), both stretched by
        the previous frame's gain."""
        gain = self.previous_gain
        if np.abs(grey.astype(np.int16) - self.previous_grey).mean() * gain < self.config.duplicate_diff:
            return DUPLICATE, 0.0
        previous, grey = (cv2.convertScaleAbs(g, alpha=gain) if gain > 1.0 else g for g in (self.previous_grey, grey))
        flow = self.flow.calc(previous, grey, None)
        if detector_cut and self._warp_residual(previous, grey, flow) > self.config.cut_residual:
            return CUT, 0.0
        informative = self._informative(self.previous_grey)
        motion_px = self._camera_motion(np.hypot(flow[..., 0], flow[..., 1]), informative) * self.scale
        return (STATIC if motion_px < self.min_motion_px else OK), motion_px

    def _informative(self, grey: np.ndarray) -> np.ndarray:
        """(h, w) bool: textured pixels off the overlays; all off-overlay pixels when too few are textured."""
        grey = grey.astype(np.float32)
        gradient = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)) / 4
        scene = ~self.overlay_grey
        measured = (gradient > TEXTURE_MIN_GREY) & scene
        return measured if measured.mean() > 0.05 else scene

    @staticmethod
    def _camera_motion(magnitude: np.ndarray, informative: np.ndarray) -> float:
        """Median over the grid cells with enough informative pixels of their flow's 90th percentile, in
        grey-copy pixels; the median over all informative pixels when no cell has enough."""
        h, w = magnitude.shape
        cells = []
        for i in range(GRID):
            for j in range(GRID):
                cell = (slice(i * h // GRID, (i + 1) * h // GRID), slice(j * w // GRID, (j + 1) * w // GRID))
                values = magnitude[cell][informative[cell]]
                if values.size >= MIN_CELL_TEXTURE * magnitude[cell].size:
                    k = int(0.9 * (values.size - 1))  # the 90th percentile, without np.percentile's overhead
                    cells.append(np.partition(values, k)[k])
        return float(np.median(cells)) if cells else float(np.median(magnitude[informative]))

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
        if self.overlay_grey is None:
            h, w = grey.shape
            self.overlay_grey = (np.zeros((h, w), bool) if self.overlay_working is None else cv2.resize(
                self.overlay_working.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0)
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
        self.previous_gain = self._gain(grey)
        return released

    def flush(self) -> PairVerdict | None:
        released, self.pending = self.pending, None
        return released
