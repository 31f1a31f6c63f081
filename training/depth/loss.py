"""Monodepth2's self-supervised depth loss: view synthesis from source frames into the target frame.

Each target pixel is lifted to 3-D with its predicted depth (`backproject_depth`), moved into a source
camera and projected (`project_points`), and the source image is sampled there. The loss per pixel is the
minimum over source frames of `photometric_error` (0.85 SSIM + 0.15 L1), so a pixel occluded in one
source is judged by another. Auto-masking compares against the *unwarped* sources too: where an
unwarped source already matches best (a static camera, an object moving with the car, a textureless
sky) the pixel teaches nothing and drops out. Disparities of every scale are upsampled to the input size
before warping (Monodepth2's default since its v2), and an edge-aware smoothness of weight 1e-3 on the
mean-normalised disparity, divided by 2^scale, is added at each scale's own size.

Stereo: the partner camera's pose is known, a translation of `KITTI_STEREO_BASELINE_M` (0.54 m) along x.
Monodepth2 uses 0.1 units instead and so learns depth in units of 5.4 m, which is why its stereo models
are scaled by 5.4 at evaluation. Here the baseline is in metres and stereo-supervised models keep
Monodepth2's depth range of 0.1..100 of its units, written in metres: 0.54..540 m (`depth_range_m`). S and
MS therefore start and train as Monodepth2's do and predict metric depth, with a stereo scale factor of 1.
In MS the ~1 m translations between frames come out of the 0.01-scaled pose decoder as raw values 5.4x
larger than Monodepth2's, which the pose network adapts to. M alone learns depth up to scale, in 0.1..100.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from formats.camera import KITTI_STEREO_BASELINE_M
from training.depth.networks import MAX_DEPTH, MIN_DEPTH, disp_to_depth
from training.photometric import edge_aware_smoothness, photometric_error, warp_by_flow

IDENTITY_TIE_BREAK = 1e-5
"""Std of the noise added to the unwarped errors, so exact ties (e.g. in flat regions) fall either way."""


@dataclass(frozen=True)
class DepthLossConfig:
    smoothness: float = 1e-3
    automask: bool = True
    """False scores every pixel by its best warped source (Monodepth2's --disable_automasking); 'automask'
    in the output still reports the share auto-masking would keep."""
    min_depth: float = MIN_DEPTH
    max_depth: float = MAX_DEPTH


MONODEPTH2_STEREO_BASELINE = 0.1
"""Monodepth2's stereo baseline in its own depth unit; ours is `KITTI_STEREO_BASELINE_M` metres."""


def depth_range_m(stereo: bool) -> tuple[float, float]:
    """(min, max) depth of the sigmoid disparity (`disp_to_depth`) for a model trained with or without stereo.

    Without stereo the unit is arbitrary: Monodepth2's 0.1..100. With stereo Monodepth2's unit is
    0.54 m / 0.1 = 5.4 m, so its range is 0.54..540 m, and so is ours. A fresh network (sigmoid 0.5) then
    starts at 1.08 m, a stereo disparity of 29 % of the image width as in Monodepth2; 0.1..100 m would
    start it at 0.2 m, 157 % of the width, where every warped pixel falls outside the partner image, the
    reprojection has no gradient, auto-masking drops every pixel and S training never starts.
    """
    if not stereo:
        return MIN_DEPTH, MAX_DEPTH
    unit_m = KITTI_STEREO_BASELINE_M / MONODEPTH2_STEREO_BASELINE
    return MIN_DEPTH * unit_m, MAX_DEPTH * unit_m


def intrinsics_matrices(K_normalised: torch.Tensor, width_px: int, height_px: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, 3) normalised intrinsics -> (B, 4, 4) K and K^-1 in pixels of a `width_px` x `height_px` image."""
    scale = torch.tensor([width_px, height_px, 1.0], dtype=K_normalised.dtype, device=K_normalised.device)
    K = torch.zeros(K_normalised.shape[0], 4, 4, dtype=K_normalised.dtype, device=K_normalised.device)
    K[:, :3, :3] = K_normalised * scale[:, None]
    K[:, 3, 3] = 1
    return K, torch.linalg.inv(K)


def stereo_transform(side: str, flipped: bool, baseline_m: float = KITTI_STEREO_BASELINE_M) -> torch.Tensor:
    """(4, 4) map from the `side` ('l' or 'r') camera's frame into its stereo partner's.

    The right camera sits `baseline_m` along the left one's +x, so a left point has x - baseline in the
    right frame. A horizontal flip mirrors x, which swaps which side the partner is on.
    """
    sign = (-1.0 if side == "l" else 1.0) * (-1.0 if flipped else 1.0)
    transform = torch.eye(4)
    transform[0, 3] = sign * baseline_m
    return transform


def backproject_depth(depth: torch.Tensor, inv_K: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) depth and (B, 4, 4) K^-1 -> (B, 4, H*W) homogeneous camera-frame points.

    Pixel (u, v) is the ray through coordinate (u, v), as `formats.camera` defines.
    """
    b, _, h, w = depth.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=depth.dtype, device=depth.device),
                          torch.arange(w, dtype=depth.dtype, device=depth.device), indexing="ij")
    pixels = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(h * w, dtype=depth.dtype, device=depth.device)])
    rays = inv_K[:, :3, :3] @ pixels.unsqueeze(0).expand(b, -1, -1)
    points = rays * depth.reshape(b, 1, -1)
    return torch.cat([points, torch.ones_like(points[:, :1])], dim=1)


def project_points(points: torch.Tensor, K: torch.Tensor, transform: torch.Tensor, height_px: int, width_px: int
                   ) -> torch.Tensor:
    """(B, 4, H*W) points of the target camera, (B, 4, 4) K, (B, 4, 4) target -> source transform
    -> (B, 2, H, W) pixel coordinates (u, v) of each point in the source image."""
    camera = (K @ transform)[:, :3, :] @ points
    coords = camera[:, :2] / (camera[:, 2:3] + 1e-7)
    return coords.reshape(points.shape[0], 2, height_px, width_px)


def warp_source(source: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, inv_K: torch.Tensor,
                transform: torch.Tensor) -> torch.Tensor:
    """`source` (B, 3, H, W) resampled into the target view given the target's depth (B, 1, H, W) and pose."""
    h, w = depth.shape[-2:]
    coords = project_points(backproject_depth(depth, inv_K), K, transform, h, w)
    v, u = torch.meshgrid(torch.arange(h, dtype=coords.dtype, device=coords.device),
                          torch.arange(w, dtype=coords.dtype, device=coords.device), indexing="ij")
    warped, _ = warp_by_flow(source, coords - torch.stack([u, v]))
    return warped


def min_reprojection(target: torch.Tensor, warped: list[torch.Tensor], unwarped: list[torch.Tensor] | None,
                     automask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel minimum photometric error over warped sources, auto-masked by the unwarped ones.

    Returns the (B, 1, H, W) error to minimise and the (B, 1, H, W) auto-mask: 1 where a warped source
    explains the pixel best (kept), 0 where an unwarped one does (static; with `automask` its error then is
    the unwarped one's, which carries no gradient). With `automask` False every pixel is scored by its
    warped error, and the mask only reports what auto-masking would keep (the no-motion state shows there
    too). With `unwarped` None the mask is all ones.
    """
    reprojection = torch.cat([photometric_error(w, target) for w in warped], dim=1)
    best_warped = reprojection.min(dim=1, keepdim=True)[0]
    if unwarped is None:
        return best_warped, torch.ones_like(best_warped)
    with torch.set_grad_enabled(automask and torch.is_grad_enabled()):
        identity = torch.cat([photometric_error(s, target) for s in unwarped], dim=1)
        identity = identity + torch.randn_like(identity) * IDENTITY_TIE_BREAK
        error, index = torch.cat([identity, reprojection], dim=1).min(dim=1, keepdim=True)
    mask = (index >= identity.shape[1]).to(error.dtype)
    return (error if automask else best_warped), mask


def depth_loss(target: torch.Tensor, sources: dict, transforms: dict, disps: dict[int, torch.Tensor],
               K_normalised: torch.Tensor, config: DepthLossConfig = DepthLossConfig(),
               visible: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Monodepth2's loss for one batch, averaged over scales.

    `target` (B, 3, H, W) and `sources` {frame id: (B, 3, H, W)} are un-augmented images in 0..1;
    `transforms` {frame id: (B, 4, 4)} map target-camera points into each source camera (metres);
    `disps` {scale: (B, 1, H / 2^scale, W / 2^scale)} sigmoid disparities; `K_normalised` (B, 3, 3);
    `visible` (B, 1, H, W): 0 where a static overlay hides the scene, left out of the photometric term.
    Returns 'loss' and, detached for logging, 'photometric', 'smoothness', 'automask' (fraction that
    auto-masking keeps, applied or not),
    and at scale 0 'warped' ({frame id: image}) and 'mask' (B, 1, H, W).
    """
    h, w = target.shape[-2:]
    K, inv_K = intrinsics_matrices(K_normalised.float(), w, h)
    frame_ids = sorted(sources, key=str)
    unwarped = [sources[f] for f in frame_ids]
    total = photometric_sum = smooth_sum = kept_sum = 0.0
    out = {}
    for scale, disp in sorted(disps.items()):
        full = F.interpolate(disp, size=(h, w), mode="bilinear", align_corners=False) if scale else disp
        _, depth = disp_to_depth(full, config.min_depth, config.max_depth)
        warped = [warp_source(sources[f], depth, K, inv_K, transforms[f]) for f in frame_ids]
        error, mask = min_reprojection(target, warped, unwarped, config.automask)
        photometric = error.mean() if visible is None else (error * visible).sum() / visible.sum().clamp(min=1)
        target_s = F.interpolate(target, size=disp.shape[-2:], mode="area") if scale else target
        normalised_disp = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
        smooth = edge_aware_smoothness(normalised_disp, target_s) / 2**scale
        total = total + photometric + config.smoothness * smooth
        photometric_sum = photometric_sum + photometric.detach()
        smooth_sum = smooth_sum + smooth.detach()
        kept_sum = kept_sum + mask.mean()
        if scale == 0:
            out["warped"] = {f: image.detach() for f, image in zip(frame_ids, warped)}
            out["mask"] = mask
    n = len(disps)
    return {"loss": total / n, "photometric": photometric_sum / n, "smoothness": smooth_sum / n,
            "automask": kept_sum / n, **out}
