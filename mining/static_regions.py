"""Stage 5, static regions: the ego car and burnt-in overlays, found from the frames already decoded.

A dashcam sees its own hood, dashboard or A-pillar, and uploads carry clocks, logos and watermarks: pixels
that stay the same while the camera moves. For the photometric losses they contradict every flow, and
they drag the measured camera motion towards zero. Found on the first frames of a video (`HEAD_FRAMES`,
held anyway until the crop is fixed), on colour copies `DETECT_WIDTH_PX` wide:

1. A pixel is static when its grey level changes less than `max_change` between frames `GAP_FRAMES`
   apart, averaged over the pairs where the picture as a whole changes (the camera moves); the long gap
   lets the slow far field (distant hills) move too. Flat areas (sky, bare asphalt) look static whatever
   happens, so static alone proves nothing: an overlay is recognised by its *edges*, which stay sharp in
   the mean image while every edge of the scene moves and blurs there.
2. Bands at the bottom, left and right edge (hood, dashboard, A-pillar): in most columns (rows) a static
   run from the edge that ends at a static edge, no deeper than `max_band_fraction` of the picture.
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
"""Frames looked at before the crop is fixed: 5 s at the default 10 fps."""
DETECT_WIDTH_PX = 320
GAP_FRAMES = 8


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


def _change_and_edges(images: list[np.ndarray], moving: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(mean change between frames `GAP_FRAMES` apart over the `moving` pairs, gradient of the mean image),
    both (h, w); for colour images the channels' changes are averaged and their gradients maximised."""
    gap = min(GAP_FRAMES, len(images) - 1)
    pairs = [np.abs(later - earlier) for (later, earlier), keep in zip(zip(images[gap:], images), moving) if keep]
    change = np.mean(pairs, axis=0)
    return change.mean(axis=2) if change.ndim == 3 else change, _gradient(np.mean(images, axis=0))


def _motion_statistics(images: list[np.ndarray], config: StaticRegionConfig
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(static pixels, static edges, steady edges, crisp steady edges), each (h, w) bool at detection size;
    None when too few pairs show a moving camera. Static pixels and crisp edges are judged in grey, where
    codec noise is lowest; steady edges in colour, where a coloured logo keeps its outline."""
    greys = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in images]
    gap = min(GAP_FRAMES, len(images) - 1)
    moving = []
    for later, earlier in zip(greys[gap:], greys):
        textured = _gradient(earlier) > 4
        moving.append(bool(textured.any()) and np.median(np.abs(later - earlier)[textured]) > config.min_pair_change)
    if sum(moving) < config.min_moving_pairs:
        return None
    change, gradient = _change_and_edges(greys, moving)
    colour_change, colour_gradient = _change_and_edges(images, moving)
    static = change < config.max_change
    crisp = (gradient > config.min_graphic_edge) & (change < config.max_edge_change * gradient)
    steady = (colour_gradient > config.min_edge) & (colour_change < config.max_edge_change * colour_gradient)
    return static, static & (gradient > config.min_edge), steady, crisp


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
    """Overlays in (H, W, 3) uint8 RGB frames of one video, in time order (see the module doc)."""
    if len(frames) < 2:
        return StaticRegions()
    statistics = _motion_statistics([_small(f) for f in frames], config)
    if statistics is None:
        return StaticRegions()
    static, edges, steady, crisp = statistics
    overlays_small = (_bottom_band(static, edges, config)
                      | np.rot90(_bottom_band(np.rot90(static), np.rot90(edges), config), -1)  # left edge
                      | np.rot90(_bottom_band(np.rot90(static, -1), np.rot90(edges, -1), config), 1)  # right
                      | _graphics(steady, crisp, config))
    if not overlays_small.any():
        return StaticRegions()
    height, width = frames[0].shape[:2]
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
