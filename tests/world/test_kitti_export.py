"""The world's KITTI raw tree, read back with the readers written for real KITTI."""
import json

import cv2
import numpy as np

from formats.kitti import (generate_depth_map, image_path, load_gt_depths, read_calib_file, read_split_file,
                            velodyne_path, velodyne_to_image)
from world.camera import PinholeCamera
from world.drive import Drive, DriveSpec
from world.render import Renderer


def exact_depth(root, truth, entry) -> np.ndarray:
    """Render the frame of a split entry again from world_truth.json."""
    record = next(d for d in truth["drives"] if d["folder"] == entry.folder)
    drive = Drive(DriveSpec(seed=record["seed"], duration_s=record["duration_s"],
                            stops=tuple(tuple(s) for s in record["stops"])))
    pose = drive.poses(np.array([record["times_s"][entry.frame_index]]))[0]
    np.testing.assert_allclose(pose, record["poses"][entry.frame_index])
    width, height = cv2.imread(str(image_path(root, entry))).shape[1::-1]
    return Renderer(drive.scene, PinholeCamera.kitti_like(width, height)).render(pose).depth_m


def test_layout_and_split_files(small_kitti):
    root, truth = small_kitti
    train = read_split_file(root / "splits/eigen_zhou/train_files.txt")
    val = read_split_file(root / "splits/eigen_zhou/val_files.txt")
    test = read_split_file(root / "splits/eigen/test_files.txt")
    assert train and val and test
    assert {e.folder for e in train + val}.isdisjoint({e.folder for e in test})
    assert (root / "splits/eigen/test_files.txt").read_text().split("\n")[0].split()[1] == f"{test[0].frame_index:010d}"
    for entry in train + val + test:
        assert image_path(root, entry).suffix == ".png" and velodyne_path(root, entry).is_file()
        assert 0 < entry.frame_index < 7  # neighbours -1 and +1 exist
    drive_dir = root / train[0].folder
    assert len((drive_dir / "image_02/timestamps.txt").read_text().splitlines()) == 8
    calib = read_calib_file(root / train[0].date / "calib_cam_to_cam.txt")
    assert calib["S_rect_02"].tolist() == [320, 96]
    baseline_m = -calib["P_rect_03"][3] / calib["P_rect_03"][0]
    assert abs(baseline_m - 0.54) < 1e-9


def test_velodyne_points_land_where_rendered_depth_agrees(small_kitti):
    root, truth = small_kitti
    entry = read_split_file(root / "splits/eigen_zhou/train_files.txt")[0]
    if entry.side == "r":
        entry = type(entry)(entry.folder, entry.frame_index, "l")
    depth = exact_depth(root, truth, entry)
    projected = generate_depth_map(root / entry.date, velodyne_path(root, entry), camera=2)
    hit = projected > 0
    assert hit.sum() > 1000
    assert np.abs(projected[hit] - depth[hit]).max() < 0.01
    points = np.fromfile(velodyne_path(root, entry), np.float32).reshape(-1, 4)
    assert (points[:, 0] < 0).any(), "the scan includes points behind the car, which projection must drop"


def test_gt_depths_follow_monodepth2_from_the_scans(small_kitti):
    root, truth = small_kitti
    test = read_split_file(root / "splits/eigen/test_files.txt")
    gt = load_gt_depths(root / "splits/eigen/gt_depths.npz")
    assert len(gt) == len(test)
    for entry, gt_depth in zip(test, gt):
        depth = exact_depth(root, truth, entry)
        valid = gt_depth > 0
        assert gt_depth.shape == depth.shape and valid.mean() > 0.05
        assert np.abs(gt_depth[valid] - depth[valid]).max() < 0.01  # velodyne x is camera z here
        assert velodyne_to_image(root / entry.date, 2)[1] == depth.shape


def test_truth_file_names_every_drive(small_kitti):
    root, truth = small_kitti
    on_disk = json.loads((root / "world_truth.json").read_text())
    assert [d["folder"] for d in on_disk["drives"]] == [d["folder"] for d in truth["drives"]]
    assert on_disk["split_sizes"]["test"] == 3


def test_highway_test_drives_test_generalisation_on_scenes_never_trained_on(tmp_path):
    """--test-kind highway: the training drive stays a street; the test drives are highways (25-33 m/s, so
    2.5-3.3 m between frames at 10 Hz, where a street drives at most 1.5 m), and the truth file says so."""
    from world.kitti_export import KittiExportSpec, export_kitti

    truth = export_kitti(KittiExportSpec(tmp_path, train_drives=1, test_drives=1, frames_per_drive=3, width_px=160,
                                         height_px=48, stop_in_first_drive=False, test_kind="highway"))
    steps_m = {d["kind"]: np.linalg.norm(np.diff(np.array(d["poses"])[:, :3, 3], axis=0), axis=1)
               for d in truth["drives"]}
    assert set(steps_m) == {"street", "highway"}
    assert steps_m["street"].max() <= 1.5 + 1e-6
    assert steps_m["highway"].min() >= 2.4
    assert read_split_file(tmp_path / "splits/eigen/test_files.txt")
