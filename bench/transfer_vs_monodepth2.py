"""Depth-transfer training speed beside Monodepth2's own trainer: same data, size, batch, loader processes.

    git clone https://github.com/nianticlabs/monodepth2 .cache/monodepth2    # once; its code is never copied here
    python bench/transfer_vs_monodepth2.py                                    # CPU: 24 steps at batch 4
    python bench/transfer_vs_monodepth2.py --steps 150 --batch-size 12 --workers 12   # one H200 (issue 17)

Every run trains mode M (monocular, ResNet18 depth and pose nets from scratch) at 640x192 on one world KITTI
raw tree (stereo PNGs at KITTI's 1242x375, rendered by `geopt-world kitti` in parallel) and one split, so
an epoch of Monodepth2 is exactly `--steps` steps:

1. Monodepth2's `trainer.py`, as it ships, in float32 (`bench/monodepth2_run.py` runs it);
2. `geopt-train transfer --data kitti:...` at `--precision auto` (bf16 autocast on CUDA), and on CUDA
   also at fp32, like for like;
3. `geopt-train transfer --data shards:...` from the same frames imported once by `geopt-mine import
   kitti --width 640 --stride 1`: JPEGs already at the training size, instead of three 1242x375 PNGs
   decoded and resized per sample. The import's time is printed apart (it is paid once).

Beside each GeoPt run, its loader alone (same workers, no model): which input path can feed which GPU.

A rate is the steady state: samples/s from step SKIP to the last, so start-up, loader spin-up and the
batches queued meanwhile stay out. Prints one line per run with its ratio to Monodepth2, and writes
OUT/summary.json and each run's log.
"""
import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import loader_samples_per_s, steady_samples_per_s  # noqa: E402
from training.depth.data import training_batches  # noqa: E402
from training.depth.transfer import TransferConfig  # noqa: E402
DEFAULT_CHECKOUT = ROOT / ".cache" / "monodepth2"
SPLIT = "geopt_bench"
KITTI_SIZE = "1242x375"


def run(command: list, log: Path, **kwargs) -> None:
    """Run `command` with its output in `log`; on failure exit with one line naming the log."""
    with open(log, "w") as out:
        done = subprocess.run([str(c) for c in command], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, **kwargs)
    if done.returncode:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        sys.exit(f"{Path(str(command[1])).name if len(command) > 1 else command[0]} failed ({tail[0][:200]}); "
                 f"see {log}")


def render_world(kitti: Path, drives: int, frames: int, workers: int, log: Path) -> float:
    """A world KITTI tree of `drives` training drives (+1 test drive) of `frames` stereo frames; seconds."""
    started = time.perf_counter()
    run([sys.executable, "-m", "world.cli", "kitti", "--out", kitti, "--train-drives", drives, "--test-drives", 1,
         "--frames", frames, "--size", KITTI_SIZE, "--workers", workers], log)
    return time.perf_counter() - started


def write_split(kitti: Path, samples: int) -> int:
    """SPLIT/train_files.txt of exactly `samples` lines, cycling the tree's training lines (both cameras,
    every frame with two neighbours), so one Monodepth2 epoch is the bench's steps; val repeats a few.
    Returns the number of distinct lines."""
    source = kitti / "splits" / "eigen_zhou"
    lines = [line for name in ("train_files.txt", "val_files.txt") for line in (source / name).read_text().splitlines()]
    split = kitti / "splits" / SPLIT
    split.mkdir(parents=True, exist_ok=True)
    train = [lines[i % len(lines)] for i in range(samples)]
    (split / "train_files.txt").write_text("\n".join(train) + "\n")
    (split / "val_files.txt").write_text("\n".join(train[:64]) + "\n")
    return len(lines)


def shadow_checkout(checkout: Path, kitti: Path, work: Path) -> Path:
    """A folder of links to the Monodepth2 checkout whose splits/ also holds the bench's split: its trainer
    reads splits beside its own file, and the user's checkout stays untouched."""
    shadow = work / "monodepth2"
    (shadow / "splits").mkdir(parents=True, exist_ok=True)
    for entry in checkout.iterdir():
        if entry.name != "splits" and not (shadow / entry.name).exists():
            (shadow / entry.name).symlink_to(entry.resolve())
    for entry in (checkout / "splits").iterdir():
        if not (shadow / "splits" / entry.name).exists():
            (shadow / "splits" / entry.name).symlink_to(entry.resolve())
    if not (shadow / "splits" / SPLIT).exists():
        (shadow / "splits" / SPLIT).symlink_to((kitti / "splits" / SPLIT).resolve())
    return shadow


@functools.cache
def loader_rate(data: str, batch_size: int, workers: int, batches: int) -> float:
    """GeoPt's transfer loader alone on `data` (samples/s over `batches` batches): what decoding and resizing
    cost without a model."""
    config = TransferConfig(data=data, split=SPLIT, run_dir=Path("unused"), mode="M", width_px=640, height_px=192,
                            batch_size=batch_size, workers=workers, steps=1)
    return loader_samples_per_s(training_batches(config.loader_config()), batch_size, count=batches)


def geopt_rate(name: str, data: str, args, skip: int, precision: str, work: Path, out: Path) -> dict:
    run_dir = work / name
    command = [sys.executable, "-m", "training.cli", "transfer", "--data", data, "--mode", "M", "--init", "scratch",
               "--arch", "resnet18", "--run-dir", run_dir, "--size", "640x192", "--batch-size", args.batch_size,
               "--steps", args.steps, "--workers", args.workers, "--precision", precision, "--log-every", skip,
               "--image-every", 10**9, "--checkpoint-every", 10**9, "--device", args.device]
    if data.startswith("kitti:"):
        command += ["--split", SPLIT]
    started = time.perf_counter()
    run(command, out / f"{name}.log", env={**os.environ, "TQDM_DISABLE": "1"})
    rate = steady_samples_per_s(run_dir / "log.jsonl", skip, args.steps, args.batch_size)
    return {"trainer": name, "precision": precision, "samples_per_s": rate, "wall_s": time.perf_counter() - started,
            "loader_samples_per_s": loader_rate(data, args.batch_size, args.workers, max(5, min(40, args.steps)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--monodepth2", type=Path, default=DEFAULT_CHECKOUT,
                        help=f"Monodepth2 checkout (default {DEFAULT_CHECKOUT.relative_to(ROOT)})")
    parser.add_argument("--steps", type=int, default=24, help="optimiser steps of each run (= one Monodepth2 epoch)")
    parser.add_argument("--skip", type=int, default=None,
                        help="first steps left out of the timing (default: a fifth of --steps, at least 2)")
    parser.add_argument("--batch-size", type=int, default=4, help="frames per step, both trainers")
    parser.add_argument("--workers", type=int, default=min(12, max(1, (os.cpu_count() or 2) - 4)),
                        help="loader processes, both trainers (default: cores - 4, at most 12)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")
    parser.add_argument("--drives", type=int, default=None,
                        help="training drives to render (default: enough for every step to see new frames, <= 16)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/geopt_transfer_vs_monodepth2"),
                        help="world tree, shards and run folders (reused when the size matches)")
    parser.add_argument("--out", type=Path, default=Path("runs/transfer_vs_monodepth2"), help="logs and summary.json")
    args = parser.parse_args()
    skip = args.skip if args.skip is not None else max(2, args.steps // 5)
    if args.steps <= skip:
        sys.exit(f"--steps must exceed the untimed first {skip} steps")
    if not (args.monodepth2 / "trainer.py").is_file():
        sys.exit(f"no Monodepth2 checkout at {args.monodepth2}: git clone https://github.com/nianticlabs/monodepth2 "
                 f"{args.monodepth2} (or pass --monodepth2 PATH)")
    cuda = args.device != "cpu" and torch.cuda.is_available()
    args.device = "cuda" if cuda else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    samples = args.steps * args.batch_size
    frames = 20
    drives = args.drives or min(16, max(1, -(-samples // (2 * (frames - 2)))))
    kitti, stamp = args.work / "kitti", f"{drives} drives x {frames} frames at {KITTI_SIZE}"
    stamp_file = args.work / "kitti.stamp"
    if stamp_file.is_file() and stamp_file.read_text() == stamp:
        render_s = 0.0
    else:
        subprocess.run(["rm", "-rf", str(kitti), str(args.work / "shards")], check=True)
        render_s = render_world(kitti, drives, frames, max(1, min(drives, (os.cpu_count() or 2) // 2)),
                                args.out / "render.log")
        stamp_file.write_text(stamp)
    distinct = write_split(kitti, samples)
    print(f"world KITTI tree: {stamp}, {distinct} distinct training samples for {samples} drawn"
          + (f" (rendered in {render_s:.0f} s)" if render_s else " (reused)"), flush=True)

    results = []
    timing = args.work / "monodepth2_timing.json"
    md2_options = ["--data_path", kitti, "--split", SPLIT, "--png", "--height", 192, "--width", 640,
                   "--batch_size", args.batch_size, "--num_layers", 18, "--weights_init", "scratch",
                   "--num_epochs", 1, "--num_workers", args.workers, "--log_frequency", 10**9,
                   "--log_dir", args.work / "md2_runs", "--model_name", "bench"] + ([] if cuda else ["--no_cuda"])
    run([sys.executable, ROOT / "bench" / "monodepth2_run.py", shadow_checkout(args.monodepth2, kitti, args.work),
         timing, skip, "--", *md2_options], args.out / "monodepth2.log")
    results.append({**json.loads(timing.read_text()), "trainer": "monodepth2", "precision": "fp32"})
    print(f"monodepth2 trainer.py: {results[-1]['samples_per_s']:.2f} samples/s", flush=True)

    for precision in (["auto", "fp32"] if cuda else ["auto"]):
        results.append(geopt_rate(f"geopt_kitti_{precision}", f"kitti:{kitti}", args, skip, precision, args.work,
                                  args.out))
        print(f"geopt transfer, KITTI PNGs, {precision}: {results[-1]['samples_per_s']:.2f} samples/s", flush=True)

    shards = args.work / "shards"
    started = time.perf_counter()
    if not (shards / "manifest.json").is_file():
        run([sys.executable, "-m", "mining.cli", "import", "kitti", "--root", kitti, "--out", shards, "--width", 640,
             "--stride", 1, "--no-motion-filter", "--val-fraction", 0, "--workers", max(1, min(drives, args.workers))],
            args.out / "import.log")
    import_s = time.perf_counter() - started
    results.append({**geopt_rate("geopt_shards_auto", f"shards:{shards}", args, skip, "auto", args.work, args.out),
                    "import_s": import_s})
    print(f"geopt transfer, shards: {results[-1]['samples_per_s']:.2f} samples/s", flush=True)

    md2 = results[0]["samples_per_s"]
    header = (f"device {args.device}, {os.cpu_count()} cores, 640x192, batch {args.batch_size}, mode M, resnet18 "
              f"scratch, {args.workers} loader workers, {args.steps} steps (first {skip} untimed)")
    print("\n" + header)
    for r in results:
        data = "shards at 640 px" if "shards" in r["trainer"] else "KITTI PNGs 1242x375"
        extra = f"; its loader alone {r['loader_samples_per_s']:.1f}" if "loader_samples_per_s" in r else ""
        extra += f"; import once: {r['import_s']:.0f} s" if "import_s" in r else ""
        print(f"  {r['trainer'].split('_')[0]:<10} {r['precision']:<5} {data:<20} {r['samples_per_s']:8.2f} samples/s "
              f"= {r['samples_per_s'] / md2:5.2f}x Monodepth2{extra}")
    (args.out / "summary.json").write_text(json.dumps({"setup": header, "runs": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
