"""The geometric-pretraining loop: stream pairs, predict flow both ways, minimise the photometric loss.

Each batch of (target, source) pairs is run forward and backward in one pass (the batch doubled with the
frames swapped), so every pixel gets a forward-backward occlusion check. AdamW with linear warm-up and
cosine decay, gradient clipping, bf16 autocast and channels_last on CUDA, optional torch.compile, DDP
under torchrun. A step whose loss is not finite is skipped with a warning naming the batch's samples;
`nan_patience` of them in a row stop the run with a message, the last good checkpoint untouched.

Under DDP every rank must take every step, yet with exact epochs (`DataConfig.exact_epochs`) ranks run
out of data at different steps. So each step the ranks first sum how many samples they hold: at 0 the
epoch is over everywhere. A rank already out of data steps on its last good batch (a blank one if it
had none) with its loss multiplied by 0, so the gradient all-reduce still matches; each rank's loss is
weighted by its samples * world size / samples of the step, which makes the averaged gradient the mean
over every real sample of the step. The run ends after `steps` steps or `epochs` epochs, whichever
comes first; the learning-rate schedule always spans `steps`.

A run folder holds ``config.json`` (the full resolved config), ``last.pt`` (rewritten every `checkpoint_every` steps),
``log.jsonl`` (scalars) and TensorBoard events with pictures of frames, flow, warped frame and error.
"""
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import flow_to_image
from tqdm import tqdm

from geopt_io import append_jsonl, write_json_atomic
from training.data import DataConfig, train_loader, val_loader
from training.losses import FlowLossConfig, flow_loss, photometric_error
from training.models import GeoPtFlowModel
from training.runtime import (Runtime, all_ranks_agree, load_checkpoint, restore_rng_state, rng_state, save_checkpoint,
                              seed_everything, start_runtime, stop_runtime, total_over_ranks, unwrap)

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


@dataclass
class PretrainConfig:
    data: DataConfig
    run_dir: Path = Path("runs/pretrain")
    val_shards: str | None = None
    arch: str = "resnet18"
    motion_dim: int = 128
    steps: int = 20000
    epochs: int | None = None
    """Stop after this many epochs (see `DataConfig`) even before `steps`; None: only `steps` stops."""
    lr: float = 2e-4
    """Peak learning rate for a global batch of `lr_reference_batch`; scaled linearly with the real one."""
    lr_reference_batch: int = 8
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    grad_clip: float = 1.0
    loss: FlowLossConfig = field(default_factory=FlowLossConfig)
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    checkpoint_every: int = 1000
    val_every: int = 1000
    val_batches: int = 50
    log_every: int = 20
    image_every: int = 500
    nan_patience: int = 20
    seed: int = 0
    resume: bool = False


def _schedule(config: PretrainConfig):
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / max(1, config.warmup_steps)
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _to_input(batch: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    x = batch.to(runtime.device, non_blocking=True).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if runtime.channels_last else x


def _step_losses(model, target, source, config: PretrainConfig, runtime: Runtime) -> dict:
    """Forward and backward flow in one batch; loss averaged over both directions."""
    with runtime.autocast():
        flows = model(torch.cat([target, source]), torch.cat([source, target]))
    flows = {s: f.float() for s, f in flows.items()}
    b = target.shape[0]
    forward = {s: f[:b] for s, f in flows.items()}
    backward = {s: f[b:] for s, f in flows.items()}
    out_f = flow_loss(target, source, forward, backward, config.loss)
    out_b = flow_loss(source, target, backward, forward, config.loss)
    return {"loss": 0.5 * (out_f["loss"] + out_b["loss"]),
            "photometric": 0.5 * (out_f["photometric"] + out_b["photometric"]),
            "smoothness": 0.5 * (out_f["smoothness"] + out_b["smoothness"]),
            "excluded": 0.5 * (out_f["excluded"] + out_b["excluded"]),
            "flow": forward[0].detach(), "warped": out_f["warped"], "mask": out_f["mask"]}


def _blank_batch(data: DataConfig) -> tuple:
    """One black pair: what a rank replays (with weight 0) when it runs out of data before any good step."""
    frames = torch.zeros(1, 3, data.height_px, data.width_px, dtype=torch.uint8)
    return frames, frames, torch.zeros(1, dtype=torch.long), []


def _log_images(writer: SummaryWriter, step: int, target, source, out) -> None:
    n = min(4, target.shape[0])
    writer.add_images("frames/target", target[:n].float(), step)
    writer.add_images("frames/source", source[:n].float(), step)
    writer.add_images("flow", flow_to_image(out["flow"][:n].float().cpu()).float() / 255, step)
    writer.add_images("warped_source", out["warped"][:n].clamp(0, 1), step)
    error = photometric_error(out["warped"][:n], target[:n]) * out["mask"][:n]
    writer.add_images("error", (error / error.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)), step)


@torch.no_grad()
def validate(model, config: PretrainConfig, runtime: Runtime) -> dict:
    """Over (up to) `val_batches` validation batches: the masked photometric error and the share of pixels
    the loss excluded; where batches carry the true flow (world shards), the end-point error (mean pixel
    distance to the true flow) and the mean predicted and true flow lengths, in pixels. A net that
    satisfies the loss without learning motion shows here: EPE above the zero-flow score, predicted flow
    far longer than the truth, many pixels excluded."""
    model.eval()
    loader = val_loader(replace(config.data, shards=config.val_shards))
    sums = {"photometric": 0.0, "excluded": 0.0, "epe_px": 0.0, "flow_px": 0.0, "true_flow_px": 0.0}
    count = flow_count = 0
    for i, (target, source, true_flow) in enumerate(loader):
        if i >= config.val_batches:
            break
        target, source = _to_input(target, runtime), _to_input(source, runtime)
        out = _step_losses(model, target, source, config, runtime)
        n = target.shape[0]
        count += n
        sums["photometric"] += float(out["photometric"]) * n
        sums["excluded"] += float(out["excluded"]) * n
        if true_flow is not None:
            flow, true_flow = out["flow"].float(), true_flow.to(out["flow"].device)
            sums["epe_px"] += float((flow - true_flow).norm(dim=1).mean()) * n
            sums["flow_px"] += float(flow.norm(dim=1).mean()) * n
            sums["true_flow_px"] += float(true_flow.norm(dim=1).mean()) * n
            flow_count += n
    model.train()
    scores = {"val/samples": count, **{f"val/{k}": sums[k] / max(1, count) for k in ("photometric", "excluded")}}
    if flow_count:
        scores.update({f"val/{k}": sums[k] / flow_count for k in ("epe_px", "flow_px", "true_flow_px")})
    return scores


def pretrain(config: PretrainConfig) -> dict:
    """Run (or resume) pretraining; returns the final step and last losses."""
    runtime = start_runtime(config.device, config.precision)
    try:
        return _pretrain(config, runtime)
    finally:
        stop_runtime()


def _pretrain(config: PretrainConfig, runtime: Runtime) -> dict:
    run_dir = Path(config.run_dir)
    seed_everything(config.seed + runtime.rank)
    model = GeoPtFlowModel(config.arch, config.motion_dim).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    global_batch = config.data.batch_size * runtime.world_size
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr * global_batch / config.lr_reference_batch,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(config))
    step, epoch = 0, 0
    last = run_dir / "last.pt"
    if config.resume and last.is_file():
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch = state["step"], state.get("epoch", 0)
        restore_rng_state(state["rng"])
    elif runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if runtime.is_main:
        write_json_atomic(run_dir / "config.json", {**asdict(config), "world_size": runtime.world_size,
                                                    "global_batch": global_batch, "started_at_step": step})
    train_model = model
    if runtime.world_size > 1:
        train_model = DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    if config.compile:
        train_model = torch.compile(train_model)

    def checkpoint(name: str) -> None:
        if runtime.is_main:
            save_checkpoint(run_dir / name, {"step": step, "epoch": epoch, "model": unwrap(model).state_dict(),
                                             "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
                                             "rng": rng_state(), "config": asdict(config), "arch": config.arch,
                                             "motion_dim": config.motion_dim})

    writer = SummaryWriter(str(run_dir / "tensorboard")) if runtime.is_main else None
    loader, source_names = train_loader(config.data, runtime.rank, runtime.world_size, start_batch=step,
                                        start_epoch=epoch)
    source_counts = torch.zeros(len(source_names))
    bad_in_a_row, last_scalars, replay = 0, {}, _blank_batch(config.data)
    progress = tqdm(total=config.steps, initial=step, unit="step", desc="pretrain", disable=not runtime.is_main)
    started, samples = time.perf_counter(), 0
    train_model.train()
    while step < config.steps and (config.epochs is None or epoch < config.epochs):
        batches, epoch_samples, epoch_started = iter(loader), 0, False
        while step < config.steps:
            batch = next(batches, None)
            local_samples = 0 if batch is None else len(batch[0])
            step_samples = total_over_ranks(local_samples, runtime)
            if step_samples == 0 and not epoch_started:
                raise ValueError(f"no training sample could be read from {config.data.shards} (see the warnings)")
            epoch_started = True
            if step_samples == 0:
                epoch += 1
                if writer:
                    append_jsonl(run_dir / "log.jsonl",
                                 {"step": step, "epoch": epoch, "epoch_samples": epoch_samples})
                break
            target, source, origin, names = batch if batch is not None else replay
            if local_samples:
                source_counts += torch.bincount(origin, minlength=len(source_names))
            target, source = _to_input(target, runtime), _to_input(source, runtime)
            out = _step_losses(train_model, target, source, config, runtime)
            optimiser.zero_grad(set_to_none=True)
            finite = bool(torch.isfinite(out["loss"]))
            if not all_ranks_agree(finite, runtime):
                if not finite and local_samples:
                    log.warning("rank %d, step %d: loss not finite, batch skipped; its samples: %s",
                                runtime.rank, step + 1, " ".join(names))
                bad_in_a_row += 1
                if bad_in_a_row >= config.nan_patience:
                    raise TrainingDiverged(
                        f"loss was not finite for {bad_in_a_row} steps in a row at step {step}; stopped. "
                        f"The last good checkpoint is {last} - lower --lr or check the data.")
                continue
            bad_in_a_row = 0
            if local_samples:
                replay = batch
            (out["loss"] * (local_samples * runtime.world_size / step_samples)).backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(train_model.parameters(), config.grad_clip)
            if not all_ranks_agree(bool(torch.isfinite(grad_norm)), runtime):
                optimiser.zero_grad(set_to_none=True)
                bad_in_a_row += 1
                continue
            optimiser.step()
            scheduler.step()
            step += 1
            samples += step_samples
            epoch_samples += step_samples
            progress.update(1)
            if step % config.log_every == 0 or step == config.steps:
                last_scalars = {"step": step, "loss": float(out["loss"].detach()), "photometric": float(out["photometric"]),
                                "smoothness": float(out["smoothness"]), "excluded": float(out["excluded"]), "lr": scheduler.get_last_lr()[0],
                                "grad_norm": float(grad_norm), "samples_per_s": samples / (time.perf_counter() - started)}
                progress.set_postfix(loss=f"{last_scalars['loss']:.4f}")
                if len(source_names) > 1:  # share of each data source since the last log
                    shares = source_counts / source_counts.sum()
                    last_scalars.update({f"source/{n}": float(v) for n, v in zip(source_names, shares)})
                    source_counts.zero_()
                if writer:
                    for key, value in last_scalars.items():
                        if key != "step":
                            writer.add_scalar(key if "/" in key else f"train/{key}", value, step)
                    append_jsonl(run_dir / "log.jsonl", last_scalars)
            if writer and (step % config.image_every == 0 or step == 1):
                _log_images(writer, step, target, source, out)
            if config.val_shards and runtime.is_main and (step % config.val_every == 0 or step == config.steps):
                scores = validate(unwrap(model), config, runtime)
                for key, value in scores.items():
                    writer.add_scalar(key, value, step)
                append_jsonl(run_dir / "log.jsonl", {"step": step, **scores})
                last_scalars.update(scores)
            if step % config.checkpoint_every == 0:
                checkpoint("last.pt")
    checkpoint("last.pt")
    progress.close()
    if writer:
        writer.close()
    return {"step": step, **last_scalars, "epoch": epoch, "samples": samples, "run_dir": str(run_dir)}
