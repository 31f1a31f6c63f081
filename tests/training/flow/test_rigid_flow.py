"""Rigid flow (`--rigid-flow`): an inverse depth from the target frame and a translation from the motion
code, so that a pixel leaving the view going forward gets its flow from the depth its backward pair taught."""
from dataclasses import replace

import pytest
import torch

from training.checkpoints import load_checkpoint
from training.flow.loss import FlowLossConfig
from training.flow.model import GeoPtFlowModel, translation_flow_px
from training.flow.pretrain import PretrainTask, flow_model, pretrain, validate
from training.runtime import start_runtime

from tests.training.flow.test_pretrain import tiny_config

FOCAL_PX = 100.0


def pinhole_flow_px(depth_m: torch.Tensor, translation_m: torch.Tensor) -> torch.Tensor:
    """(1, 2, H, W) exact flow of still points at `depth_m` (H, W) when a pinhole camera (focal length
    `FOCAL_PX`, principal point at the centre) moves by `translation_m` (3,)."""
    h, w = depth_m.shape
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5 - h / 2, torch.arange(w) + 0.5 - w / 2, indexing="ij")
    x_m, y_m = xs * depth_m / FOCAL_PX, ys * depth_m / FOCAL_PX
    z_m = depth_m - translation_m[2]
    moved = [FOCAL_PX * (x_m - translation_m[0]) / z_m - xs, FOCAL_PX * (y_m - translation_m[1]) / z_m - ys]
    return torch.stack(moved)[None]


def rigid_flow_px(inverse_depth: torch.Tensor, translation_m: torch.Tensor) -> torch.Tensor:
    """`translation_flow_px` with the pinhole camera's translation: sideways -f * t_xy, forward t_z."""
    sideways = (-FOCAL_PX * translation_m[:2]).view(1, 2, 1, 1)
    return translation_flow_px(inverse_depth, sideways, translation_m[2].view(1, 1, 1, 1), inverse_depth.shape[-2:])


def test_translation_flow_is_the_pinhole_cameras_motion_of_a_still_point():
    """Exact for any depth and translation, and a near point moves further going forward than coming back:
    by (1 + rho t) / (1 - rho t), 7/3 for a point 5 m away and 2 m of travel."""
    depth_m = torch.linspace(4.0, 40.0, 32 * 64).view(32, 64)
    for translation_m in (torch.tensor([0.3, -0.1, 1.0]), torch.tensor([0.0, 0.0, -2.0])):
        torch.testing.assert_close(rigid_flow_px(1 / depth_m[None, None], translation_m),
                                   pinhole_flow_px(depth_m, translation_m), atol=1e-4, rtol=1e-4)
    near = torch.full((1, 1, 32, 64), 1 / 5.0)
    going, coming = (rigid_flow_px(near, torch.tensor([0.0, 0.0, t])).norm(dim=1) for t in (2.0, -2.0))
    torch.testing.assert_close(going / coming, torch.full_like(going, 7 / 3))


def test_a_depth_taught_by_backward_pairs_alone_says_where_a_pixel_goes_forward():
    """The bottom rows' forward matches leave the view, so only their backward pairs are scored. Fitting one
    inverse depth to what is scored puts their forward flow within 2 % of the truth; the backward flow,
    reversed (a constant-velocity guess), falls short by the whole stretch of a near point."""
    depth_m = torch.linspace(30.0, 4.0, 32)[:, None].expand(32, 64)  # a road: nearer towards the bottom
    forward_m, backward_m = torch.tensor([0.0, 0.0, 1.5]), torch.tensor([0.0, 0.0, -1.5])
    true_forward, true_backward = (pinhole_flow_px(depth_m, t) for t in (forward_m, backward_m))
    scored_forward = torch.ones(1, 1, 32, 64)
    scored_forward[..., 24:, :] = 0  # the bottom quarter leaves the view going forward
    log_inverse_depth = torch.zeros(1, 1, 32, 64, requires_grad=True)
    optimiser = torch.optim.Adam([log_inverse_depth], lr=0.05)
    for _ in range(400):
        rho = log_inverse_depth.exp()
        loss = ((rigid_flow_px(rho, forward_m) - true_forward).abs() * scored_forward).mean() + \
            (rigid_flow_px(rho, backward_m) - true_backward).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        bottom = (..., slice(24, None), slice(None))
        predicted = rigid_flow_px(log_inverse_depth.exp(), forward_m)[bottom]
        error = (predicted - true_forward[bottom]).norm(dim=1).mean() / true_forward[bottom].norm(dim=1).mean()
        reversed_error = ((-true_backward[bottom] - true_forward[bottom]).norm(dim=1).mean()
                          / true_forward[bottom].norm(dim=1).mean())
    assert error < 0.02
    assert reversed_error > 0.3


def test_rigid_flow_starts_adding_nothing_and_the_code_moves_it_from_the_first_step():
    torch.manual_seed(0)
    rigid, plain = GeoPtFlowModel(rigid=True), GeoPtFlowModel()
    plain.load_state_dict({k: v for k, v in rigid.state_dict().items() if not k.startswith("rigid.")})
    target, source = torch.rand(2, 3, 64, 128), torch.rand(2, 3, 64, 128)
    flows = rigid(target, source)
    torch.testing.assert_close(flows[0], plain(target, source)[0])
    sum(f.square().mean() for f in flows.values()).backward()
    assert float(rigid.rigid.translation.weight.grad.abs().max()) > 0.0


def test_pretraining_with_rigid_flow_resumes_and_an_antisymmetric_one_keeps_a_still_pair_still(world_shards, tmp_path):
    config = tiny_config(world_shards / "0000.tar", tmp_path / "run", steps=2, checkpoint_every=1,
                         rigid_flow=True, antisymmetric=True, val_shards=str(world_shards / "val" / "0000.tar"),
                         val_batches=1)
    pretrain(replace(config, steps=1))
    assert pretrain(replace(config, resume=True))["step"] == 2
    model = flow_model(vars(config))
    assert model.rigid is not None
    model.load_state_dict(load_checkpoint(tmp_path / "run" / "last.pt")["model"])
    assert validate(model, config, start_runtime("cpu"))["val/flow_px_same_frames"] == 0.0


def test_without_the_flow_decoder_every_pixels_motion_comes_through_its_inverse_depth(world_shards, tmp_path):
    """`flow_decoder=False` leaves only the motion head and the rigid flow; asking for neither flow source
    fails before any training, naming the option to add."""
    model = GeoPtFlowModel(rigid=True, flow_decoder=False)
    assert model.decoder is None and not any(name.startswith("decoder.") for name in model.state_dict())
    assert pretrain(tiny_config(world_shards / "0000.tar", tmp_path / "run", steps=1, rigid_flow=True,
                                flow_decoder=False, stretch=False,  # the stretch is the decoder's
                                loss=FlowLossConfig(extrapolation=0.0)))["step"] == 1
    with pytest.raises(ValueError, match="add --rigid-flow"):
        PretrainTask(tiny_config(world_shards / "0000.tar", tmp_path / "other", flow_decoder=False))
