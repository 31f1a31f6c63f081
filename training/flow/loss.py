"""The pretraining loss: the photometric error of the source warped by the predicted flow, with the
masks that keep it honest (pixels leaving the view, occlusions), and edge-aware smoothness.

Images are (B, 3, H, W) in 0..1; flows (B, 2, H, W) in pixels.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.photometric import edge_aware_smoothness, photometric_error, warp_by_flow


def forward_backward_mask(flow_forward: torch.Tensor, flow_backward: torch.Tensor,
                          alpha1: float = 0.01, alpha2: float = 0.5) -> torch.Tensor:
    """(B, 1, H, W) 1 where forward flow and the backward flow at its end point cancel out (visible in
    both frames), 0 where they disagree (occluded), with UnFlow's thresholds."""
    backward_at_end, _ = warp_by_flow(flow_backward, flow_forward)
    mismatch = (flow_forward + backward_at_end).pow(2).sum(1, keepdim=True)
    magnitude = flow_forward.pow(2).sum(1, keepdim=True) + backward_at_end.pow(2).sum(1, keepdim=True)
    return (mismatch < alpha1 * magnitude + alpha2).to(flow_forward.dtype)


@dataclass(frozen=True)
class FlowLossConfig:
    smoothness: float = 0.05
    """Weight of edge-aware smoothness on flow measured in units of 10 pixels, halved per coarser scale."""
    occlusion_masking: bool = False
    """Also mask pixels failing the forward-backward check. Off by default: from a fresh net the
    forward and backward flows disagree nearly everywhere, every pixel is masked, the loss sits at
    `occlusion_penalty` with no gradient and the net never learns flow (measured: loss 0.1000 from step 60
    to 140, `bench/flow_learning.py --variants fb_check`). Turn it on to fine-tune a net that already
    predicts flow, as UnFlow does."""
    occlusion_penalty: float = 0.1
    """Least photometric error charged for each pixel the masks exclude (gone out of view, or failing the
    forward-backward check). Without it excluding pixels is free, and a flow net learns to throw every
    pixel out of view: loss near zero, flow meaningless."""
    exit_costs_standing_still: bool = True
    """Charge an excluded pixel at least the error it has when it does not move (zero flow), so leaving
    the view never pays better than standing still. With the flat `occlusion_penalty` alone, any pixel
    whose unmatched error exceeds 0.1 (half of them before the net has learned anything) is cheaper
    thrown out of view than matched: at 640x192 nets fell into that (loss 0.084, flow 3.6x worse than
    none) before they found the far matches. See `bench/flow_loss_landscape.py`."""
    pyramid: bool = False
    """Score each scale's flow on the images downsampled to that scale (True), so coarse scales see
    displacements of a few pixels that local image gradients can find, whatever the input size. False
    (default) upsamples every scale's flow to full size first, Monodepth2's way for depth. Off until a GPU
    run shows it helps: on a CPU proxy of 640x192 (`bench/flow_learning.py`, 800 steps) it changed nothing,
    and on one 128x64 pair it learned slower (EPE 2.92 vs 2.02 px after 150 steps)."""


def _flow_where_scored(flow_px: torch.Tensor, full_size: tuple[int, int], pyramid: bool) -> torch.Tensor:
    """A scale's flow (B, 2, h, w) in input pixels -> the flow the loss scores: in the scale's own pixels
    at its own size (`pyramid`), or upsampled to the full size."""
    h, w = flow_px.shape[-2:]
    if (h, w) == tuple(full_size):
        return flow_px
    if pyramid:
        return flow_px * flow_px.new_tensor([w / full_size[1], h / full_size[0]]).view(1, 2, 1, 1)
    return F.interpolate(flow_px, size=full_size, mode="bilinear", align_corners=False)


def flow_loss(target: torch.Tensor, source: torch.Tensor, flows: dict[int, torch.Tensor],
              backward_flows: dict[int, torch.Tensor] | None, config: FlowLossConfig = FlowLossConfig(),
              visible: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Loss of flows (in input pixels) from `target` pixels into `source`, averaged over scales.

    `visible` (B, 1, H, W) in {0, 1}: 0 under static overlays of the video (a logo, a clock), the same in
    both frames. Those target pixels are left out, and a flow landing on them in the source counts as
    leaving the view. Returns 'loss' (to minimise), 'photometric', 'smoothness' and 'excluded' (share of
    the visible pixels masked out, for logging) and, at full size, 'warped' and 'mask' (for pictures).
    """
    full_size = target.shape[-2:]
    if visible is None:
        visible = torch.ones_like(target[:, :1])
    total = photometric_sum = smooth_sum = excluded_sum = 0.0
    warped = mask = None
    exit_costs: dict[tuple, torch.Tensor] = {}  # per scored size: scales scored at full size share one
    for scale, flow in sorted(flows.items()):
        scored = _flow_where_scored(flow, full_size, config.pyramid)
        size = scored.shape[-2:]
        target_s, source_s = (x if size == full_size else F.interpolate(x, size=size, mode="area")
                              for x in (target, source))
        visible_s = visible if size == full_size else F.interpolate(visible, size=size, mode="nearest")
        warped_both, inside = warp_by_flow(torch.cat([source_s, visible_s], dim=1), scored)
        warped_s, mask_s = warped_both[:, :3], inside * (warped_both[:, 3:] > 0.5)
        if config.occlusion_masking and backward_flows is not None:
            back = _flow_where_scored(backward_flows[scale], full_size, config.pyramid)
            mask_s = mask_s * forward_backward_mask(scored.detach(), back.detach())
        error = photometric_error(warped_s, target_s)
        if tuple(size) not in exit_costs:
            with torch.no_grad():
                exit_costs[tuple(size)] = (photometric_error(source_s, target_s).clamp(min=config.occlusion_penalty)
                                           if config.exit_costs_standing_still
                                           else torch.full_like(error, config.occlusion_penalty))
        exit_cost = exit_costs[tuple(size)]
        visible_count = visible_s.sum().clamp(min=1)
        photometric = ((error * mask_s + exit_cost * (1 - mask_s)) * visible_s).sum() / visible_count
        image_s = F.interpolate(target, size=flow.shape[-2:], mode="area") if scale else target
        smooth = edge_aware_smoothness(flow / 10.0, image_s) / (2**scale)
        total = total + photometric + config.smoothness * smooth
        photometric_sum, smooth_sum = photometric_sum + photometric.detach(), smooth_sum + smooth.detach()
        excluded_sum = excluded_sum + ((1 - mask_s) * visible_s).sum().detach() / visible_count
        if scale == 0:
            warped, mask = warped_s.detach(), mask_s.detach()
    n = len(flows)
    return {"loss": total / n, "photometric": photometric_sum / n, "smoothness": smooth_sum / n,
            "excluded": excluded_sum / n, "warped": warped, "mask": mask}
