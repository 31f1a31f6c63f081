"""Stage 8, shard writer: per-video staging tars -> numbered WebDataset shards, manifest and stats.

Shards are planned from the staging reports in a fixed order (videos sorted by id, samples in stream
order, a shard closed once its payload reaches the target size), so the result depends only on which
videos are mined, not on worker count, machines, timing or how many times the run was interrupted.
Re-uploads of a drive already mined (`mining.fingerprint`, videos compared in id order) are left out.
Each planned shard is then written on its own (`write_shard`), by this process or by Ray tasks on a
cluster, always under its final deterministic name. Validation takes whole videos (chosen by a hash of
their id), so no scene leaks between train and val. Every file is published whole (see `mining.store`).
"""
import hashlib
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from formats.files import atomic_path
from formats.shard_schema import decode_sample_frames, encode_jpeg, write_sample
from mining.chain import VideoReport
from mining.fingerprint import Fingerprint, duplicates
from mining.report import render_report
from mining.store import Store

STAGING_DIR = ".videos"
VAL_DIR = "val"
MANIFEST_FILE = "manifest.json"
STATS_FILE = "stats.json"
REPORT_FILE = "report.html"


@dataclass(frozen=True)
class ShardLayout:
    shard_size_mb: float = 256.0
    """Target size of a shard; a shard is closed once it reaches this."""
    val_fraction: float = 0.05
    """Share of videos (at least one when there are two or more) held out in shards/val/."""


@dataclass(frozen=True)
class ShardPlan:
    name: str
    """Path of the shard in the output, e.g. '0003.tar' or 'val/0000.tar'."""
    parts: tuple[tuple[str, int, int], ...]
    """(video id, index of its first sample, sample count) for each video the shard takes samples from."""


def staged_samples(tar_file, first: int = 0, count: int | None = None) -> Iterator[dict]:
    """Samples `first`..`first + count` of a staging tar (a path or an open binary file) in stored order,
    as dicts of member suffix -> bytes plus '__key__'. Earlier samples are skipped without reading them."""
    current: dict = {}
    index = -1
    opened = tarfile.open(tar_file) if isinstance(tar_file, (str, Path)) else tarfile.open(fileobj=tar_file)
    with opened as tar:
        for member in tar:
            key, _, suffix = member.name.partition(".")
            if key != current.get("__key__"):
                if current and index >= first:
                    yield current
                index += 1
                current = {"__key__": key}
                if count is not None and index >= first + count:
                    return
            if index >= first:
                current[suffix] = tar.extractfile(member).read()
    if current and index >= first:
        yield current


def split_videos(video_ids: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train ids, val ids), each sorted; val = the ids first in sha1 order, a stable pseudo-random pick."""
    ids = sorted(video_ids)
    val_count = 0 if val_fraction <= 0 or len(ids) < 2 else max(1, round(len(ids) * val_fraction))
    val = set(sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())[:val_count])
    return [i for i in ids if i not in val], [i for i in ids if i in val]


def plan_shards(video_ids: list[str], sample_bytes: dict[str, list[int]], shard_bytes: float,
                folder: str = "") -> list[ShardPlan]:
    """Cut the videos' samples, in order, into shards of at least `shard_bytes` payload (the last may be less)."""
    plans: list[ShardPlan] = []
    parts: list[list] = []
    size = 0

    def close():
        nonlocal parts, size
        plans.append(ShardPlan(f"{folder}{len(plans):04d}.tar", tuple(tuple(p) for p in parts)))
        parts, size = [], 0

    for video in video_ids:
        for index, payload in enumerate(sample_bytes[video]):
            if parts and parts[-1][0] == video:
                parts[-1][2] += 1
            else:
                parts.append([video, index, 1])
            size += payload
            if size >= shard_bytes:
                close()
    if parts:
        close()
    return plans


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shard(store: Store, plan: ShardPlan) -> dict:
    """Write one planned shard from the staging tars into `store`; its manifest entry."""

    def fill(path: Path) -> None:
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
            for video, first, count in plan.parts:
                with store.open(f"{STAGING_DIR}/{video}.tar") as staged:
                    for sample in staged_samples(staged, first, count):
                        write_sample(tar, sample)

    entry = {"name": plan.name, "samples": sum(p[2] for p in plan.parts), "videos": [p[0] for p in plan.parts]}
    if store.local is not None:
        with atomic_path(store.local / plan.name) as tmp:
            fill(tmp)
            entry["bytes"], entry["sha256"] = tmp.stat().st_size, _sha256(tmp)
        return entry
    with tempfile.TemporaryDirectory(prefix="geopt-shard-") as scratch:
        local = Path(scratch) / "shard.tar"
        fill(local)
        entry["bytes"], entry["sha256"] = local.stat().st_size, _sha256(local)
        store.put(local, plan.name)
    return entry


def _sample_sizes(store: Store, report: VideoReport) -> list[int]:
    """Payload bytes per sample; read from the staging tar for reports written before they were recorded."""
    if report.sample_bytes or not report.samples:
        return report.sample_bytes
    with store.open(f"{STAGING_DIR}/{report.video_id}.tar") as staged:
        return [sum(len(v) for k, v in s.items() if k != "__key__") for s in staged_samples(staged)]


def _thumbnails(store: Store, report: VideoReport, count: int = 8, width_px: int = 160) -> list[bytes]:
    """JPEGs of the middle frame of up to `count` samples spread over the video, `width_px` wide."""
    if not report.samples:
        return []
    wanted = {round(i * (report.samples - 1) / max(1, count - 1)) for i in range(min(count, report.samples))}
    thumbnails = []
    with store.open(f"{STAGING_DIR}/{report.video_id}.tar") as staged:
        for index, sample in enumerate(staged_samples(staged)):
            if index in wanted:
                frames = decode_sample_frames(sample, minimum=1)
                frame = frames[len(frames) // 2]
                size = (width_px, max(2, round(frame.shape[0] * width_px / frame.shape[1])))
                thumbnails.append(encode_jpeg(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), 80))
    return thumbnails


def _report_page(store: Store, reports: dict[str, VideoReport], per_video: dict, totals: dict) -> str:
    """report.html (`mining.report`) from the staging folder: thumbnails of kept frames, the first frame
    with the crop and the overlays drawn (its coordinates scaled from the working size to the preview's)."""
    videos = []
    for vid, report in reports.items():
        stats = per_video[vid]
        preview_name = f"{STAGING_DIR}/{vid}.preview.jpg"
        preview = store.read_bytes(preview_name) if store.exists(preview_name) else None
        scale = 1.0
        if preview is not None and report.working_size:
            scale = cv2.imdecode(np.frombuffer(preview, np.uint8), cv2.IMREAD_GRAYSCALE).shape[1] / report.working_size[0]
        scaled = lambda box: [round(v * scale) for v in box]
        videos.append({**stats, "fps_out": report.fps_out or 10.0, "thumbnails": _thumbnails(store, report)
                       if stats["status"] in ("ok", "partial") else [], "preview": preview,
                       "crop_box": scaled(report.crop_box) if report.crop_box else None,
                       "static_regions": [{**r, "box": scaled(r["box"])} for r in report.static_regions],
                       "duplicate_of": stats.get("duplicate_of")})
    return render_report(videos, totals, f"GeoPt mining report: {store.url}")


def assemble_shards(output: Store | str | Path, layout: ShardLayout = ShardLayout(),
                    write_all: Callable[[Store, list[ShardPlan]], Iterable[dict]] | None = None) -> dict:
    """Build shards, val/ shards, manifest.json and stats.json from every finished video in the staging
    folder. `write_all(store, plans)` writes the planned shards and returns their entries in order
    (default: one after the other here; `mining.ray_runner` writes them as Ray tasks)."""
    store = output if isinstance(output, Store) else Store(output)
    reports = {Path(p).stem: VideoReport.from_json(store.read_bytes(p))
               for p in store.files(STAGING_DIR, ".json")}
    mined = [vid for vid, r in reports.items() if r.status in ("ok", "partial")]
    copies = duplicates([(vid, Fingerprint.from_json(reports[vid].fingerprint)) for vid in mined
                         if reports[vid].fingerprint])
    usable = [vid for vid in mined if vid not in copies]
    train_ids, val_ids = split_videos(usable, layout.val_fraction)
    sizes = {vid: _sample_sizes(store, reports[vid]) for vid in usable}
    shard_bytes = layout.shard_size_mb * 1e6
    plans = plan_shards(train_ids, sizes, shard_bytes) + plan_shards(val_ids, sizes, shard_bytes, f"{VAL_DIR}/")
    entries = list((write_all or (lambda s, ps: [write_shard(s, p) for p in ps]))(store, plans))
    planned = {p.name for p in plans}
    for folder in ("", VAL_DIR):
        for name in store.files(folder, ".tar"):
            if Path(name).stem.isdigit() and len(Path(name).stem) == 4 and name not in planned:
                store.remove(name)
    manifest = {
        "schema": "geopt frames: <key>.0.jpg ... <key>.<n-1>.jpg + <key>.json (see formats/shard_schema.py)",
        "train": [e for e in entries if not e["name"].startswith(f"{VAL_DIR}/")],
        "val": [e for e in entries if e["name"].startswith(f"{VAL_DIR}/")],
        "videos": {vid: {"split": "val" if vid in val_ids else "train", "samples": reports[vid].samples,
                         "source": reports[vid].source} for vid in usable},
    }
    totals = {"videos": len(reports), "videos_with_samples": len(usable),
              "videos_failed": sum(r.status == "failed" for r in reports.values()),
              "frames_decoded": sum(r.frames_decoded for r in reports.values()),
              "frames_kept": sum(reports[vid].frames_kept for vid in usable),
              "samples": sum(reports[vid].samples for vid in usable),
              "source_minutes": round(sum(r.duration_s for r in reports.values() if r.status != "failed") / 60, 3)}
    totals["samples_per_minute"] = round(totals["samples"] / totals["source_minutes"], 1) if totals["source_minutes"] else 0.0
    dropped: dict[str, int] = {}
    for r in reports.values():
        for reason, count in r.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + count
    totals["dropped"] = dict(sorted(dropped.items()))
    per_video = {vid: {k: v for k, v in vars(r).items() if k not in ("sample_bytes", "fingerprint")}
                 for vid, r in reports.items()}
    for copy, first in copies.items():
        per_video[copy].update(status="duplicate", duplicate_of=first, reason=f"the same drive as {first} (a "
                               f"re-upload); its {reports[copy].samples} samples are left out")
    totals["by_status"] = dict(sorted(Counter(v["status"] for v in per_video.values()).items()))
    stats = {"totals": totals, "videos": per_video}
    store.write_json(STATS_FILE, stats)
    store.write_json(MANIFEST_FILE, manifest)
    store.write_bytes(REPORT_FILE, _report_page(store, reports, per_video, totals).encode())
    return {"manifest": manifest, "stats": stats}
