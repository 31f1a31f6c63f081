"""Depth transfer: the geometry reprojects true depth, the loop trains in every mode and data source and
lowers the loss, learned intrinsics move to the true focal length, backbones load, checkpoints resume,
predict pictures images, folders and videos, evaluate scores."""
import io
import json
import logging
import tarfile

import cv2
import ffmpeg
import numpy as np
import pytest
import torch
import webdataset as wds
from click.testing import CliRunner

from formats.files import read_jsonl
from formats.shard_schema import write_sample
from training.flow.data import DataConfig
from training.depth.data import FRAME_IDS, KittiDepthDataset, LoaderConfig, ShardTriplet, training_batches
from training.depth.loss import depth_loss, intrinsics_matrices, min_reprojection, warp_source
from training.depth.networks import MAX_DEPTH, MIN_DEPTH, IntrinsicsHead, transformation_from_parameters
from training.flow.export import export_backbone
from formats.kitti import SplitEntry
from training.photometric import photometric_error
from training.flow.pretrain import PretrainConfig, pretrain
from training.runtime import start_runtime
from training.depth.evaluate import evaluate_checkpoint
from training.depth.transfer import TransferConfig, build_model, depth_losses, transfer
from training.depth.cli import evaluate_command, predict_command, transfer_command
from world.camera import PinholeCamera, offset_pose
from world.drive import Drive, DriveSpec
from world.kitti_export import KittiExportSpec, export_kitti
from world.render import Renderer, flow_between
from world.shards import FRAME_RATE_HZ, write_world_shard
from world.video import internet_like_spec, render_video

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
    assert batch["frames"][-1].shape == (2, 3, HEIGHT, WIDTH)
    assert "K" in batch  # world shards carry their known intrinsics; 'learned' mode ignores them
    result = transfer(tiny_config(data, tmp_path / "run", intrinsics=intrinsics, fov_deg=fov_deg))
    assert result["step"] == 2 and np.isfinite(result["loss"])
    if intrinsics == "learned":
        assert 0.3 < result["fx_normalised"] < 1.0


def test_shards_refuse_stereo_and_missing_intrinsics(world_shards, tmp_path):
    data = f"shards:{world_shards / '0000.tar'}"
    with pytest.raises(ValueError, match="mode must be M"):
        next(training_batches(LoaderConfig(data, mode="S", workers=0)))
    uncalibrated = tmp_path / "mined.tar"  # as mined from video: no intrinsics in the samples
    with tarfile.open(uncalibrated, "w") as tar:
        for sample in wds.WebDataset(str(world_shards / "0000.tar"), shardshuffle=False):
            meta = json.loads(sample["json"])
            meta["extra"] = {}
            members = {k: v for k, v in sample.items() if k.endswith(".jpg")}
            write_sample(tar, {"__key__": sample["__key__"], "json": json.dumps(meta).encode(), **members})
    with pytest.raises(ValueError, match="give fov_deg"):
        transfer(tiny_config(f"shards:{uncalibrated}", tmp_path / "run"))


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


def predict(*args: str):
    return CliRunner().invoke(predict_command, [*map(str, args), "--device", "cpu"])


def png_size(path) -> tuple[int, int]:
    height, width = cv2.imread(str(path)).shape[:2]
    return width, height


def test_predict_pictures_images_and_folders_beside_their_depth(mono_run, kitti, tmp_path):
    run, _ = mono_run
    root, truth = kitti
    folder = root / truth["drives"][1]["folder"] / "image_02" / "data"
    right = root / truth["drives"][1]["folder"] / "image_03" / "data" / "0000000002.png"
    done = predict("--ckpt", run / "last.pt", folder, "--out", tmp_path / "folder")
    assert done.exit_code == 0, done.output
    pictures = sorted((tmp_path / "folder").iterdir())
    assert [p.name for p in pictures] == [f"{i:010d}_depth.png" for i in range(6)]
    assert all(png_size(p) == (2 * 320, 96) for p in pictures)
    done = predict("--ckpt", run / "last.pt", right, "--out", tmp_path / "one", "--save-npy", "--size", "64x64")
    assert done.exit_code == 0, done.output
    assert png_size(tmp_path / "one" / "0000000002_depth.png") == (2 * 320, 96)
    disp = np.load(tmp_path / "one" / "0000000002_disp.npy")
    assert disp.shape == (64, 64) and disp.dtype == np.float32 and (disp >= 0.01 - 1e-6).all()
    done = predict("--ckpt", run / "last.pt", folder, right, "--out", tmp_path / "both")
    assert done.exit_code == 1 and "would both write" in done.output


def test_predict_turns_a_video_into_a_side_by_side_video(mono_run, tmp_path):
    run, _ = mono_run
    video = tmp_path / "drive.mp4"
    render_video(internet_like_spec(5, duration_s=0.6, fps="25", cuts=0, stop_s=0, width_px=96, height_px=64,
                                    content_height_px=48), video)
    done = predict("--ckpt", run / "last.pt", video, "--out", tmp_path / "out", "--save-npy", "--batch-size", "4")
    assert done.exit_code == 0, done.output
    out = tmp_path / "out" / "drive_depth.mp4"
    frames_in, frames_out = count_frames(video), count_frames(out)
    assert frames_out == frames_in == 15
    stream = ffmpeg.probe(str(out), select_streams="v:0")["streams"][0]
    assert (stream["width"], stream["height"], stream["codec_name"]) == (2 * 96, 64, "h264")
    assert np.load(tmp_path / "out" / "drive_disps.npy").shape == (15, HEIGHT, WIDTH)
    assert not list((tmp_path / "out").glob(".*")), "no temporary files left"


def count_frames(video) -> int:
    stream = ffmpeg.probe(str(video), select_streams="v:0", count_frames=None)["streams"][0]
    return int(stream["nb_read_frames"])


def test_predict_names_a_missing_or_unreadable_input_in_one_line(mono_run, tmp_path):
    run, _ = mono_run
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    for bad in (tmp_path / "missing.png", broken):
        done = predict("--ckpt", run / "last.pt", bad, "--out", tmp_path / "out")
        assert done.exit_code == 1 and str(bad) in done.output, done.output
        assert len(done.output.strip().splitlines()) == 1, done.output
    done = predict("--ckpt", run / "last.pt", "--out", tmp_path / "out")
    assert done.exit_code == 1 and "either INPUT" in done.output


def test_predict_a_kitti_split_writes_disparities_in_split_order(mono_run, kitti, tmp_path):
    run, _ = mono_run
    root, _ = kitti
    done = predict("--ckpt", run / "last.pt", "--data", f"kitti:{root}", "--out", tmp_path / "split", "--save-npy")
    assert done.exit_code == 0, done.output
    disps = np.load(tmp_path / "split" / "disps.npy")
    assert disps.shape == (2, HEIGHT, WIDTH) and disps.dtype == np.float32
    assert (disps >= 0.01 - 1e-6).all() and (disps <= 10 + 1e-6).all()
    assert len(list((tmp_path / "split").glob("*_depth.png"))) == 2


@pytest.mark.parametrize("mode, steps, ratio", [("M", 3, 0.9), ("S", 7, 0.99), ("MS", 3, 0.9)])
def test_a_few_steps_on_a_fixed_batch_lower_the_loss(kitti, mode, steps, ratio):
    """S learns slowest: its auto-masked loss drops below the unwarped partner's error only where the
    disparity nears the truth, a few pixels here, and a fresh network starts at 29 % of the width. With
    depth in 0.1..100 m it started at 157 %, outside the image, and its loss never moved at all."""
    root, truth = kitti
    torch.manual_seed(0)
    folder = truth["drives"][0]["folder"]
    dataset = KittiDepthDataset(root, [SplitEntry(folder, 2, "l"), SplitEntry(folder, 3, "r")], FRAME_IDS[mode],
                                WIDTH, HEIGHT, augment=False)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    config = tiny_config(f"kitti:{root}", None, mode=mode)
    model, runtime = build_model(config), start_runtime("cpu")
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    losses = []
    for _ in range(steps + 1):
        loss = depth_losses(model, batch, config, runtime)["loss"]
        losses.append(loss.item())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert losses[-1] < ratio * losses[0], losses


def test_shard_samples_with_known_intrinsics_use_them(world_shards):
    import json as json_module

    import webdataset as wds

    from training.depth.data import ShardTriplet

    sample = next(iter(wds.WebDataset(str(world_shards / "0000.tar"), shardshuffle=False)))
    stored_K = np.array(json_module.loads(sample["json"])["extra"]["intrinsics_normalised"])
    out = ShardTriplet(LoaderConfig(data="shards:x", width_px=128, height_px=64, augment=False))(sample)
    # 192x72 stored, centre crop 144x72 for the 2:1 training aspect: fx scales by 192/144, cx stays central.
    assert np.allclose(out["K"].numpy()[0], [stored_K[0, 0] * 192 / 144, 0, 0.5], atol=1e-5)
    assert np.allclose(out["K"].numpy()[1], stored_K[1], atol=1e-5)


def world_shard_with_true_geometry(path, seed: int, samples: int = 4) -> dict:
    """A 192x72 world shard loaded as training loads it (centre crop 144x72, resized to WIDTH x HEIGHT,
    'K' from its json), batched with each target frame's true sigmoid disparity 'disp' and true motions
    'T' {-1, 1: (B, 4, 4)}. The drive is rendered again as world.shards writes it; the shard's exact
    flow confirms it is the same drive."""
    stored_w, stored_h = 192, 72
    write_world_shard(path, seed=seed, samples=samples, width_px=stored_w, height_px=stored_h)
    camera = PinholeCamera.kitti_like(stored_w, stored_h)
    drive = Drive(DriveSpec(seed=seed, duration_s=(2 * samples + 1) / FRAME_RATE_HZ + 1.0))
    renderer = Renderer(drive.scene, camera)
    load = ShardTriplet(LoaderConfig(data="shards:unused", width_px=WIDTH, height_px=HEIGHT, augment=False))
    crop_w = stored_h * WIDTH // HEIGHT
    left = (stored_w - crop_w) // 2
    loaded = []
    for sample in wds.WebDataset(str(path), shardshuffle=False):
        poses = drive.poses(np.array(json.loads(sample["json"])["timestamps_s"]))
        depth_m = renderer.render(poses[1]).depth_m
        stored_flow = np.load(io.BytesIO(sample["flow.npy"]))
        assert np.allclose(flow_between(depth_m, poses[1], poses[2], camera), stored_flow, atol=1e-3)
        depth_m = cv2.resize(np.clip(depth_m[:, left:left + crop_w], MIN_DEPTH, MAX_DEPTH).astype(np.float32),
                             (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)
        disp = (1 / depth_m - 1 / MAX_DEPTH) / (1 / MIN_DEPTH - 1 / MAX_DEPTH)
        motions = {f: torch.from_numpy(np.linalg.inv(poses[1 + f]) @ poses[1]).float() for f in (-1, 1)}
        loaded.append({**load(sample), "disp": torch.from_numpy(disp)[None], "T": motions})
    return torch.utils.data.default_collate(loaded)


@pytest.mark.parametrize("prior_factor", [0.7, 1.3])
def test_learned_focal_length_moves_to_the_truth_of_world_shards(tmp_path, prior_factor):
    """The photometric loss pulls the intrinsics head from a focal length 30 % off to the true one.

    Depth and motion are the truth here and only the head's bias learns (the focal length all frames
    share): learning depth, motion and intrinsics together from scratch does not find the focal length
    in a CPU minute, as forward driving hardly constrains it. Seed 39 drives a gentle curve."""
    batch = world_shard_with_true_geometry(tmp_path / "0000.tar", seed=39)
    true_fx = float(batch["K"][0, 0, 0])
    head = IntrinsicsHead(512, WIDTH / HEIGHT, focal_x_prior=prior_factor * true_fx)
    features = torch.zeros(len(batch["disp"]), 512, 1, 1)
    optimiser = torch.optim.Adam([head.linear.bias], lr=0.05)
    frames = batch["frames"]
    for _ in range(40):
        K = head(features)
        loss = depth_loss(frames[0], {f: frames[f] for f in (-1, 1)}, batch["T"], {0: batch["disp"]}, K)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    learned_fx = head(features)[0, 0, 0].item()
    assert abs(learned_fx - true_fx) < 0.25 * abs(prior_factor - 1) * true_fx, (learned_fx, true_fx)


def test_depth_loss_leaves_out_pixels_under_a_static_overlay():
    torch.manual_seed(0)
    smooth = lambda: torch.nn.functional.interpolate(torch.rand(1, 3, 8, 16), size=(32, 64), mode="bilinear")
    target = smooth()
    source = target.clone()  # a still camera: the true depth does not matter, the warp is the identity
    transforms = {1: torch.eye(4)[None]}
    disps = {0: torch.full((1, 1, 32, 64), 0.5)}
    K = torch.tensor([[0.58, 0, 0.5], [0, 1.92, 0.5], [0, 0, 1]])[None]
    visible = torch.ones(1, 1, 32, 64)
    visible[..., 3:13, 39:61] = 0
    stamped = target.clone()
    stamped[..., 4:12, 40:60] = 1.0
    loss = lambda t, v: float(depth_loss(t, {1: source}, transforms, disps, K, visible=v)["photometric"])
    assert loss(stamped, None) > 1.05 * loss(target, None)
    assert loss(stamped, visible) == pytest.approx(loss(target, visible), abs=1e-4)  # ties are broken by noise
