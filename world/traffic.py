"""A parked camera on a straight street while traffic drives past: the scene of a "parked_traffic" shot.

The camera stands in the parking lane with a free space around it; cars drive along both driving lanes at
constant speed (8-15 m/s, one speed per lane so they never collide), enough of them that one is close
for much of the shot. The cars are `Movers`: the renderer places them by time, and their pixels are the
only ones that change.
"""
import numpy as np

from world.road import LANE_WIDTH_M, PARKING_WIDTH_M, Road
from world.scene import CAR_COLOURS, BoxList, Material, Movers, Scene, add_car, street_along

SPEED_MPS = (8.0, 15.0)
CAMERA_D_M = -(LANE_WIDTH_M + PARKING_WIDTH_M / 2)
"""The middle of the right-hand parking lane."""
FREE_BEHIND_M, FREE_AHEAD_M = 8.0, 10.0
"""Parked cars centred this close behind or ahead of the camera are taken away: the camera car's own space."""
TRAFFIC_BEYOND_M = 150.0
"""Traffic reaches this far ahead of the camera (and behind it, for cars that will pass it) at every time."""
GAP_M = (6.0, 30.0)
"""Bumper-to-bumper distance between cars in a lane."""


def camera_s_m(duration_s: float) -> float:
    """Where along the road the camera stands: far enough along that the cars passing it during
    `duration_s` start on the road."""
    return 20.0 + SPEED_MPS[1] * duration_s + TRAFFIC_BEYOND_M


def generate_parked_traffic_scene(seed: int, duration_s: float) -> Scene:
    """A straight street with the camera's space free at `camera_s_m(duration_s)`, and traffic for `duration_s`."""
    rng = np.random.default_rng([seed, 3])
    camera_s = camera_s_m(duration_s)
    road = Road.straight(camera_s + SPEED_MPS[1] * duration_s + TRAFFIC_BEYOND_M + 300.0)
    scene = street_along(seed, road, rng)
    b = scene.boxes
    is_car = (b.material == Material.CAR_BODY) | (b.material == Material.CAR_CABIN)
    s, d = road.pieces[0].road_coords(b.centre_m[:, 0], b.centre_m[:, 1])
    in_the_space = (d < 0) & (s > camera_s - FREE_BEHIND_M) & (s < camera_s + FREE_AHEAD_M)
    scene.boxes = b.subset(~(is_car & in_the_space))
    scene.movers = _traffic(road, rng, camera_s, duration_s)
    return scene


def _traffic(road: Road, rng: np.random.Generator, camera_s: float, duration_s: float) -> Movers:
    """Cars in the right lane driving away from behind the camera, and in the left lane coming toward it."""
    cars = BoxList(road, rng)
    velocities = []
    heading = road.pieces[0].start_heading_rad
    forward = np.array([np.cos(heading), np.sin(heading), 0.0])
    for direction in (1.0, -1.0):
        speed = float(rng.uniform(*SPEED_MPS))
        travel_m = speed * duration_s
        lo, hi = camera_s - TRAFFIC_BEYOND_M, camera_s + TRAFFIC_BEYOND_M
        lo, hi = (lo - travel_m, hi) if direction > 0 else (lo, hi + travel_m)
        s = lo + float(rng.uniform(0, GAP_M[1]))
        while s < hi:
            length_m = float(rng.uniform(3.9, 4.9))
            colour = CAR_COLOURS[rng.integers(len(CAR_COLOURS))] * rng.uniform(0.85, 1.1)
            add_car(cars, s, -direction * LANE_WIDTH_M / 2, length_m, colour)
            velocities += [direction * speed * forward] * 2
            s += length_m + float(rng.uniform(*GAP_M))
    return Movers(boxes=cars.pack(), velocity_mps=np.array(velocities).reshape(-1, 3))
