"""Stage 5, static regions: the ego car and burnt-in overlays, found from the frames already decoded.

A dashcam sees its own hood, dashboard or A-pillar, and uploads carry clocks, logos and watermarks: pixels
that stay the same while the camera moves. For the photometric losses they contradict every flow, and
they drag the measured camera motion towards zero. Found on the first frames of a video in which the
camera moves (`StaticRegionFinder`: as many moving pairs as the first `HEAD_FRAMES` of a drive give, so a
video that starts parked at a red light is looked at until it drives off), on colour copies
`DETECT_WIDTH_PX` wide, from running sums over the moving pairs only:

1. A pixel is static when its grey level changes less than `max_change` between frames `GAP_FRAMES`
   apart, averaged over the pairs where the picture as a whole changes (the camera moves); the long gap
   lets the slow far field (distant hills) move too. Flat areas (sky, bare asphalt) look static whatever
   happens, so static alone proves nothing: an overlay is recognised by its *edges*, which stay sharp in
   the mean image while every edge of the scene moves and blurs there.
2. Bands at the bottom, left and right edge (hood, dashboard, A-pillar): in most columns (rows) a static
   run from the edge that ends at a static edge, no deeper than `max_band_fraction` of the picture. An
   ego car that is not still (a polished bonnet mirrors the scene, sunlight drifts over a dashboard)
   breaks such runs at every flickering pixel; it is found as what lies under a steady edge and changes
   far less *in detail* (after a high-pass, which takes out smooth light) than the scene just above that
   edge (`max_band_liveliness`), the edge one smooth silhouette across most columns.
3. Inside the picture (clock, logo, watermark): clusters of static edge pixels, taken as their bounding
   boxes.
4. Bands and boxes covering at least half of the edge rows or columns are cropped away (like black bars);
   what remains becomes the samples' mask (`formats.shard_schema.MASK_MEMBER`).

No moving stretch among the first frames, or nothing static, leaves the video as it was.
"""
from dataclasses import dataclass, field

import cv2
import numpy as np

HEAD_FRAMES = 50
"""Frames of a drive that fix the crop: 5 s at the default 10 fps."""
DETECT_WIDTH_PX = 320
GAP_FRAMES = 8
DETAIL_SIGMA_PX = 2.0
"""High-pass scale (detection pixels): light that varies slower in space (a patch of sunlight, exposure,
a blurred reflection's shading) is not detail."""
ABOVE_BAND_PX = 4
"""Rows just above a band's edge that stand for the scene it is compared with."""
SILHOUETTE_PX = 15
"""A band's edge is one smooth line: a column's depth more than 3 px from the median depth of the
`SILHOUETTE_PX` columns around it is not part of it."""
ENOUGH_MOVING_PAIRS = HEAD_FRAMES - GAP_FRAMES
"""Moving pairs after which the finder is done: what the first `HEAD_FRAMES` of a moving drive hold."""


@dataclass(frozen=True)
class StaticRegionConfig:
    max_change: float = 2.0
    """Mean grey change (0..255) between frames `GAP_FRAMES` apart below which a pixel counts as static."""
    min_pair_change: float = 3.0
    """Median grey change over the textured pixels above which a pair of frames shows a moving camera
    (traffic passing a parked camera changes a minority of them)."""
    min_moving_pairs: int = 5
    min_edge: float = 10.0
    """Grey gradient of the mean image (per detection pixel) above which a pixel is an edge."""
    min_graphic_edge: float = 30.0
    """Grey gradient of the mean image above which an edge may belong to a graphic inside the picture:
    drawn text and logos are crisp (~85 in world and real videos), the few nearly still edges of the
    scene (clouds, the far field at the focus of expansion) soft (~20)."""
    max_edge_change: float = 0.2
    """A graphic's edge changes less than this fraction of its own contrast: a moving scene edge blurs
    in the mean image and changes by more than its contrast, while a semi-transparent logo keeps its
    sharp edge and lets only a little of the scene through."""
    max_band_fraction: float = 0.4
    """Deepest band, as a fraction of the picture's height (bottom) or width (sides)."""
    min_band_share: float = 0.5
    """Share of the columns (rows) that must show the band's static edge, among those where the static run
    from the edge is shallow (rows under a dashboard, or through the sky, run all the way across)."""
    max_band_liveliness: float = 0.6
    """A band whose pixels change (glare) changes in detail at most this share of what changes in the rows
    just above its edge, and at most as much as the picture's median. Measured on world drives (320 px
    wide): a mirroring bonnet 0.2-0.35 of the road above it, a sunlit dashboard ~0.15; road under road
    ~1, so a plain drive shows such an edge in at most 15 % of its columns, a glaring ego car in 67-97 %."""
    min_cluster_edges: int = 12
    """Static edge pixels (at detection size) that make a cluster a graphic rather than noise."""
    min_edges_per_column: int = 3
    """Median crisp edge pixels per column of a graphic: letters and shapes have height; the horizon of an
    open road, a crisp line at infinity that stays put too, is one or two pixels thick."""
    min_cluster_density: float = 0.15
    """Share of a cluster's box that its static edges fill: text and logos are dense (a clock ~0.27), the
    ridge line of distant hills near the focus of expansion, also nearly still, is not (~0.09)."""


@dataclass
class StaticRegions:
    """What was found, in the coordinates of the frames given (bars already removed)."""

    crop: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Pixels to cut from the top, bottom, left and right, where overlays fill the edge rows or columns."""
    mask: np.ndarray | None = None
    """(H, W) bool over the frames after `crop`, True where an overlay covers the pixel; None if nowhere."""
    regions: list = field(default_factory=list)
    """{'kind': 'bottom band' | 'top band' | 'left band' | 'right band' | 'inside', 'box': [x, y, w, h]} in
    the coordinates of the frames given, for reports."""


def _small(frame_rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) float32 RGB `DETECT_WIDTH_PX` wide: colour, not grey, since a red logo on green trees
    can have no grey edge at all."""
    h, w = frame_rgb.shape[:2]
    size = (DETECT_WIDTH_PX, max(8, round(h * DETECT_WIDTH_PX / w)))
    return cv2.resize(frame_rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32)


def _gradient(image: np.ndarray) -> np.ndarray:
    """(h, w) gradient magnitude of an (h, w) grey or (h, w, 3) colour image (its strongest channel's),
    per pixel (0..255 scale)."""
    magnitude = np.hypot(cv2.Sobel(image, cv2.CV_32F, 1, 0), cv2.Sobel(image, cv2.CV_32F, 0, 1))
    return (magnitude.max(axis=2) if magnitude.ndim == 3 else magnitude) / 4


@dataclass(frozen=True)
class _Statistics:
    """What the moving pairs show, each (h, w) at detection size. Static pixels and crisp edges are judged in
    grey, where codec noise is lowest; steady edges in colour, where a coloured logo keeps its outline;
    liveliness and detail-steady edges after a high-pass, where smooth light does not count."""

    static: np.ndarray
    static_edges: np.ndarray
    steady_edges: np.ndarray
    crisp_edges: np.ndarray
    liveliness: np.ndarray
    """float: mean change of the high-passed grey (0..255 scale)."""
    detail_steady_edges: np.ndarray


class StaticRegionFinder:
    """Sees a video's frames in order (`push`), one at a time, and keeps only running sums over the pairs
    `GAP_FRAMES` apart that show a moving camera: the mean change of every pixel and the mean image of the
    frames in those pairs, in grey and in colour. `done` once `ENOUGH_MOVING_PAIRS` were seen; `result`
    finds the regions (module doc) from what was seen, at any time. Memory: `GAP_FRAMES` + 1 small frames."""

    def __init__(self, config: StaticRegionConfig = StaticRegionConfig()):
        self.config = config
        self.recent: list[tuple[np.ndarray, np.ndarray, np.ndarray, list[bool]]] = []
        """(grey, its detail, colour, [in the mean image]) of the last `GAP_FRAMES` + 1 frames at detection size."""
        self.moving_pairs = 0
        self.change_grey = self.change_detail = self.change_colour = self.sum_grey = self.sum_colour = 0.0
        self.frames_in_mean = 0
        self.shape: tuple[int, int] | None = None
        """(H, W) of the frames pushed."""

    @property
    def done(self) -> bool:
        return self.moving_pairs >= ENOUGH_MOVING_PAIRS

    def push(self, frame_rgb: np.ndarray) -> None:
        """`frame_rgb`: (H, W, 3) uint8 RGB, bars removed, the same size for every frame of the video."""
        self.shape = frame_rgb.shape[:2]
        colour = _small(frame_rgb)
        grey = cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY)
        detail = grey - cv2.GaussianBlur(grey, (0, 0), DETAIL_SIGMA_PX)
        self.recent.append((grey, detail, colour, [False]))
        if len(self.recent) <= GAP_FRAMES:
            return
        earlier_grey, earlier_detail, earlier_colour, earlier_in_mean = self.recent.pop(0)
        textured = _gradient(earlier_grey) > 4
        if not textured.any() or np.median(np.abs(grey - earlier_grey)[textured]) <= self.config.min_pair_change:
            return
        self.moving_pairs += 1
        self.change_grey = self.change_grey + np.abs(grey - earlier_grey)
        self.change_detail = self.change_detail + np.abs(detail - earlier_detail)
        self.change_colour = self.change_colour + np.abs(colour - earlier_colour).mean(axis=2)
        for frame_grey, frame_colour, in_mean in ((earlier_grey, earlier_colour, earlier_in_mean),
                                                  (grey, colour, self.recent[-1][3])):
            if not in_mean[0]:
                in_mean[0] = True
                self.sum_grey, self.sum_colour = self.sum_grey + frame_grey, self.sum_colour + frame_colour
                self.frames_in_mean += 1

    def _statistics(self) -> "_Statistics":
        config = self.config
        change, colour_change = self.change_grey / self.moving_pairs, self.change_colour / self.moving_pairs
        liveliness = self.change_detail / self.moving_pairs
        gradient = _gradient(self.sum_grey / self.frames_in_mean)
        colour_gradient = _gradient(self.sum_colour / self.frames_in_mean)
        static = change < config.max_change
        crisp = (gradient > config.min_graphic_edge) & (change < config.max_edge_change * gradient)
        steady = (colour_gradient > config.min_edge) & (colour_change < config.max_edge_change * colour_gradient)
        detail_steady = (gradient > config.min_edge) & (liveliness < config.max_edge_change * gradient)
        return _Statistics(static, static & (gradient > config.min_edge), steady, crisp, liveliness, detail_steady)

    def result(self) -> StaticRegions:
        """The overlays found so far, in the coordinates of the frames pushed; none when fewer than
        `min_moving_pairs` pairs showed a moving camera."""
        if self.moving_pairs < self.config.min_moving_pairs:
            return StaticRegions()
        return _regions(self._statistics(), self.shape, self.config)


def _bottom_band(static: np.ndarray, edges: np.ndarray, config: StaticRegionConfig) -> np.ndarray:
    """(h, w) bool: the band along the bottom edge (module doc, step 2); rotate the inputs for other edges."""
    h, w = static.shape
    run = np.cumprod(static[::-1], axis=0).sum(axis=0)  # static pixels from the bottom up, per column
    top = h - run
    rows = np.clip(np.stack([top - 1, top, top + 1]), 0, h - 1)
    edge_at_top = edges[rows, np.arange(w)].any(axis=0)
    shallow = run <= config.max_band_fraction * h  # not a run through another band or the sky
    banded = (run >= 2) & shallow & edge_at_top
    band = np.zeros_like(static)
    if banded.sum() < config.min_band_share * max(1, shallow.sum()) or banded.mean() < config.min_band_share / 2:
        return band
    depth = np.where(banded, run, 0).astype(np.float32)[None]
    depth = cv2.dilate(depth, np.ones((1, 5), np.uint8)).ravel()  # bridges columns where the edge is faint
    band[np.arange(h)[:, None] >= h - depth[None, :]] = True
    return band


def _bands(statistics: _Statistics, config: StaticRegionConfig) -> np.ndarray:
    """(h, w) bool: the bands at the bottom, left and right edge (module doc, step 2): at each edge the static
    band and the lively one together (a static run stops at the first flickering row, the lively band goes
    on to the edge). The side bands are looked for above the bottom band only (rows through a hood are
    quiet from side to side)."""
    s = statistics
    level = float(np.median(s.liveliness))

    def band(rotation: int, rows: np.ndarray) -> np.ndarray:
        def turn(image: np.ndarray) -> np.ndarray:  # the edge looked at comes to the bottom
            return np.rot90(image[rows], rotation)

        found = (_bottom_band(turn(s.static), turn(s.static_edges), config)
                 | _lively_band(turn(s.liveliness), turn(s.detail_steady_edges), level, config))
        whole = np.zeros_like(s.static)
        whole[rows] = np.rot90(found, -rotation)
        return whole

    everywhere = np.ones(s.static.shape[0], bool)
    bottom = band(0, everywhere)
    above_bottom = ~bottom.any(axis=1)
    return bottom | band(1, above_bottom) | band(-1, above_bottom)


def _lively_band(liveliness: np.ndarray, edges: np.ndarray, level: float, config: StaticRegionConfig) -> np.ndarray:
    """(h, w) bool: a band along the bottom edge whose pixels change, but far less in detail than the scene
    just above its edge (`max_band_liveliness`); `edges` (h, w) bool are the steady edges its top must
    follow, `level` the picture's median liveliness."""
    h, w = liveliness.shape
    from_bottom = np.cumsum(liveliness[::-1], axis=0)  # row d - 1: summed over the bottom d rows
    depths = np.arange(1, h + 1)[:, None]
    inside = from_bottom / depths
    above = (np.vstack([from_bottom[ABOVE_BAND_PX:], np.repeat(from_bottom[-1:], ABOVE_BAND_PX, axis=0)])
             - from_bottom) / ABOVE_BAND_PX
    edge_near = cv2.dilate(edges[::-1].astype(np.uint8), np.ones((3, 1), np.uint8)).astype(bool)
    quiet = (inside <= config.max_band_liveliness * above) & (inside <= level)
    valid = edge_near & quiet & (depths >= 2) & (depths <= config.max_band_fraction * h)
    depth = np.where(valid.any(axis=0), h - np.argmax(valid[::-1], axis=0), 0)  # the deepest such edge
    padded = np.pad(depth, SILHOUETTE_PX // 2, mode="edge")
    silhouette = np.median(np.lib.stride_tricks.sliding_window_view(padded, SILHOUETTE_PX), axis=1)
    on_silhouette = (depth > 0) & (np.abs(depth - silhouette) <= 3)
    band = np.zeros((h, w), bool)
    if on_silhouette.mean() < config.min_band_share:
        return band
    band[np.arange(h)[:, None] >= h - np.where(on_silhouette, silhouette, 0)[None, :]] = True
    return band


def _graphics(steady: np.ndarray, crisp: np.ndarray, config: StaticRegionConfig) -> np.ndarray:
    """(h, w) bool: bounding boxes of clusters of steady edges that hold a dense core of crisp ones
    (module doc, step 3); the softer edges around a core (a logo's semi-transparent frame) join it."""
    joined = cv2.morphologyEx(steady.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 9), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    boxes = np.zeros_like(steady)
    for label in range(1, count):
        x, y, w, h, _ = stats[label]
        core = crisp & (labels == label)
        core_count = int(core.sum())
        if core_count < config.min_cluster_edges:
            continue
        rows, columns = np.nonzero(core)
        core_area = (np.ptp(rows) + 1) * (np.ptp(columns) + 1)
        per_column = np.bincount(columns)[np.unique(columns)]  # crisp edge pixels in each column it covers
        if (core_count >= config.min_cluster_density * core_area and w * h <= 4 * core_area
                and np.median(per_column) >= config.min_edges_per_column):
            boxes[y:y + h, x:x + w] = True
    return boxes


def _edge_crop(overlays: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) rows and columns, counted from each edge, at least half covered."""
    def run(fractions: np.ndarray) -> int:
        covered = fractions >= 0.5
        return int(np.argmin(covered)) if not covered.all() else len(fractions)

    rows, columns = overlays.mean(axis=1), overlays.mean(axis=0)
    return run(rows), run(rows[::-1]), run(columns), run(columns[::-1])


def find_static_regions(frames: list[np.ndarray], config: StaticRegionConfig = StaticRegionConfig()) -> StaticRegions:
    """Overlays in (H, W, 3) uint8 RGB frames of one video, in time order, all of them looked at (see the module doc)."""
    finder = StaticRegionFinder(config)
    for frame in frames:
        finder.push(frame)
    return finder.result()


def _regions(statistics: _Statistics, shape: tuple[int, int], config: StaticRegionConfig) -> StaticRegions:
    """Bands and graphics (module doc, steps 2-4) from the detection-size statistics, for frames of `shape`."""
    overlays_small = _bands(statistics, config) | _graphics(statistics.steady_edges, statistics.crisp_edges, config)
    if not overlays_small.any():
        return StaticRegions()
    height, width = shape
    overlays = cv2.resize(overlays_small.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    overlays = cv2.dilate(overlays, np.ones((3, 3), np.uint8)).astype(bool)
    top, bottom, left, right = _edge_crop(overlays)
    if top + bottom >= height // 2 or left + right >= width // 2:
        return StaticRegions()  # overlays everywhere: leave it to the motion filter
    regions = [{"kind": f"{side} band", "box": box} for side, box, size in (
        ("top", [0, 0, width, top], top), ("bottom", [0, height - bottom, width, bottom], bottom),
        ("left", [0, 0, left, height], left), ("right", [width - right, 0, right, height], right)) if size]
    inside = overlays[top:height - bottom, left:width - right]
    count, _, stats, _ = cv2.connectedComponentsWithStats(inside.astype(np.uint8), connectivity=8)
    regions += [{"kind": "inside", "box": [int(x) + left, int(y) + top, int(w), int(h)]}
                for x, y, w, h, _ in stats[1:count]]
    return StaticRegions(crop=(top, bottom, left, right), mask=inside if inside.any() else None, regions=regions)
