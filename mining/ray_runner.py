"""Mining on Ray: each video (and then each shard) is a Ray task, on this machine or across a cluster.

Ray is optional (``pip install -e .[ray]``). Tasks run the very functions the local workers run, so the
output is the same; Ray reschedules a task whose worker process or node died (`max_retries`), and a
video whose task keeps dying is reported as failed and left for the next run. At most one video per CPU
of the cluster is in flight, so disk and memory on every node stay bounded however long the list is.

Cluster recipe: install GeoPt (and ffmpeg) on every machine, `ray start --head` on one, `ray start
--address HEAD:6379` on the others, then `geopt-mine run ... --out s3://bucket/shards --ray HEAD:6379`
from any of them. The output must be a location every node can write: a shared folder or an fsspec URL.
"""
import logging
from typing import Callable

from mining.shard_writer import ShardPlan, write_shard
from mining.store import Store

TASK_RETRIES = 3
"""Reruns of a task whose worker process (or node) died before it finished."""


def _start(address: str, local_cpus: int):
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray: pip install -e '.[ray]' (or pip install ray)") from None
    if not ray.is_initialized():
        local = address == "local"
        ray.init(address=None if local else address, num_cpus=max(1, local_cpus) if local else None,
                 include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=False)
    return ray


def ray_runner(address: str, local_cpus: int = 1):
    """A `mining.shard.Runner` that runs every item as a Ray task; 'local' starts Ray with `local_cpus`."""
    ray = _start(address, local_cpus)

    def run(work: Callable, items: list, extra: tuple, on_done: Callable, on_error: Callable) -> None:
        remote = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(work)
        in_flight = max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue, running = list(items), {}
        while queue or running:
            while queue and len(running) < in_flight:
                item = queue.pop(0)
                running[remote.remote(item, *extra)] = item
            finished, _ = ray.wait(list(running), num_returns=1)
            for ref in finished:
                item = running.pop(ref)
                try:
                    result = ray.get(ref)
                except (ray.exceptions.RayError, OSError) as error:
                    on_error(item, error)
                else:
                    on_done(item, result)

    return run


def _write_planned(plan: ShardPlan, store: Store) -> dict:
    return write_shard(store, plan)


def ray_shard_writer(run) -> Callable[[Store, list[ShardPlan]], list[dict]]:
    """`assemble_shards`'s `write_all`: every planned shard written by a Ray task under its final name."""

    def write_all(store: Store, plans: list[ShardPlan]) -> list[dict]:
        entries: dict[str, dict] = {}
        errors: list[str] = []
        run(_write_planned, plans, (store,), lambda plan, entry: entries.__setitem__(plan.name, entry),
            lambda plan, error: errors.append(f"{plan.name}: {error}"))
        if errors:
            raise RuntimeError("shards not written (rerun to retry): " + "; ".join(errors))
        return [entries[p.name] for p in plans]

    return write_all
