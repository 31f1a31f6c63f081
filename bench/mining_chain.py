"""Mining benchmark: chain throughput against ffmpeg's bare decode, worker scaling, memory vs video length.

    python bench/mining_chain.py                       # uses ../shared/media's real clip when present
    python bench/mining_chain.py --video my_drive.mp4

Goals (issue 4): the whole chain (decode once, crop, scenes, motion filter, JPEG, tar) runs at >= 0.6x the
speed of `ffmpeg -threads 1 -i V -an -vf fps=10,scale=640:-2 -f null -` on the same video with one worker,
scales with --workers, and its peak RSS for a 10-minute video is within 20 % of a 1-minute one.
Long videos are the clip looped with stream copy, so no re-encoding skews the comparison.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_CLIP = ROOT.parent / "shared" / "media" / "drive_udacity_solidWhiteRight_960x540.mp4"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

CHILD_CHAIN = """
import json, resource, time, cv2
cv2.setNumThreads(1)
from pathlib import Path
from mining.chain import mine_video
start = time.perf_counter()
report = mine_video(Path({video!r}), "bench", "bench", Path({staging!r}))
print(json.dumps({{"seconds": time.perf_counter() - start, "frames_out": report.frames_decoded,
                  "samples": report.samples, "status": report.status, "reason": report.reason,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def source_frames(video: Path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                          "stream=nb_read_packets", "-of", "csv=p=0", str(video)], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip())


def decode_floor_s(video: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(video), "-an", "-vf",
                    "fps=10,scale=640:-2", "-f", "null", "-"], check=True)
    return time.perf_counter() - start


def chain(video: Path, staging: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD_CHAIN.format(video=str(video), staging=str(staging))],
                          env=ENV, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def loop_video(video: Path, times: int, out: Path) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", str(times - 1), "-i", str(video),
                    "-an", "-c", "copy", str(out)], check=True)
    return out


def shard_folder_seconds(videos: Path, out: Path, workers: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mining.cli", "shard", "--in", str(videos), "--out", str(out),
                    "--workers", str(workers)], env=ENV, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=REAL_CLIP if REAL_CLIP.is_file() else None,
                        help="video to measure (default: the real clip in ../shared/media)")
    args = parser.parse_args()
    if args.video is None:
        sys.exit("no video: pass --video (e.g. one made by `geopt-world render`)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one_minute = loop_video(args.video, max(1, round(60 / float(json.loads(subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(args.video)],
            capture_output=True, text=True, check=True).stdout)["format"]["duration"]))), tmp / "one_minute.mp4")
        frames = source_frames(one_minute)
        floor = decode_floor_s(one_minute)
        result = chain(one_minute, tmp / "staging_1")
        print(f"video: {args.video.name} looped to {frames} source frames (~1 min)")
        print(f"ffmpeg decode floor (1 thread, fps=10, 640 wide): {frames / floor:.0f} source frames/s")
        print(f"whole chain, 1 worker: {frames / result['seconds']:.0f} source frames/s = "
              f"{floor / result['seconds']:.2f}x the floor (goal >= 0.6x); {result['samples']} samples")

        ten_minutes = loop_video(one_minute, 10, tmp / "ten_minutes.mp4")
        long_result = chain(ten_minutes, tmp / "staging_10")
        growth = long_result["peak_rss_mb"] / result["peak_rss_mb"] - 1
        print(f"peak RSS: 1 min {result['peak_rss_mb']:.0f} MB, 10 min {long_result['peak_rss_mb']:.0f} MB "
              f"({growth:+.1%}, goal within 20 %); 10 min at {10 * frames / long_result['seconds']:.0f} source frames/s")

        folder = tmp / "four_videos"
        folder.mkdir()
        for i in range(4):
            shutil.copy(one_minute, folder / f"clip_{i}.mp4")
        serial = shard_folder_seconds(folder, tmp / "shards_w1", workers=1)
        parallel = shard_folder_seconds(folder, tmp / "shards_w2", workers=2)
        same = all((tmp / "shards_w1" / n).read_bytes() == (tmp / "shards_w2" / n).read_bytes()
                   for n in ("manifest.json",))
        print(f"geopt-mine shard on 4 one-minute videos: --workers 1 {4 * frames / serial:.0f}, --workers 2 "
              f"{4 * frames / parallel:.0f} source frames/s ({serial / parallel:.2f}x on {os.cpu_count()} cores); "
              f"identical manifests: {same}")


if __name__ == "__main__":
    main()
