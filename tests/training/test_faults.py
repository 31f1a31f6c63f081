"""Faults injected into the training loop: what README promises (a non-finite step is skipped and never
reaches a checkpoint, `nan_patience` bad steps in a row stop every rank, runs resume exactly, `--compile`
falls back only when it cannot compile) holds when they strike.

The loop is driven by a tiny task whose batches, faults and random draws the test chooses. Several
processes (gloo) and anything that could crash the interpreter run in spawned processes under a timeout,
so a hang or a segfault fails the test instead of the suite.
"""
import json
import os
import time
from datetime import timedelta
from itertools import count
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from training.depth.loss import warp_source
from training.finite_guard import TrainingDiverged
from training.flow.loss import flow_loss
from training.loop import LoopConfig, Task, train

WORLD_SIZE = 2
TIMEOUT_S = 180
"""Longest a test's processes may take, torch imports included (2 busy cores); longer is a hang."""
TRUE_WEIGHTS = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def tiny_batch(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch `index`: 4 samples of 4 inputs and their target (4, 1), the same in every run."""
    generator = torch.Generator().manual_seed(index)
    inputs = torch.randn(4, 4, generator=generator)
    return inputs, inputs @ TRUE_WEIGHTS + 0.1 * torch.randn(4, 1, generator=generator)


class TinyRegression(Task):
    """Linear -> BatchNorm1d -> ReLU -> Linear fitted to `tiny_batch`es, with faults on chosen steps.

    `batch_indices`: per rank, the batches of one epoch; None: endless, batch rank * 100000 + step.
    `poisoned_steps`: steps (`Task.step`, from 0) whose first activation is NaN on rank `poisoned_rank`.
    `augment`: scale the inputs by a gain drawn from torch's global RNG each step (recorded in `gains`).
    `fail_at_step`: a step whose first try raises an error (a transient one, such as running out of memory).
    """
    kind = "tiny-regression"
    batch_size = 4
    source = "the test's batches"

    def __init__(self, batch_indices: list[list[int]] | None = None, poisoned_steps: tuple[int, ...] = (),
                 poisoned_rank: int = 0, augment: bool = False, fail_at_step: int | None = None):
        self.batch_indices, self.poisoned_steps, self.poisoned_rank = batch_indices, poisoned_steps, poisoned_rank
        self.augment, self.fail_at_step = augment, fail_at_step
        self.rank = 0
        self.scored_steps: list[int] = []
        self.gains: dict[int, float] = {}

    def build(self, runtime, resuming):
        self.rank = runtime.rank
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                    torch.nn.Linear(8, 1))
        if self.poisoned_steps:
            model[0].register_forward_hook(self._poison)
        return model.to(runtime.device)

    def _poison(self, module, inputs, output):
        if self.rank == self.poisoned_rank and self.step in self.poisoned_steps:
            return output * float("nan")
        return None

    def optimiser(self, model, runtime):
        optimiser = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
        return optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0)

    def batches(self, runtime, step, epoch):
        if self.batch_indices is None:
            return (tiny_batch(runtime.rank * 100_000 + index) for index in count(step))
        return [tiny_batch(index) for index in self.batch_indices[runtime.rank]]

    def samples_in(self, batch):
        return len(batch[0])

    def blank_batch(self):
        return torch.zeros(4, 4), torch.zeros(4, 1)

    def losses(self, model, batch, runtime):
        self.scored_steps.append(self.step)
        inputs, targets = batch
        if self.augment:
            gain = 1 + torch.rand(())
            self.gains[self.step] = float(gain)
            inputs = inputs * gain
        loss = F.mse_loss(model(inputs), targets)
        if self.step == self.fail_at_step and self.scored_steps.count(self.step) == 1:
            raise RuntimeError(f"out of memory (injected in step {self.step + 1})")
        return {"loss": loss}


def tiny_config(run_dir: Path, **fields) -> LoopConfig:
    """A CPU run that logs, validates and checkpoints only at its end unless `fields` say otherwise."""
    return LoopConfig(**{"run_dir": run_dir, "steps": 6, "device": "cpu", "log_every": 1000,
                         "checkpoint_every": 1000, "image_every": 1000, "val_every": 1000, **fields})


def run_processes(function, args: tuple, processes: int) -> None:
    """`function(index, *args)` in `processes` fresh processes; one that raises or dies (a segfault) fails
    the test, and so does one still running after `TIMEOUT_S` (a hang), which is then killed."""
    context = mp.start_processes(function, args=args, nprocs=processes, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{function.__name__} still ran after {TIMEOUT_S} s: a process hangs")


def join_gloo_group(rank: int, store: Path) -> None:
    """Make this process rank `rank` of a 2-process gloo group, as torchrun would (the loop joins it)."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE,
                            timeout=timedelta(seconds=60))


def checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's model (parameters and buffers) and optimiser state, by name."""
    state = torch.load(path, weights_only=True)
    tensors = {f"model.{name}": tensor for name, tensor in state["model"].items()}
    for param, values in state["optimiser"]["state"].items():
        tensors.update({f"optimiser.{param}.{name}": value for name, value in values.items()})
    return tensors


def test_a_non_finite_activation_leaves_the_next_checkpoint_as_training_without_that_batch(tmp_path, caplog):
    """BatchNorm writes its running statistics in the forward pass, before the optimiser skips anything."""
    poisoned = 3
    faulted = train(TinyRegression([list(range(6))], poisoned_steps=(poisoned,)),
                    tiny_config(tmp_path / "faulted", checkpoint_every=1))
    train(TinyRegression([[index for index in range(6) if index != poisoned]]),
          tiny_config(tmp_path / "clean", steps=5))
    with_fault, without_batch = (checkpoint_tensors(tmp_path / run / "last.pt") for run in ("faulted", "clean"))
    assert faulted["step"] == 6 and with_fault.keys() == without_batch.keys()
    assert {"model.1.running_mean", "model.1.running_var", "model.1.num_batches_tracked"} <= with_fault.keys()
    for name, tensor in with_fault.items():
        assert torch.isfinite(tensor.float()).all(), name
        assert torch.equal(tensor, without_batch[name]), name
    named = [record.getMessage() for record in caplog.records if "not finite" in record.getMessage()]
    assert named == ["rank 0, step 4: loss not finite, batch skipped; its samples: (unnamed)"]


def test_patience_bad_steps_in_a_row_stop_the_run_even_when_a_good_step_follows_in_the_window(tmp_path):
    task = TinyRegression([list(range(8))], poisoned_steps=(2, 3))
    with pytest.raises(TrainingDiverged, match="not finite for 2 steps in a row up to step 4;"):
        train(task, tiny_config(tmp_path / "run", steps=8, nan_patience=2, log_every=8))


def _diverge_with_rank_1_out_of_data(rank: int, store: str, out: str) -> None:
    """Rank 0 reads 8 batches, rank 1 only 2; rank 0's steps 3 and 4 are not finite (patience 2)."""
    join_gloo_group(rank, Path(store))
    task = TinyRegression([list(range(8)), [100, 101]], poisoned_steps=(2, 3), poisoned_rank=0)
    try:
        train(task, tiny_config(Path(out) / "run", steps=100, epochs=1, nan_patience=2))
        stopped = None
    except TrainingDiverged as error:
        stopped = str(error)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"stopped": stopped, "last_scored": task.scored_steps[-1]}))


def test_patience_stops_every_rank_at_the_same_step_when_one_is_out_of_data(tmp_path):
    run_processes(_diverge_with_rank_1_out_of_data, (str(tmp_path / "store"), str(tmp_path)), WORLD_SIZE)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    assert ranks[0] == ranks[1], "both ranks stop with the same message after the same step"
    assert "not finite for 2 steps in a row up to step 4;" in ranks[0]["stopped"]
    assert ranks[0]["last_scored"] == 3, "stopped before scoring step 5, once both had seen step 4 fail"


def test_a_skipped_last_step_leaves_the_last_good_checkpoint(tmp_path, caplog):
    run = tmp_path / "run"
    train(TinyRegression([list(range(5))], poisoned_steps=(4,)), tiny_config(run, steps=5, checkpoint_every=2))
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 4
    assert sorted(path.name for path in run.iterdir()) == ["config.json", "last.pt", "log.jsonl", "tensorboard"]
    skipped = [record.getMessage() for record in caplog.records if "the last, was skipped" in record.getMessage()]
    assert skipped == [f"step 5, the last, was skipped (not finite), so no checkpoint follows it: "
                       f"{run / 'last.pt'} stays at step 4"]


def _record_gains_uninterrupted_and_resumed(rank: int, work: str) -> None:
    """Train 6 steps in one go, then 3 steps and a resume to 6; write each run's per-step gains."""
    gains = {}
    for name, steps, resume in (("uninterrupted", 6, False), ("first_half", 3, False), ("resumed", 6, True)):
        join_gloo_group(rank, Path(work) / f"store_{name}")
        task = TinyRegression(augment=True)
        run = "interrupted" if name != "uninterrupted" else name
        train(task, tiny_config(Path(work) / run, steps=steps, resume=resume))
        gains[name] = task.gains
    Path(work, f"rank{rank}.json").write_text(json.dumps(gains))


def test_a_resumed_two_rank_run_draws_each_ranks_own_augmentations(tmp_path):
    run_processes(_record_gains_uninterrupted_and_resumed, (str(tmp_path),), WORLD_SIZE)
    by_rank = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    for rank, gains in enumerate(by_rank):
        assert sorted(gains["resumed"]) == ["3", "4", "5"]
        assert gains["resumed"] == {step: gains["uninterrupted"][step] for step in ("3", "4", "5")}, rank
    assert by_rank[0]["uninterrupted"] != by_rank[1]["uninterrupted"], "each rank draws its own stream"


def test_an_error_in_step_50_of_a_compiled_run_is_raised_as_itself(tmp_path, caplog):
    """Whether or not torch.compile runs on this machine, only its first call may fall back to eager."""
    task = TinyRegression(fail_at_step=49)
    with pytest.raises(RuntimeError, match=r"out of memory \(injected in step 50\)") as raised:
        train(task, tiny_config(tmp_path / "run", steps=60, compile=True))
    assert raised.value.__notes__ == ["tiny-regression: raised in step 50"]
    assert task.scored_steps[-2:] == [48, 49], "not retried, eagerly or otherwise"
    assert not (tmp_path / "run" / "last.pt").exists()


class NoisyFlow(Task):
    """A one-layer flow net scored by the pretraining loss; step `poisoned_step` predicts one NaN flow pixel."""
    kind = "noisy-flow"
    batch_size = 2
    source = "the test's images"

    def __init__(self, poisoned_step: int):
        self.poisoned_step = poisoned_step

    def build(self, runtime, resuming):
        model = torch.nn.Conv2d(6, 2, 3, padding=1)
        model.register_forward_hook(self._poison)
        return model

    def _poison(self, module, inputs, flow_px):
        if self.step == self.poisoned_step:
            flow_px = flow_px.clone()
            flow_px[0, :, 3, 5] = float("nan")
            return flow_px
        return None

    def optimiser(self, model, runtime):
        optimiser = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
        return optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0)

    def batches(self, runtime, step, epoch):
        frames = torch.rand(4, 2, 2, 3, 8, 16, generator=torch.Generator().manual_seed(0))  # batch, frame, sample
        return [(frames[i, 0], frames[i, 1]) for i in range(4)]

    def samples_in(self, batch):
        return len(batch[0])

    def blank_batch(self):
        return torch.zeros(2, 3, 8, 16), torch.zeros(2, 3, 8, 16)

    def losses(self, model, batch, runtime):
        target, source = batch
        return {"loss": flow_loss(target, source, {0: model(torch.cat([target, source], dim=1))}, None)["loss"]}


def _train_through_nan_sampling_points(index: int, out: str) -> None:
    """In a process of its own: a NaN flow through the flow loss in the loop, and a NaN depth through the
    depth loss's warp, both backpropagated."""
    torch.set_num_threads(1)
    result = train(NoisyFlow(poisoned_step=1), tiny_config(Path(out) / "run", steps=4))
    depth = torch.ones(1, 1, 8, 16)
    depth[0, 0, 2, 2] = float("nan")
    source, eye = torch.rand(1, 3, 8, 16, requires_grad=True), torch.eye(4).unsqueeze(0)
    K = torch.tensor([[[8.0, 0, 8, 0], [0, 8, 4, 0], [0, 0, 1, 0], [0, 0, 0, 1]]])
    warped = warp_source(source, depth.requires_grad_(), K, torch.linalg.inv(K), eye)
    warped.nansum().backward()
    Path(out, "result.json").write_text(json.dumps({
        "samples": result["samples"], "nan_pixels": int(warped.isnan().any(1).sum()),
        "source_grad_finite": bool(torch.isfinite(source.grad).all())}))


def test_a_nan_flow_is_skipped_by_the_guard_instead_of_killing_grid_sample(tmp_path, capfd):
    """On the CPU grid_sample's backward segfaults at a NaN sampling point (torch 2.14)."""
    run_processes(_train_through_nan_sampling_points, (str(tmp_path),), 1)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result == {"samples": 3 * 2, "nan_pixels": 1, "source_grad_finite": True}
    assert "rank 0, step 2: loss not finite, batch skipped" in capfd.readouterr().err
    weights = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
