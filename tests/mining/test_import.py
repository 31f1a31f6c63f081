"""`geopt-mine import`: KITTI raw and Cityscapes trees on disk -> the same shards as mined video."""
import json

import cv2
import numpy as np
from click.testing import CliRunner

from mining.cli import main
from tests.mining.test_mining_e2e import read_shards
from world.camera import PinholeCamera
from world.kitti_export import KittiExportSpec, export_kitti
from world.drive import Drive, DriveSpec
from world.render import Renderer


def test_kitti_import_keeps_intrinsics_and_leaves_the_test_drives_out(small_kitti, tmp_path):
    root, truth = small_kitti
    out = tmp_path / "shards"
    result = CliRunner().invoke(main, ["import", "kitti", "--root", str(root), "--out", str(out), "--width", "320",
                                       "--no-motion-filter", "--val-fraction", "0"])
    assert result.exit_code == 0, result.output
    test_drive = next(d["folder"] for d in truth["drives"] if d["split"] == "test")
    assert "excluded 1 drives" in result.output and test_drive in result.output
    samples = [json.loads(s["json"]) for s in read_shards(out).values()]
    assert {m["extra"]["drive"] for m in samples} == {d["folder"] for d in truth["drives"] if d["split"] == "train"}
    assert {m["extra"]["camera"] for m in samples} == {2, 3}
    K = np.array(samples[0]["extra"]["intrinsics_normalised"])
    assert abs(K[0, 0] - 0.58) < 1e-6 and abs(K[1, 1] - 0.58 * 320 / 96) < 1e-6  # fx = fy = 0.58 W
    assert samples[0]["working_size"] == [320, 96] and samples[0]["fps_out"] == 10.0


def test_the_two_cameras_of_a_drive_are_not_taken_for_a_re_upload(tmp_path):
    """Left and right views of one drive look alike to the re-upload fingerprint; an import keeps both."""
    export_kitti(KittiExportSpec(tmp_path / "kitti", train_drives=1, test_drives=1, frames_per_drive=24,
                                 width_px=320, height_px=96))
    result = CliRunner().invoke(main, ["import", "kitti", "--root", str(tmp_path / "kitti"), "--out",
                                       str(tmp_path / "shards"), "--width", "320", "--no-motion-filter",
                                       "--val-fraction", "0"])
    assert result.exit_code == 0, result.output
    samples = [json.loads(s["json"]) for s in read_shards(tmp_path / "shards").values()]
    per_camera = [sum(m["extra"]["camera"] == camera for m in samples) for camera in (2, 3)]
    assert per_camera[0] == per_camera[1] > 0 and "duplicate" not in result.output, result.output


def _cityscapes_tree(root):
    """Two 5-frame snippets of a city, world-rendered at 256x128, one with its camera file."""
    camera = PinholeCamera.kitti_like(256, 128)
    for seq, seed in (("000001", 41), ("000002", 42)):
        drive = Drive(DriveSpec(seed=seed, duration_s=2.0))
        renderer = Renderer(drive.scene, camera)
        folder = root / "leftImg8bit_sequence" / "train" / "testcity"
        folder.mkdir(parents=True, exist_ok=True)
        for i, pose in enumerate(drive.poses(np.arange(5) / 17.0)):
            cv2.imwrite(str(folder / f"testcity_{seq}_{i + 10:06d}_leftImg8bit.png"),
                        renderer.render(pose).rgb[..., ::-1])
    camera_dir = root / "camera" / "train" / "testcity"
    camera_dir.mkdir(parents=True)
    (camera_dir / "testcity_000001_000010_camera.json").write_text(json.dumps(
        {"intrinsic": {"fx": 148.48, "fy": 148.48, "u0": 128.0, "v0": 64.0}}))


def test_cityscapes_import_crops_the_hood(tmp_path):
    root, out = tmp_path / "cityscapes", tmp_path / "shards"
    _cityscapes_tree(root)
    result = CliRunner().invoke(main, ["import", "cityscapes", "--root", str(root), "--out", str(out),
                                       "--width", "256", "--crop-bottom", "0.25", "--no-motion-filter",
                                       "--val-fraction", "0"])
    assert result.exit_code == 0, result.output
    samples = list(read_shards(out).values())
    assert len(samples) == 4  # two snippets of 5 frames -> 2 triplets each
    metas = [json.loads(s["json"]) for s in samples]
    assert {m["extra"]["sequence"] for m in metas} == {"000001", "000002"}
    frame = cv2.imdecode(np.frombuffer(samples[0]["0.jpg"], np.uint8), cv2.IMREAD_COLOR)
    assert frame.shape[:2] == (96, 256)  # 128 rows minus the bottom quarter
    known = next(m for m in metas if m["extra"]["sequence"] == "000001")
    assert np.allclose(known["extra"]["intrinsics_normalised"], [[148.48 / 256, 0, 0.5], [0, 148.48 / 96, 64 / 96],
                                                                   [0, 0, 1]])


def test_missing_or_malformed_folders_get_one_line(tmp_path):
    result = CliRunner().invoke(main, ["import", "cityscapes", "--root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no leftImg8bit_sequence/ folder" in result.output
    result = CliRunner().invoke(main, ["import", "kitti", "--root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no KITTI raw drives" in result.output
    assert len(result.output.strip().splitlines()) == 1
