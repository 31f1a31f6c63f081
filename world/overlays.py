"""Graphics that stand still in the picture while the scene moves: the car's bonnet or dashboard, an
A-pillar, a channel logo. Dashcam uploads carry them; mining must find and mask them.

Each overlay is made once per video and composited over every frame at the same place, after the scene
and before the clock stamp. Opaque overlays leave their pixels exactly constant; the logo is
semi-opaque, so the scene shows through it faintly. With glare the ego car changes while it stays in
place, as it does in real footage: a polished bonnet mirrors the scene ahead of it, and sunlight through
the windscreen drifts and flickers over a dashboard. Everything is in video pixels, (x, y, w, h) boxes in
whole-frame coordinates, colours RGB 0..255.
"""
from dataclasses import dataclass, replace

import cv2
import numpy as np

EGO_KINDS = ("hood", "dashboard")
HOOD_HEIGHT = 0.17
"""Bonnet height at the middle, a fraction of the content height; 30 % less at the sides."""
DASHBOARD_HEIGHT = 0.25
A_PILLAR_WIDTH = (0.12, 0.04)
"""Width at the top and at the bottom of the content, fractions of the content width (8 % on average)."""
LOGO_WIDTH = 0.10
"""Fraction of the content width; the logo is 0.4 times as tall as wide."""
LOGO_INSET = 0.06
"""Gap between the logo and the top-right corner of the content, a fraction of the content size."""
LOGO_OPACITY = 0.7
LOGO_TEXT = "GEO"
HOOD_REFLECTANCE = (0.35, 0.1)
"""Share of the scene a glossy bonnet mirrors at its top edge (grazing view) and at the bottom of the picture."""
SUN_PATCH_GREY = 70.0
"""Peak brightening (grey levels) of the patch of sunlight on a dashboard."""
SUN_PATCH_SIZE = (0.12, 0.3)
"""Standard deviation of the sunlight patch, fractions of the dashboard's width and height."""
_SUPERSAMPLING = 4


@dataclass(frozen=True)
class Overlay:
    """One static graphic over the patch `patch_box` of the frame."""

    kind: str
    """'hood', 'dashboard', 'a_pillar' or 'logo'."""
    patch_box: tuple[int, int, int, int]
    colour: np.ndarray
    """(h, w, 3) float32, whole grey levels."""
    coverage: np.ndarray
    """(h, w, 1) float32 0..1: how much of each pixel the shape covers (anti-aliased edges)."""
    opacity: float
    glare: bool = False
    """A bonnet mirrors the scene above it, a dashboard has sunlight moving over it (see the module doc)."""

    @property
    def box(self) -> tuple[int, int, int, int]:
        """Tight (x, y, w, h) around the pixels the shape covers at least half of."""
        rows, cols = np.nonzero(self.coverage[..., 0] >= 0.5)
        x, y = self.patch_box[:2]
        return (x + int(cols.min()), y + int(rows.min()), int(cols.max() - cols.min()) + 1,
                int(rows.max() - rows.min()) + 1)


def static_overlays(content_box: tuple[int, int, int, int], ego: str | None, a_pillar: bool,
                    logo: bool, ego_glare: bool = False) -> list[Overlay]:
    """The overlays of a video, in drawing order, for a picture at `content_box`; `ego_glare` gives the
    bonnet or dashboard its glare."""
    if ego not in (None, *EGO_KINDS):
        raise ValueError(f"ego must be one of {', '.join(EGO_KINDS)} or None, got {ego!r}")
    overlays = []
    if ego == "hood":
        overlays.append(replace(_hood(content_box), glare=ego_glare))
    if ego == "dashboard":
        overlays.append(replace(_dashboard(content_box), glare=ego_glare))
    if a_pillar:
        overlays.append(_a_pillar(content_box))
    if logo:
        overlays.append(_logo(content_box))
    return overlays


def draw_overlays(canvas: np.ndarray, overlays: list[Overlay], time_s: float = 0.0) -> None:
    """Composite `overlays` over `canvas` (H, W, 3) uint8, in place, as they look at `time_s` seconds."""
    for overlay in overlays:
        x, y, w, h = overlay.patch_box
        colour = overlay.colour
        if overlay.glare and overlay.kind == "hood":
            colour = colour + _reflection(canvas, overlay.patch_box)
        if overlay.glare and overlay.kind == "dashboard":
            colour = colour + _sunlight(h, w, time_s)
        patch = canvas[y:y + h, x:x + w].astype(np.float32)
        patch += (np.minimum(colour, 255) - patch) * (overlay.coverage * np.float32(overlay.opacity))
        canvas[y:y + h, x:x + w] = (patch + 0.5).astype(np.uint8)


def _reflection(canvas: np.ndarray, patch_box: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w, 3) float32 light a bonnet at `patch_box` mirrors: the scene just above it, upside down,
    squeezed by the bonnet's curve (two rows of scene per row of bonnet) and blurred by its paint."""
    x, y, w, h = patch_box
    above = canvas[max(0, y - 2 * h):y, x:x + w][::-1].astype(np.float32)
    mirrored = cv2.GaussianBlur(cv2.resize(above, (w, h), interpolation=cv2.INTER_AREA), (0, 0), 1.5)
    reflectance = np.linspace(*HOOD_REFLECTANCE, h, dtype=np.float32)[:, None, None]
    return mirrored * reflectance


def _sunlight(height_px: int, width_px: int, time_s: float) -> np.ndarray:
    """(h, w, 3) float32 grey levels a patch of sunlight adds to a dashboard at `time_s`: it wanders
    across as the car turns and flickers as trees pass between it and the sun."""
    centre_x = width_px * (0.5 + 0.35 * np.sin(2 * np.pi * time_s / 6.0 + 1.0))
    centre_y = height_px * (0.45 + 0.2 * np.sin(2 * np.pi * time_s / 4.3))
    sigma_x, sigma_y = SUN_PATCH_SIZE[0] * width_px, SUN_PATCH_SIZE[1] * height_px
    columns = np.exp(-0.5 * ((np.arange(width_px) - centre_x) / sigma_x) ** 2)
    rows = np.exp(-0.5 * ((np.arange(height_px) - centre_y) / sigma_y) ** 2)
    flicker = 0.75 + 0.25 * np.sin(2 * np.pi * time_s / 0.9)
    patch = (SUN_PATCH_GREY * flicker * rows[:, None] * columns[None, :]).astype(np.float32)
    return patch[..., None] * np.float32([1.0, 0.95, 0.85])


def static_mask(overlays: list[Overlay], height_px: int, width_px: int) -> np.ndarray:
    """(H, W) uint8: 255 where an overlay covers at least half of the pixel, 0 elsewhere."""
    mask = np.zeros((height_px, width_px), dtype=np.uint8)
    for overlay in overlays:
        x, y, w, h = overlay.patch_box
        mask[y:y + h, x:x + w][overlay.coverage[..., 0] >= 0.5] = 255
    return mask


def _overlay(kind: str, x: int, y: int, colour: np.ndarray, coverage: np.ndarray, opacity: float = 1.0) -> Overlay:
    h, w = coverage.shape
    return Overlay(kind, (x, y, w, h), np.rint(colour).astype(np.float32),
                   coverage.astype(np.float32)[..., None], opacity)


def _polygon_coverage(points_px: np.ndarray, height_px: int, width_px: int) -> np.ndarray:
    """(H, W) float32 share of each pixel inside the polygon `points_px` (N, 2) (x, y), by supersampling."""
    big = np.zeros((height_px * _SUPERSAMPLING, width_px * _SUPERSAMPLING), dtype=np.uint8)
    cv2.fillPoly(big, [np.round(points_px * _SUPERSAMPLING).astype(np.int32)], 255)
    return cv2.resize(big, (width_px, height_px), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _hood(content_box) -> Overlay:
    """The bonnet: dark paint whose top edge bulges up in the middle, a soft sheen across it."""
    x0, y0, w, h = content_box
    across = (np.arange(w) + 0.5 - w / 2) / (w / 2)
    height_px = HOOD_HEIGHT * h * (1 - 0.3 * across**2)
    band_px = int(np.ceil(height_px.max()))
    top = band_px - height_px
    rows = np.arange(band_px)[:, None]
    coverage = np.clip(rows + 1 - top[None, :], 0, 1)
    down = np.clip((rows + 0.5 - top[None, :]) / height_px[None, :], 0, 1)
    sheen = 55 * np.exp(-((down - 0.3) / 0.12) ** 2) * (1 - 0.6 * across[None, :] ** 2)
    rim = 30 * np.exp(-((rows + 0.5 - top[None, :]) / 1.5) ** 2)
    grey = (1 - 0.35 * down) + (sheen + rim) / 36
    colour = np.float32([34, 36, 42]) * grey[..., None]
    return _overlay("hood", x0, y0 + h - band_px, colour, coverage)


def _dashboard(content_box) -> Overlay:
    """A flat-topped dark band of grained plastic with a lighter lip along its top."""
    x0, y0, w, h = content_box
    band_px = max(1, round(DASHBOARD_HEIGHT * h))
    grain = cv2.GaussianBlur(np.random.default_rng(20260514).standard_normal((band_px, w)).astype(np.float32),
                             (0, 0), 1.0)
    rows = np.arange(band_px)[:, None]
    grey = 30 * (1 - 0.3 * rows / band_px) + 14 * grain + 18 * (rows < max(1, band_px // 20))
    colour = np.repeat(grey[..., None], 3, axis=-1) * np.float32([1.0, 1.0, 1.07])
    return _overlay("dashboard", x0, y0 + h - band_px, colour, np.ones((band_px, w)))


def _a_pillar(content_box) -> Overlay:
    """The left windscreen pillar: a dark band slanting from wide at the top to narrow at the bottom."""
    x0, y0, w, h = content_box
    top_px, bottom_px = A_PILLAR_WIDTH[0] * w, A_PILLAR_WIDTH[1] * w
    patch_w = int(np.ceil(top_px))
    coverage = _polygon_coverage(np.array([[0, 0], [top_px, 0], [bottom_px, h], [0, h]]), h, patch_w)
    grey = 22 + 10 * np.arange(h)[:, None] / h + np.zeros((1, patch_w))
    colour = np.repeat(grey[..., None], 3, axis=-1) * np.float32([1.0, 1.0, 1.1])
    return _overlay("a_pillar", x0, y0, colour, coverage)


def _logo(content_box) -> Overlay:
    """A red rounded badge with white letters, inset from the top-right corner, semi-opaque."""
    x0, y0, w, h = content_box
    logo_w = max(6, round(LOGO_WIDTH * w))
    logo_h = max(4, round(0.4 * logo_w))
    x = x0 + w - round(LOGO_INSET * w) - logo_w
    y = y0 + max(1, round(LOGO_INSET * h))
    r = logo_h / 4
    big = np.zeros((logo_h * _SUPERSAMPLING, logo_w * _SUPERSAMPLING), dtype=np.uint8)
    rs = round(r * _SUPERSAMPLING)
    bw, bh = big.shape[1] - 1, big.shape[0] - 1
    cv2.rectangle(big, (rs, 0), (bw - rs, bh), 255, -1)
    cv2.rectangle(big, (0, rs), (bw, bh - rs), 255, -1)
    for cx, cy in ((rs, rs), (bw - rs, rs), (rs, bh - rs), (bw - rs, bh - rs)):
        cv2.circle(big, (cx, cy), rs, 255, -1)
    coverage = cv2.resize(big, (logo_w, logo_h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    colour = np.zeros((logo_h, logo_w, 3), dtype=np.uint8)
    colour[:] = (200, 36, 44)
    thickness = max(1, round(logo_w / 60))
    (text_w, text_h), _ = cv2.getTextSize(LOGO_TEXT, cv2.FONT_HERSHEY_SIMPLEX, 1.0, thickness)
    scale = 0.7 * logo_w / text_w
    origin = (round((logo_w - text_w * scale) / 2), round((logo_h + text_h * scale) / 2))
    cv2.putText(colour, LOGO_TEXT, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return _overlay("logo", x, y, colour.astype(np.float32), coverage, LOGO_OPACITY)
