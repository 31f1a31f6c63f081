"""Stage 8, shard writer: per-video staging tars -> numbered WebDataset shards, manifest and stats.

Shards are rebuilt from the staging folder in a fixed order (videos sorted by id, samples in stream
order), so the result depends only on which videos are mined, not on worker count, timing or how many
times the run was interrupted. Validation takes whole videos (chosen by a hash of their id), so no scene
leaks between train and val. Every shard is written to a temporary name and renamed.
"""
import hashlib
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from geopt_io import atomic_path, write_json_atomic
from mining.chain import VideoReport
from mining.schema import write_sample

STAGING_DIR = ".videos"
VAL_DIR = "val"
MANIFEST_FILE = "manifest.json"
STATS_FILE = "stats.json"


@dataclass(frozen=True)
class ShardLayout:
    shard_size_mb: float = 256.0
    """Target size of a shard; a shard is closed once it reaches this."""
    val_fraction: float = 0.05
    """Share of videos (at least one when there are two or more) held out in shards/val/."""


def staged_samples(tar_path: Path) -> Iterator[dict]:
    """Samples of a staging tar in stored order, as dicts of member suffix -> bytes plus '__key__'."""
    current: dict = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            key, _, suffix = member.name.partition(".")
            if current and current["__key__"] != key:
                yield current
                current = {}
            current["__key__"] = key
            current[suffix] = tar.extractfile(member).read()
    if current:
        yield current


def split_videos(video_ids: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train ids, val ids), each sorted; val = the ids first in sha1 order, a stable pseudo-random pick."""
    ids = sorted(video_ids)
    val_count = 0 if val_fraction <= 0 or len(ids) < 2 else max(1, round(len(ids) * val_fraction))
    val = set(sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())[:val_count])
    return [i for i in ids if i not in val], [i for i in ids if i in val]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_split(video_ids: list[str], staging: Path, out_dir: Path, shard_bytes: float, prefix: str) -> list[dict]:
    """Write shards 0000.tar, 0001.tar, ... of the given videos into `out_dir`; remove stale higher numbers."""
    shards: list[dict] = []
    samples = (s for vid in video_ids for s in staged_samples(staging / f"{vid}.tar"))
    pending = next(samples, None)
    while pending is not None:
        path = out_dir / f"{len(shards):04d}.tar"
        entry = {"name": prefix + path.name, "samples": 0, "videos": []}
        with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
            size = 0
            while pending is not None and (size < shard_bytes or entry["samples"] == 0):
                size += write_sample(tar, pending)
                entry["samples"] += 1
                video = pending["__key__"].rsplit("_", 1)[0]
                if video not in entry["videos"]:
                    entry["videos"].append(video)
                pending = next(samples, None)
        entry["bytes"] = path.stat().st_size
        entry["sha256"] = _sha256(path)
        shards.append(entry)
    for stale in sorted(out_dir.glob("[0-9][0-9][0-9][0-9].tar"))[len(shards):]:
        stale.unlink()
    return shards


def assemble_shards(out_dir: Path, layout: ShardLayout = ShardLayout()) -> dict:
    """Build shards/, shards/val/, manifest.json and stats.json from every finished video in the staging folder."""
    out_dir = Path(out_dir)
    staging = out_dir / STAGING_DIR
    reports = {p.stem: VideoReport.load(p) for p in sorted(staging.glob("*.json"))}
    usable = [vid for vid, r in reports.items() if r.status == "ok"]
    train_ids, val_ids = split_videos(usable, layout.val_fraction)
    shard_bytes = layout.shard_size_mb * 1e6
    (out_dir / VAL_DIR).mkdir(parents=True, exist_ok=True)
    train = _write_split(train_ids, staging, out_dir, shard_bytes, prefix="")
    val = _write_split(val_ids, staging, out_dir / VAL_DIR, shard_bytes, prefix=f"{VAL_DIR}/")
    manifest = {
        "schema": "geopt frames: <key>.0.jpg ... <key>.<n-1>.jpg + <key>.json (see mining/schema.py)",
        "train": train, "val": val,
        "videos": {vid: {"split": "val" if vid in val_ids else "train", "samples": reports[vid].samples,
                         "source": reports[vid].source} for vid in usable},
    }
    totals = {"videos": len(reports), "videos_with_samples": len(usable),
              "videos_failed": sum(r.status == "failed" for r in reports.values()),
              "frames_decoded": sum(r.frames_decoded for r in reports.values()),
              "frames_kept": sum(r.frames_kept for r in reports.values()),
              "samples": sum(r.samples for r in reports.values()),
              "source_minutes": round(sum(r.duration_s for r in reports.values() if r.status != "failed") / 60, 3)}
    dropped: dict[str, int] = {}
    for r in reports.values():
        for reason, count in r.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + count
    totals["dropped"] = dict(sorted(dropped.items()))
    stats = {"totals": totals, "videos": {vid: vars(r) for vid, r in reports.items()}}
    write_json_atomic(out_dir / STATS_FILE, stats)
    write_json_atomic(out_dir / MANIFEST_FILE, manifest)
    return {"manifest": manifest, "stats": stats}
