"""The `shard` and `run` stages: videos in a folder (or URLs) -> mined per video, in parallel -> shards.

Each video is mined by one worker (a local process, or a Ray task anywhere on a cluster) into the
staging folder of the output; videos already done there are skipped, so a killed run (SIGKILL included)
picks up where it stopped. The shards are then rebuilt from the staging folder, identical whatever the
worker count, the machines or the interruptions. The output may be a local folder or an fsspec URL.
"""
import json
import os
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from formats.files import append_jsonl
from mining.chain import ChainConfig, VideoReport, mine_video
from mining.datasets import Sequence, import_sequence
from mining.lock import exclusive_output
from mining.download import DownloadConfig, DownloadResult, download_one, read_url_list, video_files, STATUS_FILE
from formats.shard_schema import safe_video_id
from mining.shard_writer import STAGING_DIR, ShardLayout, assemble_shards
from mining.store import Store

CONFIG_FILE = "mine_config.json"

Runner = Callable[[Callable, list, tuple, Callable, Callable], None]
"""runner(work, items, extra_args, on_done, on_error): `work(item, *extra_args)` for every item, at most a
bounded number at a time; `on_done(item, result)` or `on_error(item, exception)` in this process."""


@dataclass
class ShardConfig:
    in_dir: Path = Path("downloads")
    out_dir: str | Path = Path("shards")
    """A local folder or an fsspec URL (file://, s3://bucket/prefix, ...)."""
    chain: ChainConfig = field(default_factory=ChainConfig)
    layout: ShardLayout = field(default_factory=ShardLayout)
    workers: int = 1
    """Local worker processes; with Ray and no address, the CPUs of the local Ray instance."""
    ray_address: str | None = None
    """None: local processes. 'local': a Ray instance started here. Else a cluster address (host:port)."""


@dataclass
class VideoJob:
    path: Path
    video_id: str
    source: str


def find_videos(in_dir: Path) -> list[VideoJob]:
    """Videos in `in_dir`, with the source URL from the download's provenance when there is one."""
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f"input folder not found: {in_dir}")
    jobs = []
    for path in video_files(in_dir):
        provenance = path.with_suffix(".info.json")
        source = json.loads(provenance.read_text()).get("source_url") if provenance.is_file() else None
        jobs.append(VideoJob(path, safe_video_id(path.stem), source or path.resolve().as_uri()))
    seen: dict[str, Path] = {}
    for job in jobs:
        if job.video_id in seen:
            raise ValueError(f"{job.path.name} and {seen[job.video_id].name} map to the same video id "
                             f"{job.video_id!r}; rename one")
        seen[job.video_id] = job.path
    return jobs


def _clean_staging(store: Store) -> None:
    """Remove temporaries a killed run left behind, and tars and previews whose report never got written."""
    store.remove_temporaries(STAGING_DIR)
    reports = set(store.files(STAGING_DIR, ".json"))
    for suffix in (".tar", ".preview.jpg"):
        for path in store.files(STAGING_DIR, suffix):
            if path.removesuffix(suffix) + ".json" not in reports:
                store.remove(path)


def _staged(store: Store, video_id: str, mine: Callable[[Path], VideoReport]) -> VideoReport:
    """Run `mine(staging folder)` for one video so that its tar and report land in the store's staging
    folder: directly on a local store, else mined in a scratch folder and published, report last."""
    if store.local is not None:
        return mine(store.local / STAGING_DIR)
    with tempfile.TemporaryDirectory(prefix="geopt-mine-") as scratch:
        report = mine(Path(scratch))
        for name in (f"{video_id}.tar", f"{video_id}.preview.jpg"):
            if (Path(scratch) / name).is_file():
                store.put(Path(scratch) / name, f"{STAGING_DIR}/{name}")
        store.put(Path(scratch) / f"{video_id}.json", f"{STAGING_DIR}/{video_id}.json")
    return report


def _mine_job(job: VideoJob, store: Store, chain: ChainConfig,
              on_frame: Callable[[int], None] | None = None) -> VideoReport:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return _staged(store, job.video_id, lambda staging: mine_video(job.path, job.video_id, job.source, staging, chain,
                                                                   on_frame))


def _download_and_mine(url: str, download: DownloadConfig, store: Store, chain: ChainConfig,
                       keep_videos: bool) -> tuple[DownloadResult, VideoReport | None]:
    download.out_dir.mkdir(parents=True, exist_ok=True)
    result = download_one(url, download)
    done = f"{STAGING_DIR}/{result.video_id}.json"
    if result.status != "failed" and store.exists(done):
        report = VideoReport.from_json(store.read_bytes(done))
    elif result.status == "failed" or not result.path:
        return result, None
    else:
        report = _mine_job(VideoJob(Path(result.path), result.video_id, url), store, chain)
    if result.path and not keep_videos:
        Path(result.path).unlink(missing_ok=True)
    return result, report


def local_runner(workers: int) -> Runner:
    """Items in `workers` processes, at most `workers` in flight (bounded memory); in this process when 1."""

    def run(work: Callable, items: list, extra: tuple, on_done: Callable, on_error: Callable) -> None:
        if workers <= 1:
            for item in items:
                on_done(item, work(item, *extra))
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            queue, running = list(items), {}
            while queue or running:
                while queue and len(running) < workers:
                    item = queue.pop(0)
                    running[pool.submit(work, item, *extra)] = item
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    on_done(running.pop(future), future.result())

    return run


def _runner(config: ShardConfig) -> Runner:
    if config.ray_address is None:
        return local_runner(config.workers)
    from mining.ray_runner import ray_runner
    return ray_runner(config.ray_address, config.workers)


def _shard_writer(config: ShardConfig):
    if config.ray_address is None:
        return None
    from mining.ray_runner import ray_shard_writer
    return ray_shard_writer(_runner(config))


def _status_row(report: VideoReport, status: str, reason: str) -> dict:
    return {"video_id": report.video_id, "source": report.source, "status": status, "reason": reason,
            "samples": report.samples, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _failed(video_id: str, source: str, error: Exception) -> VideoReport:
    """The report of a video whose worker died for good (not staged: a rerun tries it again)."""
    reason = f"worker failed: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
    return VideoReport(video_id=video_id, source=source, status="failed", reason=reason)


def _mine_pending(jobs: list, work: Callable, settings: tuple, config: ShardConfig,
                  on_video: Callable[[VideoReport, bool], None] | None,
                  on_frame: Callable[[int], None] | None) -> None:
    """`work(job, store, *settings, on_frame=None) -> VideoReport` for every job (anything with a
    `video_id`) not yet done in the staging folder; a status row for each."""
    store = Store(config.out_dir)
    _clean_staging(store)

    def record(report: VideoReport, done_before: bool) -> None:
        store.append_row(STATUS_FILE, _status_row(report, "skipped" if done_before else report.status,
                                                  "already mined" if done_before else report.reason))
        if on_video:
            on_video(report, done_before)

    todo = []
    for job in jobs:
        done = f"{STAGING_DIR}/{job.video_id}.json"
        if store.exists(done):
            record(VideoReport.from_json(store.read_bytes(done)), True)
        else:
            todo.append(job)
    if config.workers <= 1 and config.ray_address is None and on_frame is not None:
        for job in todo:
            record(work(job, store, *settings, on_frame=on_frame), False)
    else:
        _runner(config)(work, todo, (store, *settings), lambda job, report: record(report, False),
                        lambda job, error: record(_failed(job.video_id, getattr(job, "source", ""), error), False))
    _clean_staging(store)


def shard_videos(config: ShardConfig, on_video: Callable[[VideoReport, bool], None] | None = None,
                 on_frame: Callable[[int], None] | None = None) -> dict:
    """Mine every video of `config.in_dir` not yet done, then rebuild the shards. Returns manifest and stats.

    `on_video(report, was_done_before)` is called per video; `on_frame(n)` per decoded frame (one local worker).
    """
    jobs = find_videos(config.in_dir)
    store = Store(config.out_dir)
    with exclusive_output(store.url, store.local):
        store.write_json(CONFIG_FILE, config)
        _mine_pending(jobs, _mine_job, (config.chain,), config, on_video, on_frame)
        return assemble_shards(store, config.layout, _shard_writer(config))


def import_sequences(sequences: list[Sequence], config: ShardConfig, filter_motion: bool,
                     on_video: Callable[[VideoReport, bool], None] | None = None,
                     on_frame: Callable[[int], None] | None = None) -> dict:
    """`geopt-mine import`: dataset sequences through the same chain and shard writer as videos."""
    jobs = [_SequenceJob(seq.sequence_id, seq) for seq in sequences]
    store = Store(config.out_dir)
    with exclusive_output(store.url, store.local):
        store.write_json(CONFIG_FILE, {"import": config, "filter_motion": filter_motion})
        _mine_pending(jobs, _import_job, (config.chain, filter_motion), config, on_video, on_frame)
        return assemble_shards(store, config.layout, _shard_writer(config))


@dataclass
class _SequenceJob:
    video_id: str
    sequence: Sequence


def _import_job(job: _SequenceJob, store: Store, chain: ChainConfig, filter_motion: bool,
                on_frame: Callable[[int], None] | None = None) -> VideoReport:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return _staged(store, job.video_id,
                   lambda staging: import_sequence(job.sequence, staging, chain, filter_motion, on_frame))


def download_and_shard(download: DownloadConfig, config: ShardConfig, keep_videos: bool = False,
                       on_url: Callable[[DownloadResult, VideoReport | None], None] | None = None) -> dict:
    """`geopt-mine run`: each URL downloaded then mined at once by a worker, the video deleted after use
    unless `keep_videos`; then the shards are rebuilt. Status rows go to both status files (the download
    one on this machine; with Ray the videos themselves are fetched on the machine that mines them)."""
    store = Store(config.out_dir)
    with exclusive_output(store.url, store.local):
        return _download_and_shard(store, download, config, keep_videos, on_url)


def _download_and_shard(store: Store, download: DownloadConfig, config: ShardConfig, keep_videos: bool,
                        on_url: Callable[[DownloadResult, VideoReport | None], None] | None) -> dict:
    _clean_staging(store)
    store.write_json(CONFIG_FILE, {"download": download, "shard": config})
    download.out_dir.mkdir(parents=True, exist_ok=True)

    def done(url: str, outcome: tuple[DownloadResult, VideoReport | None]) -> None:
        result, report = outcome
        append_jsonl(download.out_dir / STATUS_FILE, {**vars(result), "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        if report is not None:
            store.append_row(STATUS_FILE, {**_status_row(report, report.status, report.reason), "source": url})
        if on_url:
            on_url(result, report)

    def failed(url: str, error: Exception) -> None:
        report = _failed("", url, error)
        done(url, (DownloadResult(url, "failed", report.reason), None))

    urls = read_url_list(download.url_list)
    _runner(config)(_download_and_mine, urls, (download, store, config.chain, keep_videos), done, failed)
    _clean_staging(store)
    return assemble_shards(store, config.layout, _shard_writer(config))
