"""The `shard` and `run` stages: videos in a folder (or URLs) -> mined per video, in parallel -> shards.

Each video is mined by one worker process into the staging folder; videos already done there are
skipped, so a killed run (SIGKILL included) picks up where it stopped. The shards are then rebuilt from
the staging folder, identical whatever the worker count or interruptions.
"""
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from geopt_io import TEMP_SUFFIX, append_jsonl, write_json_atomic
from mining.chain import ChainConfig, VideoReport, mine_video
from mining.datasets import Sequence, import_sequence
from mining.download import DownloadConfig, DownloadResult, download_one, read_url_list, video_files, STATUS_FILE
from mining.schema import safe_video_id
from mining.shard_writer import STAGING_DIR, ShardLayout, assemble_shards

CONFIG_FILE = "mine_config.json"


@dataclass
class ShardConfig:
    in_dir: Path = Path("downloads")
    out_dir: Path = Path("shards")
    chain: ChainConfig = field(default_factory=ChainConfig)
    layout: ShardLayout = field(default_factory=ShardLayout)
    workers: int = 1


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


def _clean_staging(staging: Path) -> None:
    """Remove temporaries a killed run left behind, and tars whose report never got written."""
    staging.mkdir(parents=True, exist_ok=True)
    for leftover in staging.glob(f".*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)
    for tar in staging.glob("*.tar"):
        if not tar.with_suffix(".json").is_file():
            tar.unlink()


def _mine_job(job: VideoJob, staging: Path, chain: ChainConfig,
              on_frame: Callable[[int], None] | None = None) -> VideoReport:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return mine_video(job.path, job.video_id, job.source, staging, chain, on_frame)


def _download_and_mine(url: str, download: DownloadConfig, staging: Path, chain: ChainConfig,
                       keep_videos: bool) -> tuple[DownloadResult, VideoReport | None]:
    result = download_one(url, download)
    if result.status == "failed" or not result.path:
        return result, None
    done = staging / f"{result.video_id}.json"
    report = VideoReport.load(done) if done.is_file() else _mine_job(VideoJob(Path(result.path), result.video_id,
                                                                              url), staging, chain)
    if not keep_videos:
        Path(result.path).unlink(missing_ok=True)
    return result, report


def _run_pool(tasks: list, submit: Callable, workers: int, on_done: Callable) -> None:
    """Run tasks with at most `workers` in flight (bounded memory); `on_done(task, result)` in the parent."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        queue, running = list(tasks), {}
        while queue or running:
            while queue and len(running) < workers:
                task = queue.pop(0)
                running[submit(pool, task)] = task
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                on_done(running.pop(future), future.result())


def _mine_pending(jobs: list, work: Callable, settings: tuple, out_dir: Path, workers: int,
                  on_video: Callable[[VideoReport, bool], None] | None,
                  on_frame: Callable[[int], None] | None) -> None:
    """`work(job, staging, *settings, on_frame=None) -> VideoReport` for every job (anything with a
    `video_id`) not yet done in the staging folder, in `workers` processes; a status row for each."""
    staging = Path(out_dir) / STAGING_DIR
    _clean_staging(staging)
    status_path = Path(out_dir) / STATUS_FILE

    def record(report: VideoReport, done_before: bool) -> None:
        append_jsonl(status_path, {"video_id": report.video_id, "source": report.source,
                                   "status": "skipped" if done_before else report.status,
                                   "reason": "already mined" if done_before else report.reason,
                                   "samples": report.samples, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        if on_video:
            on_video(report, done_before)

    todo = []
    for job in jobs:
        done = staging / f"{job.video_id}.json"
        if done.is_file():
            record(VideoReport.load(done), True)
        else:
            todo.append(job)
    if workers <= 1:
        for job in todo:
            record(work(job, staging, *settings, on_frame=on_frame), False)
    else:
        _run_pool(todo, lambda pool, job: pool.submit(work, job, staging, *settings), workers,
                  lambda job, report: record(report, False))


def shard_videos(config: ShardConfig, on_video: Callable[[VideoReport, bool], None] | None = None,
                 on_frame: Callable[[int], None] | None = None) -> dict:
    """Mine every video of `config.in_dir` not yet done, then rebuild the shards. Returns manifest and stats.

    `on_video(report, was_done_before)` is called per video; `on_frame(n)` per decoded frame (one worker only).
    """
    jobs = find_videos(config.in_dir)
    write_json_atomic(Path(config.out_dir) / CONFIG_FILE, config)
    _mine_pending(jobs, _mine_job, (config.chain,), config.out_dir, config.workers, on_video, on_frame)
    return assemble_shards(config.out_dir, config.layout)


def import_sequences(sequences: list[Sequence], config: ShardConfig, filter_motion: bool,
                     on_video: Callable[[VideoReport, bool], None] | None = None,
                     on_frame: Callable[[int], None] | None = None) -> dict:
    """`geopt-mine import`: dataset sequences through the same chain and shard writer as videos."""
    jobs = [_SequenceJob(seq.sequence_id, seq) for seq in sequences]
    write_json_atomic(Path(config.out_dir) / CONFIG_FILE, {"import": config, "filter_motion": filter_motion})
    _mine_pending(jobs, _import_job, (config.chain, filter_motion), config.out_dir, config.workers, on_video,
                  on_frame)
    return assemble_shards(config.out_dir, config.layout)


@dataclass
class _SequenceJob:
    video_id: str
    sequence: Sequence


def _import_job(job: _SequenceJob, staging: Path, chain: ChainConfig, filter_motion: bool,
                on_frame: Callable[[int], None] | None = None) -> VideoReport:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return import_sequence(job.sequence, staging, chain, filter_motion, on_frame)


def download_and_shard(download: DownloadConfig, config: ShardConfig, keep_videos: bool = False,
                       on_url: Callable[[DownloadResult, VideoReport | None], None] | None = None) -> dict:
    """`geopt-mine run`: each URL downloaded then mined at once by a worker, the video deleted after use
    unless `keep_videos`; then the shards are rebuilt. Status rows go to both status files."""
    staging = Path(config.out_dir) / STAGING_DIR
    _clean_staging(staging)
    write_json_atomic(Path(config.out_dir) / CONFIG_FILE, {"download": download, "shard": config})
    download.out_dir.mkdir(parents=True, exist_ok=True)

    def done(url: str, outcome: tuple[DownloadResult, VideoReport | None]) -> None:
        result, report = outcome
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        append_jsonl(download.out_dir / STATUS_FILE, {**vars(result), "time": now})
        if report is not None:
            append_jsonl(Path(config.out_dir) / STATUS_FILE,
                         {"video_id": report.video_id, "source": url, "status": report.status,
                          "reason": report.reason, "samples": report.samples, "time": now})
        if on_url:
            on_url(result, report)

    urls = read_url_list(download.url_list)
    _run_pool(urls, lambda pool, url: pool.submit(_download_and_mine, url, download, staging, config.chain,
                                                 keep_videos), max(1, config.workers), done)
    return assemble_shards(config.out_dir, config.layout)
