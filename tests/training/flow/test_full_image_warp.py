"""Full-image warping: the net sees each training frame's centre, and the loss warps into the whole
frame, so pixels that leave the net's view still learn where they go (issue: long displacements)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from formats.files import read_jsonl
from training.flow.loss import FlowLossConfig, flow_loss, margin_px
from training.flow.pretrain import PretrainTask, pretrain
from training.photometric import photometric_error

from tests.training.flow.test_long_displacements import _record_input_sizes
from tests.training.flow.test_pretrain import tiny_config, world_pair

BENCH = Path(__file__).resolve().parents[3] / "bench" / "flow_out_of_view.py"
MARGIN = (24, 8)
CENTRE = (..., slice(8, 56), slice(24, 168))


def test_pixels_leaving_the_nets_view_are_scored_against_the_whole_frame():
    """Driving forward, border pixels move out of the centre the net sees. Without the margin the loss
    excludes them; with it, they are matched in the whole source frame, and there the true flow explains
    them better than a flow 3 px off."""
    target, source, true_flow = world_pair(11, 192, 64)
    target, flow = target[CENTRE], true_flow[CENTRE]
    lands = (torch.arange(144) + 24 + flow[:, 0], torch.arange(48)[:, None] + 8 + flow[:, 1])
    leaves_centre = (lands[0] < 24) | (lands[0] > 167) | (lands[1] < 8) | (lands[1] > 55)
    stays_in_frame = (lands[0] >= 0) & (lands[0] <= 191) & (lands[1] >= 0) & (lands[1] <= 63)
    border = (leaves_centre & stays_in_frame)[:, None]
    assert border.float().mean() > 0.05

    cropped = flow_loss(target, source[CENTRE], {0: flow}, None)
    whole = flow_loss(target, source, {0: flow}, None, offset_px=MARGIN)
    assert cropped["mask"][border].max() == 0 and whole["mask"][border].min() == 1
    assert float(whole["excluded"]) < float(cropped["excluded"]) - 0.05

    wrong = flow_loss(target, source, {0: flow + torch.tensor([3.0, -2.0])[None, :, None, None]}, None,
                      offset_px=MARGIN)
    border_error = lambda out: float(photometric_error(out["warped"], target)[border].mean())
    assert border_error(whole) < 0.6 * border_error(wrong)


def test_every_scale_of_the_pyramid_warps_into_the_same_whole_frame():
    """Each scale's share of the margin is whole pixels, so a uniform 5 px motion scores the same
    near-zero error at every scale, with nothing excluded."""
    image = torch.rand(1, 3, 64, 192)
    image = torch.nn.functional.avg_pool2d(image, 5, 1, 2)  # texture that survives downsampling
    source = torch.roll(image, shifts=8, dims=-1)  # everything moves 8 px right
    target = image[CENTRE]
    flows = {s: torch.tensor([8.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 48 >> s, 144 >> s) for s in (0, 1, 2, 3)}
    out = flow_loss(target, source, flows, None, FlowLossConfig(pyramid=True), offset_px=MARGIN)
    assert float(out["excluded"]) == 0.0
    assert float(out["photometric"]) < 0.02
    with pytest.raises(ValueError, match=r"window at \(4, 8\) px in a 192x64 source is not whole pixels at 1/8 size"):
        flow_loss(image[..., 8:56, 4:148], source, flows, None, offset_px=(4, 8))


def test_pretraining_with_a_margin_trains_on_centres_and_validates_on_whole_frames(world_shards, tmp_path,
                                                                                    monkeypatch):
    seen = _record_input_sizes(monkeypatch)
    run = tmp_path / "run"
    config = tiny_config(world_shards, run, loss=FlowLossConfig(full_image_margin=0.125), steps=2,
                         val_shards=str(world_shards / "val"), val_every=2)
    assert margin_px(config.loss, 128, 64) == (16, 8)
    pretrain(config)
    assert seen == [(0, 96), (1, 96)]
    validation = [r for r in read_jsonl(run / "log.jsonl") if "val/epe_px" in r]
    assert validation and validation[-1]["val/true_flow_px"] > 0


def test_a_margin_that_leaves_the_net_too_little_says_so(world_shards, tmp_path):
    config = tiny_config(world_shards, tmp_path / "run", loss=FlowLossConfig(full_image_margin=0.4))
    with pytest.raises(ValueError, match="full-image margin of 0.4 leaves too little of 128x64"):
        PretrainTask(config)


def out_of_view_bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("flow_out_of_view", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_out_of_view_bench_splits_the_zero_flow_score_by_where_matches_land():
    bench = out_of_view_bench()
    flows = torch.zeros(1, 2, 4, 10)
    flows[0, 0, :, :8] = 1.0  # 32 pixels move 1 px right and stay in the frame
    flows[0, 0, :, 8:] = 4.0  # the last two columns move 4 px right: off the frame
    stats = bench.out_of_view(flows)
    assert stats["leaving_share"] == pytest.approx(0.2)
    assert stats["leaving_flow_px"] == 4.0 and stats["staying_flow_px"] == 1.0
    assert stats["zero_flow_score_leaving"] == pytest.approx(32 / (32 + 32))


def test_the_out_of_view_bench_names_the_edge_each_leaving_pixel_crosses():
    flows = torch.zeros(1, 2, 4, 10)
    flows[0, 1, 3, :] = 2.0  # the bottom row moves down, off the frame
    flows[0, 0, :3, 0] = -3.0  # the first column's other pixels move left, off the frame
    flows[0, 1, 0, 5] = -1.0  # one top pixel moves up, off the frame
    masks = out_of_view_bench().regions(flows)
    assert [int(masks[name].sum()) for name in ("in view", "bottom", "sides", "top")] == [26, 10, 3, 1]
    assert bool(sum(m.int() for m in masks.values()).eq(1).all())  # one region per pixel


def test_the_out_of_view_bench_says_in_one_line_when_a_run_folder_holds_no_net(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    done = subprocess.run([sys.executable, str(BENCH), "--run", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "--run" in done.stderr and "Traceback" not in done.stderr
