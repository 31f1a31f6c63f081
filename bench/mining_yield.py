"""What mining keeps, and how fast, on footage that looks like real uploads.

    python bench/mining_yield.py                        # this checkout
    python bench/mining_yield.py --code /tmp/before     # another checkout's mining code, same videos

Videos: the real highway clip of ../shared/media (when present), and world drives rendered with the
truth real uploads lack: a street drive with a hood, a logo and a clock, a dashboard with an A-pillar,
a highway at speed (sky and far field fill most of the picture), and a parked camera with traffic
passing. Each is looped to about a minute by stream copy, then timed against ffmpeg's bare decode to the
working size (`ffmpeg -threads 1 -i V -an -vf fps=10,scale=640:-2 -f null -`, the floor the chain is
held to: >= 0.6x) and mined with one worker. Prints per video: samples per minute of video, kept frames,
the chain's speed as a share of the floor, and what was cropped or masked.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mining_chain import REAL_CLIP, decode_floor_s, loop_video  # noqa: E402  (bench/, this script's folder)
from world.video import render_video, single_shot_spec  # noqa: E402

WORLD = {"street, hood + logo + clock": dict(kind="street", ego="hood", logo=True),
         "street, dashboard + A-pillar": dict(kind="street", ego="dashboard", a_pillar=True, clock_overlay=False),
         "highway at speed": dict(kind="highway", clock_overlay=False),
         "parked, traffic passing": dict(kind="parked_traffic", clock_overlay=False)}
CHILD = """
import json, time, cv2
cv2.setNumThreads(1)
from pathlib import Path
from mining.chain import mine_video
start = time.perf_counter()
report = mine_video(Path({video!r}), "bench", "bench", Path({staging!r}))
print(json.dumps({{"seconds": time.perf_counter() - start, "samples": report.samples, "status": report.status,
                  "kept": report.frames_kept, "decoded": report.frames_decoded, "duration_s": report.duration_s,
                  "crop": list(report.crop_box or []), "regions": getattr(report, "static_regions", [])}}))
"""


def mine(video: Path, staging: Path, code: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD.format(video=str(video), staging=str(staging))], env=env,
                          capture_output=True, text=True, check=True, cwd=code)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose mining code runs (default: this)")
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each world drive before looping")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = {}
        if REAL_CLIP.is_file():
            videos["real highway clip (Udacity)"] = REAL_CLIP
        for i, (name, spec) in enumerate(WORLD.items()):
            path = tmp / f"world_{i}.mp4"
            render_video(single_shot_spec(seed=20 + i, duration_s=args.seconds, fps="30", **spec), path)
            videos[name] = path
        print(f"mining code: {args.code} ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)")
        for i, (name, video) in enumerate(videos.items()):
            duration = float(json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                                                        "-of", "json", str(video)], capture_output=True, text=True,
                                                       check=True).stdout)["format"]["duration"])
            looped = loop_video(video, max(1, round(60 / duration)), tmp / f"looped_{i}.mp4")
            floor = decode_floor_s(looped)
            result = mine(looped, tmp / f"staging_{i}", args.code)
            minutes = result["duration_s"] / 60
            masked = [r["kind"] for r in result["regions"]]
            print(f"{name:>30}: {result['samples'] / minutes:6.0f} samples/min, kept {result['kept']}/{result['decoded']} "
                  f"frames, {floor / result['seconds']:.2f}x the decode floor, {result['status']}, crop "
                  f"{result['crop']}" + (f", overlays {masked}" if masked else ""), flush=True)


if __name__ == "__main__":
    main()
