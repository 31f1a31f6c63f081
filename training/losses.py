"""Self-supervised losses: photometric error (SSIM + L1 as in Monodepth2), edge-aware smoothness, and
the masks that keep the photometric term honest (pixels leaving the view, occlusions).

Images are (B, 3, H, W) in 0..1; flows (B, 2, H, W) in pixels.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.geometry import warp_by_flow

SSIM_WEIGHT = 0.85
"""Monodepth2's alpha: 0.85 SSIM + 0.15 L1."""
_C1, _C2 = 0.01**2, 0.03**2


def ssim_dissimilarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 per pixel over 3x3 windows with reflection padding, (B, 3, H, W), in 0..1."""
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + _C1) * (2 * sigma_xy + _C2)
    denominator = (mu_x**2 + mu_y**2 + _C1) * (sigma_x + sigma_y + _C2)
    return torch.clamp((1 - numerator / denominator) / 2, 0, 1)


def photometric_error(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W): 0.85 * SSIM dissimilarity + 0.15 * L1, averaged over colour channels."""
    l1 = (predicted - target).abs().mean(1, keepdim=True)
    return SSIM_WEIGHT * ssim_dissimilarity(predicted, target).mean(1, keepdim=True) + (1 - SSIM_WEIGHT) * l1


def edge_aware_smoothness(field: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Mean first-order gradient of `field`, down-weighted where the image has edges (scalar)."""
    dx = (field[..., :, 1:] - field[..., :, :-1]).abs().mean(1, keepdim=True)
    dy = (field[..., 1:, :] - field[..., :-1, :]).abs().mean(1, keepdim=True)
    image_dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    image_dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-image_dx)).mean() + (dy * torch.exp(-image_dy)).mean()


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
    """Photometric error charged for each pixel the masks exclude (gone out of view, or failing the
    forward-backward check). Without it excluding pixels is free, and a flow net learns to throw every
    pixel out of view: loss near zero, flow meaningless. 0.1 is a badly matched pixel's error; a
    well matched one costs ~0.02, a true occlusion more than 0.1."""


def flow_loss(target: torch.Tensor, source: torch.Tensor, flows: dict[int, torch.Tensor],
              backward_flows: dict[int, torch.Tensor] | None, config: FlowLossConfig = FlowLossConfig()
              ) -> dict[str, torch.Tensor]:
    """Loss of flows from `target` pixels into `source`, summed over scales (each upsampled to full size).

    Returns 'loss' (to minimise), 'photometric' and 'smoothness' (for logging) and, at full size,
    'warped' and 'mask' (for pictures).
    """
    h, w = target.shape[-2:]
    total = photometric_sum = smooth_sum = 0.0
    warped = mask = None
    for scale, flow in sorted(flows.items()):
        full = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False) if scale else flow
        warped_s, inside = warp_by_flow(source, full)
        mask_s = inside
        if config.occlusion_masking and backward_flows is not None:
            back = backward_flows[scale]
            back_full = F.interpolate(back, size=(h, w), mode="bilinear", align_corners=False) if scale else back
            mask_s = mask_s * forward_backward_mask(full.detach(), back_full.detach())
        error = photometric_error(warped_s, target)
        photometric = (error * mask_s + config.occlusion_penalty * (1 - mask_s)).mean()
        image_s = F.interpolate(target, size=flow.shape[-2:], mode="area") if scale else target
        smooth = edge_aware_smoothness(flow / 10.0, image_s) / (2**scale)
        total = total + photometric + config.smoothness * smooth
        photometric_sum, smooth_sum = photometric_sum + photometric.detach(), smooth_sum + smooth.detach()
        if scale == 0:
            warped, mask = warped_s.detach(), mask_s.detach()
    n = len(flows)
    return {"loss": total / n, "photometric": photometric_sum / n, "smoothness": smooth_sum / n,
            "warped": warped, "mask": mask}
