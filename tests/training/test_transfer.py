"""Depth transfer: the geometry reprojects true depth, the loop trains in every mode and data source,
backbones load, checkpoints resume, predict and evaluate."""
import json
import logging

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from geopt_io import read_jsonl
from training.data import DataConfig
from training.depth_data import FRAME_IDS, KittiDepthDataset, LoaderConfig, training_batches
from training.depth_losses import depth_loss, intrinsics_matrices, min_reprojection, warp_source
from training.depth_models import DepthAndPose, transformation_from_parameters
from training.export import export_backbone
from training.kitti import SplitEntry
from training.losses import photometric_error
from training.pretrain import PretrainConfig, pretrain
from training.transfer import TransferConfig, build_model, evaluate_checkpoint, transfer
from training.transfer_cli import evaluate_command, predict_command, transfer_command
from world.camera import PinholeCamera, offset_pose
from world.drive import Drive, DriveSpec
from world.kitti_export import KittiExportSpec, export_kitti
from world.render import Renderer

WIDTH, HEIGHT = 128, 64


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    """One train and one test drive of 6 stereo frames at 320x96, and the export's truth."""
    root = tmp_path_factory.mktemp("kitti")
    export_kitti(KittiExportSpec(root, train_drives=1, test_drives=1, frames_per_drive=6, width_px=320, height_px=96))
    return root, json.loads((root / "world_truth.json").read_text())


def tiny_config(data: str, run_dir, **overrides) -> TransferConfig:
    settings = dict(data=data, run_dir=run_dir, init="scratch", width_px=WIDTH, height_px=HEIGHT, batch_size=2,
                    steps=2, workers=0, device="cpu", log_every=1, checkpoint_every=100, image_every=100)
    return TransferConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def mono_run(kitti, tmp_path_factory):
    """A 3-step M run on the KITTI export."""
    root, _ = kitti
    run = tmp_path_factory.mktemp("mono") / "run"
    result = transfer(tiny_config(f"kitti:{root}", run, steps=3))
    return run, result


def true_depth(truth: dict, frame: int, side: str) -> torch.Tensor:
    """(1, 1, 96, 320) rendered z-depth in metres of a frame of train drive 0; sky capped at 10 km."""
    drive_truth = truth["drives"][0]
    drive = Drive(DriveSpec(seed=drive_truth["seed"], duration_s=drive_truth["duration_s"],
                            stops=tuple(tuple(s) for s in drive_truth["stops"])))
    pose = np.array(drive_truth["poses"][frame])
    pose = pose if side == "l" else offset_pose(pose, 0.54)
    depth_m = Renderer(drive.scene, PinholeCamera.kitti_like(320, 96)).render(pose).depth_m
    return torch.from_numpy(np.minimum(depth_m, 1e4))[None, None].float()


def mean_error(sample: dict, frame_id, transform: torch.Tensor, depth_m: torch.Tensor) -> float:
    K, inv_K = intrinsics_matrices(sample["K"][None], 320, 96)
    warped = warp_source(sample["frames"][frame_id][None], depth_m, K, inv_K, transform[None])
    return float(photometric_error(warped, sample["frames"][0][None]).mean())


@pytest.mark.parametrize("side", ["l", "r"])
def test_true_depth_and_baseline_reproject_the_stereo_partner_flipped_or_not(kitti, side):
    root, truth = kitti
    entry = SplitEntry(truth["drives"][0]["folder"], 2, side)
    dataset = KittiDepthDataset(root, [entry], FRAME_IDS["S"], 320, 96, augment=False)
    depth_m = true_depth(truth, 2, side)
    for flip in (False, True):
        sample = dataset.load(0, flip=flip)
        depth = depth_m.flip(-1) if flip else depth_m
        exact = mean_error(sample, "s", sample["stereo_T"], depth)
        assert exact < 0.04
        assert exact < 0.3 * mean_error(sample, "s", sample["stereo_T"], 2 * depth)
        assert exact < 0.3 * mean_error(sample, "s", sample["stereo_T"], torch.full_like(depth, 10.0))


def test_true_depth_and_pose_reproject_consecutive_frames(kitti):
    root, truth = kitti
    drive = truth["drives"][0]
    sample = KittiDepthDataset(root, [SplitEntry(drive["folder"], 2, "l")], FRAME_IDS["M"], 320, 96,
                               augment=False).load(0)
    depth_m = true_depth(truth, 2, "l")
    poses = np.array(drive["poses"])
    for frame_id in (-1, 1):
        transform = torch.from_numpy(np.linalg.inv(poses[2 + frame_id]) @ poses[2]).float()
        exact = mean_error(sample, frame_id, transform, depth_m)
        assert exact < 0.5 * mean_error(sample, frame_id, transform, 2 * depth_m)
        assert exact < 0.5 * mean_error(sample, frame_id, transform, torch.full_like(depth_m, 10.0))


def test_automask_drops_the_pixels_of_an_identical_static_pair():
    torch.manual_seed(0)
    texture = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 32), size=(HEIGHT, WIDTH), mode="bilinear")
    K = torch.tensor([[[0.58, 0, 0.5], [0, 1.16, 0.5], [0, 0, 1.0]]])
    K_px, inv_K = intrinsics_matrices(K, WIDTH, HEIGHT)
    moved = transformation_from_parameters(torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]]))
    warped = warp_source(texture, torch.full((1, 1, HEIGHT, WIDTH), 5.0), K_px, inv_K, moved)
    _, kept = min_reprojection(texture, [warped], [texture])
    assert kept.mean() < 0.02, "the unwarped identical frame explains (almost) every pixel"
    _, kept = min_reprojection(texture, [warped], None)
    assert kept.mean() == 1.0


def test_entries_with_missing_neighbours_are_skipped_with_one_warning(kitti, caplog):
    root, truth = kitti
    folder = truth["drives"][0]["folder"]
    entries = [SplitEntry(folder, 0, "l"), SplitEntry(folder, 2, "l"), SplitEntry(folder, 5, "r")]
    with caplog.at_level(logging.WARNING):
        dataset = KittiDepthDataset(root, entries, FRAME_IDS["MS"], WIDTH, HEIGHT, augment=True)
    assert len(dataset) == 1
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1 and "2 of 3" in warnings[0]
    sample = dataset[0]
    assert sample["frames_aug"][0].shape == (3, HEIGHT, WIDTH) and set(sample["frames"]) == {0, -1, 1, "s"}


def test_mono_transfer_writes_last_and_resumes(mono_run, kitti):
    run, result = mono_run
    first = torch.load(run / "last.pt", weights_only=False)
    assert result["step"] == first["step"] == 3 and (run / "tensorboard").is_dir()
    root, _ = kitti
    result = transfer(tiny_config(f"kitti:{root}", run, steps=4, resume=True))
    final = torch.load(run / "last.pt", weights_only=False)
    assert result["step"] == final["step"] == 4
    assert {int(s["step"]) for s in final["optimiser"]["state"].values()} == {4}
    assert json.loads((run / "config.json").read_text())["started_at_step"] == 3
    assert [row["step"] for row in read_jsonl(run / "log.jsonl")] == [1, 2, 3, 4]
    assert all(np.isfinite(row["loss"]) for row in read_jsonl(run / "log.jsonl"))


@pytest.mark.parametrize("mode", ["S", "MS"])
def test_stereo_modes_take_steps(kitti, tmp_path, mode):
    root, _ = kitti
    result = transfer(tiny_config(f"kitti:{root}", tmp_path / "run", mode=mode))
    assert result["step"] == 2 and np.isfinite(result["loss"])
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert any(k.startswith("pose.") for k in state["model"]) == (mode == "MS")


@pytest.mark.parametrize("intrinsics, fov_deg", [("fixed", 80.0), ("learned", None)])
def test_shards_train_with_a_field_of_view_or_learned_intrinsics(world_shards, tmp_path, intrinsics, fov_deg):
    data = f"shards:{world_shards / '0000.tar'}"
    batch = next(training_batches(LoaderConfig(data, width_px=WIDTH, height_px=HEIGHT, batch_size=2, workers=0,
                                               fov_deg=fov_deg)))
    assert batch["frames"][-1].shape == (2, 3, HEIGHT, WIDTH) and ("K" in batch) == (fov_deg is not None)
    result = transfer(tiny_config(data, tmp_path / "run", intrinsics=intrinsics, fov_deg=fov_deg))
    assert result["step"] == 2 and np.isfinite(result["loss"])
    if intrinsics == "learned":
        assert 0.3 < result["fx_normalised"] < 1.0


def test_shards_refuse_stereo_and_missing_intrinsics(world_shards, tmp_path):
    data = f"shards:{world_shards / '0000.tar'}"
    with pytest.raises(ValueError, match="mode must be M"):
        next(training_batches(LoaderConfig(data, mode="S", workers=0)))
    with pytest.raises(ValueError, match="fov_deg or use learned"):
        transfer(tiny_config(data, tmp_path / "run"))


def test_geopt_init_loads_the_exported_backbone(world_shards, tmp_path):
    shards = DataConfig(shards=str(world_shards), width_px=WIDTH, height_px=HEIGHT, batch_size=2, workers=0,
                        shuffle_buffer=2, batches_per_epoch=2)
    pretrain(PretrainConfig(data=shards, run_dir=tmp_path / "pre", steps=1, warmup_steps=1, device="cpu"))
    export_backbone(tmp_path / "pre" / "last.pt", tmp_path / "backbone.pth")
    backbone = torch.load(tmp_path / "backbone.pth")
    model = build_model(tiny_config("kitti:unused", tmp_path / "run", init=f"geopt:{tmp_path / 'backbone.pth'}"))
    assert torch.equal(model.depth.encoder.resnet.conv1.weight, backbone["conv1.weight"])
    assert torch.equal(model.depth.encoder.resnet.layer4[1].bn2.running_var, backbone["layer4.1.bn2.running_var"])
    pose_conv1 = model.pose.encoder.resnet.conv1.weight
    assert pose_conv1.shape[1] == 6
    assert torch.allclose(pose_conv1, torch.cat([backbone["conv1.weight"]] * 2, dim=1) / 2)
    from_checkpoint = build_model(tiny_config("kitti:unused", tmp_path / "run", init=str(tmp_path / "pre" / "last.pt")))
    assert torch.equal(from_checkpoint.depth.encoder.resnet.conv1.weight, backbone["conv1.weight"])


def test_imagenet_without_a_cached_file_is_a_one_line_error(kitti, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ValueError, match="not in the torch hub cache") as error:
        build_model(tiny_config("kitti:unused", tmp_path / "run", init="imagenet"))
    assert "\n" not in str(error.value) and "resnet18-f37072fd.pth" in str(error.value)
    root, _ = kitti
    done = CliRunner().invoke(transfer_command, ["--data", f"kitti:{root}", "--init", "imagenet", "--size", "128x64",
                                                 "--run-dir", str(tmp_path / "cli"), "--workers", "0"])
    assert done.exit_code == 1 and "not in the torch hub cache" in done.output
    assert len(done.output.strip().splitlines()) == 1


def test_evaluate_checkpoint_scores_the_test_split(mono_run, kitti, tmp_path):
    run, _ = mono_run
    root, _ = kitti
    errors, ratios = evaluate_checkpoint(run / "last.pt", root)
    assert all(np.isfinite(v) for v in errors.values()) and len(ratios) == 2
    _, metric_ratios = evaluate_checkpoint(run / "last.pt", root, scaling="metric")
    assert metric_ratios.size == 0
    out = tmp_path / "scores.json"
    done = CliRunner().invoke(evaluate_command, ["--data", f"kitti:{root}", "--ckpt", str(run / "last.pt"),
                                                 "--out", str(out), "--device", "cpu"])
    assert done.exit_code == 0, done.output
    assert "abs_rel" in done.output and json.loads(out.read_text())["scaling"] == "median"
    done = CliRunner().invoke(evaluate_command, ["--data", f"kitti:{root}", "--ckpt", str(out)])
    assert done.exit_code == 1 and "cannot use" in done.output


def test_predict_writes_disparities_and_pictures(mono_run, kitti, tmp_path):
    run, _ = mono_run
    root, truth = kitti
    images = root / truth["drives"][1]["folder"] / "image_02" / "data"
    done = CliRunner().invoke(predict_command, ["--ckpt", str(run / "last.pt"), "--images", str(images),
                                                "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert done.exit_code == 0, done.output
    disps = np.load(tmp_path / "out" / "disps.npy")
    assert disps.shape == (6, HEIGHT, WIDTH) and disps.dtype == np.float32
    assert (disps >= 0.01 - 1e-6).all() and (disps <= 10 + 1e-6).all()
    assert len(list((tmp_path / "out").glob("*_disp.png"))) == 6
    done = CliRunner().invoke(predict_command, ["--ckpt", str(run / "last.pt"), "--data", f"kitti:{root}",
                                                "--out", str(tmp_path / "split")])
    assert done.exit_code == 0 and np.load(tmp_path / "split" / "disps.npy").shape[0] == 2


def test_two_steps_on_a_fixed_batch_reduce_the_loss(kitti):
    root, truth = kitti
    torch.manual_seed(0)
    folder = truth["drives"][0]["folder"]
    dataset = KittiDepthDataset(root, [SplitEntry(folder, 2, "l"), SplitEntry(folder, 3, "l")], FRAME_IDS["M"],
                                WIDTH, HEIGHT, augment=False)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    model = DepthAndPose("resnet18", aspect_w_over_h=WIDTH / HEIGHT)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

    def loss() -> torch.Tensor:
        out = model(batch["frames_aug"])
        frames = batch["frames"]
        sources = {f: frames[f] for f in out["poses"]}
        return depth_loss(frames[0], sources, out["poses"], out["disps"], batch["K"])["loss"]

    losses = []
    for _ in range(3):
        value = loss()
        losses.append(value.item())
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
    assert losses[2] < losses[0], losses


def test_shard_samples_with_known_intrinsics_use_them(world_shards):
    import json as json_module

    import webdataset as wds

    from training.depth_data import ShardTriplet

    sample = next(iter(wds.WebDataset(str(world_shards / "0000.tar"), shardshuffle=False)))
    stored_K = np.array(json_module.loads(sample["json"])["extra"]["intrinsics_normalised"])
    out = ShardTriplet(LoaderConfig(data="shards:x", width_px=128, height_px=64, augment=False))(sample)
    # 192x72 stored, centre crop 144x72 for the 2:1 training aspect: fx scales by 192/144, cx stays central.
    assert np.allclose(out["K"].numpy()[0], [stored_K[0, 0] * 192 / 144, 0, 0.5], atol=1e-5)
    assert np.allclose(out["K"].numpy()[1], stored_K[1], atol=1e-5)
