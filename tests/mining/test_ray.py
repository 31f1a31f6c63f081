"""Mining on a local Ray with 2 worker processes, into a file:// URL: the same shards as a local run,
even when a worker is killed in the middle of a video."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mining.store import Store
from tests.mining.videos import panning, write_video

pytest.importorskip("ray")
SETTINGS = ["--width", "256", "--shard-size-mb", "1"]


def _shard_hashes(folder: Path) -> dict[str, str]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return {entry["name"]: entry["sha256"] for entry in manifest["train"] + manifest["val"]}


def _ray_task_pids(task_name: str) -> list[int]:
    """Processes whose title Ray set to 'ray::<task_name>' while they run that task."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(f"ray::{task_name}".encode()):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _mine(command: list[str], cwd: Path, kill_task: str | None = None) -> tuple[subprocess.CompletedProcess, bool]:
    """Run `geopt-mine` (as a module); with `kill_task`, SIGKILL the first Ray worker seen running it."""
    process = subprocess.Popen([sys.executable, "-m", "mining.cli", *command], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    killed = False
    while kill_task and not killed and process.poll() is None:
        for pid in _ray_task_pids(kill_task):
            os.kill(pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    output, _ = process.communicate(timeout=600)
    return subprocess.CompletedProcess(command, process.returncode, output), killed


def test_ray_run_survives_a_killed_worker_and_equals_a_local_run(http_root, tmp_path):
    root, base = http_root
    for seed in (1, 2, 3):
        write_video(root / f"drive_{seed}.mp4", panning(100, 144, 320, seed=seed, speed_px=2.0 + seed))
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{base}/drive_{seed}.mp4\n" for seed in (1, 2, 3)) + f"{base}/missing.mp4\n")

    local, _ = _mine(["run", "--list", str(urls), "--downloads", "dl_local", "--out", "local", *SETTINGS], tmp_path)
    assert local.returncode == 0, local.stdout
    ray_out = tmp_path / "on_ray"
    remote, killed = _mine(["run", "--list", str(urls), "--downloads", "dl_ray", "--out", ray_out.as_uri(),
                            *SETTINGS, "--ray", "--workers", "2"], tmp_path, kill_task="_download_and_mine")
    assert remote.returncode == 0, remote.stdout
    assert killed, "no Ray worker was seen mining; the kill was not exercised"

    expected = _shard_hashes(tmp_path / "local")
    assert len(expected) >= 2 and _shard_hashes(ray_out) == expected  # same names, same bytes
    rows = [json.loads(line) for line in (ray_out / "status.jsonl").read_text().splitlines()]
    assert sorted(r["video_id"] for r in rows) == [f"Generic-drive_{i}" for i in (1, 2, 3)]  # once each
    assert {r["status"] for r in rows} == {"ok"}
    download_rows = [json.loads(line) for line in (tmp_path / "dl_ray" / "status.jsonl").read_text().splitlines()]
    assert {r["url"]: r["status"] for r in download_rows}[f"{base}/missing.mp4"] == "failed"
    assert len({r["url"] for r in download_rows}) == 4  # a row for every URL
    assert not [p for p in ray_out.rglob("*") if p.name.endswith(".part")]  # no half-written file left


def test_shard_on_ray_into_a_file_url_equals_local(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for seed in (1, 2):
        write_video(videos / f"cam_{seed}.mp4", panning(80, 144, 320, seed=seed, speed_px=3.0))
    local, _ = _mine(["shard", "--in", str(videos), "--out", str(tmp_path / "local"), *SETTINGS], tmp_path)
    assert local.returncode == 0, local.stdout
    url = (tmp_path / "ray").as_uri()
    remote, _ = _mine(["shard", "--in", str(videos), "--out", url, *SETTINGS, "--ray", "--workers", "2"], tmp_path)
    assert remote.returncode == 0, remote.stdout
    assert _shard_hashes(tmp_path / "ray") == _shard_hashes(tmp_path / "local")
    assert [r["status"] for r in Store(url).read_rows("status.jsonl")] == ["ok", "ok"]
