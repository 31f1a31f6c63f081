"""The road: a centreline of straight and gently curved pieces, and the road coordinates (s, d) on it.

s is the distance along the centreline in metres, d the signed lateral offset in metres (positive to the
left of the direction of travel). Each piece has constant curvature, so the mapping of a ground point to
(s, d) is exact and cheap: a projection on a line or a polar angle about an arc's centre.
"""
from dataclasses import dataclass

import numpy as np

LANE_WIDTH_M = 3.5
PARKING_WIDTH_M = 2.2
KERB_WIDTH_M = 0.25
SIDEWALK_WIDTH_M = 3.5
CARRIAGEWAY_HALF_WIDTH_M = LANE_WIDTH_M + PARKING_WIDTH_M
"""From the centreline to the kerb: one driving lane and one parking lane on each side."""
BUILDING_LINE_M = CARRIAGEWAY_HALF_WIDTH_M + KERB_WIDTH_M + SIDEWALK_WIDTH_M
"""Lateral offset of the facades."""


@dataclass(frozen=True)
class RoadPiece:
    s_start_m: float
    length_m: float
    curvature_per_m: float
    start_xy_m: tuple[float, float]
    start_heading_rad: float

    def point(self, s_local_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centreline (N, 2) positions and (N,) headings at distances `s_local_m` from the piece start."""
        k, h0 = self.curvature_per_m, self.start_heading_rad
        x0, y0 = self.start_xy_m
        if abs(k) < 1e-12:
            xy = np.stack([x0 + s_local_m * np.cos(h0), y0 + s_local_m * np.sin(h0)], axis=-1)
            return xy, np.full_like(s_local_m, h0)
        heading = h0 + k * s_local_m
        xy = np.stack([x0 + (np.sin(heading) - np.sin(h0)) / k, y0 - (np.cos(heading) - np.cos(h0)) / k], axis=-1)
        return xy, heading

    def road_coords(self, dx_m: np.ndarray, dy_m: np.ndarray, origin_xy_m=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
        """Ground points `origin_xy_m` + (dx, dy) -> (s from this piece's start, d), as if the piece went on forever.

        The offsets may be float32: only they are arrays, the large origin is folded in as a float64 scalar.
        """
        k, h0 = self.curvature_per_m, self.start_heading_rad
        c, s = np.cos(h0), np.sin(h0)
        ox, oy = origin_xy_m[0] - self.start_xy_m[0], origin_xy_m[1] - self.start_xy_m[1]
        if abs(k) < 1e-12:
            return (ox * c + oy * s) + (dx_m * c + dy_m * s), (oy * c - ox * s) + (dy_m * c - dx_m * s)
        # Arc centre lies 1/k along the left normal (-sin h0, cos h0); angles are measured about it.
        wx, wy = dx_m + (ox + s / k), dy_m + (oy - c / k)
        ax, ay = s / k, -c / k  # from the centre back to the piece start
        angle = np.arctan2(ax * wy - ay * wx, ax * wx + ay * wy)
        return angle / k, 1.0 / k - np.sign(k) * np.hypot(wx, wy)


class Road:
    """A chain of `RoadPiece`s starting at the origin heading east."""

    def __init__(self, pieces: list[RoadPiece]):
        assert pieces, "a road needs at least one piece"
        self.pieces = pieces
        self.starts_m = np.array([p.s_start_m for p in pieces])
        self.length_m = pieces[-1].s_start_m + pieces[-1].length_m

    @classmethod
    def random(cls, rng: np.random.Generator, length_m: float, max_curvature_per_m: float = 1 / 250,
               piece_length_m: tuple[float, float] = (60.0, 160.0)) -> "Road":
        """Straights and gentle arcs (radius >= 1/max_curvature) alternating, each `piece_length_m` (min, max)
        long, total length >= `length_m`."""
        pieces, s, xy, heading = [], 0.0, (0.0, 0.0), 0.0
        straight = True
        while s < length_m:
            piece_length = float(rng.uniform(*piece_length_m))
            curvature = 0.0 if straight else float(rng.choice([-1, 1]) * rng.uniform(0.4, 1.0) * max_curvature_per_m)
            piece = RoadPiece(s, piece_length, curvature, xy, heading)
            end_xy, end_heading = piece.point(np.array([piece_length]))
            pieces.append(piece)
            s += piece_length
            xy, heading = (float(end_xy[0, 0]), float(end_xy[0, 1])), float(end_heading[0])
            straight = not straight
        return cls(pieces)

    @classmethod
    def straight(cls, length_m: float) -> "Road":
        """One straight piece from the origin heading east, so road (s, d) are world (x, y)."""
        return cls([RoadPiece(0.0, length_m, 0.0, (0.0, 0.0), 0.0)])

    def point(self, s_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) centreline positions and (N,) headings at arc lengths `s_m` (clamped to the road)."""
        s_m = np.clip(np.atleast_1d(np.asarray(s_m, dtype=np.float64)), 0.0, self.length_m)
        index = np.clip(np.searchsorted(self.starts_m, s_m, side="right") - 1, 0, len(self.pieces) - 1)
        xy = np.empty((len(s_m), 2))
        heading = np.empty(len(s_m))
        for i in np.unique(index):
            sel = index == i
            piece = self.pieces[i]
            xy[sel], heading[sel] = piece.point(s_m[sel] - piece.s_start_m)
        return xy, heading

    def to_world(self, s_m: np.ndarray, d_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Road coordinates -> (N, 2) world XY and the (N,) road heading there."""
        xy, heading = self.point(s_m)
        d_m = np.broadcast_to(np.asarray(d_m, dtype=np.float64), heading.shape)
        left = np.stack([-np.sin(heading), np.cos(heading)], axis=-1)
        return xy + left * d_m[:, None], heading

    def road_coords(self, dx_m: np.ndarray, dy_m: np.ndarray, s_near_m: tuple[float, float],
                    origin_xy_m=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
        """Ground points `origin_xy_m` + (dx, dy) -> (s, d), trying the pieces that overlap `s_near_m`.

        A point takes the piece whose span contains it with the smallest |d|; a point in no span takes
        the piece whose span it misses by the least. Only points near the road need exact values: they
        are what lane markings and kerbs are drawn from.
        """
        lo, hi = s_near_m
        candidates = [p for p in self.pieces if p.s_start_m < hi and p.s_start_m + p.length_m > lo]
        candidates = candidates or [self.pieces[-1]]
        best_s = best_d = best_cost = None
        for piece in candidates:
            s_local, d = piece.road_coords(dx_m, dy_m, origin_xy_m)
            miss = np.maximum(-s_local, s_local - piece.length_m).clip(min=0.0)
            cost = np.abs(d) + 1e3 * miss
            s = s_local + piece.s_start_m
            if best_cost is None:
                best_s, best_d, best_cost = s, d, cost
            else:
                better = cost < best_cost
                best_s = np.where(better, s, best_s)
                best_d = np.where(better, d, best_d)
                best_cost = np.where(better, cost, best_cost)
        return best_s, best_d
