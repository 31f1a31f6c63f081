"""Camera conventions shared by every part of GeoPt, and the geometry built on them.

Camera frame: x right, y down, z forward (OpenCV and Monodepth2). Depth is z-depth in metres.
Pixel (u, v) is column u, row v, and its ray passes through image coordinate (u, v) itself, with no
half-pixel shift, as Monodepth2's ``BackprojectDepth`` does.

Intrinsics are stored *normalised by image size* as Monodepth2 does: row 0 of K divided by the width,
row 1 by the height. One normalised K then serves every resolution of the same camera.
"""
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where warping runs, so the world and mining never load it
    import torch

KITTI_K_NORMALISED = np.array([[0.58, 0.0, 0.5], [0.0, 1.92, 0.5], [0.0, 0.0, 1.0]])
"""Monodepth2's intrinsics for KITTI's colour cameras: fx = 0.58 W, fy = 1.92 H, principal point at the centre."""

KITTI_STEREO_BASELINE_M = 0.54
"""Distance between KITTI's colour cameras (image_02 left, image_03 right), as Monodepth2 uses it."""


def intrinsics_px(K_normalised: np.ndarray, width_px: int, height_px: int) -> np.ndarray:
    """(3, 3) normalised intrinsics -> (3, 3) intrinsics in pixels for a `width_px` x `height_px` image."""
    K = np.array(K_normalised, dtype=np.float64)
    K[0, :] *= width_px
    K[1, :] *= height_px
    return K


def intrinsics_normalised(K_px: np.ndarray, width_px: int, height_px: int) -> np.ndarray:
    """(3, 3) intrinsics in pixels -> (3, 3) intrinsics normalised by image size."""
    K = np.array(K_px, dtype=np.float64)
    K[0, :] /= width_px
    K[1, :] /= height_px
    return K


def warp_by_flow(source: "torch.Tensor", flow_px: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Sample `source` (B, C, H, W) at each pixel + its flow (B, 2, H, W) in pixels (du, dv).

    Returns the warped image and a (B, 1, H, W) mask of pixels whose sample point lies inside the image.
    Pixel u sits at coordinate u (see the module doc), hence align_corners=True.
    """
    import torch
    import torch.nn.functional as F

    b, _, h, w = flow_px.shape
    v, u = torch.meshgrid(torch.arange(h, device=flow_px.device, dtype=flow_px.dtype),
                          torch.arange(w, device=flow_px.device, dtype=flow_px.dtype), indexing="ij")
    x, y = u + flow_px[:, 0], v + flow_px[:, 1]
    grid = torch.stack([2 * x / (w - 1) - 1, 2 * y / (h - 1) - 1], dim=-1)
    warped = F.grid_sample(source, grid.to(source.dtype), mode="bilinear", padding_mode="border", align_corners=True)
    inside = ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).unsqueeze(1)
    return warped, inside.to(source.dtype)
