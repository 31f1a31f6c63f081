"""Mining on Ray: throughput with 1 and 2 Ray workers on this machine, and what a cluster would do.

    python bench/mining_ray.py                   # the real clip of ../shared/media, looped to 1 min, x4 videos
    python bench/mining_ray.py --video my_drive.mp4 --videos 8

Each run mines the same folder with `mining.shard.shard_videos` on a local Ray instance of 1 or 2 CPUs
into a file:// URL (Ray's own start-up is not timed), checks both outputs are byte-identical, and turns
the measured rate into cluster arithmetic: source hours mined per hour per core, and bytes written per
hour (staging tars + shards) that the output store must absorb.
"""
import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import mining_chain as bench_mining  # noqa: E402  (bench/ is on the path: this script's own folder)


def duration_s(video: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(video)],
                         capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)["format"]["duration"])


def mine_on_ray(videos: Path, out: Path, cpus: int) -> tuple[float, dict]:
    """Seconds to mine and shard `videos` on a fresh local Ray of `cpus` CPUs (start-up excluded)."""
    import ray

    from mining.shard import ShardConfig, shard_videos

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             configure_logging=False)
    try:
        start = time.perf_counter()
        result = shard_videos(ShardConfig(in_dir=videos, out_dir=out.as_uri(), workers=cpus, ray_address="local"))
        return time.perf_counter() - start, result
    finally:
        ray.shutdown()


def mine_locally(videos: Path, out: Path) -> float:
    """Seconds for the same job with one local worker (no Ray): the baseline Ray's overhead shows against."""
    from mining.shard import ShardConfig, shard_videos

    start = time.perf_counter()
    shard_videos(ShardConfig(in_dir=videos, out_dir=out, workers=1))
    return time.perf_counter() - start


def written_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.tar"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=bench_mining.REAL_CLIP if bench_mining.REAL_CLIP.is_file()
                        else None, help="video to loop to one minute (default: the real clip in ../shared/media)")
    parser.add_argument("--videos", type=int, default=4, help="copies of the one-minute video mined per run")
    args = parser.parse_args()
    if args.video is None:
        sys.exit("no video: pass --video (e.g. one made by `geopt-world render`)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one_minute = bench_mining.loop_video(args.video, max(1, round(60 / duration_s(args.video))),
                                             tmp / "one_minute.mp4")
        folder = tmp / "videos"
        folder.mkdir()
        for i in range(args.videos):
            shutil.copy(one_minute, folder / f"clip_{i}.mp4")
        source_hours = args.videos * duration_s(one_minute) / 3600
        frames = args.videos * bench_mining.source_frames(one_minute)
        local_s = mine_locally(folder, tmp / "shards_local")
        print(f"local, 1 worker (no Ray): {args.videos} x 1 min in {local_s:.1f} s = {frames / local_s:.0f} "
              f"source frames/s", flush=True)
        seconds = {}
        for cpus in (1, 2):
            seconds[cpus], result = mine_on_ray(folder, tmp / f"shards_{cpus}", cpus)
            print(f"Ray, {cpus} worker(s): {args.videos} x 1 min in {seconds[cpus]:.1f} s = "
                  f"{frames / seconds[cpus]:.0f} source frames/s, {result['stats']['totals']['samples']} samples",
                  flush=True)
        names = [e["name"] for e in result["manifest"]["train"] + result["manifest"]["val"]]
        same = all(len({(tmp / run / name).read_bytes() for run in ("shards_local", "shards_1", "shards_2")}) == 1
                   for name in names)
        print(f"2 vs 1 Ray worker: {seconds[1] / seconds[2]:.2f}x; Ray 1 worker vs local: {local_s / seconds[1]:.2f}x; "
              f"all three outputs byte-identical: {same}")

        per_core = source_hours / (seconds[1] / 3600)
        bytes_per_source_hour = written_bytes(tmp / "shards_1") / source_hours
        print(f"\none core mines {per_core:.1f} source hours per hour "
              f"(this 2-core machine, 1 worker; ffmpeg decodes in its own process beside it)")
        print(f"bytes written per source hour: {bytes_per_source_hour / 1e9:.2f} GB (staging tars + shards, "
              f"about half each)")
        for nodes, cores in ((1, 2), (10, 16), (50, 32)):
            rate = per_core * nodes * cores  # source hours per hour, if the cluster scales linearly
            print(f"  {nodes:>3} nodes x {cores:>2} cores: 1000 source hours in {1000 / rate:5.1f} h, writing "
                  f"{rate * bytes_per_source_hour / 1e9:7.1f} GB/h ({rate * bytes_per_source_hour / 3.6e12 * 1e3:.0f} "
                  f"MB/s) to the store")


if __name__ == "__main__":
    main()
