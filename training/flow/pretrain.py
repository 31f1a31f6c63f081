"""Geometric pretraining: stream pairs, predict flow both ways, minimise the photometric loss.

Each batch of (target, source) pairs is run forward and backward in one pass (the batch doubled with the
frames swapped) and scored by one loss call over the doubled batch: every pixel can get a forward-backward
occlusion check, and the GPU runs half as many kernels, each twice as large. AdamW with linear warm-up and
cosine decay (spanning `steps` even when `epochs` stops the run first), gradient clipping, the learning
rate scaled to the global batch. Everything else a run does (resume, checkpoints, the non-finite guard,
logs, DDP, exact epochs) is `training.loop`'s.

A run folder holds ``config.json``, ``last.pt``, ``log.jsonl`` and TensorBoard events with pictures of
frames, flow, warped frame and error; validation on world shards logs the flow end-point error against
the true flow, the share of excluded pixels and the predicted vs true flow length.
"""
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import flow_to_image

from training.backbone import SCALES
from training.checkpoints import PRETRAINING
from training.flow.data import DataConfig, train_loader, val_loader
from training.flow.loss import FlowLossConfig, extrapolation_loss, flow_loss, margin_px
from training.flow.model import GeoPtFlowModel, check_flow_sources, check_stretch
from training.loop import LoopConfig, Task, train
from training.photometric import photometric_error, warp_by_flow
from training.runtime import Runtime, unwrap


@dataclass(kw_only=True)
class PretrainConfig(LoopConfig):
    data: DataConfig
    run_dir: Path = Path("runs/pretrain")
    val_shards: str | None = None
    arch: str = "resnet18"
    motion_dim: int = 128
    film_starts_identity: bool = True
    """Zero-initialise the layers that turn the motion code into each decoder level's scale and shift, so
    the decoder starts unmodulated. Then no gradient reaches the motion encoder through the decoder until
    those layers have grown (through the motion head it gets one from the start)."""
    motion_head: bool = True
    """Add the motion head's coarse flow, read off the motion code alone, to every scale's flow
    (`training.flow.model.MotionHead`). Off: the decoder's flow alone, as before 2026-12-05 (resume runs
    from before then with it off)."""
    antisymmetric: bool = True
    """The flow is the decoder's output under the pair's motion code minus its output under the reversed
    pair's, and the motion head reads the difference of the two codes (`GeoPtFlowModel`): a frame paired
    with itself gets exactly no flow, so no flow guessed from the target frame alone survives. Costs a
    second decoder pass. The default since 2026-12-05 (late): on the 5 Hz proxy of the seed's pixel motion
    every net without it guessed one direction from the target frame and scored worse than no motion on the
    other (README, Results). Resume runs from before then with it off."""
    rigid_flow: bool = False
    """Add the flow of a still scene under the camera's translation, from an inverse depth decoded from the
    target frame alone and a translation read off the motion code (`training.flow.model.RigidFlow`): a
    pixel leaving the view going forward is in view going backward, and the one depth both directions
    share tells where it goes. Costs a second decoder (without FiLM). Off by default: on the 5 Hz proxy
    the decoder beside it fitted both directions first and the rigid part carried almost nothing (README,
    Results)."""
    flow_decoder: bool = True
    """The FiLM-modulated flow decoder. Off (with `rigid_flow`): the flow is the motion head's and the rigid
    flow's alone, so every pixel's motion must come through the inverse depth. Measured on the 5 Hz proxy:
    it guessed one direction for every pair unless `antisymmetric`, and even then ended short of the
    decoder (0.52 against 0.39-0.44x the zero-flow score; README, Results)."""
    stretch: bool = True
    """With `antisymmetric`: the decoder also gives each pixel a stretch a, antisymmetric like its flow, and
    the flow is the antisymmetric one times (1 + a), so a near pixel can move further going forward than
    coming back, as a camera driving forward makes it (`training.flow.model.stretched_flow_px`). Without it
    the antisymmetric flow of a pair and of its reverse have the same length. Alone, on the 5 Hz proxy, it
    made the flows differ (7.0 px forward, 5.2 back) but scored as without it, 0.38x the zero-flow score
    both ways, since the pixels leaving through the bottom, never seen going forward, stayed short; with
    `FlowLossConfig.extrapolation` teaching their stretch it scored 0.29x (README, Results). The default
    since 2026-12-05 (night), with that loss; resume runs from before then with it off and
    `loss.extrapolation` 0."""
    coarse_to_fine: bool = False
    """Each scale's flow adds the coarser scale's, upsampled (`FlowDecoder`). Off: on the CPU proxy of long
    displacements it stayed above the zero-flow score through step 468 (1.30x), where without it the
    net was at 0.67x (README, Results)."""
    steps: int = 20000
    lr: float = 2e-4
    """Peak learning rate for a global batch of `lr_reference_batch`; scaled linearly with the real one."""
    lr_reference_batch: int = 8
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    grad_clip: float | None = 1.0
    loss: FlowLossConfig = field(default_factory=FlowLossConfig)
    half_size_steps: int = 0
    """Resolution curriculum: the first steps see the frames downsampled to half size, where pixels move
    half as far, then the full size. The size must then be a multiple of 64 each way and at least 128 high
    (the decoder pads the 1/32 features, which need 2 pixels each way)."""
    short_gap_steps: int = 0
    """Frame-gap curriculum: pairs of neighbouring frames first, then `data.frame_gap` apart. The switch
    happens at the first epoch boundary at or after this step (set `data.batches_per_epoch` to divide it)."""
    val_batches: int = 50
    log_every: int = 20
    image_every: int = 500

    def __post_init__(self):
        # Only the extrapolation reads a frame's previous neighbour, so the loss decides what a batch holds.
        self.data = replace(self.data, triplets=self.loss.extrapolation > 0)


def warmup_cosine(config: PretrainConfig):
    """Learning-rate factor of a step: linear warm-up over `warmup_steps`, then cosine decay to 0 at `steps`."""
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / max(1, config.warmup_steps)
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def to_input(frames: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """(B, 3, H, W) uint8 frames -> float 0..1 on the device, in the runtime's memory layout."""
    x = frames.to(runtime.device, non_blocking=True).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if runtime.channels_last else x


def flow_losses(model, target: torch.Tensor, source: torch.Tensor, config: PretrainConfig, runtime: Runtime,
                visible: torch.Tensor | None = None, margin_px: tuple[int, int] = (0, 0),
                previous: torch.Tensor | None = None, principal_px: torch.Tensor | None = None,
                extrapolation_weight: float = 0.0) -> dict:
    """Forward and backward flow of a batch of pairs in one pass; the loss averaged over both directions.
    `visible` (B, 1, H, W): 0 under the videos' static overlays (see `flow_loss`). With `margin_px` (x, y)
    the net sees only the frames' centres, without that margin on each side, and the loss warps into the
    whole frames (`FlowLossConfig.full_image_margin`). Given `previous` frames (triplets, `source` then the
    next ones) and their `principal_px` (B, 2), the two directions are the target's flows to its next and
    to its previous frame, each carried over to the other where a pixel leaves the view, with
    `extrapolation_weight` (`FlowLossConfig.extrapolation`); else the target's flow to the source and the
    source's to the target.
    Returns 'loss', 'photometric', 'smoothness', 'excluded', with triplets 'extrapolation', and, for
    pictures, 'target' (what the net saw), 'flow' (forward, at the net's input size), 'warped' and 'mask'."""
    (mx, my), (h, w) = margin_px, target.shape[-2:]
    seen_target, seen_source = (x[..., my:h - my, mx:w - mx] for x in (target, source))
    if previous is None:
        targets, sources = torch.cat([seen_target, seen_source]), torch.cat([source, target])
        partners = torch.cat([seen_source, seen_target])
    else:
        targets, sources = torch.cat([seen_target, seen_target]), torch.cat([source, previous])
        partners = torch.cat([seen_source, previous[..., my:h - my, mx:w - mx]])
    with runtime.autocast():
        flows = model(targets, partners)
    flows = {s: f.float() for s, f in flows.items()}
    # a net with a stretch leaves it here for the loss (`GeoPtFlowModel.stretches`); any other flow net has none
    stretches = {s: a.float() for s, a in getattr(unwrap(model), "stretches", {}).items()}
    b = target.shape[0]
    swapped = {s: torch.cat([f[b:], f[:b]]) for s, f in flows.items()} if config.loss.occlusion_masking else None
    visible = None if visible is None else torch.cat([visible, visible])
    # one loss over the doubled batch: the mean of both directions (their visible pixels are the same)
    out = flow_loss(targets, sources, flows, swapped, config.loss, visible, margin_px, stretches)
    extra = {}
    if previous is not None:
        extra["extrapolation"] = extrapolation_loss(flows, stretches, principal_px - principal_px.new_tensor(margin_px),
                                                    (h, w), margin_px)
        out["loss"] = out["loss"] + extrapolation_weight * extra["extrapolation"]
    return {**{k: out[k] for k in ("loss", "photometric", "smoothness", "excluded")}, **extra, "target": seen_target,
            "flow": flows[0][:b].detach(), "flows": {s: f[:b].detach() for s, f in flows.items()},
            "warped": out["warped"][:b], "mask": out["mask"][:b]}


def true_match_in_view(flow: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) flow in pixels -> (B, H, W) 1.0 where the pixel it moves lands inside the frame."""
    return warp_by_flow(flow[:, :1], flow)[1][:, 0]


@torch.no_grad()
def validate(model, config: PretrainConfig, runtime: Runtime) -> dict:
    """Over (up to) `val_batches` validation batches: the masked photometric error and the share of pixels
    the loss excluded; where batches carry the true flow (world shards), the end-point error (mean pixel
    distance to the true flow) and the mean predicted and true flow lengths, in pixels, and each coarser
    scale's EPE with its flow upsampled to full size ('epe_px_s1'...: which scale limits), and the EPE and
    zero-flow score over only the pixels whose true match stays in view ('epe_px_in_view',
    'true_flow_px_in_view': the loss cannot see where the others go). Always 'flow_px_same_frames', the
    mean flow length predicted for each target paired with itself: a net that reads the motion from the
    pair predicts none there, a net that guesses flow from the target alone predicts as much as for the
    real pair. Where the shards also carry the true flow to the previous frame, the same target scored
    against it ('epe_px_backward', 'flow_px_backward', 'true_flow_px_backward'): pretraining learns both
    directions, and a net that guesses one direction from the target frame alone scores well on the other
    only by luck. A net that satisfies the loss without learning motion shows here: EPE above the zero-flow
    score, predicted flow far longer than the truth, many pixels excluded, as much flow for a still pair,
    or a backward EPE far above its zero-flow score."""
    model.eval()
    loader = val_loader(replace(config.data, shards=config.val_shards))
    sums = {"photometric": 0.0, "excluded": 0.0, "flow_px_same_frames": 0.0, "epe_px": 0.0, "flow_px": 0.0,
            "true_flow_px": 0.0}
    sums.update({f"epe_px_s{s}": 0.0 for s in SCALES[1:]})
    sums.update(epe_px_in_view=0.0, true_flow_px_in_view=0.0)
    backward = {"epe_px_backward": 0.0, "flow_px_backward": 0.0, "true_flow_px_backward": 0.0}
    count = flow_count = backward_count = 0
    for i, batch in enumerate(loader):
        if i >= config.val_batches:
            break
        target, source, true_flow = to_input(batch.target, runtime), to_input(batch.source, runtime), batch.true_flow
        out = flow_losses(model, target, source, config, runtime, batch.visible.to(runtime.device).float())
        n = target.shape[0]
        count += n
        sums["photometric"] += float(out["photometric"]) * n
        sums["excluded"] += float(out["excluded"]) * n
        with runtime.autocast():
            still = model(target, target)[0].float()
        sums["flow_px_same_frames"] += float(still.norm(dim=1).mean()) * n
        if true_flow is not None:
            flow, true_flow = out["flow"].float(), true_flow.to(out["flow"].device)
            sums["epe_px"] += float((flow - true_flow).norm(dim=1).mean()) * n
            sums["flow_px"] += float(flow.norm(dim=1).mean()) * n
            sums["true_flow_px"] += float(true_flow.norm(dim=1).mean()) * n
            for scale in SCALES[1:]:
                coarse = F.interpolate(out["flows"][scale].float(), size=true_flow.shape[-2:], mode="bilinear",
                                       align_corners=False)
                sums[f"epe_px_s{scale}"] += float((coarse - true_flow).norm(dim=1).mean()) * n
            in_view = true_match_in_view(true_flow)
            share = in_view.sum().clamp(min=1)
            sums["epe_px_in_view"] += float(((flow - true_flow).norm(dim=1) * in_view).sum() / share) * n
            sums["true_flow_px_in_view"] += float((true_flow.norm(dim=1) * in_view).sum() / share) * n
            flow_count += n
        if batch.true_flow_previous is not None:
            with runtime.autocast():
                flow = model(target, to_input(batch.previous, runtime))[0].float()
            true_flow = batch.true_flow_previous.to(flow.device)
            backward["epe_px_backward"] += float((flow - true_flow).norm(dim=1).mean()) * n
            backward["flow_px_backward"] += float(flow.norm(dim=1).mean()) * n
            backward["true_flow_px_backward"] += float(true_flow.norm(dim=1).mean()) * n
            backward_count += n
    model.train()
    scores = {"val/samples": count, **{f"val/{k}": sums[k] / max(1, count)
                                       for k in ("photometric", "excluded", "flow_px_same_frames")}}
    if flow_count:
        scores.update({f"val/{k}": sums[k] / flow_count for k in sums
                       if k.startswith(("epe", "true")) or k == "flow_px"})
    if backward_count:
        scores.update({f"val/{k}": v / backward_count for k, v in backward.items()})
    return scores


BEFORE_THE_OPTION = {"coarse_to_fine": False, "motion_head": False, "antisymmetric": False, "rigid_flow": False,
                     "flow_decoder": True, "stretch": False}
"""What the net was, for each model option, in runs whose config.json predates the option."""


def flow_model(settings: dict) -> GeoPtFlowModel:
    """The net a run's settings describe: a `PretrainConfig`'s fields, or the run's config.json; an option a
    run's config predates takes the value it had before it existed (`BEFORE_THE_OPTION`), not today's
    default, so an older run's net loads as it was trained."""
    def setting(name: str):
        return settings[name] if name in settings else BEFORE_THE_OPTION.get(name, getattr(PretrainConfig, name))
    return GeoPtFlowModel(setting("arch"), setting("motion_dim"), setting("film_starts_identity"),
                          setting("coarse_to_fine"), setting("motion_head"), setting("antisymmetric"),
                          setting("rigid_flow"), setting("flow_decoder"), setting("stretch"))


def check_extrapolation(loss: FlowLossConfig, stretch: bool) -> None:
    """Carrying flow over between directions teaches the stretch (`extrapolation_loss`), and it trains on
    triplets, which do not hold each pair's reverse that the forward-backward check needs."""
    if loss.extrapolation and not stretch:
        raise ValueError("the flow loss's extrapolation teaches each pixel's stretch how much further it moves "
                         "going forward than coming back: it needs --stretch (or turn it off: --extrapolation 0)")
    if loss.extrapolation and loss.occlusion_masking:
        raise ValueError("the flow loss's extrapolation trains on triplets, which hold a frame's flows to both "
                         "neighbours, not each pair's reverse, so the forward-backward occlusion check cannot "
                         "run on them: give --extrapolation 0 with --occlusion-mask")


class PretrainTask(Task):
    """Pretraining as `training.loop` runs it. Batches are `training.flow.data.train_loader`'s (target,
    source, origin, names, visible)."""

    kind = PRETRAINING

    def __init__(self, config: PretrainConfig):
        width, height = config.data.width_px, config.data.height_px
        if config.half_size_steps and (width % 64 or height % 64 or min(width, height) < 128):
            raise ValueError(f"a resolution curriculum halves the size, so {width}x{height} must be a multiple "
                             "of 64 each way and at least 128x128")
        margin_px(config.loss, width, height)  # a margin that leaves the net too little fails here, not mid-run
        check_flow_sources(config.rigid_flow, config.flow_decoder)
        check_stretch(config.stretch, config.antisymmetric, config.flow_decoder)
        check_extrapolation(config.loss, config.stretch)
        self.config, self.batch_size, self.source = config, config.data.batch_size, config.data.shards
        self.source_names: list[str] = []
        self.source_counts = torch.zeros(0)

    def build(self, runtime: Runtime, resuming: bool) -> torch.nn.Module:
        return flow_model(vars(self.config)).to(runtime.device)

    def optimiser(self, model, runtime: Runtime):
        global_batch = self.config.data.batch_size * runtime.world_size
        optimiser = torch.optim.AdamW(model.parameters(),
                                      lr=self.config.lr * global_batch / self.config.lr_reference_batch,
                                      weight_decay=self.config.weight_decay, fused=True)
        return optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_cosine(self.config))

    def batches(self, runtime: Runtime, step: int, epoch: int):
        data = self.config.data
        if step < self.config.short_gap_steps:
            data = replace(data, frame_gap=1)
        loader, self.source_names = train_loader(data, runtime.rank, runtime.world_size,
                                                 start_batch=step, start_epoch=epoch)
        self.source_counts = torch.zeros(len(self.source_names))
        return loader

    def samples_in(self, batch) -> int:
        return len(batch[0])

    def blank_batch(self):
        frames = torch.zeros(1, 3, self.config.data.height_px, self.config.data.width_px, dtype=torch.uint8)
        triplet = (frames, torch.zeros(1, 2)) if self.config.data.triplets else ()
        return frames, frames, torch.zeros(1, dtype=torch.long), [], torch.ones_like(frames[:, :1]), *triplet

    def seen(self, batch) -> None:
        self.source_counts += torch.bincount(batch[2], minlength=len(self.source_names))

    def sample_names(self, batch) -> list[str]:
        return list(batch[3])

    def losses(self, model, batch, runtime: Runtime) -> dict:
        target, source = to_input(batch[0], runtime), to_input(batch[1], runtime)
        visible = batch[4].to(runtime.device, non_blocking=True).float()
        previous, principal_px = ((to_input(batch[5], runtime), batch[6].to(runtime.device))
                                  if self.config.data.triplets else (None, None))
        if self.step < self.config.half_size_steps:
            target, source = (F.interpolate(x, scale_factor=0.5, mode="area") for x in (target, source))
            visible = F.interpolate(visible, scale_factor=0.5, mode="nearest")
            if previous is not None:
                previous, principal_px = F.interpolate(previous, scale_factor=0.5, mode="area"), principal_px / 2
        margin = margin_px(self.config.loss, target.shape[-1], target.shape[-2])
        carrying = self.step >= self.config.loss.extrapolation_starts_at * self.config.steps
        return {**flow_losses(model, target, source, self.config, runtime, visible, margin, previous, principal_px,
                              self.config.loss.extrapolation if carrying else 0.0), "source": source}

    def scalars(self, out: dict) -> dict[str, float]:
        scalars = {key: float(out[key].detach()) for key in ("loss", "photometric", "smoothness", "excluded",
                                                              "extrapolation") if key in out}
        if len(self.source_names) > 1:  # share of each data source since the last log
            shares = self.source_counts / self.source_counts.sum().clamp(min=1)
            scalars.update({f"source/{n}": float(v) for n, v in zip(self.source_names, shares)})
            self.source_counts.zero_()
        return scalars

    def pictures(self, writer: SummaryWriter, step: int, batch, out: dict) -> None:
        target, source = out["target"], out["source"]
        n = min(4, target.shape[0])
        writer.add_images("frames/target", target[:n].float(), step)
        writer.add_images("frames/source", source[:n].float(), step)
        writer.add_images("flow", flow_to_image(out["flow"][:n].float().cpu()).float() / 255, step)
        writer.add_images("warped_source", out["warped"][:n].clamp(0, 1), step)
        error = photometric_error(out["warped"][:n], target[:n]) * out["mask"][:n]
        writer.add_images("error", (error / error.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)), step)

    def validate(self, model, runtime: Runtime) -> dict[str, float]:
        return validate(model, self.config, runtime) if self.config.val_shards else {}

    def facts(self) -> dict:
        return {"arch": self.config.arch, "motion_dim": self.config.motion_dim,
                "width_px": self.config.data.width_px, "height_px": self.config.data.height_px}


def pretrain(config: PretrainConfig) -> dict:
    """Run (or resume) pretraining; returns the final step, epoch, samples and last scalars."""
    return train(PretrainTask(config), config)
