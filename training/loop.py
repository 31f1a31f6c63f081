"""The one training loop: pretraining and the depth transfer each drive it with their own `Task`.

The loop owns what every run needs: the run folder with its resolved ``config.json``, resume (model,
optimiser, schedule, step, epoch and each rank's RNG from ``last.pt``), DDP wrapping and
``torch.compile``, the non-finite guard, scalar logs (``log.jsonl`` and TensorBoard), pictures,
validation, atomic checkpoints and teardown. A task says what is trained and how one step is scored.

Batches: each pass over `Task.batches` is one epoch; an endless iterable makes `LoopConfig.steps` the only
stop. Under DDP every rank must take every step, yet with exact epochs ranks run out of data at different
steps. So each step the ranks first sum how many samples they hold (on the host group: no wait for the
GPU): at 0 the epoch is over everywhere. A rank already out of data steps on its last good batch
(`Task.blank_batch` if it had none) with its loss multiplied by 0, so the gradient all-reduce still
matches; each rank's loss is weighted by its samples * world size / samples of the step, which makes the
averaged gradient the mean over every real sample.

Non-finite guard (`training.finite_guard`): a step whose loss or gradient is not finite on any rank is
skipped on every rank, on the device, without a host sync per step (a warning names its samples once the
host looks), and the buffers its forward pass changed are put back; `nan_patience` such steps in a row stop
the run with `TrainingDiverged`, on every rank at the same step, and no checkpoint is written right after a
skipped step, the last one included, so the last good one stays untouched. Tasks give a fused optimiser
(`torch.optim.Adam`/`AdamW` with ``fused=True``), whose kernel does the skipping.
"""
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from formats.files import append_jsonl, to_jsonable, write_json_atomic
from training.checkpoints import (CheckpointError, load_checkpoint, rank_rng_state, restore_rng_state, rng_state,
                                  save_checkpoint)
from training.finite_guard import FiniteGuard, supports_device_skip
from training.runtime import (Runtime, gather_on_main, seed_everything, seed_for, start_runtime, stop_runtime,
                              sum_over_ranks, unwrap)

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class LoopConfig:
    """What every training run has; `PretrainConfig` and `TransferConfig` add their own fields."""
    run_dir: Path
    steps: int
    epochs: int | None = None
    """Stop after this many passes over the task's batches even before `steps`; None: only `steps` stops."""
    grad_clip: float | None = None
    """Clip the gradient norm to this; None: no clipping (the norm is still checked for being finite)."""
    device: str = "auto"
    precision: str = "auto"
    """'auto' (bf16 autocast on CUDA, float32 on CPU), 'bf16' or 'fp32'."""
    compile: bool = False
    checkpoint_every: int = 1000
    log_every: int = 50
    image_every: int = 1000
    val_every: int = 1000
    nan_patience: int = 20
    seed: int = 0
    resume: bool = False


class Task:
    """What one pipeline trains and how a step is scored; the loop calls these, in this order."""

    kind: str
    """The checkpoint's 'kind' (`training.checkpoints`)."""
    batch_size: int
    """Samples per batch per process (for the logged global batch)."""
    source: str
    """What the batches are read from, for messages."""
    step: int = 0
    """The loop's step count before the step being scored; set before each call to `losses`, so a task
    whose step depends on the schedule (a curriculum) knows where it is, also after a resume."""

    def build(self, runtime: Runtime, resuming: bool) -> torch.nn.Module:
        """The model on `runtime.device`; from its initial weights unless `resuming` (then they are loaded)."""
        raise NotImplementedError

    def optimiser(self, model: torch.nn.Module, runtime: Runtime) -> tuple[torch.optim.Optimizer, object]:
        """(optimiser, learning-rate scheduler stepped once per step)."""
        raise NotImplementedError

    def batches(self, runtime: Runtime, step: int, epoch: int) -> Iterable:
        """Batches of this rank; each pass is one epoch (an endless iterable never ends one)."""
        raise NotImplementedError

    def samples_in(self, batch) -> int:
        raise NotImplementedError

    def blank_batch(self):
        """A batch a rank replays with weight 0 when it runs out of data before any good step."""
        raise NotImplementedError

    def seen(self, batch) -> None:
        """Called with each batch read (not with replays), e.g. to count data sources."""

    def sample_names(self, batch) -> list[str]:
        """Names of the batch's samples for warnings (empty where samples have none)."""
        return []

    def losses(self, model: torch.nn.Module, batch, runtime: Runtime) -> dict:
        """One forward pass: 'loss' (a scalar tensor to minimise) and whatever `scalars` and `pictures` read."""
        raise NotImplementedError

    def scalars(self, out: dict) -> dict[str, float]:
        """What to log of a step's output (the loop adds lr, grad_norm and samples_per_s)."""
        return {"loss": float(out["loss"].detach())}

    def pictures(self, writer: SummaryWriter, step: int, batch, out: dict) -> None:
        """TensorBoard images of a step."""

    def validate(self, model: torch.nn.Module, runtime: Runtime) -> dict[str, float]:
        """Validation scores ('val/...'), or {} for a task without validation."""
        return {}

    def facts(self) -> dict:
        """What readers of the checkpoint need besides the weights (architecture, sizes, mode)."""
        return {}


def train(task: Task, config: LoopConfig) -> dict:
    """Run (or resume) `task` under `config`; returns the final step, epoch, samples and last scalars."""
    runtime = start_runtime(config.device, config.precision)
    try:
        return _train(task, config, runtime)
    finally:
        stop_runtime()


def _load_optimiser_state(optimiser: torch.optim.Optimizer, state: dict) -> None:
    """Load a saved optimiser state and keep the optimiser fused: a state saved unfused (before the loop
    required fused optimisers) would switch it back off, and the device-side skip with it."""
    fused = [group.get("fused") for group in optimiser.param_groups]
    optimiser.load_state_dict(state)
    for group, flag in zip(optimiser.param_groups, fused):
        group["fused"] = flag
        for param in group["params"]:
            step = optimiser.state.get(param, {}).get("step")
            if flag and torch.is_tensor(step):
                optimiser.state[param]["step"] = step.to(dtype=torch.float32, device=param.device)


def _restore_rng(saved: list | dict, config: LoopConfig, runtime: Runtime, step: int) -> None:
    """This rank's random streams as they were at the checkpoint. A rank the checkpoint holds none for
    (more ranks than wrote it, or a checkpoint that kept rank 0's alone) starts new streams of its own."""
    state = rank_rng_state(saved, runtime.rank)
    if state is not None:
        restore_rng_state(state)
        return
    log.warning("rank %d: the checkpoint holds no random state of this rank; it draws anew from seed %d, "
                "rank and step %d", runtime.rank, config.seed, step)
    seed_everything(seed_for(config.seed, runtime.rank, step))


def _train(task: Task, config: LoopConfig, runtime: Runtime) -> dict:
    run_dir = Path(config.run_dir)
    last = run_dir / "last.pt"
    resuming = config.resume and last.is_file()
    seed_everything(config.seed + runtime.rank)
    model = task.build(runtime, resuming)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimiser, scheduler = task.optimiser(model, runtime)
    if not supports_device_skip(optimiser):
        raise TypeError(f"{type(optimiser).__name__} cannot skip a non-finite step on the device: "
                        "give the loop a fused Adam or AdamW (fused=True)")
    step = epoch = 0
    saved_step = None  # the step of the checkpoint now in `last`; None while there is none
    if resuming:
        state = load_checkpoint(last)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as error:  # e.g. a run saved before a part of the model existed
            detail = " ".join(line.strip() for line in str(error).splitlines()[:2])
            raise CheckpointError(f"{last} does not fit the model these options build ({detail}); resume with "
                                  "the options it was started with (its config.json)") from None
        _load_optimiser_state(optimiser, state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch = state["step"], state.get("epoch", 0)
        saved_step = step
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", {**to_jsonable(config), "world_size": runtime.world_size,
                                                    "global_batch": task.batch_size * runtime.world_size,
                                                    "started_at_step": step})
    train_model = model
    if runtime.world_size > 1:
        train_model = DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    eager_model = train_model
    if config.compile:
        train_model = torch.compile(train_model)
    # Only the first compiled call compiles, so only it may fail for want of torch.compile and fall back to
    # eager; any later error (out of memory, a bug in the task) is raised as itself.
    may_fall_back = config.compile

    def checkpoint() -> None:
        """Write `last` (rank 0) with every rank's random state (a collective: all ranks call it)."""
        nonlocal saved_step
        rng_by_rank = gather_on_main(rng_state(), runtime)
        if runtime.is_main:
            save_checkpoint(last, {"kind": task.kind, "step": step, "epoch": epoch, "model": unwrap(model).state_dict(),
                                   "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
                                   "rng": rng_by_rank, "config": to_jsonable(asdict(config)), **task.facts()})
        saved_step = step

    def forward_backward(model: torch.nn.Module, batch, weight: float) -> dict:
        """One step's scores and gradients on `model`; `weight` scales this rank's loss (0 for a replay)."""
        optimiser.zero_grad(set_to_none=True)
        out = task.losses(model, batch, runtime)
        (out["loss"] * weight).backward()
        return out

    writer = SummaryWriter(str(run_dir / "tensorboard")) if runtime.is_main else None
    loader = task.batches(runtime, step, epoch)
    guard = FiniteGuard(runtime, config.nan_patience, list(unwrap(model).buffers()))
    last_scalars, newest, newest_step, replay = {}, None, -1, task.blank_batch()
    progress = tqdm(total=config.steps, initial=step, unit="step", desc=task.kind,  # TQDM_DISABLE=1 silences it
                    **({} if runtime.is_main else {"disable": True}))
    started, samples, epoch_samples = time.perf_counter(), 0, 0

    def settle() -> bool:
        """Read the guard's pending verdicts; True when the newest step was good. A batch becomes the one to
        replay only once its own step is known good."""
        nonlocal samples, epoch_samples, replay
        bad_samples, newest_good = guard.settle(last)
        samples -= bad_samples
        epoch_samples -= bad_samples
        if newest_good and newest_step == step:
            replay = newest
        return newest_good

    if resuming:  # last, so that nothing the set-up draws shifts the streams
        _restore_rng(state["rng"], config, runtime, step)
    train_model.train()
    while step < config.steps and (config.epochs is None or epoch < config.epochs):
        batches, epoch_samples, epoch_started = iter(loader), 0, False
        while step < config.steps:
            batch = next(batches, None)
            local_samples = 0 if batch is None else task.samples_in(batch)
            step_samples, ranks_out_of_data = sum_over_ranks((local_samples, int(batch is None)), runtime)
            if step_samples == 0 and not epoch_started:
                raise ValueError(f"no training sample could be read from {task.source} (see the warnings)")
            epoch_started = True
            if step_samples == 0:
                settle()
                epoch += 1
                if writer:
                    append_jsonl(run_dir / "log.jsonl", {"step": step, "epoch": epoch, "epoch_samples": epoch_samples})
                break
            if ranks_out_of_data:  # every rank looks when any must pick a replay, so patience stops all at once
                settle()
            if batch is None:
                batch = replay  # the newest batch known to be good
            else:
                task.seen(batch)
            task.step = step
            guard.before_forward()
            weight = local_samples * runtime.world_size / step_samples
            try:
                out = forward_backward(train_model, batch, weight)
            except Exception as error:
                if not may_fall_back:
                    if hasattr(error, "add_note"):  # Python 3.11+: the traceback names the step
                        error.add_note(f"{task.kind}: raised in step {step + 1}")
                    raise
                log.warning("torch.compile cannot run here (%s: %s); training without it",
                            type(error).__name__, str(error).splitlines()[0][:200] if str(error) else "")
                train_model = eager_model
                out = forward_backward(train_model, batch, weight)
            may_fall_back = False
            grad_norm = torch.nn.utils.clip_grad_norm_(train_model.parameters(), config.grad_clip or float("inf"))
            optimiser.found_inf = guard.judge(out["loss"], grad_norm, local_samples)
            optimiser.step()
            scheduler.step()
            step += 1
            samples += step_samples
            epoch_samples += step_samples
            if local_samples:
                newest, newest_step = batch, step
            guard.taken(step, step_samples,
                        (task.sample_names(batch) or ["(unnamed)"]) if local_samples else [])
            progress.update(1)
            if step % config.log_every == 0 or step == config.steps:
                settle()
                last_scalars = {"step": step, **task.scalars(out), "lr": scheduler.get_last_lr()[0],
                                "grad_norm": float(grad_norm), "samples_per_s": samples / (time.perf_counter() - started)}
                progress.set_postfix(loss=f"{last_scalars['loss']:.4f}")
                if writer:
                    for key, value in last_scalars.items():
                        if key != "step":
                            writer.add_scalar(key if "/" in key else f"train/{key}", value, step)
                    append_jsonl(run_dir / "log.jsonl", last_scalars)
            if writer and (step % config.image_every == 0 or step == 1):
                task.pictures(writer, step, batch, out)
            if runtime.is_main and (step % config.val_every == 0 or step == config.steps):
                scores = task.validate(unwrap(model), runtime)
                if scores:
                    for key, value in scores.items():
                        writer.add_scalar(key, value, step)
                    append_jsonl(run_dir / "log.jsonl", {"step": step, **scores})
                    last_scalars.update(scores)
            if step % config.checkpoint_every == 0 and settle():  # never right after a skipped step
                checkpoint()
    if settle():
        checkpoint()
    elif runtime.is_main:
        log.warning("step %d, the last, was skipped (not finite), so no checkpoint follows it: %s", step,
                    f"{last} stays at step {saved_step}" if saved_step is not None else f"{last} was never written")
    progress.close()
    if writer:
        writer.close()
    return {"step": step, **last_scalars, "epoch": epoch, "samples": samples, "run_dir": str(run_dir)}
