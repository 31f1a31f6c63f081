"""Mining what real uploads throw at it: damaged files, slideshows, two runs on one output, relative paths."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from mining import chain
from mining.chain import ChainConfig, FrameSource, mine_source, mine_video
from mining.decode import DecodeConfig
from mining.cli import main
from mining.lock import LOCK_FILE, exclusive_output
from mining.static_regions import HEAD_FRAMES
from tests.mining.test_mining_e2e import read_shards
from tests.mining.videos import panning, write_video

ROOT = Path(__file__).resolve().parents[2]
CHAIN = ChainConfig(decode=DecodeConfig(width_px=128))


def test_a_truncated_download_keeps_what_decodes_as_partial(tmp_path):
    whole = write_video(tmp_path / "whole.mp4", panning(100, 96, 128, seed=4), fps=25, movflags="+faststart")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 3 // 4])
    report = mine_video(cut, "cut", "test", tmp_path / "staging", CHAIN)
    assert report.status == "partial" and report.samples > 0, report
    assert report.frames_expected == 40 and 0 < report.frames_decoded < 36
    assert "kept the" in report.reason and (tmp_path / "staging" / "cut.tar").is_file()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    assert mine_video(garbage, "garbage", "test", tmp_path / "staging", CHAIN).status == "failed"


def test_a_slideshow_with_a_logo_ends_empty_with_its_reason(tmp_path):
    slides = [next(panning(1, 96, 128, seed=s, speed_px=0)).copy() for s in (1, 2, 3)]
    for slide in slides:
        slide[8:20, 90:120] = (220, 30, 30)  # the channel's logo
    frames = [slides[i // 25] for i in range(75)]  # 1 s per slide at 25 fps
    video = write_video(tmp_path / "slides.mp4", frames, fps=25)
    report = mine_video(video, "slides", "test", tmp_path / "staging", CHAIN)
    assert report.status == "empty" and report.samples == 0
    assert "no usable run of moving frames" in report.reason


def test_a_second_run_on_the_same_output_refuses_at_once_naming_the_first(tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "shards"
    videos.mkdir()
    write_video(videos / "drive.mp4", panning(50, 96, 128, seed=5), fps=25)
    args = ["shard", "--in", str(videos), "--out", str(out), "--width", "128", "--val-fraction", "0"]
    with exclusive_output(str(out), out):
        started = time.perf_counter()
        refused = CliRunner().invoke(main, args)
        assert refused.exit_code == 1 and time.perf_counter() - started < 5
        assert "is being written by another geopt-mine run (pid" in refused.output, refused.output
        assert len([line for line in refused.output.splitlines() if "Error" in line]) == 1
    assert not (out / "status.jsonl").exists(), "the refused run wrote nothing"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from mining.lock import exclusive_output\n"
                               f"with exclusive_output({str(out)!r}, Path({str(out)!r})):\n"
                               "    print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)  # a killed run must not leave the output locked
    holder.wait()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (out / LOCK_FILE).is_file() and read_shards(out)


def test_import_kitti_takes_a_relative_root(small_kitti, tmp_path, monkeypatch):
    root, _ = small_kitti
    monkeypatch.chdir(root.parent)
    result = CliRunner().invoke(main, ["import", "kitti", "--root", root.name, "--out", "relative_shards",
                                       "--width", "320", "--no-motion-filter", "--val-fraction", "0"])
    assert result.exit_code == 0, result.output
    metas = [json.loads(s["json"]) for s in read_shards(root.parent / "relative_shards").values()]
    assert metas and all(m["source_url"].startswith("file:///") for m in metas)
    assert np.all([Path(m["source_url"][7:]).is_absolute() for m in metas])


def test_a_reupload_of_the_same_drive_is_a_duplicate_and_yields_no_samples(tmp_path):
    import ffmpeg

    from world.video import internet_like_spec, render_video

    videos, out = tmp_path / "videos", tmp_path / "shards"
    videos.mkdir()
    for name, seed in (("a_drive", 61), ("c_other", 62)):
        render_video(internet_like_spec(seed, duration_s=4.0, fps="25", cuts=0, stop_s=0.0, width_px=320,
                                        height_px=180, content_height_px=180), videos / f"{name}.mp4")
    (ffmpeg.input(str(videos / "a_drive.mp4")).filter("crop", "iw*0.92", "ih*0.92").filter("scale", 400, -2)
     .output(str(videos / "b_copy.mp4"), vcodec="libx264", crf=30, preset="fast").run(quiet=True))
    result = CliRunner().invoke(main, ["shard", "--in", str(videos), "--out", str(out), "--width", "320",
                                       "--val-fraction", "0"])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())["videos"]
    assert stats["b_copy"]["status"] == "duplicate" and stats["b_copy"]["duplicate_of"] == "a_drive"
    assert "a_drive" in stats["b_copy"]["reason"]
    assert stats["a_drive"]["status"] == stats["c_other"]["status"] == "ok"
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["videos"]) == {"a_drive", "c_other"}
    assert {json.loads(s["json"])["video_id"] for s in read_shards(out).values()} == {"a_drive", "c_other"}


def _held_before_mining(frames: list, staging, video_id: str) -> tuple[int, object]:
    """(frames read from the source before the first one was mined, the video's report)."""
    read, first_mined = [], []

    def source(report):
        def counted():
            for frame in frames:
                read.append(1)
                yield np.ascontiguousarray(frame)
        return FrameSource(counted(), 10.0, (160, 90))

    def on_frame(count):
        if not first_mined:
            first_mined.append(len(read))

    report = mine_source(source, video_id, "test", staging, CHAIN, on_frame)
    return first_mined[0], report


def test_frames_are_held_until_the_crop_is_fixed_and_never_beyond_the_budget(tmp_path, monkeypatch):
    """A moving camera fixes the crop after the first 5 s (50 frames); one that never moves is held up to
    MAX_HELD_BYTES of frames (here 60), then mined with no crop, and ends empty with its reason."""
    still = np.ascontiguousarray(next(panning(1, 90, 160, seed=2, speed_px=0)))
    monkeypatch.setattr(chain, "MAX_HELD_BYTES", 60 * still.nbytes)
    held, report = _held_before_mining(list(panning(80, 90, 160, seed=2, speed_px=3.0)), tmp_path, "moving")
    assert held == HEAD_FRAMES and report.status == "ok" and report.frames_decoded == 80
    held, report = _held_before_mining([still] * 80, tmp_path, "parked")
    assert held == 60 and report.status == "empty" and "no usable run" in report.reason
