"""Stage 4, crop: black letterbox/pillarbox bars found and removed, plus an optional fixed crop.

Bars are found on the first frames of the decode (already at the working size): edge rows or columns
whose mean brightness over those frames stays near black. A few pixels more are shaved off inside, where
the codec smears the bar's edge into the picture.
"""
from dataclasses import dataclass

import numpy as np

BAR_MEAN_MAX = 16.0
"""A row or column darker than this on average (0..255) over the probe frames is a bar."""
EDGE_SHAVE_PX = 2
MIN_CONTENT_FRACTION = 0.4
"""If less than this much of the height (or width) would remain, the video is dark, not letterboxed."""


@dataclass(frozen=True)
class FixedCrop:
    """Pixels cut from each side after bar removal, at the working size (e.g. a burnt-in overlay strip)."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    @classmethod
    def parse(cls, text: str) -> "FixedCrop":
        """'TOP,BOTTOM,LEFT,RIGHT' in pixels."""
        parts = [int(x) for x in text.split(",")]
        if len(parts) != 4 or min(parts) < 0:
            raise ValueError(f"crop must be four non-negative pixel counts TOP,BOTTOM,LEFT,RIGHT, got {text!r}")
        return cls(*parts)


def _bar_extent(profile: np.ndarray) -> tuple[int, int]:
    """(first, last + 1) of the content along one axis, from the mean brightness per row or column."""
    dark = profile < BAR_MEAN_MAX
    start = int(np.argmin(dark)) if not dark.all() else 0
    end = len(profile) - int(np.argmin(dark[::-1])) if not dark.all() else len(profile)
    if start > 0:
        start += EDGE_SHAVE_PX
    if end < len(profile):
        end -= EDGE_SHAVE_PX
    if end - start < MIN_CONTENT_FRACTION * len(profile):
        return 0, len(profile)
    return start, end


def content_box(frames: list[np.ndarray], fixed: FixedCrop = FixedCrop()) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the picture in (H, W, 3) frames, bars and the fixed crop removed.

    Width and height are made even (video-friendly and JPEG-friendly); raises ValueError if the fixed
    crop leaves nothing.
    """
    stack = np.stack(frames).astype(np.float32).mean(axis=(0, 3))
    y0, y1 = _bar_extent(stack.mean(axis=1))
    x0, x1 = _bar_extent(stack.mean(axis=0))
    y0, y1 = y0 + fixed.top, y1 - fixed.bottom
    x0, x1 = x0 + fixed.left, x1 - fixed.right
    width, height = (x1 - x0) // 2 * 2, (y1 - y0) // 2 * 2
    if width < 16 or height < 16:
        raise ValueError(f"the crop leaves {max(width, 0)}x{max(height, 0)} pixels of a "
                         f"{stack.shape[1]}x{stack.shape[0]} frame")
    return x0, y0, width, height
