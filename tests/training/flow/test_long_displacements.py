"""What pretraining needs to learn long displacements: the census error, second-order smoothness, and
the resolution and frame-gap curricula (issue: flow at the seed's 640x192)."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from formats.shard_schema import decode_sample_frames
from training.checkpoints import CheckpointError
from training.flow.data import DataConfig, PairAugment
from training.flow.loss import census_error, edge_aware_smoothness, second_order_smoothness
from training.flow.model import GeoPtFlowModel
from training.flow.pretrain import PretrainConfig, PretrainTask, flow_model, pretrain, validate
from training.photometric import warp_by_flow
from training.runtime import start_runtime
from training.shard_stream import samples_from_shards
from world.shards import write_world_shard

from tests.training.flow.test_pretrain import tiny_config, world_pair

ROOT = Path(__file__).resolve().parents[3]


def test_census_error_prefers_the_true_flow_when_the_exposure_changes():
    """The census compares the sign of local contrast, so a brighter source frame (auto-exposure) still
    matches where the true flow sends each pixel."""
    target, source, true_flow = world_pair(11, 192, 64)
    brighter = (source * 1.3).clamp(0, 1)
    error = lambda flow: float(census_error(warp_by_flow(brighter, flow)[0], target).mean())
    assert error(true_flow) < 0.75 * error(torch.zeros_like(true_flow))
    assert error(true_flow) < 0.75 * error(true_flow + torch.tensor([3.0, -2.0])[None, :, None, None])


def test_second_order_smoothness_leaves_flow_growing_toward_the_border_free():
    """Driving forward, flow grows steadily from the centre of expansion to the border: first-order
    smoothness charges that growth, second-order does not."""
    image = torch.full((1, 3, 16, 48), 0.5)
    u = torch.linspace(-12.0, 12.0, 48).expand(16, 48)
    v = torch.linspace(-4.0, 4.0, 16)[:, None].expand(16, 48)
    expanding = torch.stack([u, v])[None]
    assert float(second_order_smoothness(expanding, image)) < 1e-5
    assert float(edge_aware_smoothness(expanding, image)) > 0.1
    bent = expanding.clone()
    bent[..., 24:] = 0
    assert float(second_order_smoothness(bent, image)) > 0.01


def _record_input_sizes(monkeypatch) -> list[tuple[int, int]]:
    """(step, input width) of every step scored by pretraining."""
    seen = []
    scored = PretrainTask.losses

    def recording(self, model, batch, runtime):
        out = scored(self, model, batch, runtime)
        seen.append((self.step, out["target"].shape[-1]))
        return out

    monkeypatch.setattr(PretrainTask, "losses", recording)
    return seen


def test_a_resolution_curriculum_resumes_in_the_stage_it_was_in(world_shards, tmp_path, monkeypatch):
    seen = _record_input_sizes(monkeypatch)
    run = tmp_path / "run"
    square = lambda **overrides: tiny_config(world_shards, run, half_size_steps=3, **overrides)
    square_data = lambda config: PretrainConfig(**{**config.__dict__, "data": DataConfig(
        **{**config.data.__dict__, "width_px": 128, "height_px": 128})})
    pretrain(square_data(square(steps=2, checkpoint_every=1)))
    pretrain(square_data(square(steps=5, resume=True)))
    assert seen == [(0, 64), (1, 64), (2, 64), (3, 128), (4, 128)]


def test_a_resolution_curriculum_on_a_size_it_cannot_halve_says_so(world_shards, tmp_path):
    config = tiny_config(world_shards, tmp_path / "run", half_size_steps=2)
    odd = PretrainConfig(**{**config.__dict__, "data": DataConfig(shards=config.data.shards, width_px=160,
                                                                   height_px=96)})
    with pytest.raises(ValueError, match="160x96 must be a multiple of 64 each way and at least 128x128"):
        PretrainTask(odd)
    too_low = PretrainConfig(**{**config.__dict__, "data": DataConfig(shards=config.data.shards, width_px=192,
                                                                        height_px=64)})
    with pytest.raises(ValueError, match="192x64 must be"):
        PretrainTask(too_low)


@pytest.fixture(scope="module")
def five_frame_shard(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("five") / "0000.tar"
    write_world_shard(path, seed=31, samples=2, width_px=128, height_px=64, frames_per_sample=5)
    return path


def test_pairs_take_the_middle_frame_and_the_one_frame_gap_away(five_frame_shard):
    sample = next(iter(samples_from_shards([{"url": str(five_frame_shard)}], handler=None)))
    frames = decode_sample_frames(sample, minimum=5)
    config = DataConfig(shards=str(five_frame_shard), width_px=128, height_px=64, jitter=0.0, flip=False,
                        min_crop_fraction=1.0, frame_gap=2)
    augment = PairAugment(config, train=True)
    sources = set()
    for _ in range(12):
        target, source, _ = augment(sample)
        assert torch.equal(target, torch.from_numpy(frames[2].transpose(2, 0, 1).copy()))
        matches = [i for i in range(5) if torch.equal(source, torch.from_numpy(frames[i].transpose(2, 0, 1).copy()))]
        sources.update(matches)
    assert sources == {0, 4}


def test_a_frame_gap_longer_than_the_samples_names_the_frames_needed(world_shards, tmp_path):
    config = tiny_config(world_shards, tmp_path / "run")
    config = PretrainConfig(**{**config.__dict__, "data": DataConfig(**{**config.data.__dict__, "frame_gap": 2})})
    with pytest.raises(ValueError, match=r"frame gap 2 needs samples of 5 frames; .*0000.tar has 3 \(mine with "
                                         r"geopt-mine shard --frames 5\)"):
        pretrain(config)


def test_the_flow_bench_says_when_a_size_and_rate_give_less_than_a_batch(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "flow_learning.py"), "--size", "128x64", "--drives",
                           "1", "--samples", "1", "--batch-size", "4", "--steps", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "128x64 at 5 Hz gives 1 training samples, fewer than one batch of 4: give more --drives/--samples or "
        "--videos/--video-s")


def test_the_motion_encoder_gets_no_gradient_at_the_start_unless_the_modulation_starts_random_or_a_head_reads_it():
    """Why `film_starts_identity` is an option and why the motion head exists: zero-initialised
    scale-and-shift layers leave the motion encoder without gradient at the first step."""
    target, source = torch.rand(2, 3, 64, 128), torch.rand(2, 3, 64, 128)

    def motion_gradient(starts_identity: bool, motion_head: bool) -> float:
        torch.manual_seed(0)
        model = GeoPtFlowModel(film_starts_identity=starts_identity, motion_head=motion_head)
        sum(flow.abs().mean() for flow in model(target, source).values()).backward()
        return float(sum(p.grad.abs().sum() for p in model.motion.parameters()))

    assert motion_gradient(True, motion_head=False) == 0.0
    assert motion_gradient(False, motion_head=False) > 0.0
    assert motion_gradient(True, motion_head=True) > 0.0


def test_an_antisymmetric_net_predicts_no_flow_for_a_still_pair_and_reverses_with_the_pair():
    """With `antisymmetric` nothing the decoder could guess from the target frame alone survives: a frame
    paired with itself gets exactly zero flow, and the motion head's part flips sign with the pair."""
    torch.manual_seed(0)
    model = GeoPtFlowModel(antisymmetric=True, film_starts_identity=False)
    target, source = torch.rand(2, 3, 64, 128), torch.rand(2, 3, 64, 128)
    with torch.no_grad():
        still, moving = model(target, target), model(target, source)
        forward, backward = (model.motion_head(model.motion(a, b) - model.motion(b, a))
                             for a, b in ((target, source), (source, target)))
    assert all(float(flow.abs().max()) == 0.0 for flow in still.values())
    assert float(moving[0].abs().mean()) > 0.0
    torch.testing.assert_close(forward, -backward)


def test_a_run_saved_without_the_motion_head_resumed_with_it_says_which_options_to_use(world_shards, tmp_path):
    run = tmp_path / "run"
    pretrain(tiny_config(world_shards, run, steps=1, checkpoint_every=1, motion_head=False))
    with pytest.raises(CheckpointError, match=r"does not fit the model .*motion_head.*config\.json"):
        pretrain(tiny_config(world_shards, run, steps=2, resume=True))


def test_validation_tells_a_net_that_ignores_the_motion_by_its_flow_for_a_still_pair(world_shards):
    """An untrained decoder is unmodulated by the code (`film_starts_identity`), so without the motion head
    it predicts the same flow for a frame paired with itself as for the real pair: 'flow_px_same_frames'
    equals 'flow_px'. An antisymmetric net, whose flow comes only from what the pair's order changes,
    predicts none for a still pair and some for a real one."""
    config = tiny_config(world_shards, Path("unused"), val_shards=str(world_shards / "val"))
    torch.manual_seed(0)
    ignoring = validate(GeoPtFlowModel(motion_head=False, antisymmetric=False), config, start_runtime("cpu"))
    assert ignoring["val/flow_px_same_frames"] == pytest.approx(ignoring["val/flow_px"], rel=1e-4)
    assert ignoring["val/flow_px"] > 0.0
    torch.manual_seed(0)
    reading = validate(GeoPtFlowModel(antisymmetric=True, film_starts_identity=False), config, start_runtime("cpu"))
    assert reading["val/flow_px_same_frames"] == 0.0 and reading["val/flow_px"] > 0.0


def test_coarse_to_fine_hands_the_coarse_scales_motion_to_the_full_size_flow():
    """With `coarse_to_fine` a motion found at 1/8 size reaches the full-size flow the net is judged by,
    even when the finer heads add nothing; without it the full-size head must find it alone. (Not
    antisymmetric: there the heads' constant output would cancel.)"""
    target, source = torch.rand(1, 3, 64, 128), torch.rand(1, 3, 64, 128)

    def flows(coarse_to_fine: bool) -> dict:
        torch.manual_seed(0)
        model = GeoPtFlowModel(coarse_to_fine=coarse_to_fine, motion_head=False, antisymmetric=False)
        with torch.no_grad():
            for scale, head in model.decoder.heads.items():
                head.weight.zero_()
                head.bias.copy_(torch.tensor([0.7, -0.2]) if scale == "3" else torch.zeros(2))
            return model(target, source)

    accumulated, separate = flows(True), flows(False)
    for scale in (0, 1, 2, 3):
        torch.testing.assert_close(accumulated[scale], torch.tensor([7.0, -2.0]).view(1, 2, 1, 1).expand_as(
            accumulated[scale]))
    assert separate[0].abs().max() == 0


def test_validation_tells_pixels_whose_true_match_stays_in_view_from_those_leaving_it():
    """The loss cannot see where a pixel leaving the view goes, so validation scores the others apart."""
    from training.flow.pretrain import true_match_in_view

    flow = torch.zeros(1, 2, 4, 6)
    flow[0, 0, :, 4:] = 2.0  # the last two columns move 2 px right: off the frame
    flow[0, 1, 0, 0] = -1.0  # the top-left pixel moves up: off the frame
    expected = torch.ones(1, 4, 6)
    expected[0, :, 4:] = 0
    expected[0, 0, 0] = 0
    torch.testing.assert_close(true_match_in_view(flow), expected)


def test_a_run_saved_before_the_antisymmetric_default_loads_as_it_was_trained():
    """A config.json written before `antisymmetric` existed builds the net that run trained (not today's
    antisymmetric default, whose motion head has no bias), so its last.pt loads."""
    saved = GeoPtFlowModel(antisymmetric=False).state_dict()
    settings = {"arch": "resnet18", "motion_dim": 128, "film_starts_identity": True, "coarse_to_fine": False,
                "motion_head": True}
    flow_model(settings).load_state_dict(saved)
    assert not flow_model(settings).antisymmetric and flow_model({**settings, "antisymmetric": True}).antisymmetric
