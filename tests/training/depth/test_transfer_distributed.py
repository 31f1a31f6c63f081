"""The depth transfer on several processes: ranks read disjoint shares of each KITTI epoch, and a
2-process gloo run under torchrun trains, with rank 0 alone writing the run folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from formats.files import read_jsonl
from training.depth.data import KittiDepthDataset, LoaderConfig, training_batches
from formats.kitti import SplitEntry, read_split_file
from training.depth.predict import read_transfer_checkpoint
from training.depth.transfer import TransferConfig, build_model

ROOT = Path(__file__).resolve().parents[3]
WORLD_SIZE = 2
MASTER_PORT = 29561

WRITE_AUDIT = '''\
"""Imported by every Python process of the test's torchrun: records each write under RUN, by rank."""
import os
import sys

RUN = os.path.realpath({run!r})
RECORD = os.path.join({audit!r}, "rank" + os.environ.get("RANK", "-launcher") + ".txt")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _in_run(path):
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False
    real = os.path.realpath(os.fsdecode(path))
    return real == RUN or real.startswith(RUN + os.sep)


def _writes(event, args):
    if event == "open":
        path, mode, flags = args
        written = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & WRITE_FLAGS)
    else:
        path, written = args[1] if event in ("os.rename", "os.replace") else args[0], True
    return written and _in_run(path), path


def _record(event, args):
    if event in ("open", "os.mkdir", "os.rename", "os.replace", "os.remove"):
        written, path = _writes(event, args)
        if written:
            with open(RECORD, "a") as record:
                record.write(f"{{event}} {{os.path.relpath(os.fsdecode(path), RUN)}}\\n")


sys.addaudithook(_record)
'''
"""sitecustomize.py for the torchrun test; Python imports it at start-up when its folder is on PYTHONPATH."""


def _entry_key(entry: SplitEntry) -> str:
    return f"{entry.folder} {entry.frame_index} {entry.side}"


@pytest.fixture
def samples_name_their_entry(monkeypatch):
    """KITTI samples carry 'entry' ('<folder> <frame> <side>'), so a collated batch lists the items it holds."""
    real_load = KittiDepthDataset.load

    def load(self, index, *augmentation):
        return {**real_load(self, index, *augmentation), "entry": _entry_key(self.paths[index][0])}

    monkeypatch.setattr(KittiDepthDataset, "load", load)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_two_ranks_draw_disjoint_whole_batch_shares_of_each_kitti_epoch(small_kitti, samples_name_their_entry,
                                                                        batch_size):
    root, _ = small_kitti
    split = [_entry_key(e) for e in read_split_file(root / "splits" / "eigen_zhou" / "train_files.txt")]
    per_rank = len(split) // WORLD_SIZE // batch_size * batch_size
    assert len(split) % (WORLD_SIZE * batch_size), "the test needs a remainder for the epoch to drop"
    config = LoaderConfig(data=f"kitti:{root}", split="eigen_zhou", mode="M", width_px=64, height_px=64,
                          batch_size=batch_size, workers=0, augment=False, seed=5)
    epochs_by_rank = []
    for rank in range(WORLD_SIZE):
        batches = training_batches(config, rank=rank, world_size=WORLD_SIZE)
        drawn = [key for _ in range(2 * per_rank // batch_size) for key in next(batches)["entry"]]
        epochs_by_rank.append([drawn[:per_rank], drawn[per_rank:]])
    for epoch in range(2):
        shares = [epochs_by_rank[rank][epoch] for rank in range(WORLD_SIZE)]
        assert all(len(set(share)) == per_rank for share in shares), f"epoch {epoch}: no item twice on a rank"
        assert not set(shares[0]) & set(shares[1]), f"epoch {epoch}: no item on both ranks"
        covered = set(shares[0]) | set(shares[1])
        assert covered <= set(split) and len(split) - len(covered) < WORLD_SIZE * batch_size, \
            f"epoch {epoch}: only the remainder short of a whole batch on every rank is left out"
    assert epochs_by_rank[0][0] != epochs_by_rank[0][1], "each epoch shuffles anew"


def test_two_process_gloo_transfer_trains_and_only_rank_0_writes_the_run(small_kitti, tmp_path):
    root, _ = small_kitti
    run, audit = tmp_path / "run", tmp_path / "audit"
    audit.mkdir()
    (audit / "sitecustomize.py").write_text(WRITE_AUDIT.format(run=str(run), audit=str(audit)))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD_SIZE),
               "--master_port", str(MASTER_PORT), "-m", "training.cli", "transfer", "--data", f"kitti:{root}",
               "--split", "eigen_zhou", "--mode", "M", "--init", "scratch", "--size", "64x64", "--batch-size", "1",
               "--steps", "2", "--workers", "0", "--device", "cpu", "--log-every", "1", "--run-dir", str(run)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(audit), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    writers = sorted(p.name for p in audit.glob("rank*.txt"))
    assert writers == ["rank0.txt"], f"only rank 0 writes into the run folder, got records {writers}"
    written = {line.split()[1].split("/")[0] for line in (audit / "rank0.txt").read_text().splitlines()}
    assert {"config.json", "last.pt", "log.jsonl", "tensorboard"} <= written
    assert len(list((run / "tensorboard").iterdir())) == 1, "one event file"
    assert [row["step"] for row in read_jsonl(run / "log.jsonl")] == [1, 2]

    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == WORLD_SIZE and config["global_batch"] == WORLD_SIZE * 1
    state = read_transfer_checkpoint(run / "last.pt")
    assert state["step"] == 2 and state["mode"] == "M" and (state["width_px"], state["height_px"]) == (64, 64)
    model = build_model(TransferConfig(**state["config"]), load_init=False)
    model.load_state_dict(state["model"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
