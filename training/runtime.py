"""Where and how a training run executes: device, precision, DDP through torchrun, seeding.

Shared by pretraining and the depth transfer. A run started by ``torchrun`` (WORLD_SIZE > 1) joins a
process group, NCCL on CUDA and gloo on the CPU, so the same code is tested with 2 CPU processes here.
Only rank 0 writes checkpoints, logs and pictures.
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
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    use_bf16 = precision == "bf16" or (precision == "auto" and torch_device.type == "cuda")
    if use_bf16 and torch_device.type == "cuda" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bfloat16: training in float32 instead")
        use_bf16 = False
    return Runtime(device=torch_device, rank=rank, world_size=world_size,
                   autocast_dtype=torch.bfloat16 if use_bf16 else None,
                   channels_last=torch_device.type == "cuda" if channels_last is None else channels_last)


def stop_runtime() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def all_ranks_agree(flag: bool, runtime: Runtime) -> bool:
    """True only if `flag` holds on every rank: ranks must skip a step together or DDP would hang."""
    if runtime.world_size == 1:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=runtime.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item())


def total_over_ranks(count: int, runtime: Runtime) -> int:
    """`count` summed over every rank (a collective: all ranks call it at the same point)."""
    if runtime.world_size == 1:
        return count
    tensor = torch.tensor([count], dtype=torch.int64, device=runtime.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return int(tensor.item())
