"""The stretch: what lets an antisymmetric net move a near pixel further going forward than coming back."""
from dataclasses import replace

import pytest
import torch
from torch import nn

from training.checkpoints import load_checkpoint
from training.flow.loss import FlowLossConfig, flow_loss
from training.flow.model import GeoPtFlowModel, stretched_flow_px, translation_flow_px
from training.flow.pretrain import PretrainTask, flow_model, pretrain, validate
from training.runtime import start_runtime

from tests.training.flow.test_pretrain import tiny_config


def test_a_forward_camera_moves_a_near_point_further_out_than_back_and_the_stretch_says_how_much():
    """The exact motion of still points (`translation_flow_px`) for the step forward and the step back is
    O * (1 + a) and -O * (1 - a), with O the odd half and a = inverse depth x forward step: the odd half
    alone, all an antisymmetric net without the stretch can give, falls short going forward."""
    inverse_depth = torch.linspace(0.01, 0.6, 24).view(1, 1, 1, 24).expand(1, 1, 8, 24)  # far to near, 1/m
    sideways_px, forward_m = torch.tensor([1.5, -0.5]).view(1, 2, 1, 1), torch.tensor(0.7).view(1, 1, 1, 1)
    going = translation_flow_px(inverse_depth, sideways_px, forward_m, (64, 192))
    coming_back = translation_flow_px(inverse_depth, -sideways_px, -forward_m, (64, 192))
    odd, stretch = (going - coming_back) / 2, inverse_depth * forward_m
    torch.testing.assert_close(stretched_flow_px(odd, stretch), going)
    torch.testing.assert_close(stretched_flow_px(-odd, -stretch), coming_back)
    nearest = (..., slice(-1, None))
    assert float(odd[nearest].norm(dim=1).mean()) < 0.75 * float(going[nearest].norm(dim=1).mean())


class MirroredCodes(nn.Module):
    """A motion encoder that gives the pair `codes[0]` and its reverse `codes[1]`, whatever the frames: so
    a pair and its reverse can be shown to the same target frame."""

    def __init__(self, codes: torch.Tensor):
        super().__init__()
        self.codes = codes

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        half = first.shape[0] // 2
        return torch.cat([self.codes[:1].expand(half, -1), self.codes[1:].expand(half, -1)])


def test_only_a_stretch_net_can_move_a_pixel_further_one_way_than_back_and_neither_moves_a_still_pair():
    torch.manual_seed(0)
    target, source = torch.rand(1, 3, 64, 128), torch.rand(1, 3, 64, 128)
    codes = torch.randn(2, 128)

    def there_and_back(stretch: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        torch.manual_seed(1)
        model = GeoPtFlowModel(film_starts_identity=False, stretch=stretch)
        if stretch:
            for head in model.decoder.stretch_heads.values():
                nn.init.normal_(head.weight, std=0.5)
        with torch.no_grad():
            still = model(target, target)[0]
            model.motion = MirroredCodes(codes)
            there = model(target, source)[0]
            model.motion = MirroredCodes(codes.flip(0))
            return there, model(target, source)[0], still

    there, back, still = there_and_back(stretch=False)
    torch.testing.assert_close(there, -back)
    assert float(still.abs().max()) == 0.0
    there, back, still = there_and_back(stretch=True)
    assert float((there + back).abs().mean()) > 0.05 * float(there.abs().mean())
    assert float(still.abs().max()) == 0.0


def test_a_stretch_net_starts_as_the_net_without_it():
    """The stretch heads start at zero: a net with them gives the flow of the same net without them, so the
    option adds nothing until training finds a use for it."""
    torch.manual_seed(0)
    plain = GeoPtFlowModel(film_starts_identity=False)
    stretching = GeoPtFlowModel(film_starts_identity=False, stretch=True)
    missing = stretching.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("decoder.stretch_heads.") for key in missing)
    target, source = torch.rand(2, 3, 64, 128), torch.rand(2, 3, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(stretching(target, source)[0], plain(target, source)[0])


def test_pretraining_with_the_stretch_resumes_and_the_option_needs_an_antisymmetric_decoder(world_shards, tmp_path):
    config = tiny_config(world_shards / "0000.tar", tmp_path / "run", steps=2, checkpoint_every=1, stretch=True,
                         val_shards=str(world_shards / "val" / "0000.tar"), val_batches=1)
    pretrain(replace(config, steps=1))
    assert pretrain(replace(config, resume=True))["step"] == 2
    model = GeoPtFlowModel(stretch=True)
    model.load_state_dict(load_checkpoint(tmp_path / "run" / "last.pt")["model"])
    assert validate(model, config, start_runtime("cpu"))["val/flow_px_same_frames"] == 0.0
    assert flow_model({"arch": "resnet18", "motion_dim": 128}).decoder.stretch_heads is None  # a run from before
    with pytest.raises(ValueError, match="needs --antisymmetric"):
        PretrainTask(replace(config, antisymmetric=False))


def test_the_loss_leaves_a_stretch_that_grows_like_a_plane_free_and_charges_its_bends():
    """With its own smoothing a stretch affine in the image (inverse depth on the road) costs nothing, nor
    does the flow's growth it makes; charged as a whole flow, that growth costs; a bent stretch costs."""
    grey = torch.full((1, 3, 32, 64), 0.5)
    rows = torch.linspace(0.0, 0.6, 32).view(1, 1, 32, 1).expand(1, 1, 32, 64)
    bent = rows + 0.2 * (rows > 0.3)
    odd_px = torch.tensor([0.0, 10.0]).view(1, 2, 1, 1)

    def loss(stretch: torch.Tensor, smoothed: bool) -> float:
        flows = {0: stretched_flow_px(odd_px, stretch)}
        return float(flow_loss(grey, grey, flows, None, FlowLossConfig(stretch_smoothness=0.2),
                               stretches={0: stretch} if smoothed else None)["loss"])

    nothing_but_exits = float(flow_loss(grey, grey, {0: stretched_flow_px(odd_px, rows)}, None,
                                        FlowLossConfig(smoothness=0.0))["loss"])
    assert loss(rows, smoothed=True) == pytest.approx(nothing_but_exits, abs=1e-6)
    assert loss(rows, smoothed=False) > nothing_but_exits + 1e-4
    assert loss(bent, smoothed=True) > nothing_but_exits + 1e-4
