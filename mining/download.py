"""Stage 1, download: a URL list -> video files, provenance and one status row per URL.

Uses yt-dlp's Python API. Video-only formats are preferred (no audio is needed), capped at a height.
yt-dlp's download archive makes reruns skip what is done; every URL ends as one row of
``status.jsonl``: ok, skipped (why) or failed (why). Local files and ``file://`` URLs are refused:
local videos go straight to ``geopt-mine shard --in DIR``.
"""
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import yt_dlp

from formats.files import append_jsonl, read_jsonl, write_json_atomic
from formats.shard_schema import safe_video_id
from formats.video import VIDEO_EXTENSIONS

STATUS_FILE = "status.jsonl"
ARCHIVE_FILE = "archive.txt"
PROVENANCE_FIELDS = ("id", "title", "uploader", "license", "webpage_url", "duration", "fps", "width", "height",
                     "extractor_key", "ext")


@dataclass
class DownloadConfig:
    url_list: Path
    out_dir: Path = Path("downloads")
    max_height_px: int = 720
    workers: int = 2
    rate_limit: str | None = None
    """Bytes per second per download, yt-dlp style ('2M', '500K'); None for no limit."""
    cookies: Path | None = None
    retries: int = 3
    socket_timeout_s: float = 30.0


@dataclass
class DownloadResult:
    url: str
    status: str
    """'ok', 'skipped' or 'failed'."""
    reason: str = ""
    video_id: str = ""
    path: str = ""


def read_url_list(path: Path) -> list[str]:
    """One URL per line; blank lines and '#' comments ignored; duplicates kept once, in order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"URL list not found: {path}")
    urls = []
    for line in path.read_text().splitlines():
        url = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if url and url not in urls:
            urls.append(url)
    return urls


def refusal_reason(url: str) -> str | None:
    """Why `url` is not downloaded, or None when it may be."""
    scheme = urlparse(url).scheme.lower()
    if scheme == "file" or Path(url).exists() or not scheme:
        return "local files are not downloaded; pass their folder to `geopt-mine shard --in DIR`"
    if scheme not in ("http", "https"):
        return f"unsupported URL scheme {scheme!r}"
    return None


class _QuietLogger:
    """yt-dlp messages are not printed: each URL's outcome goes to its status row instead."""

    def debug(self, message):
        pass

    info = warning = error = debug


def _ydl_options(config: DownloadConfig) -> dict:
    h = config.max_height_px
    options = {
        "format": f"bv*[height<={h}]/b[height<={h}]/bv*/b",
        "outtmpl": str(config.out_dir / "%(extractor_key)s-%(id)s.%(ext)s"),
        "restrictfilenames": True,
        "download_archive": str(config.out_dir / ARCHIVE_FILE),
        "retries": config.retries,
        "fragment_retries": config.retries,
        "socket_timeout": config.socket_timeout_s,
        "noplaylist": True,
        "quiet": True,
        "logger": _QuietLogger(),
        "no_warnings": True,
        "noprogress": True,
        "enable_file_urls": False,
        "overwrites": False,
        "continuedl": True,
    }
    if config.rate_limit:
        options["ratelimit"] = yt_dlp.parse_bytes(config.rate_limit)
    if config.cookies:
        options["cookiefile"] = str(config.cookies)
    return options


def _one_line(error: Exception) -> str:
    text = str(error).replace("\n", " ").strip()
    return text.removeprefix("ERROR: ")[:300] or type(error).__name__


def download_one(url: str, config: DownloadConfig) -> DownloadResult:
    """Download `url` into `config.out_dir`; never raises for a bad URL, it reports it."""
    reason = refusal_reason(url)
    if reason:
        return DownloadResult(url, "failed", reason)
    with yt_dlp.YoutubeDL(_ydl_options(config)) as ydl:
        try:
            info = ydl.extract_info(url, download=False)
            if info is None:
                return DownloadResult(url, "failed", "yt-dlp returned no video information")
            if info.get("_type") == "playlist":
                return DownloadResult(url, "failed", "playlists are not expanded; list their videos one per line")
            video_id = safe_video_id(f"{info.get('extractor_key', 'video')}-{info.get('id', 'unknown')}")
            if ydl.in_download_archive(info):
                return DownloadResult(url, "skipped", "already downloaded (in the download archive)", video_id,
                                      str(next(iter(video_files(config.out_dir, video_id)), "")))
            info = ydl.process_ie_result(info, download=True)
        except yt_dlp.utils.DownloadError as error:
            return DownloadResult(url, "failed", _one_line(error))
        path = Path(info.get("filepath") or ydl.prepare_filename(info))
    if not path.is_file() or path.stat().st_size == 0:
        path.unlink(missing_ok=True)
        return DownloadResult(url, "failed", "the server sent an empty file", video_id)
    named = config.out_dir / f"{video_id}{path.suffix}"  # the file is named by the id mining will use
    os.replace(path, named)
    path = named
    provenance = {k: info.get(k) for k in PROVENANCE_FIELDS} | {"source_url": url, "video_id": video_id,
                                                               "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json_atomic(path.with_suffix(".info.json"), provenance)
    return DownloadResult(url, "ok", "", video_id, str(path))


def download_all(config: DownloadConfig, on_result: Callable[[DownloadResult], None] | None = None
                 ) -> list[DownloadResult]:
    """Download every URL of the list with `config.workers` threads, appending a status row per URL."""
    urls = read_url_list(config.url_list)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    status_path = config.out_dir / STATUS_FILE

    def run(url: str) -> DownloadResult:
        result = download_one(url, config)
        append_jsonl(status_path, {**vars(result), "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        if on_result:
            on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, config.workers)) as pool:
        return list(pool.map(run, urls))


def latest_status(out_dir: Path) -> dict[str, dict]:
    """The last status row of every URL in `out_dir`/status.jsonl."""
    return {row["url"]: row for row in read_jsonl(Path(out_dir) / STATUS_FILE)}


def video_files(folder: Path, video_id: str | None = None) -> list[Path]:
    """Downloaded (or local) media files in `folder`, sorted; sidecars, partial files and lists excluded.
    Audio containers are listed too, so that they get a status row saying why they cannot be mined."""
    pattern = f"{video_id}.*" if video_id else "*"
    return sorted(p for p in Path(folder).glob(pattern)
                  if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith("."))
