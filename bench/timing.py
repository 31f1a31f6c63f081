"""Shared by the training benchmarks: how fast a loader alone delivers samples."""
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
