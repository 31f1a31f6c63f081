"""A street scene from an integer seed: road, facades, parked cars, poles, trees and hedges.

Geometry is made of two analytic primitives, yaw-rotated boxes and spheres, placed in road coordinates
along a `Road`. The same seed always gives the same scene. Street and highway scenes are static; a scene
may also carry `Movers`, boxes moving at constant velocity (traffic), which the renderer places by time.
The light is part of the scene: a day under the sun (clear or overcast), or a night lit by the car's
headlights and street lamps on the poles (`at_night`); `another_day` keeps a street and changes what
changes from one day to the next.
"""
from dataclasses import dataclass, fields, replace
from enum import IntEnum

import numpy as np

from world.road import (BUILDING_LINE_M, CARRIAGEWAY_HALF_WIDTH_M, KERB_WIDTH_M, LANE_WIDTH_M,
                        PARKING_WIDTH_M, Road)


class Material(IntEnum):
    BRICK = 0
    PLASTER = 1
    CAR_BODY = 2
    CAR_CABIN = 3
    METAL = 4
    BARK = 5
    FOLIAGE = 6


@dataclass
class Boxes:
    """N yaw-rotated boxes. centre_m (N, 3), half_size_m (N, 3) along the box's own x (length), y, z."""

    centre_m: np.ndarray
    half_size_m: np.ndarray
    yaw_rad: np.ndarray
    material: np.ndarray
    colour: np.ndarray
    """(N, 3) linear RGB in 0..1."""
    window_spacing_m: np.ndarray
    """Facades only: window columns every so many metres (0: no windows)."""
    floor_height_m: np.ndarray
    texture_offset: np.ndarray

    def subset(self, keep: np.ndarray) -> "Boxes":
        """The boxes selected by `keep` (an (N,) bool mask or index array), in order."""
        return Boxes(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    @staticmethod
    def concatenate(parts: list["Boxes"]) -> "Boxes":
        return Boxes(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Boxes)})


@dataclass
class Spheres:
    centre_m: np.ndarray
    radius_m: np.ndarray
    colour: np.ndarray
    texture_offset: np.ndarray

    @staticmethod
    def from_rows(rows: list) -> "Spheres":
        """Rows of (x, y, z, radius, r, g, b, texture offset) -> arrays."""
        a = np.array(rows, dtype=np.float64).reshape(-1, 8)
        return Spheres(centre_m=a[:, 0:3], radius_m=a[:, 3], colour=a[:, 4:7], texture_offset=a[:, 7])


@dataclass
class Movers:
    """Boxes that move in straight lines: box i is at `boxes.centre_m[i] + velocity_mps[i] * t` at time t s."""

    boxes: Boxes
    """Positions at t = 0."""
    velocity_mps: np.ndarray
    """(N, 3) metres per second, world frame."""


@dataclass
class Scene:
    seed: int
    road: Road
    boxes: Boxes
    spheres: Spheres
    sun_direction: np.ndarray
    """(3,) unit vector toward the sun, world frame."""
    sidewalk_colour: np.ndarray
    sky_tint: np.ndarray
    kind: str = "street"
    """Which ground the shader paints: "street" (lanes, parking, kerbs, sidewalks) or "highway"."""
    movers: Movers | None = None
    overcast: float = 0.0
    """0 (clear sky, hard sun) .. 1 (grey sky, no direct sun): flattens the shading and greys the sky."""
    lamps_m: np.ndarray | None = None
    """(N, 3) world positions of lit street lamps; None by day. Set, the scene is at night."""

    @property
    def at_night(self) -> bool:
        return self.lamps_m is not None


FACADE_COLOURS = np.array([
    [0.55, 0.25, 0.18], [0.62, 0.34, 0.24], [0.80, 0.74, 0.62], [0.70, 0.70, 0.68],
    [0.88, 0.85, 0.78], [0.76, 0.58, 0.36], [0.45, 0.45, 0.50], [0.66, 0.48, 0.40],
])
CAR_COLOURS = np.array([
    [0.75, 0.75, 0.78], [0.10, 0.10, 0.12], [0.60, 0.08, 0.06], [0.12, 0.20, 0.45],
    [0.90, 0.90, 0.88], [0.35, 0.37, 0.40], [0.15, 0.35, 0.20], [0.80, 0.60, 0.10],
])


class BoxList:
    """Collects boxes placed in road coordinates, then packs them into `Boxes` arrays."""

    def __init__(self, road: Road, rng: np.random.Generator):
        self.road, self.rng, self.rows = road, rng, []

    def add(self, s_m, d_m, z_bottom_m, length_m, width_m, height_m, material, colour,
            window_spacing_m=0.0, floor_height_m=3.0, yaw_jitter_rad=0.0):
        xy, heading = self.road.to_world(np.array([s_m]), np.array([d_m]))
        self.rows.append((xy[0, 0], xy[0, 1], z_bottom_m + height_m / 2, length_m / 2, width_m / 2, height_m / 2,
                          heading[0] + yaw_jitter_rad, int(material), *colour, window_spacing_m, floor_height_m,
                          float(self.rng.uniform(0, 4096))))

    def pack(self) -> Boxes:
        a = np.array(self.rows, dtype=np.float64).reshape(-1, 14)
        return Boxes(centre_m=a[:, 0:3], half_size_m=a[:, 3:6], yaw_rad=a[:, 6], material=a[:, 7].astype(np.int64),
                     colour=a[:, 8:11], window_spacing_m=a[:, 11], floor_height_m=a[:, 12], texture_offset=a[:, 13])


def generate_scene(seed: int, length_m: float) -> Scene:
    """A street at least `length_m` long plus 300 m of view beyond, its content drawn from `seed`."""
    rng = np.random.default_rng(seed)
    return street_along(seed, Road.random(rng, length_m + 300.0), rng)


def street_along(seed: int, road: Road, rng: np.random.Generator) -> Scene:
    """Facades, parked cars, poles and trees on both sides of `road`, drawn from `rng`."""
    boxes = BoxList(road, rng)
    spheres = []
    for side in (-1.0, 1.0):
        _line_with_buildings(boxes, rng, side, road.length_m)
        _parked_cars(boxes, rng, side, road.length_m)
        _poles(boxes, rng, side, road.length_m)
        _trees(boxes, spheres, rng, side, road.length_m)
    return Scene(
        seed=seed, road=road, boxes=boxes.pack(), spheres=Spheres.from_rows(spheres), sun_direction=random_sun(rng),
        sidewalk_colour=rng.choice(np.array([[0.62, 0.60, 0.57], [0.58, 0.45, 0.40], [0.55, 0.56, 0.58]])),
        sky_tint=np.array([0.45, 0.62, 0.88]) * rng.uniform(0.9, 1.1, size=3),
    )


LAMP_REACH_M = 1.2
"""A street lamp hangs this far out from its pole, over the road."""
POLE_MAX_WIDTH_M = 0.2


def at_night(scene: Scene) -> Scene:
    """The same scene after dark: a lamp on top of every pole (thin, tall metal boxes), no sun."""
    b = scene.boxes
    poles = (b.material == Material.METAL) & (b.half_size_m[:, 0] < POLE_MAX_WIDTH_M / 2) & (b.half_size_m[:, 2] > 2.0)
    top_m = b.centre_m[poles] + np.array([0.0, 0.0, 1.0]) * b.half_size_m[poles, 2:3]
    s, d = scene.road.road_coords(top_m[:, 0], top_m[:, 1], (0.0, scene.road.length_m))
    over_road_xy, _ = scene.road.to_world(s, d - np.sign(d) * LAMP_REACH_M)
    lamps_m = np.column_stack([over_road_xy, top_m[:, 2]])
    return replace(scene, lamps_m=lamps_m)


def another_day(scene: Scene, day_seed: int) -> Scene:
    """The same street on another day, drawn from `day_seed`: other cars parked in other places, another
    sun, sky and cloud cover. Road, facades, poles and trees stay."""
    rng = np.random.default_rng([day_seed, 11])
    b = scene.boxes
    cars = BoxList(scene.road, rng)
    if scene.kind == "street":
        for side in (-1.0, 1.0):
            _parked_cars(cars, rng, side, scene.road.length_m)
    is_car = (b.material == Material.CAR_BODY) | (b.material == Material.CAR_CABIN)
    boxes = Boxes.concatenate([b.subset(~is_car), cars.pack()]) if cars.rows else b.subset(~is_car)
    return replace(scene, boxes=boxes, sun_direction=random_sun(rng), overcast=float(rng.uniform(0.0, 1.0)),
                   sky_tint=np.array([0.45, 0.62, 0.88]) * rng.uniform(0.85, 1.15, size=3))


def random_sun(rng: np.random.Generator) -> np.ndarray:
    """(3,) unit vector toward a sun at a random azimuth, 20 to 57 degrees high."""
    sun_azimuth = rng.uniform(0, 2 * np.pi)
    sun_elevation = rng.uniform(0.35, 1.0)
    return np.array([np.cos(sun_azimuth) * np.cos(sun_elevation), np.sin(sun_azimuth) * np.cos(sun_elevation),
                     np.sin(sun_elevation)])


def add_car(boxes: BoxList, s_m: float, d_m: float, length_m: float, colour: np.ndarray,
            yaw_jitter_rad: float = 0.0) -> None:
    """A car of `length_m` along the road at (s, d): a body box and a glazed cabin box on it."""
    boxes.add(s_m, d_m, 0.15, length_m, 1.78, 0.85, Material.CAR_BODY, colour, yaw_jitter_rad=yaw_jitter_rad)
    boxes.add(s_m - 0.2, d_m, 1.0, length_m * 0.55, 1.55, 0.48, Material.CAR_CABIN, colour,
              yaw_jitter_rad=yaw_jitter_rad)


def add_tree(boxes: BoxList, spheres: list, rng: np.random.Generator, s_m: float, d_m: float) -> None:
    """A trunk box at road (s, d) and a crown sphere on it; the sphere row goes to `spheres`."""
    trunk_height = float(rng.uniform(2.2, 3.2))
    boxes.add(s_m, d_m, 0.0, 0.32, 0.32, trunk_height + 0.5, Material.BARK, np.array([0.30, 0.22, 0.15]))
    radius = float(rng.uniform(1.4, 2.3))
    xy, _ = boxes.road.to_world(np.array([s_m]), np.array([d_m]))
    green = np.array([0.16, 0.32, 0.10]) * rng.uniform(0.75, 1.25, size=3)
    spheres.append((xy[0, 0], xy[0, 1], trunk_height + radius * 0.8, radius, *green, rng.uniform(0, 4096)))


def _line_with_buildings(boxes: BoxList, rng, side: float, length_m: float) -> None:
    s = float(rng.uniform(-10, 0))
    while s < length_m:
        frontage_m = float(rng.uniform(10, 28))
        depth_m = float(rng.uniform(10, 16))
        setback_m = float(rng.choice([0.0, 0.0, 0.0, rng.uniform(1.5, 4.0)]))
        height_m = float(rng.uniform(6, 24))
        brick = rng.random() < 0.45
        colour = FACADE_COLOURS[rng.integers(len(FACADE_COLOURS))] * rng.uniform(0.85, 1.1)
        d_front = BUILDING_LINE_M + setback_m
        boxes.add(s + frontage_m / 2, side * (d_front + depth_m / 2), 0.0, frontage_m, depth_m, height_m,
                  Material.BRICK if brick else Material.PLASTER, colour,
                  window_spacing_m=float(rng.uniform(2.6, 4.2)), floor_height_m=float(rng.uniform(2.9, 3.6)))
        if setback_m > 1.0 and rng.random() < 0.7:
            boxes.add(s + frontage_m / 2, side * (BUILDING_LINE_M + 0.5), 0.0, frontage_m - 1.0, 0.8,
                      float(rng.uniform(0.9, 1.6)), Material.FOLIAGE, np.array([0.18, 0.34, 0.12]) * rng.uniform(0.8, 1.2))
        gap_m = float(rng.choice([0.0, 0.0, rng.uniform(2, 5), rng.uniform(6, 14)]))
        s += frontage_m + gap_m


def _parked_cars(boxes: BoxList, rng, side: float, length_m: float) -> None:
    s = float(rng.uniform(0, 20))
    d = side * (LANE_WIDTH_M + PARKING_WIDTH_M / 2)
    while s < length_m:
        if rng.random() < 0.65:
            car_length = float(rng.uniform(3.9, 4.9))
            colour = CAR_COLOURS[rng.integers(len(CAR_COLOURS))] * rng.uniform(0.85, 1.1)
            jitter = float(rng.normal(0, 0.03))
            lateral = d + side * float(rng.uniform(-0.15, 0.15))
            add_car(boxes, s, lateral, car_length, colour, jitter)
            s += car_length + float(rng.uniform(0.8, 2.5))
        else:
            s += float(rng.uniform(5, 25))


def _poles(boxes: BoxList, rng, side: float, length_m: float) -> None:
    s = float(rng.uniform(5, 30))
    d = side * (CARRIAGEWAY_HALF_WIDTH_M + KERB_WIDTH_M + 0.6)
    while s < length_m:
        boxes.add(s, d, 0.0, 0.16, 0.16, float(rng.uniform(5.5, 8.0)), Material.METAL, np.array([0.40, 0.41, 0.43]))
        s += float(rng.uniform(22, 45))


def _trees(boxes: BoxList, spheres: list, rng, side: float, length_m: float) -> None:
    s = float(rng.uniform(0, 40))
    d = side * (CARRIAGEWAY_HALF_WIDTH_M + KERB_WIDTH_M + 1.8)
    while s < length_m:
        if rng.random() < 0.5:
            add_tree(boxes, spheres, rng, s, d)
            s += float(rng.uniform(7, 14))
        else:
            s += float(rng.uniform(15, 50))
