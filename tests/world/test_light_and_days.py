"""Night and another day: what the world renders matches what mining is tested against."""
import numpy as np
import pytest

from world.camera import PinholeCamera
from world.drive import Drive, DriveSpec
from world.highway import LAMP_POST_HEIGHT_M, LAMP_POST_SPACING_M
from world.render import Renderer
from world.scene import Material, Scene
from world.video import VideoSpec, ShotSpec

CAMERA = PinholeCamera.kitti_like(160, 64)


def _frames(spec: DriveSpec, times_s) -> list:
    drive = Drive(spec)
    renderer = Renderer(drive.scene, CAMERA)
    return [renderer.render(pose, float(exposure), float(t)) for pose, exposure, t in
            zip(drive.poses(np.asarray(times_s)), drive.exposure(np.asarray(times_s)), times_s)]


def _parked_cars(scene: Scene) -> np.ndarray:
    return scene.boxes.centre_m[scene.boxes.material == Material.CAR_BODY]


def _buildings(scene: Scene) -> np.ndarray:
    return scene.boxes.centre_m[(scene.boxes.material == Material.BRICK) | (scene.boxes.material == Material.PLASTER)]


def test_a_night_drive_is_dark_but_for_headlights_and_street_lamps():
    day, = _frames(DriveSpec(seed=8, duration_s=3.0), [1.0])
    night, = _frames(DriveSpec(seed=8, duration_s=3.0, light="night"), [1.0])
    assert np.array_equal(day.depth_m, night.depth_m), "the same street, only the light differs"
    grey = night.rgb.mean(axis=2)
    assert grey.mean() < 0.4 * day.rgb.mean() and np.median(grey) < 30
    road_ahead = grey[-12:, 60:100]  # in the headlights' beam
    sky = grey[:8][~np.isfinite(night.depth_m[:8])]
    assert road_ahead.mean() > 3 * sky.mean() and grey.max() > 200, "lit road ahead, glowing lamps"


def test_a_lit_highway_at_night_has_lamps_on_posts():
    drive = Drive(DriveSpec(seed=9, duration_s=2.0, kind="highway", light="night"))
    assert drive.scene.at_night
    assert abs(len(drive.scene.lamps_m) - drive.scene.road.length_m / LAMP_POST_SPACING_M) <= 1
    assert (drive.scene.lamps_m[:, 2] == LAMP_POST_HEIGHT_M).all()
    assert not Drive(DriveSpec(seed=9, duration_s=2.0, kind="highway")).scene.at_night


def test_another_day_keeps_the_route_and_changes_cars_light_and_pace():
    first = Drive(DriveSpec(seed=8, duration_s=4.0))
    other = Drive(DriveSpec(seed=8, duration_s=4.0, day_seed=3))
    assert first.scene.road.length_m == other.scene.road.length_m
    first_cars, other_cars = _parked_cars(first.scene), _parked_cars(other.scene)
    assert first_cars.shape != other_cars.shape or not np.allclose(first_cars, other_cars)
    assert np.array_equal(_buildings(first.scene), _buildings(other.scene))
    assert not np.allclose(first.scene.sun_direction, other.scene.sun_direction)
    times_s = np.array([0.0, 4.0])
    travelled = [np.linalg.norm(np.diff(d.poses(times_s)[:, :3, 3], axis=0)) for d in (first, other)]
    assert 0.8 * travelled[0] <= travelled[1] < travelled[0], "the same route, a little slower"


def test_unknown_light_is_refused():
    with pytest.raises(ValueError, match="light must be one of"):
        VideoSpec(shots=(ShotSpec(seed=0, duration_s=1.0, light="dusk"),))
