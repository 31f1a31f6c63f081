"""Several processes: exact epochs split the shards between ranks and loader workers so that every sample
is read once per epoch, and the pretraining loop keeps ranks with unequal shares in step."""
import json
import logging
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from formats.files import read_jsonl
from training.flow.data import DataConfig, EpochShards, train_loader
from training.flow.pretrain import PretrainConfig, PretrainTask, pretrain

ROOT = Path(__file__).resolve().parents[3]
WORLD_SIZE = 2


def _shard_and_key(name: str) -> tuple[str, str]:
    url, key = name.rsplit("#", 1)
    return Path(url).name, key


def _read_two_epochs(rank: int, shards: str, store: str, out: str) -> None:
    """One gloo rank: read 2 exact epochs with 2 loader workers, gather every rank's sample names on rank 0."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    try:
        config = DataConfig(shards=shards, width_px=64, height_px=64, batch_size=2, workers=2, shuffle_buffer=4,
                            exact_epochs=True)
        loader, _ = train_loader(config, rank=rank, world_size=WORLD_SIZE)
        epochs = [[name for batch in loader for name in batch[3]] for _ in range(2)]
        gathered = [None] * WORLD_SIZE
        dist.all_gather_object(gathered, epochs)
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def test_exact_epochs_read_every_sample_once_over_ranks_and_workers(tiny_shards, tmp_path):
    root, keys_by_shard = tiny_shards
    out = tmp_path / "names.json"
    mp.spawn(_read_two_epochs, args=(str(root), str(tmp_path / "store"), str(out)), nprocs=WORLD_SIZE)
    by_rank = json.loads(out.read_text())  # [rank][epoch] -> sample names in the order read
    every_key = sorted(k for keys in keys_by_shard.values() for k in keys)
    for epoch in range(2):
        names = [n for rank in range(WORLD_SIZE) for n in by_rank[rank][epoch]]
        assert sorted(_shard_and_key(n)[1] for n in names) == every_key, f"epoch {epoch}: none twice, none left out"
        shard_ranks = {(_shard_and_key(n)[0], rank) for rank in range(WORLD_SIZE) for n in by_rank[rank][epoch]}
        assert len(shard_ranks) == len(keys_by_shard), "each shard is read whole by one rank"
    assert by_rank[0][0] != by_rank[0][1], "each epoch shuffles anew"


def test_exact_epoch_shards_are_dealt_to_each_global_worker_once(monkeypatch):
    urls = [f"{i:04d}.tar" for i in range(10)]
    dealt = []
    for worker in range(2):
        info = SimpleNamespace(id=worker, num_workers=2)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        dealt += [[item["url"] for item in EpochShards(urls, seed=3, rank=rank, world_size=2)] for rank in range(2)]
    assert sorted(url for urls_of_worker in dealt for url in urls_of_worker) == urls
    assert all(len(urls_of_worker) in (2, 3) for urls_of_worker in dealt)
    shards = EpochShards(urls, seed=3, rank=0, world_size=2, start_epoch=5)
    assert list(shards) != list(shards), "the second pass is the next epoch, in another order"


def test_exact_epoch_pretraining_on_two_gloo_processes_covers_the_epoch_once(tiny_shards, tmp_path):
    root, keys_by_shard = tiny_shards
    spec = f"{root}/{{0000..0002}}.tar"
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD_SIZE),
               "--master_port", "29547", "-m", "training.cli", "pretrain", "--shards", spec, "--run-dir", str(run),
               "--size", "64x64", "--batch-size", "2", "--exact-epochs", "--epochs", "1", "--steps", "100",
               "--workers", "0", "--device", "cpu", "--warmup-steps", "1", "--log-every", "1", "--lr", "4e-4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    epoch_rows = [row for row in read_jsonl(run / "log.jsonl") if "epoch_samples" in row]
    epoch_size = sum(len(keys_by_shard[f"{i:04d}.tar"]) for i in range(3))
    assert [(row["epoch"], row["epoch_samples"]) for row in epoch_rows] == [(1, epoch_size)]
    shards = [f"{root}/{i:04d}.tar" for i in range(3)]
    samples_per_rank = [sum(len(keys_by_shard[Path(item["url"]).name]) for item in EpochShards(shards, 0, rank, 2))
                        for rank in range(WORLD_SIZE)]
    batches_per_rank = [math.ceil(samples / 2) for samples in samples_per_rank]
    assert batches_per_rank[0] != batches_per_rank[1], "the test needs ranks with unequal shares"
    state = torch.load(run / "last.pt", weights_only=False)
    assert state["step"] == max(batches_per_rank) and state["epoch"] == 1
    assert state["optimiser"]["param_groups"][0]["initial_lr"] == 4e-4 * (2 * WORLD_SIZE) / 8, "lr follows global batch"
    assert json.loads((run / "config.json").read_text())["global_batch"] == 2 * WORLD_SIZE


def _pretrain_with_one_poisoned_step(rank: int, shards: str, run_dir: str, port: int) -> None:
    """One rank of a 2-process run in which rank 1's first loss is NaN; rank 1 logs to RUN/rank1.log."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    logging.getLogger("training.finite_guard").addHandler(logging.FileHandler(Path(run_dir) / f"rank{rank}.log"))
    real, calls = PretrainTask.losses, []

    def poisoned(self, *args):
        out = real(self, *args)
        calls.append(1)
        if rank == 1 and len(calls) == 1:
            out["loss"] = out["loss"] * float("nan")
        return out

    PretrainTask.losses = poisoned
    data = DataConfig(shards=shards, width_px=64, height_px=64, batch_size=2, workers=0, shuffle_buffer=2,
                      exact_epochs=True)
    pretrain(PretrainConfig(data=data, run_dir=Path(run_dir), steps=100, epochs=1, warmup_steps=1, device="cpu",
                            log_every=100, image_every=100))


def test_a_non_finite_loss_on_one_rank_skips_the_step_on_all_and_names_its_samples(tiny_shards, tmp_path):
    root, keys_by_shard = tiny_shards
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "run").mkdir()
    mp.spawn(_pretrain_with_one_poisoned_step, args=(f"{root}/{{0000..0001}}.tar", str(tmp_path / "run"), port),
             nprocs=WORLD_SIZE)
    warnings = (tmp_path / "run" / "rank1.log").read_text().splitlines()
    assert len(warnings) == 1 and "rank 1, step 1: loss not finite, batch skipped" in warnings[0], warnings
    named = [_shard_and_key(name) for name in warnings[0].split("its samples: ")[1].split()]
    assert len(named) == 2 and all(key in keys_by_shard[shard] for shard, key in named)
    assert not (tmp_path / "run" / "rank0.log").read_text()
    epoch_rows = [row for row in read_jsonl(tmp_path / "run" / "log.jsonl") if "epoch_samples" in row]
    epoch_size = len(keys_by_shard["0000.tar"]) + len(keys_by_shard["0001.tar"])
    assert [row["epoch_samples"] for row in epoch_rows] == [epoch_size - 4], "both ranks skipped their first batch"
