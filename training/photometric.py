"""How well one image explains another, shared by the flow and the depth losses: sampling an image
along a flow field, Monodepth2's photometric error (0.85 SSIM + 0.15 L1) and edge-aware smoothness.

Images are (B, 3, H, W) in 0..1; flows (B, 2, H, W) in pixels, camera conventions as in `formats.camera`.
"""
import torch
import torch.nn.functional as F

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


def warp_by_flow(source: torch.Tensor, flow_px: torch.Tensor,
                 offset_px: tuple[int, int] = (0, 0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `source` (B, C, H', W') at each pixel + its flow (B, 2, H, W) in pixels (du, dv).

    Returns the warped image (B, C, H, W) and a (B, 1, H, W) mask of pixels whose sample point lies inside
    the source. Pixel u sits at coordinate u (`formats.camera`), hence align_corners=True. With `offset_px`
    (x, y) the flow's frame is the part of a larger source that starts there, so a pixel whose match
    leaves that part but not the source is still sampled (full-image warping).

    A sample point that is not finite never reaches `grid_sample` (whose backward on the CPU reads out of
    bounds at a NaN coordinate and kills the process): it is sampled at the image centre instead and its
    pixel comes back NaN in every channel, so the loss is not finite and the non-finite guard skips the step.
    """
    h, w = source.shape[-2:]
    v, u = torch.meshgrid(torch.arange(flow_px.shape[-2], device=flow_px.device, dtype=flow_px.dtype),
                          torch.arange(flow_px.shape[-1], device=flow_px.device, dtype=flow_px.dtype), indexing="ij")
    x, y = u + offset_px[0] + flow_px[:, 0], v + offset_px[1] + flow_px[:, 1]
    grid = torch.stack([2 * x / (w - 1) - 1, 2 * y / (h - 1) - 1], dim=-1).to(source.dtype)
    finite = torch.isfinite(grid).all(dim=-1, keepdim=True)
    warped = F.grid_sample(source, torch.where(finite, grid, 0), mode="bilinear", padding_mode="border",
                           align_corners=True)
    warped = torch.where(finite.permute(0, 3, 1, 2), warped, float("nan"))
    inside = ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).unsqueeze(1)
    return warped, inside.to(source.dtype)
