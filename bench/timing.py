"""Shared by the training benchmarks: loader rate, the device's matrix-product ceiling, FLOPs of a step,
peak memory."""
import time


def loader_samples_per_s(batches, batch_size: int, count: int = 20) -> float:
    """Samples per second over `count` batches of the iterator `batches`, after one warm-up batch
    (worker start-up is not what is being measured)."""
    batches = iter(batches)
    next(batches)
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    return count * batch_size / (time.perf_counter() - start)


def matmul_peak_tflops(device, size: int = 4096, repeats: int = 10) -> float:
    """TFLOP/s of a plain square matrix product on `device` (bf16 on CUDA, float32 on the CPU, the
    precision training runs in there): the ceiling that model FLOP utilisation is measured against."""
    import torch

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = size if device.type == "cuda" else 1024
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def step_flops(step) -> float:
    """FLOPs of one call of `step()` (forward and backward), counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device) -> float:
    """Peak GPU memory allocated so far on CUDA; the process's peak resident memory on the CPU."""
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_peak_memory(device) -> None:
    """Start a new GPU memory peak (the CPU's resident peak cannot be reset: it covers the process)."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def steady_samples_per_s(log_jsonl, skip: int, steps: int, batch: int) -> float:
    """Samples/s between steps `skip` and `steps` of a training run, from the cumulative samples_per_s the
    loop logs (both steps must have been logged): start-up before `skip` is left out."""
    import json
    from pathlib import Path

    rows = {row["step"]: row for row in map(json.loads, Path(log_jsonl).read_text().splitlines())
            if "samples_per_s" in row}
    elapsed_s = {s: s * batch / rows[s]["samples_per_s"] for s in (skip, steps)}
    return (steps - skip) * batch / (elapsed_s[steps] - elapsed_s[skip])
