"""Where and how a training run executes: device, precision, DDP through torchrun, seeding.

Shared by pretraining and the depth transfer. A run started by ``torchrun`` (WORLD_SIZE > 1) joins a
process group, NCCL on CUDA and gloo on the CPU, so the same code is tested with 2 CPU processes here,
and a second, gloo group for what the hosts exchange (`Runtime.host_group`). Only rank 0 writes
checkpoints, logs and pictures.
"""
import contextlib
import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int
    world_size: int
    autocast_dtype: torch.dtype | None
    """bf16 on CUDA by default; None runs in float32."""
    channels_last: bool
    host_group: dist.ProcessGroup | None = None
    """Under DDP a gloo group over the same ranks for facts the host holds (sample counts, RNG states): its
    collectives take CPU tensors, so they never wait for the GPU as NCCL's would. None in one process."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def start_runtime(device: str = "auto", precision: str = "auto", channels_last: bool | None = None) -> Runtime:
    """Pick the device, join a torchrun process group when there is one, choose precision and layout.

    `precision`: 'auto' (bf16 autocast on CUDA, float32 on CPU), 'bf16' or 'fp32'.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    host_group = dist.new_group(backend="gloo") if world_size > 1 else None
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    use_bf16 = precision == "bf16" or (precision == "auto" and torch_device.type == "cuda")
    if use_bf16 and torch_device.type == "cuda" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bfloat16: training in float32 instead")
        use_bf16 = False
    return Runtime(device=torch_device, rank=rank, world_size=world_size,
                   autocast_dtype=torch.bfloat16 if use_bf16 else None,
                   channels_last=torch_device.type == "cuda" if channels_last is None else channels_last,
                   host_group=host_group)


def stop_runtime() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_for(*keys: int) -> int:
    """One seed from several non-negative integers, e.g. (seed, rank, step): another stream for each."""
    return int(np.random.SeedSequence(keys).generate_state(1)[0])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def sum_over_ranks(counts: tuple[int, ...], runtime: Runtime) -> tuple[int, ...]:
    """Each of `counts` summed over every rank (a collective: all ranks call it at the same point). It runs
    on the host group, so reading the sums waits for the other processes but never for the GPU."""
    if runtime.world_size == 1:
        return counts
    tensor = torch.tensor(counts, dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=runtime.host_group)
    return tuple(tensor.tolist())


def gather_on_main(item, runtime: Runtime) -> list | None:
    """Every rank's `item` (picklable) in rank order on rank 0, None on the others (a collective)."""
    if runtime.world_size == 1:
        return [item]
    items = [None] * runtime.world_size if runtime.is_main else None
    dist.gather_object(item, items, dst=0, group=runtime.host_group)
    return items
