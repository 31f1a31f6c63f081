"""Checkpoints that cannot run code: plain data and tensors, written atomically, read with
``torch.load(weights_only=True)``.

A checkpoint is a dict: 'format' (`FORMAT`), 'kind' ('flow-pretraining' or 'depth-transfer'), 'step',
'epoch', 'model', 'optimiser' and 'scheduler' state dicts, 'rng' (`rng_state` of each rank, in rank order),
'config' (the run's resolved config as JSON-like data) and the facts its readers need (architecture, sizes,
mode).

Older GeoPt versions pickled configs (paths) and NumPy's RNG state, which only a full unpickler reads,
and a full unpickler runs whatever a crafted file tells it to. Such files are refused with a one-line
reason; `convert_legacy_checkpoint` (``geopt-train convert-checkpoint --trust-pickle``) turns one that
the user made themselves into today's format.
"""
import random
import re
from pathlib import Path

import numpy as np
import torch

from formats.files import atomic_path, to_jsonable

FORMAT = "geopt-checkpoint/2"
PRETRAINING, TRANSFER = "flow-pretraining", "depth-transfer"


class CheckpointError(ValueError):
    """A file that is not a GeoPt checkpoint this version can read safely; the message says why."""


def rng_state() -> dict:
    """Python's, NumPy's and torch's (and CUDA's) random states as plain data and tensors."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rank_rng_state(saved: list | dict, rank: int) -> dict | None:
    """`rank`'s RNG state from a checkpoint's 'rng': a list by rank, or a single dict in checkpoints written
    before each rank's state was kept (rank 0's). None where the checkpoint holds none for `rank`."""
    if isinstance(saved, dict):
        return saved if rank == 0 else None
    return saved[rank] if rank < len(saved) else None


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save through a temporary name: a checkpoint on disk is always whole."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A GeoPt checkpoint, read without running any code it may hold; FileNotFoundError when missing,
    CheckpointError (one line naming the file and the reason) for anything else that is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several kinds for files that are not its format
        found = re.search(r"GLOBAL (\S+)", str(error))
        if found:
            raise CheckpointError(
                f"{path} holds pickled Python objects ({found.group(1)}), which could run code, so it is not "
                "loaded. If an older GeoPt wrote it and you trust it: geopt-train convert-checkpoint "
                f"--trust-pickle {path} NEW.pt") from None
        raise CheckpointError(f"{path} is not a GeoPt checkpoint (torch cannot read it)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise CheckpointError(f"{path} is not a GeoPt checkpoint (no {FORMAT} model state in it)")
    return state


def convert_legacy_checkpoint(old_path: Path, new_path: Path) -> dict:
    """Read a checkpoint of an older GeoPt with the full unpickler (only for files the user trusts: this
    runs any code the file holds) and write it in today's format. Returns the converted state."""
    old = torch.load(Path(old_path), map_location="cpu", weights_only=False)
    if not isinstance(old, dict) or "model" not in old:
        raise CheckpointError(f"{old_path} is not a GeoPt checkpoint (no model state in it)")
    state = {key: value for key, value in old.items() if key != "format"}
    state["config"] = to_jsonable(old.get("config", {}))
    state.setdefault("kind", PRETRAINING if "motion_dim" in old else TRANSFER)
    if state["kind"] == PRETRAINING:  # today's pretraining checkpoints state their size beside the config
        data = state["config"].get("data", {})
        state.setdefault("width_px", data.get("width_px"))
        state.setdefault("height_px", data.get("height_px"))
    rng = old.get("rng")
    if rng is not None and not isinstance(rng.get("numpy"), dict):
        name, keys, position, has_gauss, cached_gaussian = rng["numpy"]
        rng = {**rng, "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
                                "position": int(position), "has_gauss": int(has_gauss),
                                "cached_gaussian": float(cached_gaussian)}}
        state["rng"] = rng
    save_checkpoint(new_path, state)
    return load_checkpoint(new_path)
