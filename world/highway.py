"""A highway through open land from an integer seed: a wide road, guard rails, sparse trees and farms,
and low hills far off.

Little stands near the road, so sky and distant terrain fill most of the picture and barely move while
the camera drives fast; the markings, rails and posts keep the near field textured. The ground between
the objects is painted by `Shader.highway_ground`.
"""
from dataclasses import replace

import numpy as np

from world.road import LANE_WIDTH_M, Road
from world.scene import FACADE_COLOURS, Boxes, BoxList, Material, Scene, Spheres, add_tree, random_sun

LANES_PER_DIRECTION = 2
ASPHALT_HALF_WIDTH_M = LANES_PER_DIRECTION * LANE_WIDTH_M + 1.0
"""Two 3.5 m lanes each way and a 1 m hard shoulder."""
EDGE_LINE_M = LANES_PER_DIRECTION * LANE_WIDTH_M + 0.25
SHOULDER_HALF_WIDTH_M = ASPHALT_HALF_WIDTH_M + 1.6
"""Gravel beyond the asphalt, up to the grass."""
GUARD_RAIL_M = ASPHALT_HALF_WIDTH_M + 1.0
MAX_CURVATURE_PER_M = 1 / 3000
"""Radius 3 km or more: turning at 30 m/s swings the view by under 0.4 px per 0.1 s at 640 wide."""
PIECE_LENGTH_M = (300.0, 700.0)
RAIL_SEGMENT_M = 8.0
POST_SPACING_M = 4.0
LAMP_POST_SPACING_M = 120.0
LAMP_POST_HEIGHT_M = 10.0


def lamp_posts(scene: Scene) -> Scene:
    """The highway with tall posts beside its right shoulder every `LAMP_POST_SPACING_M` (a lit stretch
    near a town; `world.scene.at_night` hangs a lamp on each). Drawn from nothing random: the rest of the
    scene stays as its seed made it."""
    posts = BoxList(scene.road, np.random.default_rng(0))
    for s in np.arange(LAMP_POST_SPACING_M / 2, scene.road.length_m, LAMP_POST_SPACING_M):
        posts.add(float(s), -(GUARD_RAIL_M + 0.6), 0.0, 0.18, 0.18, LAMP_POST_HEIGHT_M, Material.METAL,
                  np.array([0.40, 0.41, 0.43]))
    return replace(scene, boxes=Boxes.concatenate([scene.boxes, posts.pack()]))


def generate_highway_scene(seed: int, length_m: float) -> Scene:
    """A highway at least `length_m` long plus 300 m of view beyond, its content drawn from `seed`."""
    rng = np.random.default_rng([seed, 7])
    road = Road.random(rng, length_m + 300.0, MAX_CURVATURE_PER_M, PIECE_LENGTH_M)
    boxes = BoxList(road, rng)
    spheres = []
    for side in (-1.0, 1.0):
        _guard_rail(boxes, side, road.length_m)
        _copses(boxes, spheres, rng, side, road.length_m)
        _farms(boxes, rng, side, road.length_m)
        _hills(spheres, rng, road, side)
    return Scene(seed=seed, road=road, boxes=boxes.pack(), spheres=Spheres.from_rows(spheres),
                 sun_direction=random_sun(rng), sidewalk_colour=np.array([0.50, 0.47, 0.42]),
                 sky_tint=np.array([0.45, 0.62, 0.88]) * rng.uniform(0.9, 1.1, size=3), kind="highway")


def _guard_rail(boxes: BoxList, side: float, length_m: float) -> None:
    """A steel beam in straight 8 m segments (a chord of a 3 km arc strays 3 mm) on posts every 4 m."""
    d = side * GUARD_RAIL_M
    for s in np.arange(RAIL_SEGMENT_M / 2, length_m, RAIL_SEGMENT_M):
        boxes.add(float(s), d, 0.45, RAIL_SEGMENT_M, 0.10, 0.32, Material.METAL, np.array([0.66, 0.67, 0.69]))
    for s in np.arange(POST_SPACING_M / 2, length_m, POST_SPACING_M):
        boxes.add(float(s), d + side * 0.12, 0.0, 0.12, 0.12, 0.75, Material.METAL, np.array([0.42, 0.43, 0.45]))


def _copses(boxes: BoxList, spheres: list, rng, side: float, length_m: float) -> None:
    """Small groups of trees well off the road, tens to a hundred metres apart."""
    s = float(rng.uniform(0, 80))
    while s < length_m:
        d = side * float(rng.uniform(16, 70))
        for _ in range(int(rng.integers(1, 4))):
            add_tree(boxes, spheres, rng, s + float(rng.uniform(-6, 6)), d + side * float(rng.uniform(0, 8)))
        s += float(rng.uniform(60, 160))


def _farms(boxes: BoxList, rng, side: float, length_m: float) -> None:
    """Now and then a barn far from the road."""
    s = float(rng.uniform(50, 300))
    while s < length_m:
        colour = FACADE_COLOURS[rng.integers(len(FACADE_COLOURS))] * rng.uniform(0.85, 1.1)
        boxes.add(s, side * float(rng.uniform(60, 160)), 0.0, float(rng.uniform(12, 30)), float(rng.uniform(8, 14)),
                  float(rng.uniform(5, 9)), Material.PLASTER, colour, yaw_jitter_rad=float(rng.uniform(-0.6, 0.6)))
        s += float(rng.uniform(250, 600))


def _hills(spheres: list, rng, road: Road, side: float) -> None:
    """Low wooded hills: big spheres sunk into the ground, their nearest edge 60-250 m from the road."""
    s = float(rng.uniform(0, 150))
    while s < road.length_m:
        radius = float(rng.uniform(80, 220))
        d = side * (radius + float(rng.uniform(60, 250)))
        xy, _ = road.to_world(np.array([s]), np.array([d]))
        colour = np.array([0.20, 0.30, 0.14]) * rng.uniform(0.8, 1.2, size=3)
        spheres.append((xy[0, 0], xy[0, 1], -0.8 * radius, radius, *colour, rng.uniform(0, 4096)))
        s += float(rng.uniform(150, 320))
