"""The renderer's known answers: determinism, exact depth, and images consistent with exact geometry."""
import cv2
import numpy as np
import pytest

from formats.camera import KITTI_STEREO_BASELINE_M
from world.camera import PinholeCamera, offset_pose, pose_from_heading
from world.drive import CAMERA_HEIGHT_M, Drive, DriveSpec
from world.render import Renderer, flow_between
from world.road import Road
from world.scene import Boxes, Material, Scene, Spheres


def one_box_scene(box_centre_m, box_half_m) -> Scene:
    """An empty street with one plaster box, or none when `box_centre_m` is None."""
    n = 0 if box_centre_m is None else 1
    boxes = Boxes(centre_m=np.array([box_centre_m] * n, dtype=float).reshape(n, 3),
                  half_size_m=np.array([box_half_m] * n, dtype=float).reshape(n, 3),
                  yaw_rad=np.zeros(n), material=np.full(n, Material.PLASTER), colour=np.full((n, 3), 0.6),
                  window_spacing_m=np.zeros(n), floor_height_m=np.full(n, 3.0), texture_offset=np.zeros(n))
    spheres = Spheres(centre_m=np.zeros((0, 3)), radius_m=np.zeros(0), colour=np.zeros((0, 3)),
                      texture_offset=np.zeros(0))
    return Scene(seed=0, road=Road.random(np.random.default_rng(0), 300.0), boxes=boxes, spheres=spheres,
                 sun_direction=np.array([0.3, 0.3, 0.9]) / np.linalg.norm([0.3, 0.3, 0.9]),
                 sidewalk_colour=np.array([0.6, 0.6, 0.6]), sky_tint=np.array([0.4, 0.6, 0.9]))


def test_same_seed_same_pixels_other_seed_other_pixels():
    camera = PinholeCamera.kitti_like(160, 48)
    frames = []
    for seed in (3, 3, 4):
        drive = Drive(DriveSpec(seed=seed, duration_s=2.0))
        frames.append(Renderer(drive.scene, camera).render(drive.poses(np.array([1.0]))[0]))
    assert frames[0].rgb.tobytes() == frames[1].rgb.tobytes()
    assert frames[0].depth_m.tobytes() == frames[1].depth_m.tobytes()
    assert np.abs(frames[0].rgb.astype(int) - frames[2].rgb).mean() > 5


def test_wall_at_known_distance_has_that_depth_everywhere():
    camera = PinholeCamera.kitti_like(320, 96)
    # A wall 19.5 m ahead (its near face at x = 19.5 m) filling the view, camera looking east.
    scene = one_box_scene((20.0, 0.0, 30.0), (0.5, 200.0, 40.0))
    pose = pose_from_heading(np.array([0.0, 0.0, CAMERA_HEIGHT_M]), heading_rad=0.0)
    depth = Renderer(scene, camera).render(pose).depth_m
    above_ground = np.arange(camera.height_px) < camera.cy_px  # rows that cannot see the ground first
    np.testing.assert_allclose(depth[above_ground], 19.5, atol=1e-4)
    assert np.isfinite(depth).all()


def test_road_depth_matches_the_plane_formula():
    camera = PinholeCamera.kitti_like(320, 96)
    pose = pose_from_heading(np.array([5.0, -1.75, CAMERA_HEIGHT_M]), heading_rad=0.0)
    frame = Renderer(one_box_scene(None, None), camera).render(pose)
    rows = np.arange(camera.height_px)
    below = rows > camera.cy_px + 0.5
    expected = CAMERA_HEIGHT_M * camera.fy_px / (rows[below] - camera.cy_px)
    np.testing.assert_allclose(frame.depth_m[below], np.repeat(expected[:, None], camera.width_px, 1), rtol=1e-5)
    assert np.isinf(frame.depth_m[~below]).all()  # sky


def _sample(image: np.ndarray, map_u: np.ndarray, map_v: np.ndarray) -> np.ndarray:
    return cv2.remap(image.astype(np.float32), map_u.astype(np.float32), map_v.astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)


def _consistent(depth_expected, depth_sampled):
    """Pixels whose point is the one seen at the sampled position (not hidden in the other view)."""
    return np.isfinite(depth_expected) & (np.abs(depth_sampled - depth_expected) < 0.02 * depth_expected)


@pytest.fixture(scope="module")
def street():
    drive = Drive(DriveSpec(seed=11, duration_s=4.0))
    camera = PinholeCamera.kitti_like(640, 192)
    return drive, camera, Renderer(drive.scene, camera)


def test_right_image_warped_by_true_disparity_reproduces_left(street):
    drive, camera, renderer = street
    pose = drive.poses(np.array([2.0]))[0]
    left = renderer.render(pose)
    right = renderer.render(offset_pose(pose, KITTI_STEREO_BASELINE_M))
    grid_u, grid_v = np.meshgrid(np.arange(camera.width_px), np.arange(camera.height_px))
    disparity_px = camera.fx_px * KITTI_STEREO_BASELINE_M / left.depth_m
    map_u = grid_u - np.where(np.isfinite(disparity_px), disparity_px, 0.0)
    warped = _sample(right.rgb, map_u, grid_v)
    valid = _consistent(left.depth_m, _sample(right.depth_m, map_u, grid_v)) & np.isfinite(warped[..., 0])
    assert valid.mean() > 0.5
    error = np.abs(warped - left.rgb).mean(-1)[valid].mean()
    unwarped = np.abs(right.rgb.astype(float) - left.rgb).mean(-1)[valid].mean()
    print(f"mean |error| {error:.2f} grey levels warped, {unwarped:.2f} unwarped, on {valid.mean():.0%} of pixels")
    assert error < 2.5 and error < unwarped / 4, (error, unwarped)


def test_next_frame_warped_by_true_flow_reproduces_frame(street):
    drive, camera, renderer = street
    poses = drive.poses(np.array([2.0, 2.1]))
    frame, following = renderer.render(poses[0]), renderer.render(poses[1])
    flow = flow_between(frame.depth_m, poses[0], poses[1], camera)
    grid_u, grid_v = np.meshgrid(np.arange(camera.width_px), np.arange(camera.height_px))
    map_u, map_v = grid_u + flow[..., 0], grid_v + flow[..., 1]
    warped = _sample(following.rgb, map_u, map_v)
    # The depth a moved point should have in the next camera, compared with what that camera sees there.
    relative = np.linalg.inv(poses[1]) @ poses[0]
    finite_depth = np.where(np.isfinite(frame.depth_m), frame.depth_m, np.nan)
    expected_depth = (camera.pixel_rays() @ relative[2, :3]) * finite_depth + relative[2, 3]
    valid = _consistent(expected_depth, _sample(following.depth_m, map_u, map_v)) & np.isfinite(warped[..., 0])
    assert valid.mean() > 0.5
    assert np.abs(flow[valid]).max() > 2.0  # the camera really moved
    error = np.abs(warped - frame.rgb).mean(-1)[valid].mean()
    unwarped = np.abs(following.rgb.astype(float) - frame.rgb).mean(-1)[valid].mean()
    print(f"mean |error| {error:.2f} grey levels warped, {unwarped:.2f} unwarped, on {valid.mean():.0%} of pixels")
    assert error < 2.5 and error < unwarped / 4, (error, unwarped)


def test_stopped_car_gives_identical_poses():
    drive = Drive(DriveSpec(seed=5, duration_s=12.0, stops=((0.0, 2.0),)))
    static = drive.static_time_ranges()
    assert static and static[0][0] == 0.0 and static[0][1] == pytest.approx(2.0)
    poses = drive.poses(np.array([0.2, 1.0, 1.9, 3.0]))
    assert np.array_equal(poses[0], poses[1]) and np.array_equal(poses[1], poses[2])
    assert not np.array_equal(poses[2], poses[3])


def test_box_wholly_behind_the_camera_is_skipped():
    camera = PinholeCamera.kitti_like(64, 24)
    # Every corner behind the near plane, but the bounding sphere still reaches into the frustum.
    scene = one_box_scene((-0.6, 0.0, 1.65), (0.5, 0.5, 0.5))
    pose = pose_from_heading(np.array([0.0, 0.0, CAMERA_HEIGHT_M]), heading_rad=0.0)
    frame = Renderer(scene, camera).render(pose)
    assert frame.depth_m.shape == (24, 64) and not (frame.depth_m < 1.0).any()
