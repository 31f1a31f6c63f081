"""Shots for a camera-motion statistic: a highway where most pixels barely move although the camera
drives fast, and a parked camera whose only changing pixels are the cars driving past."""
import dataclasses

import cv2
import numpy as np

from tests.world.test_video import decode_grey
from world.camera import PinholeCamera
from world.drive import Drive, DriveSpec
from world.render import Renderer, flow_between
from world.video import render_video, single_shot_spec


def test_highway_camera_moves_fast_yet_most_pixels_barely_change(tmp_path):
    drive = Drive(DriveSpec(seed=5, duration_s=2.0, kind="highway"))
    poses = drive.poses(np.array([0.0, 1.0, 1.1]))
    assert 25.0 <= np.linalg.norm(poses[1, :3, 3] - poses[0, :3, 3]) <= 33.0

    camera = PinholeCamera.kitti_like(640, 360)
    depth_m = Renderer(drive.scene, camera).render(poses[1]).depth_m
    flow_px = np.linalg.norm(flow_between(depth_m, poses[1], poses[2], camera), axis=-1)
    assert np.median(flow_px) < 1.0 and flow_px[-36:].mean() > 5.0

    truth = render_video(single_shot_spec(5, "highway", 2.0, fps="25", width_px=320, height_px=180,
                                          clock_overlay=False), tmp_path / "highway.mp4")
    assert truth.shots[0]["kind"] == "highway" and truth.static_ranges == []
    step = np.abs(np.diff(decode_grey(tmp_path / "highway.mp4", 320, 180).astype(np.int16), axis=0))
    median_step = np.median(step, axis=(1, 2))
    bottom_step = step[:, -18:].mean(axis=(1, 2))
    print(f"median |step| {median_step.mean():.2f}, bottom rows {bottom_step.mean():.1f} grey levels")
    assert median_step.max() <= 1 and bottom_step.min() > 4


def test_parked_camera_sees_only_the_traffic_change(tmp_path):
    drive = Drive(DriveSpec(seed=3, duration_s=2.0, kind="parked_traffic"))
    times_s = np.arange(20) / 10.0
    poses = drive.poses(times_s)
    assert (poses == poses[0]).all() and (drive.exposure(times_s) == 1.0).all()

    camera = PinholeCamera.kitti_like(320, 144)
    renderer = Renderer(drive.scene, camera)
    background_m = Renderer(dataclasses.replace(drive.scene, movers=None), camera).render(poses[0]).depth_m
    frames = [renderer.render(poses[0], 1.0, t) for t in times_s]
    cars = [f.depth_m != background_m for f in frames]
    for i in range(1, len(frames)):
        changed = (frames[i].rgb != frames[i - 1].rgb).any(axis=-1)
        near_cars = cv2.dilate((cars[i] | cars[i - 1]).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        assert changed.any() and not (changed & ~near_cars).any(), i
    car_share = np.array([c.mean() for c in cars])
    print(f"cars cover {car_share.mean():.1%} of the picture on average")
    assert (car_share > 0.02).mean() >= 0.5

    truth = render_video(single_shot_spec(3, "parked_traffic", 0.4, fps="25", width_px=64, height_px=32),
                         tmp_path / "parked.mp4")
    assert truth.shots[0]["kind"] == "parked_traffic" and truth.static_ranges == [(1, 10)]
