"""The pretraining loss: the photometric error of the source warped by the predicted flow, with the
masks that keep it honest (pixels leaving the view, occlusions), and edge-aware smoothness.

Images are (B, 3, H, W) in 0..1; flows (B, 2, H, W) in pixels.
"""
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from training.backbone import SCALES
from training.photometric import edge_aware_smoothness, photometric_error, warp_by_flow


def forward_backward_mask(flow_forward: torch.Tensor, flow_backward: torch.Tensor,
                          alpha1: float = 0.01, alpha2: float = 0.5) -> torch.Tensor:
    """(B, 1, H, W) 1 where forward flow and the backward flow at its end point cancel out (visible in
    both frames), 0 where they disagree (occluded), with UnFlow's thresholds."""
    backward_at_end, _ = warp_by_flow(flow_backward, flow_forward)
    mismatch = (flow_forward + backward_at_end).pow(2).sum(1, keepdim=True)
    magnitude = flow_forward.pow(2).sum(1, keepdim=True) + backward_at_end.pow(2).sum(1, keepdim=True)
    return (mismatch < alpha1 * magnitude + alpha2).to(flow_forward.dtype)


CENSUS_PATCH_PX = 7
"""Side of the census window (UFlow, SMURF, ARFlow, DDFlow use 7x7)."""


def census_transform(image: torch.Tensor, patch: int = CENSUS_PATCH_PX) -> torch.Tensor:
    """(B, 3, H, W) in 0..1 -> (B, patch^2, H, W): each neighbour's brightness minus the centre's, softly
    squashed to -1..1 (the soft ternary census of UnFlow/DDFlow). It keeps the sign of local contrast,
    not its size, so it holds under exposure changes and gives a gradient on faint texture."""
    grey = image.mean(1, keepdim=True) * 255
    padded = F.pad(grey, [patch // 2] * 4, mode="replicate")
    neighbours = F.unfold(padded, patch).view(grey.shape[0], patch * patch, *grey.shape[-2:])
    difference = neighbours - grey
    return difference / torch.sqrt(0.81 + difference**2)


def census_error(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) in 0..1: the soft Hamming distance between the census transforms of two images."""
    squared = (census_transform(predicted) - census_transform(target)).pow(2)
    return (squared / (0.1 + squared)).mean(1, keepdim=True)


def second_order_smoothness(field: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Mean second derivative of `field` (B, C, h, w), down-weighted where `image` (same size) has edges
    (scalar). Unlike the first derivative it does not charge the steady growth of flow towards the image
    border that driving forward makes: only bends, which the scene's depth edges excuse."""
    dxx = (field[..., :, 2:] - 2 * field[..., :, 1:-1] + field[..., :, :-2]).abs().mean(1, keepdim=True)
    dyy = (field[..., 2:, :] - 2 * field[..., 1:-1, :] + field[..., :-2, :]).abs().mean(1, keepdim=True)
    image_dx = (image[..., :, 2:] - image[..., :, :-2]).abs().mean(1, keepdim=True)
    image_dy = (image[..., 2:, :] - image[..., :-2, :]).abs().mean(1, keepdim=True)
    return (dxx * torch.exp(-10 * image_dx)).mean() + (dyy * torch.exp(-10 * image_dy)).mean()


@dataclass(frozen=True)
class FlowLossConfig:
    smoothness: float = 0.05
    """Weight of edge-aware smoothness on flow measured in units of 10 pixels (order 1: halved per coarser
    scale)."""
    smoothness_order: Literal[1, 2] = 1
    """1: first derivatives of every scale's flow (Monodepth2's way). 2: second derivatives of the flow at
    1/4 size only (UFlow's and SMURF's way), which leave the smooth growth of flow in a driving scene free."""
    error: Literal["ssim_l1", "census"] = "ssim_l1"
    """How a warped pixel is compared: 'ssim_l1', Monodepth2's 0.85 SSIM + 0.15 L1; or 'census', the soft
    Hamming distance of 7x7 census transforms (UFlow, SMURF, UnFlow; ARFlow in its first stage)."""
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
    full_image_margin: float = 0.0
    """Share of the training width and height, on each side, that the net does not see and the loss may
    still warp into (SMURF's full-image warping; `margin_px`): the net predicts flow for the centre of each
    training frame, and a pixel whose match leaves that centre but not the frame is scored instead of
    excluded. Driving forward, the pixels that leave the view are the fastest: on the 5 Hz proxy's
    validation drives 28 % of them, moving 23.9 px on average against 5.2 px for the rest, and the loss
    never tells the net where they go. The centre, not a window placed at random as SMURF's crops are:
    on that proxy a wandering window ended at 0.86x the zero-flow score, the centre at 0.44x (README,
    Results). Validation and transfer see whole frames."""
    stretch_smoothness: float = 0.0
    """With a stretch (`PretrainConfig.stretch`): weight of edge-aware second-order smoothness on each
    scale's stretch a; the first-order smoothness above is then charged on the flow without its stretch,
    O = flow / (1 + a). Why: going forward the near road leaves the view, so no photometric error says how
    far it goes; coming back it stays in view and sets O. Its stretch a = inverse depth x the step forward
    is affine in the image on every plane (the road, a wall), so a second derivative of zero carries the
    stretch found higher up, where both directions are seen, down to the bottom rows. Charged on the whole
    flow, first-order smoothness held the flow leaving through the bottom flat instead (10.4 px against 31.8
    on the 5 Hz proxy). 0 (the default): no smoothing of its own, and first-order smoothness on the whole
    flow. Measured on that proxy at 0.2, it did not reach the bottom rows (9.5 px there) and scored worse
    both ways than 0 (0.44x against 0.38x the zero-flow score; README, Results)."""
    extrapolation: float = 0.5
    """Weight of the flow carried over from the other direction (`extrapolation_loss`), per 10 px of L1
    distance, on pixels that leave the view in one direction; it teaches the net's stretch
    (`PretrainConfig.stretch`, which it needs) and trains on triplets (`training.flow.data.DataConfig.triplets`,
    which `PretrainConfig` sets from it). Why: driving forward the near road leaves the view, so no
    photometric error says where it goes; coming back from the same frame it stays in view. A still point
    moving out from the principal point under the camera's step forward moves x r / (1 - r) going forward
    and -x r / (1 + r) coming back, r the step over its depth, so either direction gives the other. On the
    5 Hz proxy's validation drives the true backward flow carried over this way puts the pixels leaving
    through the bottom at 0.05x their zero-flow score (negated, as an antisymmetric net gives it: 0.58x).
    Measured there at 0.5 with the stretch: 0.29x the zero-flow score both ways, against 0.38x without
    (README, Results). 0 turns it off (then pairs, not triplets, and any net, e.g. without a stretch)."""
    extrapolation_starts_at: float = 0.25
    """Share of the run's steps before the carrying over starts: it carries the net's own flow, which must
    first have learned from the photometric loss. Carried from a fresh net's flows (and bounded only at 3x
    a pixel's distance from the principal point) it fed on itself: flows of 217 px against 10 true by step
    156 on the 5 Hz proxy."""
    pyramid: bool = True
    """Score each scale's flow on the images downsampled to that scale (True), so coarse scales see
    displacements of a few pixels that local image gradients can find, whatever the input size (ARFlow,
    UnFlow, SfMLearner). False upsamples every scale's flow to full size first, Monodepth2's way for depth,
    which gives every scale the full-size basin. On by default since 2026-12-04: on the CPU proxy of the
    seed's displacements (192x64 at 5 Hz, 10.4 px on average, 1250 steps of batch 16) the validation EPE
    ends at 0.48x the zero-flow score with it and 1.39x without (README, Results)."""


MARGIN_STEP_PX = 2 ** max(SCALES)
"""Full-image margins are multiples of this, so every scale's share of them is whole pixels."""


def margin_px(config: FlowLossConfig, width_px: int, height_px: int) -> tuple[int, int]:
    """(x, y) pixels on each side of a width x height training frame that the net does not see
    (`FlowLossConfig.full_image_margin`), rounded to multiples of `MARGIN_STEP_PX`; (0, 0) when off."""
    x, y = (MARGIN_STEP_PX * round(config.full_image_margin * n / MARGIN_STEP_PX) for n in (width_px, height_px))
    if 2 * x >= width_px - 2 * MARGIN_STEP_PX or 2 * y >= height_px - 2 * MARGIN_STEP_PX:
        raise ValueError(f"a full-image margin of {config.full_image_margin:g} leaves too little of "
                         f"{width_px}x{height_px} for the net to see")
    return x, y


def _flow_where_scored(flow_px: torch.Tensor, full_size: tuple[int, int], pyramid: bool) -> torch.Tensor:
    """A scale's flow (B, 2, h, w) in input pixels -> the flow the loss scores: in the scale's own pixels
    at its own size (`pyramid`), or upsampled to the full size."""
    h, w = flow_px.shape[-2:]
    if (h, w) == tuple(full_size):
        return flow_px
    if pyramid:
        return flow_px * flow_px.new_tensor([w / full_size[1], h / full_size[0]]).view(1, 2, 1, 1)
    return F.interpolate(flow_px, size=full_size, mode="bilinear", align_corners=False)


SECOND_ORDER_SCALE = 2
"""Second-order smoothness is taken on the flow at 1/2^2 = 1/4 size, as in UFlow and SMURF."""


def _smoothness(flow_px: torch.Tensor, target: torch.Tensor, scale: int, order: int) -> torch.Tensor:
    """A scale's smoothness term (scalar) on its flow (B, 2, h, w) in input pixels, measured in units of
    10 pixels against the target image at the flow's size."""
    if order == 2 and scale != SECOND_ORDER_SCALE:
        return flow_px.new_zeros(())
    image = F.interpolate(target, size=flow_px.shape[-2:], mode="area") if scale else target
    if order == 2:
        return second_order_smoothness(flow_px / 10.0, image)
    return edge_aware_smoothness(flow_px / 10.0, image) / (2**scale)


MAX_STEP_OVER_DEPTH = 0.5
"""Bound on r, the camera's step forward over a point's depth, in `carried_over_flow_px`: going forward a
point moves at most r / (1 - r) = 1 times its distance from the principal point, coming back a third of
it. Near the bound the forward flow grows without limit as the backward one nears half that distance, so
a small error coming back is a large one going forward; on the 5 Hz proxy the nearest road has r ~ 0.5."""


def carried_over_flow_px(flow_px: torch.Tensor, radius_px: torch.Tensor, forward: bool) -> torch.Tensor:
    """The flow (B, 2, h, w) of the same frame towards its other neighbour, from its flow `flow_px` to one
    neighbour (`forward`: to the previous frame, giving the flow to the next; else the reverse), for pixels
    at `radius_px` (B, 2, h, w) from the principal point, all in pixels, at a steady speed. The part of the
    flow along the radius is a still point's motion under the camera's step forward (x r / (1 - r) going
    forward, -x r / (1 + r) coming back, r = step / depth, bounded by `MAX_STEP_OVER_DEPTH`); the rest
    (turning, sideways) is taken as reversing."""
    radial_share = (flow_px * radius_px).sum(1, keepdim=True) / radius_px.pow(2).sum(1, keepdim=True).clamp(min=1.0)
    across = flow_px - radius_px * radial_share
    if forward:  # radial_share = -r / (1 + r)
        r = (-radial_share).clamp(-0.9, 0.9) / (1 + radial_share.clamp(-0.9, 0.9))
    else:  # radial_share = r / (1 - r)
        r = radial_share.clamp(-0.9, 10) / (1 + radial_share.clamp(-0.9, 10))
    r = r.clamp(-MAX_STEP_OVER_DEPTH, MAX_STEP_OVER_DEPTH)
    radial = radius_px * (r / (1 - r) if forward else -r / (1 + r))
    return radial - across


def extrapolation_loss(flows: dict[int, torch.Tensor], stretches: dict[int, torch.Tensor], principal_px: torch.Tensor,
                       source_size: tuple[int, int], offset_px: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Mean over scales and pixels (scalar) of the L1 distance, in units of 10 px, between each direction's
    flow and the one `carried_over_flow_px` from the other direction's (detached), on the pixels whose
    match leaves the source (`source_size` (H, W)) by either while the other direction's match stays in it:
    only a flow the photometric loss checks is carried over, since carrying each way unchecked feeds on
    itself (measured: flows of 88 px against 10 true by step 312). `flows` {scale: (2B, 2, h, w)} in input
    pixels hold the B middle frames' flows to their next frames, then to their previous ones, each the odd
    flow O times 1 + its `stretches` a ({scale: (2B, 1, h, w)}, `training.flow.model.stretched_flow_px`);
    only the stretch is taught here, O is not. Why: an antisymmetric net's flows from one frame to its next
    and to its previous frame are nearly opposite (the two pairs' codes nearly mirror each other), so
    lengthening one lengthens the other, whose carried-over flow is longer still: on the 5 Hz proxy the
    whole flow chased its own carried-over copy out to the bound (39 px against 10 true at step 468). A
    longer stretch going forward shortens the flow coming back, which shortens what is carried over: that
    loop settles. `principal_px` (B, 2) are the middle frames' principal points (x, y) in input pixels;
    the net sees the window at `offset_px` of the source (full-image warping). See
    `FlowLossConfig.extrapolation`."""
    total = 0.0
    for scale, stretched in flows.items():
        stretch = stretches[scale]
        flow = (stretched / (1 + stretch)).detach() * (1 + stretch)
        b, (h, w) = flow.shape[0] // 2, flow.shape[-2:]
        seen_h, seen_w = source_size[0] - 2 * offset_px[1], source_size[1] - 2 * offset_px[0]
        xs = (torch.arange(w, device=flow.device, dtype=flow.dtype) + 0.5) * (seen_w / w)
        ys = (torch.arange(h, device=flow.device, dtype=flow.dtype) + 0.5) * (seen_h / h)
        position = torch.stack(torch.broadcast_tensors(xs.view(1, w), ys.view(h, 1)))[None]  # (1, 2, h, w)
        radius = position - principal_px.to(flow.dtype).view(b, 2, 1, 1)
        start = position + flow.new_tensor(offset_px).view(1, 2, 1, 1)  # in the source's pixels
        limit = flow.new_tensor([source_size[1], source_size[0]]).view(1, 2, 1, 1)

        def leaves(f: torch.Tensor) -> torch.Tensor:
            return (((start + f) < 0) | ((start + f) > limit)).any(1, keepdim=True)

        own = flow.detach()
        other = torch.cat([own[b:], own[:b]])  # each direction's partner: to the previous, then to the next frame
        carried = torch.cat([carried_over_flow_px(own[b:], radius, forward=True),
                             carried_over_flow_px(own[:b], radius, forward=False)])
        charged = ((leaves(own) | leaves(carried)) & ~leaves(other)).to(flow.dtype)
        total = total + ((flow - carried).abs().sum(1, keepdim=True) / 10.0 * charged).mean()
    return total / len(flows)


def flow_loss(target: torch.Tensor, source: torch.Tensor, flows: dict[int, torch.Tensor],
              backward_flows: dict[int, torch.Tensor] | None, config: FlowLossConfig = FlowLossConfig(),
              visible: torch.Tensor | None = None, offset_px: tuple[int, int] = (0, 0),
              stretches: dict[int, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Loss of flows (in input pixels) from `target` pixels into `source`, averaged over scales.

    `visible` (B, 1) + the source's size, in {0, 1}: 0 under static overlays of the video (a logo, a
    clock), the same in both frames. Those target pixels are left out, and a flow landing on them in the
    source counts as leaving the view. `source` may be larger than `target`, whose window in it starts at
    `offset_px` (x, y; multiples of `MARGIN_STEP_PX` so every scale keeps whole pixels): a pixel whose
    match leaves the target's view but not the source's is then scored like any other instead of
    excluded (SMURF's full-image warping). `stretches` ({scale: (B, 1, h, w)}, a net's
    `GeoPtFlowModel.stretches`) are smoothed apart from the flow (`FlowLossConfig.stretch_smoothness`).
    Returns 'loss' (to minimise), 'photometric',
    'smoothness' and 'excluded' (share of the visible pixels masked out, for logging) and, at full size,
    'warped' and 'mask' (for pictures).
    """
    full_size = target.shape[-2:]
    if visible is None:
        visible = torch.ones_like(source[:, :1])
    total = photometric_sum = smooth_sum = excluded_sum = 0.0
    warped = mask = None
    compare = census_error if config.error == "census" else photometric_error
    exit_costs: dict[tuple, torch.Tensor] = {}  # per scored size: scales scored at full size share one
    for scale, flow in sorted(flows.items()):
        scored = _flow_where_scored(flow, full_size, config.pyramid)
        size = scored.shape[-2:]
        shrink = full_size[1] // size[1]  # 2^scale with `pyramid`, else 1
        offset = (offset_px[0] // shrink, offset_px[1] // shrink)
        source_size = (source.shape[-2] // shrink, source.shape[-1] // shrink)
        if (offset[0] * shrink, offset[1] * shrink, source_size[0] * shrink, source_size[1] * shrink) != (
                *offset_px, *source.shape[-2:]):
            raise ValueError(f"a window at {offset_px} px in a {source.shape[-1]}x{source.shape[-2]} source is "
                             f"not whole pixels at 1/{shrink} size")
        target_s = target if size == full_size else F.interpolate(target, size=size, mode="area")
        source_s, visible_source = ((source, visible) if source_size == source.shape[-2:] else
                                    (F.interpolate(source, size=source_size, mode="area"),
                                     F.interpolate(visible, size=source_size, mode="nearest")))
        in_target = (..., slice(offset[1], offset[1] + size[0]), slice(offset[0], offset[0] + size[1]))
        visible_s = visible_source[in_target]
        warped_both, inside = warp_by_flow(torch.cat([source_s, visible_source], dim=1), scored, offset)
        warped_s, mask_s = warped_both[:, :3], inside * (warped_both[:, 3:] > 0.5)
        if config.occlusion_masking and backward_flows is not None:
            back = _flow_where_scored(backward_flows[scale], full_size, config.pyramid)
            mask_s = mask_s * forward_backward_mask(scored.detach(), back.detach())
        error = compare(warped_s, target_s)
        if tuple(size) not in exit_costs:
            with torch.no_grad():
                exit_costs[tuple(size)] = (compare(source_s[in_target], target_s).clamp(min=config.occlusion_penalty)
                                           if config.exit_costs_standing_still
                                           else torch.full_like(error, config.occlusion_penalty))
        exit_cost = exit_costs[tuple(size)]
        visible_count = visible_s.sum().clamp(min=1)
        photometric = ((error * mask_s + exit_cost * (1 - mask_s)) * visible_s).sum() / visible_count
        stretch = stretches.get(scale) if stretches and config.stretch_smoothness else None
        smooth = _smoothness(flow if stretch is None else flow / (1 + stretch), target, scale, config.smoothness_order)
        total = total + photometric + config.smoothness * smooth
        if stretch is not None:
            image = F.interpolate(target, size=stretch.shape[-2:], mode="area") if scale else target
            total = total + config.stretch_smoothness * second_order_smoothness(stretch, image)
        photometric_sum, smooth_sum = photometric_sum + photometric.detach(), smooth_sum + smooth.detach()
        excluded_sum = excluded_sum + ((1 - mask_s) * visible_s).sum().detach() / visible_count
        if scale == 0:
            warped, mask = warped_s.detach(), mask_s.detach()
    n = len(flows)
    return {"loss": total / n, "photometric": photometric_sum / n, "smoothness": smooth_sum / n,
            "excluded": excluded_sum / n, "warped": warped, "mask": mask}
