"""Ray casting of a `Scene`: colour, exact z-depth, and exact optical flow between two poses.

Each frame casts one ray per pixel at the ground plane, then at each box and sphere that can be seen,
testing only the pixels inside the primitive's projected bounding rectangle, nearest first, skipping
what is already hidden. Depth is exact (analytic intersection); colour comes from `world.shading`.
Sky pixels have infinite depth. Movers (traffic) are boxes like any other, placed where they are at
the frame's time before it is cast.
"""
import ctypes
from dataclasses import dataclass, replace

import cv2
import numpy as np

from world.camera import PinholeCamera
from world.scene import Boxes, Scene
from world.shading import Shader

NEAR_M = 0.05
FAR_M = 400.0
"""Primitives further than this are not tested; the ground plane still reaches the horizon."""
SKY, GROUND, BOX, SPHERE = 0, 1, 2, 3
LAMP_HEAD_M = 0.25
LAMP_COLOUR = np.float32([1.0, 0.82, 0.55])
"""Sodium-ish warm white of a street lamp's glow."""
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_BOX_CORNERS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
_BOX_EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]


@dataclass
class Frame:
    rgb: np.ndarray
    """(H, W, 3) uint8."""
    depth_m: np.ndarray
    """(H, W) float32 z-depth in metres, +inf on sky."""


def keep_temporaries_on_heap() -> None:
    """Ask glibc malloc to serve large blocks from the heap and keep freed memory for reuse.

    A frame allocates hundreds of short-lived arrays above malloc's 128 KiB mmap threshold; by default
    each is mmap'ed, page-faulted in and unmapped, which cost a third of the render time. The heap
    stays bounded by the largest frame's working set. A no-op where glibc is absent.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    libc.mallopt(_M_TOP_PAD, 64 << 20)


class Renderer:
    """Renders one scene through one camera. Construct once, call `render` per pose."""

    def __init__(self, scene: Scene, camera: PinholeCamera, blur_sigma_px: float = 0.6):
        keep_temporaries_on_heap()
        self._static_box_count = len(scene.boxes.yaw_rad)
        if scene.movers is not None:  # movers become the last boxes; `render` moves them in these copies
            scene = replace(scene, boxes=Boxes.concatenate([scene.boxes, scene.movers.boxes]))
        self.scene, self.camera = scene, camera
        self.rays_cam = np.ascontiguousarray(camera.pixel_rays().transpose(2, 0, 1))
        """(3, H, W) camera-frame ray of each pixel, z = 1; component planes keep every operation contiguous."""
        self.blur_sigma_px = blur_sigma_px
        self.shader = Shader(scene)
        b = scene.boxes
        self._box_radius = np.linalg.norm(b.half_size_m, axis=1)
        self._box_cos, self._box_sin = np.cos(b.yaw_rad), np.sin(b.yaw_rad)

    def render(self, pose: np.ndarray, exposure: float = 1.0, time_s: float = 0.0) -> Frame:
        """Colour and depth seen from camera-to-world `pose` (4, 4) at `time_s` seconds (which places the
        scene's movers, if any)."""
        if self.scene.movers is not None:
            self._place_movers(time_s)
        rotation = pose[:3, :3].astype(np.float32)
        origin = pose[:3, 3]
        rays = np.tensordot(rotation, self.rays_cam, axes=1)
        h, w = rays.shape[1:]
        depth = np.full((h, w), np.inf, dtype=np.float32)
        kind = np.zeros((h, w), dtype=np.int8)
        index = np.full((h, w), -1, dtype=np.int32)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            downward = rays[2] < 0
            ground_t = np.where(downward, -np.float32(origin[2]) / rays[2], np.inf).astype(np.float32)
            np.copyto(depth, ground_t, where=downward)
            kind[downward] = GROUND
            for i, window, min_distance_m in self._visible_boxes(pose):
                if not self._occluded(window, min_distance_m, depth):
                    self._cast_box(i, window, origin, rays, depth, kind, index)
            for i, window, min_distance_m in self._visible_spheres(pose):
                if not self._occluded(window, min_distance_m, depth):
                    self._cast_sphere(i, window, origin, rays, depth, kind, index)
        self.shader.camera_pose = pose
        colour = self._shade(origin, rays, depth, kind, index)
        if self.scene.at_night:
            self._add_lamp_glow(colour, pose, depth)
        colour *= np.float32(exposure * 255.0)
        rgb = np.ascontiguousarray(np.clip(colour, 0, 255).astype(np.uint8).transpose(1, 2, 0))
        if self.blur_sigma_px > 0:  # the lens: a camera never resolves single-pixel steps
            rgb = cv2.GaussianBlur(rgb, (0, 0), self.blur_sigma_px)
        return Frame(rgb=rgb, depth_m=depth)

    def _add_lamp_glow(self, colour: np.ndarray, pose: np.ndarray, depth: np.ndarray) -> None:
        """Add the glow of every street lamp in view and not hidden to `colour` (3, H, W): a bright core
        `LAMP_HEAD_M` across and a faint halo four times wider, as a lens renders a lamp at night."""
        cam = self.camera
        lamps_cam = (self.scene.lamps_m - pose[:3, 3]) @ pose[:3, :3]
        for x, y, z in lamps_cam[(lamps_cam[:, 2] > 1.0) & (lamps_cam[:, 2] < FAR_M)]:
            u, v = cam.fx_px * x / z + cam.cx_px, cam.fy_px * y / z + cam.cy_px
            radius_px = max(0.8, cam.fx_px * LAMP_HEAD_M / z)
            reach = int(np.ceil(12 * radius_px))
            v0, v1 = max(0, int(v) - reach), min(cam.height_px, int(v) + reach + 1)
            u0, u1 = max(0, int(u) - reach), min(cam.width_px, int(u) + reach + 1)
            if v0 >= v1 or u0 >= u1:
                continue
            centre_row, centre_column = min(max(int(v), v0), v1 - 1), min(max(int(u), u0), u1 - 1)
            if depth[centre_row, centre_column] < 0.95 * z and 0 <= v < cam.height_px and 0 <= u < cam.width_px:
                continue  # something nearer stands in front of the lamp
            distance_sq = ((np.arange(v0, v1, dtype=np.float32)[:, None] - v) ** 2
                           + (np.arange(u0, u1, dtype=np.float32)[None, :] - u) ** 2)
            glow = 4.0 * np.exp(-distance_sq / (2 * radius_px**2)) + 0.15 * np.exp(-distance_sq / (32 * radius_px**2))
            colour[:, v0:v1, u0:u1] += LAMP_COLOUR[:, None, None] * glow

    def _place_movers(self, time_s: float) -> None:
        """Put the movers (the boxes after the static ones) where they are at `time_s`."""
        movers = self.scene.movers
        centre_m = movers.boxes.centre_m + movers.velocity_mps * time_s
        self.scene.boxes.centre_m[self._static_box_count:] = centre_m
        self.shader.box_centre[:, self._static_box_count:] = centre_m.T

    # --- visibility -------------------------------------------------------------------------------

    def _windows(self, pose: np.ndarray, corners_world: np.ndarray) -> list:
        """Pixel rectangles (v0, v1, u0, u1) covering each object's 8 corners (N, 8, 3), or None if unseen.

        Edges crossing the near plane are clipped there first, so objects beside or behind the camera
        still get a tight, correct rectangle.
        """
        cam = self.camera
        corners_cam = (corners_world - pose[:3, 3]) @ pose[:3, :3]
        z = corners_cam[..., 2]
        in_front = (z > NEAR_M).all(axis=1)
        u_min = np.empty(len(z))
        u_max, v_min, v_max = np.empty_like(u_min), np.empty_like(u_min), np.empty_like(u_min)
        p = corners_cam[in_front]
        u = cam.fx_px * p[..., 0] / p[..., 2] + cam.cx_px
        v = cam.fy_px * p[..., 1] / p[..., 2] + cam.cy_px
        u_min[in_front], u_max[in_front] = u.min(axis=1), u.max(axis=1)
        v_min[in_front], v_max[in_front] = v.min(axis=1), v.max(axis=1)
        for i in np.flatnonzero(~in_front):
            corners, zi = corners_cam[i], z[i]
            points = [corners[zi > NEAR_M]]
            for a, b in _BOX_EDGES:
                if (zi[a] > NEAR_M) != (zi[b] > NEAR_M):
                    f = (NEAR_M - zi[a]) / (zi[b] - zi[a])
                    points.append((corners[a] + f * (corners[b] - corners[a]))[None])
            q = np.concatenate(points)
            if len(q) == 0:  # wholly behind the near plane: an empty window
                u_min[i], u_max[i], v_min[i], v_max[i] = cam.width_px, -1.0, cam.height_px, -1.0
                continue
            uq = cam.fx_px * q[:, 0] / q[:, 2] + cam.cx_px
            vq = cam.fy_px * q[:, 1] / q[:, 2] + cam.cy_px
            u_min[i], u_max[i], v_min[i], v_max[i] = uq.min(), uq.max(), vq.min(), vq.max()
        u0 = np.maximum(np.floor(u_min), 0).astype(np.int64)
        u1 = np.minimum(np.ceil(u_max) + 1, cam.width_px).astype(np.int64)
        v0 = np.maximum(np.floor(v_min), 0).astype(np.int64)
        v1 = np.minimum(np.ceil(v_max) + 1, cam.height_px).astype(np.int64)
        return [(a, b, c, d) if a < b and c < d else None for a, b, c, d in zip(v0, v1, u0, u1)]

    def _near(self, pose: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of objects whose bounding sphere meets the view frustum within FAR_M, nearest first,
        and the distance of each from the camera."""
        cam = self.camera
        rel = (centres - pose[:3, 3]) @ pose[:3, :3]
        distance = np.linalg.norm(rel, axis=1)
        slope_x = max(cam.cx_px, cam.width_px - cam.cx_px) / cam.fx_px
        slope_y = max(cam.cy_px, cam.height_px - cam.cy_px) / cam.fy_px
        seen = ((rel[:, 2] > NEAR_M - radii) & (distance - radii < FAR_M)
                & (np.abs(rel[:, 0]) - radii * np.sqrt(1 + slope_x**2) < rel[:, 2] * slope_x)
                & (np.abs(rel[:, 1]) - radii * np.sqrt(1 + slope_y**2) < rel[:, 2] * slope_y))
        ids = np.flatnonzero(seen)
        order = np.argsort(distance[ids], kind="stable")
        return ids[order], distance[ids[order]]

    def _visible_boxes(self, pose):
        b = self.scene.boxes
        ids, distance = self._near(pose, b.centre_m, self._box_radius)
        half = b.half_size_m[ids][:, None, :] * _BOX_CORNERS[None]
        c, s = self._box_cos[ids][:, None], self._box_sin[ids][:, None]
        corners = np.stack([c * half[..., 0] - s * half[..., 1], s * half[..., 0] + c * half[..., 1], half[..., 2]], -1)
        corners += b.centre_m[ids][:, None, :]
        return [(i, w, dist - r) for i, w, dist, r in zip(ids, self._windows(pose, corners), distance,
                                                          self._box_radius[ids]) if w is not None]

    def _visible_spheres(self, pose):
        sp = self.scene.spheres
        ids, distance = self._near(pose, sp.centre_m, sp.radius_m)
        corners = sp.centre_m[ids][:, None, :] + sp.radius_m[ids][:, None, None] * _BOX_CORNERS[None]
        return [(i, w, dist - r) for i, w, dist, r in zip(ids, self._windows(pose, corners), distance,
                                                          sp.radius_m[ids]) if w is not None]

    # --- intersection -----------------------------------------------------------------------------

    @staticmethod
    def _occluded(window, min_distance_m: float, depth: np.ndarray) -> bool:
        """True when everything already drawn in `window` is nearer than the object can be.

        Depth is z-depth, never more than the distance along the ray, so the test is conservative.
        Objects are cast nearest first, which makes this cull most of the street behind the front row.
        """
        v0, v1, u0, u1 = window
        return bool(depth[v0:v1, u0:u1].max() < min_distance_m)

    def _cast_box(self, i, window, origin, rays, depth, kind, index):
        v0, v1, u0, u1 = window
        r = rays[:, v0:v1, u0:u1]
        b = self.scene.boxes
        c, s = np.float32(self._box_cos[i]), np.float32(self._box_sin[i])
        rel = origin - b.centre_m[i]
        o_local = (c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2])
        d_local = (c * r[0] + s * r[1], c * r[1] - s * r[0], r[2])
        t_near = t_far = None
        for axis in range(3):
            inv = np.reciprocal(d_local[axis])
            h, o = b.half_size_m[i, axis], o_local[axis]
            lo = np.multiply(inv, np.float32(-h - o))
            hi = np.multiply(inv, np.float32(h - o))
            if t_near is None:
                t_near, t_far = np.minimum(lo, hi), np.maximum(lo, hi)
            else:
                np.maximum(t_near, np.minimum(lo, hi, out=inv), out=t_near)
                np.minimum(t_far, np.maximum(lo, hi, out=inv), out=t_far)
        d = depth[v0:v1, u0:u1]
        hit = t_near <= t_far
        hit &= t_near > NEAR_M
        hit &= t_near < d
        np.copyto(d, t_near, where=hit)
        np.copyto(kind[v0:v1, u0:u1], BOX, where=hit)
        np.copyto(index[v0:v1, u0:u1], i, where=hit)

    def _cast_sphere(self, i, window, origin, rays, depth, kind, index):
        v0, v1, u0, u1 = window
        r = rays[:, v0:v1, u0:u1]
        sp = self.scene.spheres
        rel = (origin - sp.centre_m[i]).astype(np.float32)
        a = r[0] * r[0] + r[1] * r[1] + r[2] * r[2]
        half_b = r[0] * rel[0] + r[1] * rel[1] + r[2] * rel[2]
        c = np.float32(rel @ rel - sp.radius_m[i] ** 2)
        disc = half_b**2 - a * c
        t = (-half_b - np.sqrt(np.maximum(disc, 0))) / a
        d = depth[v0:v1, u0:u1]
        hit = (disc > 0) & (t > NEAR_M) & (t < d)
        np.copyto(d, t, where=hit)
        np.copyto(kind[v0:v1, u0:u1], SPHERE, where=hit)
        np.copyto(index[v0:v1, u0:u1], i, where=hit)

    # --- shading ----------------------------------------------------------------------------------

    def _shade(self, origin, rays, depth, kind, index) -> np.ndarray:
        """(3, H, W) float32 linear colour of every pixel, one shader per kind of hit."""
        h, w = depth.shape
        rays, depth, kind, index = rays.reshape(3, -1), depth.reshape(-1), kind.reshape(-1), index.reshape(-1)
        colour = np.empty((3, h * w), dtype=np.float32)
        inverse_focal = np.float32(1.0 / self.camera.fx_px)
        shaders = {SKY: self.shader.sky, GROUND: self.shader.ground, BOX: self.shader.boxes, SPHERE: self.shader.spheres}
        for k, shade in shaders.items():
            ids = np.flatnonzero(kind == k)
            if len(ids):
                t = depth.take(ids)
                colour[:, ids] = shade(origin, rays.take(ids, axis=1), t, t * inverse_focal, index.take(ids))
        return colour.reshape(3, h, w)


def flow_between(depth_m: np.ndarray, pose_from: np.ndarray, pose_to: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """(H, W, 2) float32 optical flow in pixels (du, dv) of every pixel of the `pose_from` frame.

    A pixel's point (from its z-depth) is moved into the `pose_to` camera and projected; points at
    infinite depth (sky) move by the rotation alone. Exact for static geometry; pixels whose point is
    hidden in the other frame still get the flow of where it would be. Movers are not in it: their
    pixels get the flow of a static point at their depth.
    """
    rays = camera.pixel_rays().astype(np.float64)
    relative = np.linalg.inv(pose_to) @ pose_from
    rotation, translation = relative[:3, :3], relative[:3, 3]
    finite = np.isfinite(depth_m)
    inverse_depth = np.where(finite, 1.0 / np.where(finite, depth_m, 1.0), 0.0)[..., None]
    # Homogeneous form: R * ray + t / depth is the moved point divided by depth, finite for sky.
    moved = rays @ rotation.T + translation * inverse_depth
    u = camera.fx_px * moved[..., 0] / moved[..., 2] + camera.cx_px
    v = camera.fy_px * moved[..., 1] / moved[..., 2] + camera.cy_px
    grid_u, grid_v = np.meshgrid(np.arange(camera.width_px), np.arange(camera.height_px))
    return np.stack([u - grid_u, v - grid_v], axis=-1).astype(np.float32)
