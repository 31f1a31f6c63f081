"""World rendering benchmark: frames per second on one core, and peak memory against video length.

    python bench/world_render.py                  # 640x192 speed + 10 s vs 60 s video memory
    python bench/world_render.py --frames 50 --size 1242x375

Goals (issue 3): >= 30 frames/s at 640x192 on one core; peak RSS of a 60 s video within 20 % of a 10 s one.
Each measurement runs in a fresh child process pinned to one CPU with one thread, so numbers do not
depend on what ran before.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}

CHILD_SPEED = """
import json, os, time, cv2, numpy as np
os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})
cv2.setNumThreads(1)
from world.camera import PinholeCamera
from world.drive import Drive, DriveSpec
from world.render import Renderer
drive = Drive(DriveSpec(seed=7, duration_s={frames} / 10 + 1))
renderer = Renderer(drive.scene, PinholeCamera.kitti_like({width}, {height}))
times = np.arange({frames}) / 10.0
poses, exposure = drive.poses(times), drive.exposure(times)
renderer.render(poses[0])
start = time.perf_counter()
for pose, gain in zip(poses, exposure):
    renderer.render(pose, float(gain))
print(json.dumps({{"fps": {frames} / (time.perf_counter() - start)}}))
"""

CHILD_MEMORY = """
import json, os, resource, time, cv2
os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})
cv2.setNumThreads(1)
from world.video import internet_like_spec, render_video
start = time.perf_counter()
truth = render_video(internet_like_spec(3, duration_s={seconds}, fps="25", stop_s=2.0), {out!r})
print(json.dumps({{"frames": truth.frame_count, "seconds": time.perf_counter() - start,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def run_child(code: str) -> dict:
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="640x192", help="render size WIDTHxHEIGHT for the speed test")
    parser.add_argument("--frames", type=int, default=200, help="frames timed in the speed test")
    parser.add_argument("--skip-memory", action="store_true", help="only measure speed")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    speed = run_child(CHILD_SPEED.format(frames=args.frames, width=width, height=height))
    print(f"render {width}x{height}, 1 core: {speed['fps']:.1f} frames/s (goal >= 30 at 640x192)")
    if args.skip_memory:
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for seconds in (10, 60):
            results[seconds] = run_child(CHILD_MEMORY.format(seconds=seconds, out=f"{tmp}/video_{seconds}s.mp4"))
            r = results[seconds]
            print(f"video {seconds:>2} s (640x360, 25 fps, {r['frames']} frames): peak RSS {r['peak_rss_mb']:.0f} MB,"
                  f" {r['frames'] / r['seconds']:.1f} frames/s including encoding")
    growth = results[60]["peak_rss_mb"] / results[10]["peak_rss_mb"] - 1
    print(f"peak RSS growth 10 s -> 60 s: {growth:+.1%} (goal within 20 %)")


if __name__ == "__main__":
    main()
