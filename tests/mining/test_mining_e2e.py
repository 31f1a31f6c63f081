"""From URLs on a 127.0.0.1 server to shards read with plain webdataset, checked against the world's truth."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from click.testing import CliRunner

from mining.cli import main
from mining.download import latest_status
from tests.mining.videos import panning, write_video
from world.video import internet_like_spec, render_video

WIDTH = ["--width", "256"]


def read_shards(folder: Path) -> dict[str, dict]:
    """Every sample of every shard under `folder`, by key, through webdataset's own reader."""
    urls = sorted(str(p) for p in folder.rglob("[0-9][0-9][0-9][0-9].tar"))
    samples = {}
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        assert sample["__key__"] not in samples
        samples[sample["__key__"]] = sample
    return samples


@pytest.fixture(scope="module")
def world_videos(tmp_path_factory):
    """Two internet-like world videos (30 and 25 fps) with their truth sidecars."""
    folder = tmp_path_factory.mktemp("world_videos")
    truths = {}
    for seed, fps in ((1, "30"), (2, "25")):
        spec = internet_like_spec(seed, duration_s=4.5, fps=fps, cuts=2, stop_s=1.5, width_px=320, height_px=180,
                                  content_height_px=144)
        truths[f"world_{seed}"] = render_video(spec, folder / f"world_{seed}.mp4")
    return folder, truths


def test_download_then_shard_respects_the_truth(world_videos, http_root, tmp_path):
    source, truths = world_videos
    root, base = http_root
    for path in source.glob("*.mp4"):
        shutil.copy(path, root / path.name)
    (root / "page.html").write_text("<html><body>no video here</body></html>")
    (root / "zero.mp4").write_bytes(b"")
    urls = tmp_path / "urls.txt"
    urls.write_text("\n".join([f"{base}/world_1.mp4", "# a comment", f"{base}/world_2.mp4", f"{base}/missing.mp4",
                               f"{base}/page.html", f"{base}/zero.mp4", f"file://{root}/world_1.mp4"]) + "\n")
    downloads, shards = tmp_path / "downloads", tmp_path / "shards"
    result = CliRunner().invoke(main, ["download", "--list", str(urls), "--downloads", str(downloads)])
    assert result.exit_code == 0, result.output
    status = latest_status(downloads)
    assert [status[f"{base}/world_{i}.mp4"]["status"] for i in (1, 2)] == ["ok", "ok"]
    assert "404" in status[f"{base}/missing.mp4"]["reason"]
    assert "Unsupported URL" in status[f"{base}/page.html"]["reason"]
    assert status[f"{base}/zero.mp4"]["status"] == "failed"
    assert "local files" in status[f"file://{root}/world_1.mp4"]["reason"]
    provenance = json.loads((downloads / "Generic-world_1.info.json").read_text())
    assert provenance["source_url"] == f"{base}/world_1.mp4"

    again = CliRunner().invoke(main, ["download", "--list", str(urls), "--downloads", str(downloads)])
    assert again.exit_code == 0 and latest_status(downloads)[f"{base}/world_1.mp4"]["status"] == "skipped"

    result = CliRunner().invoke(main, ["shard", "--in", str(downloads), "--out", str(shards), *WIDTH])
    assert result.exit_code == 0, result.output
    samples = read_shards(shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    assert sum(s["samples"] for s in manifest["train"] + manifest["val"]) == len(samples) > 20
    assert len(manifest["val"]) == 1 and set(manifest["videos"]) == {"Generic-world_1", "Generic-world_2"}

    for sample in samples.values():
        meta = json.loads(sample["json"])
        truth = truths[meta["video_id"].removeprefix("Generic-")]
        fps_in = float(truth.fps_fraction.split("/")[0]) / float(truth.fps_fraction.split("/")[1])
        # Output frame i shows source frame i * fps_in / fps_out rounded half up (ffmpeg's fps filter, round=near).
        source_frames = [int(np.floor(i * fps_in / meta["fps_out"] + 0.5)) for i in meta["frame_indices"]]
        for cut in truth.cut_frames:
            assert not (source_frames[0] < cut <= source_frames[-1]), f"sample {sample['__key__']} crosses cut {cut}"
        for start, end in truth.static_ranges:
            assert not all(start <= f < end for f in source_frames[1:]), f"{sample['__key__']} is parked"
        x, y, w, h = meta["crop_box"]
        cx, cy, cw, ch = truth.content_box
        scale = meta["working_size"][0] / truth.width_px
        assert cy * scale <= y and (y + h) <= (cy + ch) * scale, "letterbox rows are gone"
        frames = [sample[f"{i}.jpg"] for i in range(3)]
        assert all(f[:2] == b"\xff\xd8" for f in frames)
    stats = json.loads((shards / "stats.json").read_text())
    assert stats["totals"]["dropped"].get("duplicate", 0) + stats["totals"]["dropped"].get("static", 0) >= 20


def _bad_videos(folder: Path) -> dict[str, str]:
    """Videos that must fail or yield nothing, with the reason their status row must carry."""
    write_video(folder / "tiny.mp4", panning(20, 48, 64, seed=1))
    write_video(folder / "still.mp4", [next(panning(1, 144, 320, seed=2))] * 40)
    rng = np.random.default_rng(3)
    write_video(folder / "all_cuts.mp4", [rng.integers(0, 255, (144, 320, 3), np.uint8) for _ in range(40)],
                fps=10)
    good = write_video(folder / "good.mp4", panning(50, 144, 320, seed=4, speed_px=3.0))
    (folder / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    (folder / "zero.mp4").write_bytes(b"")
    import ffmpeg
    ffmpeg.input("sine=frequency=440:duration=1", f="lavfi").output(str(folder / "voice.m4a")).run(quiet=True)
    return {"voice": "no video stream", "tiny": "smaller than the working size", "still": "no usable run", "all_cuts": "no usable run",
            "truncated": "truncated|undecodable|decoding failed", "zero": "empty file"}


def test_bad_videos_get_reasons_and_the_rest_goes_on(tmp_path):
    videos, shards = tmp_path / "videos", tmp_path / "shards"
    videos.mkdir()
    expected = _bad_videos(videos)
    result = CliRunner().invoke(main, ["shard", "--in", str(videos), "--out", str(shards), *WIDTH])
    assert result.exit_code == 0, result.output
    stats = json.loads((shards / "stats.json").read_text())["videos"]
    import re
    for video_id, reason in expected.items():
        assert re.search(reason, stats[video_id]["reason"]), (video_id, stats[video_id])
    assert stats["good"]["status"] == "ok" and stats["good"]["samples"] > 5
    assert {json.loads(s["json"])["video_id"] for s in read_shards(shards).values()} == {"good"}
    assert not list(shards.rglob("*.part"))


def _shard_command(videos: Path, shards: Path, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "mining.cli", "shard", "--in", str(videos), "--out", str(shards), *WIDTH,
            "--workers", str(workers), "--shard-size-mb", "1"]


def _shard_bytes(shards: Path) -> dict[str, bytes]:
    return {p.relative_to(shards).as_posix(): p.read_bytes() for p in sorted(shards.rglob("[0-9][0-9][0-9][0-9].tar"))}


def test_sigkilled_run_resumes_to_the_same_shards_as_a_clean_run(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for seed in range(4):
        write_video(videos / f"drive_{seed}.mp4", panning(60, 144, 320, seed=seed, speed_px=2.5 + seed))
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run(_shard_command(videos, clean), check=True, env=env, capture_output=True)

    process = subprocess.Popen(_shard_command(videos, killed), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list((killed / ".videos").glob("*.json")) and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "manifest.json").exists(), "killed before the end"
    subprocess.run(_shard_command(videos, killed, workers=2), check=True, env=env, capture_output=True)
    assert _shard_bytes(killed) == _shard_bytes(clean)
    assert len(read_shards(killed)) == len(read_shards(clean)) > 30
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest == json.loads((clean / "manifest.json").read_text())


def test_run_downloads_mines_and_deletes_videos(http_root, tmp_path):
    root, base = http_root
    for seed in range(2):
        write_video(root / f"drive_{seed}.mp4", panning(40, 144, 320, seed=seed, speed_px=3.0))
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{base}/drive_0.mp4\n{base}/drive_1.mp4\n{base}/gone.mp4\n")
    downloads, shards = tmp_path / "downloads", tmp_path / "shards"
    result = CliRunner().invoke(main, ["run", "--list", str(urls), "--downloads", str(downloads),
                                       "--out", str(shards), *WIDTH, "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert not list(downloads.glob("*.mp4")), "videos are deleted after mining"
    assert {json.loads(s["json"])["video_id"] for s in read_shards(shards).values()} == {
        "Generic-drive_0", "Generic-drive_1"}
    assert latest_status(downloads)[f"{base}/gone.mp4"]["status"] == "failed"
    assert "404" in result.output


def test_every_option_is_explained():
    for name, command in main.commands.items():
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0
        for param in command.params:
            assert param.help, f"geopt-mine {name} {param.name} has no help"
