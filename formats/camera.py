"""Camera conventions shared by every part of GeoPt.

Camera frame: x right, y down, z forward (OpenCV and Monodepth2). Depth is z-depth in metres.
Pixel (u, v) is column u, row v, and its ray passes through image coordinate (u, v) itself, with no
half-pixel shift, as Monodepth2's ``BackprojectDepth`` does.

Intrinsics are stored *normalised by image size* as Monodepth2 does: row 0 of K divided by the width,
row 1 by the height. One normalised K then serves every resolution of the same camera.
"""
import math

import numpy as np

KITTI_K_NORMALISED = np.array([[0.58, 0.0, 0.5], [0.0, 1.92, 0.5], [0.0, 0.0, 1.0]])
"""Monodepth2's intrinsics for KITTI's colour cameras: fx = 0.58 W, fy = 1.92 H, principal point at the centre."""

KITTI_STEREO_BASELINE_M = 0.54
"""Distance between KITTI's colour cameras (image_02 left, image_03 right), as Monodepth2 uses it."""


def intrinsics_normalised(K_px: np.ndarray, width_px: int, height_px: int) -> np.ndarray:
    """(3, 3) intrinsics in pixels -> (3, 3) intrinsics normalised by image size."""
    K = np.array(K_px, dtype=np.float64)
    K[0, :] /= width_px
    K[1, :] /= height_px
    return K


def fov_intrinsics(fov_deg: float, width_px: int, height_px: int) -> np.ndarray:
    """(3, 3) normalised K of a `width_px` x `height_px` image with horizontal field of view `fov_deg`,
    square pixels and the principal point at the centre: fx = 0.5 W / tan(fov / 2)."""
    focal_px = 0.5 * width_px / math.tan(math.radians(fov_deg) / 2)
    return np.array([[focal_px / width_px, 0.0, 0.5], [0.0, focal_px / height_px, 0.5], [0.0, 0.0, 1.0]])
