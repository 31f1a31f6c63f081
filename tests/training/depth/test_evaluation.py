"""Depth evaluation: known answers for Monodepth2's errors, crop, scaling, and the gt_depths.npz export."""
import json
import math
import re

import numpy as np
import pytest
from click.testing import CliRunner

from training.depth.cli import evaluate_disps_command, export_gt_command
from training.depth.evaluate import (ERROR_NAMES, STEREO_SCALE_FACTOR, compute_errors, evaluate_disparities,
                                 export_gt_depths, format_table, garg_crop_mask)
from formats.kitti import load_gt_depths, read_split_file
from world.kitti_export import KittiExportSpec, export_kitti


@pytest.fixture(scope="module")
def tiny_kitti(tmp_path_factory):
    """One train and one test drive of 6 frames at 320x96; the test split holds 2 frames."""
    root = tmp_path_factory.mktemp("kitti")
    export_kitti(KittiExportSpec(root, train_drives=1, test_drives=1, frames_per_drive=6, width_px=320, height_px=96))
    return root


def dense_depths_m(count=3, shape=(24, 40), seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(2.0, 60.0, shape) for _ in range(count)]


def test_perfect_prediction_has_zero_error():
    gt = dense_depths_m()
    errors, ratios = evaluate_disparities(np.stack([1 / d for d in gt]), gt)
    assert errors["abs_rel"] == pytest.approx(0, abs=1e-12) and errors["rmse"] == pytest.approx(0, abs=1e-12)
    assert errors["a1"] == errors["a2"] == errors["a3"] == 1.0
    np.testing.assert_allclose(ratios, 1.0)


def test_constant_factor_vanishes_with_median_scaling():
    gt = dense_depths_m()
    errors, ratios = evaluate_disparities(np.stack([1 / (3.0 * d) for d in gt]), gt, eigen_crop=False)
    assert all(errors[name] == pytest.approx(0, abs=1e-9) for name in ("abs_rel", "sq_rel", "rmse", "rmse_log"))
    assert errors["a1"] == 1.0
    np.testing.assert_allclose(ratios, 1 / 3)


def test_constant_factor_without_median_scaling_gives_its_errors():
    gt = dense_depths_m()
    errors, ratios = evaluate_disparities(np.stack([1 / (0.7 * d) for d in gt]), gt, eigen_crop=False,
                                          median_scaling=False)
    assert ratios.size == 0
    assert errors["abs_rel"] == pytest.approx(0.3)
    assert errors["sq_rel"] == pytest.approx(np.mean([0.09 * d.mean() for d in gt]))
    assert errors["rmse"] == pytest.approx(np.mean([0.3 * math.sqrt((d ** 2).mean()) for d in gt]))
    assert errors["rmse_log"] == pytest.approx(-math.log(0.7))
    assert (errors["a1"], errors["a2"], errors["a3"]) == (0.0, 1.0, 1.0)  # ratio 1/0.7 = 1.43


def test_stereo_scales_by_5_4_and_skips_median_scaling():
    gt = dense_depths_m()
    exact, ratios = evaluate_disparities(np.stack([STEREO_SCALE_FACTOR / d for d in gt]), gt, stereo=True)
    assert ratios.size == 0 and exact["abs_rel"] == pytest.approx(0, abs=1e-12)
    halved, _ = evaluate_disparities(np.stack([2 * STEREO_SCALE_FACTOR / d for d in gt]), gt, stereo=True)
    assert halved["abs_rel"] == pytest.approx(0.5) and halved["rmse_log"] == pytest.approx(math.log(2))


def test_two_image_example_matches_hand_computation():
    """Image 0: gt 2, 4 m predicted 1, 4 m. Image 1: gt 10, 10 m predicted 8, 16 m; its 0 m and 100 m
    pixels are outside (1 mm, 80 m) and ignored. Errors are averaged per image, not over pixels."""
    gt = [np.array([[2.0, 4.0, 0.0, 0.0]]), np.array([[10.0, 10.0, 0.0, 100.0]])]
    disps = np.array([[[1.0, 0.25, 1.0, 1.0]], [[0.125, 0.0625, 1.0, 1.0]]])
    errors, _ = evaluate_disparities(disps, gt, eigen_crop=False, median_scaling=False)
    expected = {
        "abs_rel": (0.5 / 2 + (0.2 + 0.6) / 2) / 2,
        "sq_rel": ((1 / 2) / 2 + (4 / 10 + 36 / 10) / 2) / 2,
        "rmse": (math.sqrt(1 / 2) + math.sqrt((4 + 36) / 2)) / 2,
        "rmse_log": (math.sqrt(math.log(2) ** 2 / 2) + math.sqrt((math.log(1.25) ** 2 + math.log(1.6) ** 2) / 2)) / 2,
        "a1": (0.5 + 0.0) / 2,  # ratios 2, 1 | 1.25, 1.6: 1.25 is not < 1.25
        "a2": (0.5 + 0.5) / 2,
        "a3": (0.5 + 1.0) / 2,
    }
    assert errors == pytest.approx(expected, abs=1e-12)
    second_image = compute_errors(np.array([10.0, 10.0]), np.array([8.0, 16.0]))
    assert second_image == pytest.approx({"abs_rel": 0.4, "sq_rel": 2.0, "rmse": math.sqrt(20),
                                          "rmse_log": math.sqrt((math.log(1.25) ** 2 + math.log(1.6) ** 2) / 2),
                                          "a1": 0.0, "a2": 0.5, "a3": 1.0}, abs=1e-12)


def test_garg_crop_of_a_kitti_frame():
    mask = garg_crop_mask(375, 1242)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (153, 370, 44, 1196)
    assert mask.sum() == (371 - 153) * (1197 - 44)


def test_crop_ignores_errors_outside_it():
    gt = [np.full((375, 1242), 10.0)]
    disp = np.full((1, 375, 1242), 0.1)
    disp[0, :153] = disp[0, 371:] = disp[0, :, :44] = disp[0, :, 1197:] = 0.01
    cropped, _ = evaluate_disparities(disp, gt, median_scaling=False)
    assert cropped["abs_rel"] == pytest.approx(0, abs=1e-12)
    disp[0, 153, 44] = 0.01
    inside, _ = evaluate_disparities(disp, gt, median_scaling=False)
    assert inside["abs_rel"] > 0
    whole, _ = evaluate_disparities(disp, gt, eigen_crop=False, median_scaling=False)
    assert whole["abs_rel"] > inside["abs_rel"]


def test_prediction_size_is_resized_to_ground_truth():
    gt = [np.full((96, 320), 20.0)]
    errors, _ = evaluate_disparities(np.full((1, 48, 160), 0.05, np.float32), gt, median_scaling=False)
    assert errors["abs_rel"] == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("change, message", [
    (lambda d, g: (d[:1], g), "1 predicted disparity maps but 2 ground-truth depth maps"),
    (lambda d, g: (np.where(np.arange(2)[:, None, None] == 1, np.nan, d), g), "image 1 has NaN, inf or non-positive"),
    (lambda d, g: (np.where(np.arange(2)[:, None, None] == 1, np.inf, d), g), "image 1 has NaN, inf or non-positive"),
    (lambda d, g: (d * 0, g), "image 0 has NaN, inf or non-positive"),
    (lambda d, g: (d, [g[0], g[1] * 0]), "image 1 has no ground-truth depth"),
    (lambda d, g: (d[0], g), "must be (N, H, W)"),
])
def test_bad_inputs_are_named(change, message):
    gt = dense_depths_m(count=2)
    disps, gt = change(np.stack([1 / d for d in gt]), gt)
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate_disparities(disps, gt)


def test_table_follows_monodepth2_order():
    errors = dict(zip(ERROR_NAMES, [0.1156, 0.903, 4.863, 0.193, 0.877, 0.959, 0.981]))
    header, values = format_table(errors).split("\n")
    assert [name.strip() for name in header.split("|")] == list(ERROR_NAMES)
    assert values.replace("&", " ").split() == ["0.116", "0.903", "4.863", "0.193", "0.877", "0.959", "0.981", "\\\\"]


def test_export_gt_depths_equals_the_world_export(tiny_kitti, tmp_path):
    split_file = tiny_kitti / "splits/eigen/test_files.txt"
    assert export_gt_depths(tiny_kitti, split_file, tmp_path / "gt_depths.npz") == 2
    ours, theirs = load_gt_depths(tmp_path / "gt_depths.npz"), load_gt_depths(tiny_kitti / "splits/eigen/gt_depths.npz")
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        assert a.shape == (96, 320) and np.array_equal(a, b) and (a > 0).any()


def test_cli_exports_and_scores_exact_inverse_depth(tiny_kitti, tmp_path):
    runner = CliRunner()
    gt_path = tmp_path / "gt_depths.npz"
    result = runner.invoke(export_gt_command, ["--data", f"kitti:{tiny_kitti}", "--split", "eigen", "--out", gt_path])
    assert result.exit_code == 0, result.output
    gt = load_gt_depths(gt_path)
    disps = np.stack([np.where(d > 0, 1 / np.maximum(d, 1e-3), 0.1) for d in gt]).astype(np.float32)
    np.save(tmp_path / "preds.npy", disps)
    split_file = tiny_kitti / "splits/eigen/test_files.txt"
    result = runner.invoke(evaluate_disps_command, ["--disps", tmp_path / "preds.npy", "--gt", gt_path,
                                                    "--split-file", split_file, "--out", tmp_path / "scores.json"])
    assert result.exit_code == 0, result.output
    assert "median scaling ratios: median 1.000 std 0.000" in result.output and "abs_rel" in result.output
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["images"] == len(read_split_file(split_file)) == 2
    assert scores["errors"]["abs_rel"] < 1e-6 and scores["errors"]["a1"] == 1.0


def test_cli_reports_bad_input_in_one_line(tiny_kitti, tmp_path):
    runner = CliRunner()
    np.save(tmp_path / "preds.npy", np.ones((3, 8, 8), np.float32))
    result = runner.invoke(evaluate_disps_command, ["--disps", tmp_path / "preds.npy",
                                                    "--gt", tiny_kitti / "splits/eigen/gt_depths.npz"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: 3 predicted disparity maps but 2 ground-truth depth maps"
    result = runner.invoke(export_gt_command, ["--data", str(tiny_kitti), "--out", tmp_path / "gt.npz"])
    assert result.exit_code == 1 and result.output.strip().startswith("Error: --data must look like kitti:PATH")
