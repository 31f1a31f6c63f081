"""Carrying a frame's flow to one neighbour over to the other: where the near road goes once it leaves the view."""
import io
import tarfile
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from formats.shard_schema import FLOW_MEMBER, FLOW_PREVIOUS_MEMBER
from training.cli import main
from training.flow.data import DataConfig, PairAugment, train_loader
from training.flow.loss import FlowLossConfig, carried_over_flow_px, extrapolation_loss
from training.flow.model import translation_flow_px
from training.flow.pretrain import PretrainTask, pretrain
from training.shard_stream import samples_from_shards

from tests.training.flow.test_pretrain import tiny_config


def still_scene_flows(size=(64, 192)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The exact flows of still points, a ground plane below the horizon and a wall above it, to the next
    and the previous frame of a camera driving forward 2 m per frame (36 km/h at 5 Hz), and each pixel's offset from the
    principal point (the centre), all (1, 2, H, W) in pixels."""
    h, w = size
    rows = (torch.arange(h) + 0.5 - h / 2).view(1, 1, h, 1).expand(1, 1, h, w)
    inverse_depth = torch.where(rows > 2, rows / (0.58 * w * 1.6), torch.full_like(rows, 0.02))  # 1/m
    forward_m = torch.tensor(2.0).view(1, 1, 1, 1)
    going = translation_flow_px(inverse_depth, torch.zeros(1, 2, 1, 1), forward_m, size)
    coming_back = translation_flow_px(inverse_depth, torch.zeros(1, 2, 1, 1), -forward_m, size)
    xs, ys = torch.arange(w) + 0.5 - w / 2, torch.arange(h) + 0.5 - h / 2
    radius = torch.stack(torch.broadcast_tensors(xs.view(1, w), ys.view(h, 1)))[None]
    return going, coming_back, radius


def test_the_flow_coming_back_tells_where_the_near_road_goes_forward_and_the_reversed_flow_does_not():
    going, coming_back, radius = still_scene_flows()
    torch.testing.assert_close(carried_over_flow_px(coming_back, radius, forward=True), going, atol=5e-3, rtol=1e-4)
    torch.testing.assert_close(carried_over_flow_px(going, radius, forward=False), coming_back, atol=5e-3, rtol=1e-4)
    bottom = (..., slice(-4, None), slice(None))
    assert float((-coming_back - going)[bottom].norm(dim=1).mean()) > 0.3 * float(going[bottom].norm(dim=1).mean())


def test_on_world_drives_the_true_backward_flow_carried_over_finds_the_pixels_leaving_the_view(world_shards):
    """The world's own drives (turns, hills, other cars): for the pixels whose forward match leaves the
    frame, the backward flow carried over misses by under a third of what negating it misses by."""
    carried_err = negated_err = moved = 0.0
    for sample in samples_from_shards([{"url": str(world_shards / "val" / "0000.tar")}], handler=None):
        going, coming_back = (torch.from_numpy(np.load(io.BytesIO(sample[m])).transpose(2, 0, 1).copy())[None]
                              for m in (FLOW_MEMBER, FLOW_PREVIOUS_MEMBER))
        h, w = going.shape[-2:]
        xs, ys = torch.arange(w) + 0.5, torch.arange(h) + 0.5
        position = torch.stack(torch.broadcast_tensors(xs.view(1, w), ys.view(h, 1)))[None]
        end = position + going
        leaving = ((end[:, 0] < 0) | (end[:, 0] > w) | (end[:, 1] < 0) | (end[:, 1] > h))
        carried = carried_over_flow_px(coming_back, position - torch.tensor([w / 2, h / 2]).view(1, 2, 1, 1), True)
        carried_err += float((carried - going).norm(dim=1)[leaving].sum())
        negated_err += float((-coming_back - going).norm(dim=1)[leaving].sum())
        moved += float(going.norm(dim=1)[leaving].sum())
    assert moved > 0
    assert carried_err < negated_err / 3
    assert carried_err < 0.25 * moved


def test_the_loss_charges_only_the_pixels_leaving_the_view_and_teaches_only_their_stretch():
    going, coming_back, _ = still_scene_flows()
    principal, size = torch.tensor([[96.0, 32.0]]), (64, 192)
    no_stretch = {0: torch.zeros(2, 1, *size)}
    exact = {0: torch.cat([going, coming_back])}
    assert float(extrapolation_loss(exact, no_stretch, principal, size)) < 1e-3
    short_bottom, short_middle = going.clone(), going.clone()
    short_bottom[..., -3:, :] *= 0.5  # the near road, whose match leaves through the bottom
    short_middle[..., 30:34, 90:102] *= 0.5  # the centre, which stays in view both ways
    assert float(extrapolation_loss({0: torch.cat([short_middle, coming_back])}, no_stretch, principal, size)) < 1e-3
    odd = torch.cat([short_bottom, coming_back]).requires_grad_()
    stretch = torch.zeros(2, 1, *size, requires_grad=True)
    loss = extrapolation_loss({0: odd * (1 + stretch)}, {0: stretch}, principal, size)
    loss.backward()
    assert float(loss.detach()) > 0.01 and (odd.grad is None or float(odd.grad.abs().max()) == 0.0)
    forward_grad = stretch.grad[0, 0]
    assert (forward_grad[-3:] < 0).float().mean() > 0.9  # a longer stretch forward lowers the loss there
    assert float(forward_grad[16:48, 48:144].abs().max()) == 0.0  # pixels that stay in view are left alone


def test_triplet_batches_hold_the_middle_frame_both_neighbours_and_the_principal_point(world_shards):
    sample = next(iter(samples_from_shards([{"url": str(world_shards / "0000.tar")}], handler=None)))
    config = DataConfig(shards="", width_px=96, height_px=36, jitter=0.0, flip=False, min_crop_fraction=1.0,
                        triplets=True)
    target, source, visible, previous, principal_px = PairAugment(config, train=True)(sample)
    with tarfile.open(world_shards / "0000.tar") as tar:
        names = sorted(m.name for m in tar.getmembers()
                       if m.name.startswith(sample["__key__"] + ".") and m.name.endswith(".jpg"))
        frames = [cv2.imdecode(np.frombuffer(tar.extractfile(n).read(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
                  for n in names]
    expected = [torch.from_numpy(cv2.resize(f, (96, 36), interpolation=cv2.INTER_AREA).transpose(2, 0, 1).copy())
                for f in frames]
    assert torch.equal(previous, expected[0]) and torch.equal(target, expected[1]) and torch.equal(source, expected[2])
    assert principal_px.tolist() == [48.0, 18.0] and visible.shape == (1, 36, 96)
    flipped = PairAugment(replace(config, flip=True, min_crop_fraction=0.8, seed=3), train=True)
    for _ in range(8):  # a random crop moves the principal point off the centre, a flip mirrors it
        x, y = flipped(sample)[4].tolist()
        assert 0 < x < 96 and 0 < y < 36
    batch = next(iter(train_loader(replace(config, shards=str(world_shards / "0000.tar"), batch_size=2,
                                           workers=0))[0]))
    assert len(batch) == 7 and batch[5].shape == (2, 3, 36, 96) and batch[6].shape == (2, 2)


def test_pretraining_extrapolates_by_default_resumes_and_says_what_it_needs(world_shards, tiny_shards, tmp_path):
    config = tiny_config(world_shards / "0000.tar", tmp_path / "run", steps=2, checkpoint_every=1)
    assert config.stretch and config.loss.extrapolation > 0 and config.data.triplets
    assert not replace(config, loss=replace(config.loss, extrapolation=0.0)).data.triplets  # pairs again
    with pytest.raises(ValueError, match=r"needs --stretch \(or turn it off: --extrapolation 0\)"):
        PretrainTask(replace(config, stretch=False))
    with pytest.raises(ValueError, match="forward-backward occlusion check.*--extrapolation 0"):
        PretrainTask(replace(config, loss=replace(config.loss, occlusion_masking=True)))
    pretrain(replace(config, steps=1))
    result = pretrain(replace(config, resume=True))
    assert result["step"] == 2 and result["extrapolation"] >= 0.0
    two_frame = tmp_path / "pairs.tar"
    with tarfile.open(tiny_shards[0] / "0000.tar") as tar, tarfile.open(two_frame, "w") as out:
        for member in tar.getmembers():
            if not member.name.endswith(".2.jpg"):
                out.addfile(member, tar.extractfile(member))
    pretrain_2_frames = ["pretrain", "--shards", str(two_frame), "--size", "96x64", "--steps", "1", "--device", "cpu"]
    result = CliRunner().invoke(main, [*pretrain_2_frames, "--run-dir", str(tmp_path / "cli")])
    assert result.exit_code != 0 and "needs samples of 3 frames" in result.output
    assert "--extrapolation 0" in result.output
    result = CliRunner().invoke(main, [*pretrain_2_frames, "--extrapolation", "0", "--run-dir", str(tmp_path / "pairs")])
    assert result.exit_code == 0, result.output
