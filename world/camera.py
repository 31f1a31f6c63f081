"""The world's pinhole camera and camera poses.

World frame: X east, Y north, Z up, the ground at Z = 0. Camera frame as in `formats.camera`: x right,
y down, z forward. A pose is a (4, 4) camera-to-world matrix in metres.
"""
from dataclasses import dataclass

import numpy as np

from formats.camera import KITTI_K_NORMALISED


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics in pixels of a `width_px` x `height_px` image."""

    width_px: int
    height_px: int
    fx_px: float
    fy_px: float
    cx_px: float
    cy_px: float

    @classmethod
    def kitti_like(cls, width_px: int, height_px: int) -> "PinholeCamera":
        """KITTI's horizontal field of view (fx = 0.58 W), square pixels, principal point at the centre."""
        if width_px < 8 or height_px < 8 or width_px > 8192 or height_px > 8192:
            raise ValueError(f"image size {width_px}x{height_px} is outside 8..8192 pixels per side")
        focal_px = KITTI_K_NORMALISED[0, 0] * width_px
        return cls(width_px, height_px, focal_px, focal_px,
                   KITTI_K_NORMALISED[0, 2] * width_px, KITTI_K_NORMALISED[1, 2] * height_px)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx_px, 0.0, self.cx_px], [0.0, self.fy_px, self.cy_px], [0.0, 0.0, 1.0]])

    def pixel_rays(self) -> np.ndarray:
        """(H, W, 3) float32 ray directions in the camera frame, scaled so z = 1 (a ray's t is z-depth)."""
        u = (np.arange(self.width_px, dtype=np.float32) - self.cx_px) / self.fx_px
        v = (np.arange(self.height_px, dtype=np.float32) - self.cy_px) / self.fy_px
        rays = np.empty((self.height_px, self.width_px, 3), dtype=np.float32)
        rays[..., 0] = u[None, :]
        rays[..., 1] = v[:, None]
        rays[..., 2] = 1.0
        return rays

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """(..., 3) points in the camera frame -> (..., 2) pixel coordinates (u, v)."""
        z = points_cam[..., 2]
        u = self.fx_px * points_cam[..., 0] / z + self.cx_px
        v = self.fy_px * points_cam[..., 1] / z + self.cy_px
        return np.stack([u, v], axis=-1)


def pose_from_heading(position_m: np.ndarray, heading_rad: float, pitch_rad: float = 0.0,
                      roll_rad: float = 0.0) -> np.ndarray:
    """Camera-to-world pose of a camera at `position_m` looking along `heading_rad` (0 = east, CCW).

    Pitch is positive nose-up, roll positive clockwise as the driver sees it; both turn about the
    camera's own axes after the heading.
    """
    forward = np.array([np.cos(heading_rad), np.sin(heading_rad), 0.0])
    up = np.array([0.0, 0.0, 1.0])
    right = np.cross(forward, up)
    level = np.stack([right, -up, forward], axis=1)
    cp, sp = np.cos(pitch_rad), np.sin(pitch_rad)
    pitch = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    cr, sr = np.cos(roll_rad), np.sin(roll_rad)
    roll = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    pose = np.eye(4)
    pose[:3, :3] = level @ pitch @ roll
    pose[:3, 3] = position_m
    return pose


def offset_pose(pose: np.ndarray, right_m: float) -> np.ndarray:
    """The pose of a camera `right_m` metres to the right of `pose` along its own x axis (a stereo partner)."""
    shifted = pose.copy()
    shifted[:3, 3] = pose[:3, 3] + pose[:3, 0] * right_m
    return shifted
