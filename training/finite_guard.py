"""The non-finite guard without a host sync per step.

A step whose loss or gradient is not finite on any rank must not touch the weights. Asking the host
"is it finite?" every step (`bool(tensor)`) makes the CPU wait for the GPU to finish the step before it
can queue the next one. Instead each step's verdict stays on the device: a 0/1 tensor the fused
optimiser reads as `found_inf` and that skips the update inside its kernel, the way PyTorch's GradScaler
skips steps. The host reads the verdicts of all steps since it last looked in one transfer, at `settle()`,
which the loop calls where it syncs anyway (logging, validation, checkpoints, an epoch's end).

The forward pass itself writes state the optimiser never sees: BatchNorm's running statistics. A batch
with a non-finite activation would leave NaN there while the fused optimiser skips the step, and later
steps, normalised by batch statistics, would look finite. So the guard keeps a copy of the model's
buffers from before each forward and puts them back, again on the device (`torch.where` on the verdict),
when the step is skipped.

As with GradScaler, a skipped step still counts as a step and advances the learning-rate schedule; its
samples are taken back out of the sample counts when the host learns of it.
"""
import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from training.runtime import Runtime

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses or gradients in a row."""


def supports_device_skip(optimiser: torch.optim.Optimizer) -> bool:
    """True for optimisers whose step reads `found_inf` on the device (the fused Adam and AdamW)."""
    return bool(getattr(optimiser, "_step_supports_amp_scaling", False))


@dataclass
class _Step:
    step: int
    """The loop's step number after this step."""
    samples: int
    """Samples of the step over all ranks."""
    names: list[str]
    """This rank's sample names (empty where it had none: a replay)."""


class FiniteGuard:
    """Verdicts of the steps since the host last looked; `patience` bad steps in a row stop the run.

    `buffers`: the model's buffers (running statistics and their counters), put back as they were before
    the forward of a skipped step."""

    def __init__(self, runtime: Runtime, patience: int, buffers: list[torch.Tensor]):
        self.runtime, self.patience, self.buffers = runtime, patience, buffers
        self.bad_in_a_row = 0
        self._steps: list[_Step] = []
        self._verdicts: list[torch.Tensor] = []
        self._buffers_before: list[torch.Tensor] = []

    def before_forward(self) -> None:
        """Copy the buffers (on the device) before the forward pass may change them."""
        self._buffers_before = [buffer.clone() for buffer in self.buffers]

    def judge(self, loss: torch.Tensor, grad_norm: torch.Tensor, local_samples: int) -> torch.Tensor:
        """The step's `found_inf` (0-dim float32 on the device): 1 where any rank's loss or gradient norm
        is not finite; the buffers of a skipped step are put back. A rank replaying a batch with weight 0
        (`local_samples` 0) still judges it, since its non-finite loss would reach every rank's gradient,
        and always puts its buffers back: the replay must leave no trace in its running statistics."""
        local = torch.stack([~torch.isfinite(loss.detach().float()), ~torch.isfinite(grad_norm.float())]).float()
        anywhere = local.clone()
        if self.runtime.world_size > 1:
            dist.all_reduce(anywhere, op=dist.ReduceOp.MAX)
        self._verdicts.append(torch.cat([local, anywhere]))
        found_inf = anywhere.max()
        self._put_buffers_back(found_inf > 0 if local_samples else None)
        return found_inf

    def _put_buffers_back(self, where: torch.Tensor | None) -> None:
        """Buffers as they were before the forward where `where` (0-dim bool on the device) holds, or in
        any case when it is None; no host sync either way."""
        for buffer, before in zip(self.buffers, self._buffers_before):
            buffer.copy_(before if where is None else torch.where(where, before, buffer))

    def taken(self, step: int, samples: int, names: list[str]) -> None:
        """Record the step just judged (host facts only: no sync)."""
        self._steps.append(_Step(step, samples, names))

    def settle(self, last_checkpoint) -> tuple[int, bool]:
        """Read the pending verdicts (one sync): warn for each bad step naming this rank's samples, raise
        `TrainingDiverged` at the step that makes `patience` in a row, even when good steps follow it
        among the pending ones. Verdicts are the same on every rank, so ranks that settle at the same
        step raise together. Returns (samples of the bad steps, whether the newest step was good)."""
        if not self._steps:
            return 0, self.bad_in_a_row == 0
        verdicts = torch.stack(self._verdicts).cpu().bool().tolist()
        bad_samples = 0
        for record, (loss_here, grad_here, loss_anywhere, grad_anywhere) in zip(self._steps, verdicts):
            if not (loss_anywhere or grad_anywhere):
                self.bad_in_a_row = 0
                continue
            what, here = ("loss", loss_here) if loss_anywhere else ("gradient", grad_here)
            if here and record.names:
                log.warning("rank %d, step %d: %s not finite, batch skipped; its samples: %s", self.runtime.rank,
                            record.step, what, " ".join(record.names))
            bad_samples += record.samples
            self.bad_in_a_row += 1
            if self.bad_in_a_row >= self.patience:
                raise TrainingDiverged(
                    f"loss or gradient was not finite for {self.bad_in_a_row} steps in a row up to step "
                    f"{record.step}; stopped. The last good checkpoint is {last_checkpoint} - lower the learning "
                    "rate or check the data.")
        self._steps, self._verdicts = [], []
        return bad_samples, self.bad_in_a_row == 0
