"""Stage 5, static regions: the ego car and burnt-in overlays, found from the frames already decoded.

A dashcam sees its own hood, dashboard or A-pillar, and uploads carry clocks, logos and watermarks: pixels
that stay the same while the camera moves. For the photometric losses they contradict every flow, and
they drag the measured camera motion towards zero. Found on the first frames of a video (`HEAD_FRAMES`,
held anyway until the crop is fixed), on grey copies `DETECT_WIDTH_PX` wide:

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
    """Mean grey change of the whole picture above which a pair of frames shows a moving camera."""
    min_moving_pairs: int = 5
    min_edge: float = 10.0
    """Grey gradient of the mean image (per detection pixel) above which a static pixel is an edge."""
    max_band_fraction: float = 0.4
    """Deepest band, as a fraction of the picture's height (bottom) or width (sides)."""
    min_band_share: float = 0.5
    """Share of the columns (rows) that must show the band's static edge."""
    min_cluster_edges: int = 12
    """Static edge pixels (at detection size) that make a cluster a graphic rather than noise."""
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


def _grey(frame_rgb: np.ndarray) -> np.ndarray:
    h, w = frame_rgb.shape[:2]
    size = (DETECT_WIDTH_PX, max(8, round(h * DETECT_WIDTH_PX / w)))
    return cv2.cvtColor(cv2.resize(frame_rgb, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY).astype(np.float32)


def _motion_statistics(greys: list[np.ndarray], config: StaticRegionConfig
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """(static pixels, static edge pixels), both (h, w) bool at detection size; None when too few pairs
    show a moving camera."""
    gap = min(GAP_FRAMES, len(greys) - 1)
    change, pairs = np.zeros_like(greys[0]), 0
    for later, earlier in zip(greys[gap:], greys):
        difference = np.abs(later - earlier)
        if difference.mean() > config.min_pair_change:
            change += difference
            pairs += 1
    if pairs < config.min_moving_pairs:
        return None
    static = change / pairs < config.max_change
    mean = np.mean(greys, axis=0)
    gradient = np.hypot(cv2.Sobel(mean, cv2.CV_32F, 1, 0), cv2.Sobel(mean, cv2.CV_32F, 0, 1)) / 4
    return static, static & (gradient > config.min_edge)


def _bottom_band(static: np.ndarray, edges: np.ndarray, config: StaticRegionConfig) -> np.ndarray:
    """(h, w) bool: the band along the bottom edge (module doc, step 2); rotate the inputs for other edges."""
    h, w = static.shape
    run = np.cumprod(static[::-1], axis=0).sum(axis=0)  # static pixels from the bottom up, per column
    top = h - run
    rows = np.clip(np.stack([top - 1, top, top + 1]), 0, h - 1)
    edge_at_top = edges[rows, np.arange(w)].any(axis=0)
    banded = (run >= 2) & (run <= config.max_band_fraction * h) & edge_at_top
    band = np.zeros_like(static)
    if banded.mean() < config.min_band_share:
        return band
    depth = np.where(banded, run, 0).astype(np.float32)[None]
    depth = cv2.dilate(depth, np.ones((1, 5), np.uint8)).ravel()  # bridges columns where the edge is faint
    band[np.arange(h)[:, None] >= h - depth[None, :]] = True
    return band


def _graphics(edges: np.ndarray, config: StaticRegionConfig) -> np.ndarray:
    """(h, w) bool: bounding boxes of clusters of static edge pixels (module doc, step 3)."""
    joined = cv2.morphologyEx(edges.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 9), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    boxes = np.zeros_like(edges)
    for label in range(1, count):
        x, y, w, h, _ = stats[label]
        edge_count = int(edges[labels == label].sum())
        if edge_count >= config.min_cluster_edges and edge_count >= config.min_cluster_density * w * h:
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
    statistics = _motion_statistics([_grey(f) for f in frames], config)
    if statistics is None:
        return StaticRegions()
    static, edges = statistics
    overlays_small = (_bottom_band(static, edges, config)
                      | np.rot90(_bottom_band(np.rot90(static), np.rot90(edges), config), -1)  # left edge
                      | np.rot90(_bottom_band(np.rot90(static, -1), np.rot90(edges, -1), config), 1)  # right
                      | _graphics(edges, config))
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
