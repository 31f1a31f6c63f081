"""Depth transfer benchmark: is the loader ever the limit, and how long does evaluating the Eigen split take?

    python bench/transfer.py                        # CPU here; 640x192, batch 4, mode M, 697 test frames
    python bench/transfer.py --test-frames 82 --kitti runs/bench_kitti   # fewer frames, evaluate extrapolated

Measures, in one run and at the same batch and size: the KITTI loader alone (samples/s), transfer steps
on one in-memory batch (forward, loss, backward, Adam; samples/s), and the real loop fed by the loader.
Goal: end-to-end >= 0.9x model-only. The two alternate for `--rounds` rounds and the medians are
compared, so other work on a shared machine weighs on both alike; each end-to-end round first runs as
many untimed steps as the loader workers can have prefetched while the model-only steps ran.
Then the wall time of ``geopt-train evaluate`` on a test split of 697 frames at 1242x375, the size of
Monodepth2's Eigen split. The data is a world KITTI export at that size: one training drive and 17 test
drives of 43 frames, every inner test frame in the split. With --test-frames below 697 fewer test drives
are rendered and the time is extrapolated linearly (labelled so). Load averages are printed alongside.
"""
import argparse
import itertools
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.depth.data import training_batches  # noqa: E402
from training.runtime import start_runtime  # noqa: E402
from timing import loader_samples_per_s, matmul_peak_tflops, peak_memory_gib, step_flops  # noqa: E402
from training.depth.transfer import TransferConfig, build_model, depth_losses, to_device, transfer  # noqa: E402
from world.kitti_export import KittiExportSpec, export_kitti  # noqa: E402

EIGEN_TEST_FRAMES = 697
FRAMES_PER_DRIVE = 43
"""41 inner frames per test drive: 17 drives give exactly 697."""


def render_kitti(folder: Path, test_frames: int) -> tuple[int, float, bool]:
    """World KITTI export at 1242x375 with at least `test_frames` test frames; (test frames, seconds, whether
    an export was already there: export_kitti then renders only what is missing)."""
    reused = (folder / "world_truth.json").is_file()
    test_drives = math.ceil(test_frames / (FRAMES_PER_DRIVE - 2))
    spec = KittiExportSpec(folder, train_drives=1, test_drives=test_drives, frames_per_drive=FRAMES_PER_DRIVE,
                           width_px=1242, height_px=375, test_stride=1)
    start = time.perf_counter()
    with tqdm(total=(1 + test_drives) * FRAMES_PER_DRIVE, unit="frame", desc="render 1242x375 stereo") as bar:
        truth = export_kitti(spec, bar.update)
    return truth["split_sizes"]["test"], time.perf_counter() - start, reused


def timed_steps(model, optimiser, batches, config: TransferConfig, runtime, steps: int, warmup: int = 0) -> float:
    """Samples/s over `steps` optimiser steps taken after `warmup` untimed ones."""
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        batch = to_device(next(batches), runtime)
        out = depth_losses(model, batch, config, runtime)
        optimiser.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimiser.step()
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * config.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="640x192", help="training size WIDTHxHEIGHT")
    parser.add_argument("--batch-size", type=int, default=4, help="frames per step")
    parser.add_argument("--mode", choices=["M", "S", "MS"], default="M", help="supervision")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per measurement and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating model-only / end-to-end rounds")
    parser.add_argument("--workers", type=int, default=2, help="loader processes")
    parser.add_argument("--test-frames", type=int, default=EIGEN_TEST_FRAMES,
                        help="test frames to render and evaluate (time extrapolated to 697 when fewer)")
    parser.add_argument("--kitti", type=Path, default=None, help="keep (or reuse) the KITTI export here")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    runtime = start_runtime()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        kitti = args.kitti or Path(tmp) / "kitti"
        test_frames, render_s, reused = render_kitti(kitti, args.test_frames)
        config = TransferConfig(data=f"kitti:{kitti}", run_dir=Path(tmp) / "run", mode=args.mode, init="scratch",
                                width_px=width, height_px=height, batch_size=args.batch_size, workers=args.workers,
                                device=str(runtime.device), steps=1, log_every=1)

        loader_rate = loader_samples_per_s(training_batches(config.loader_config()), args.batch_size)

        torch.manual_seed(0)
        model = build_model(config, load_init=False).to(runtime.device)
        if runtime.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
        fixed = next(training_batches(replace(config.loader_config(), workers=0)))
        in_memory = itertools.repeat(fixed)
        loader = training_batches(config.loader_config())
        prefetched = max(1, 2 * args.workers)  # DataLoader's default prefetch_factor is 2 per worker
        model_rates, end_to_end_rates = [], []
        for round_index in range(args.rounds):
            model_rates.append(timed_steps(model, optimiser, in_memory, config, runtime, args.steps,
                                           warmup=int(round_index == 0)))
            end_to_end_rates.append(timed_steps(model, optimiser, loader, config, runtime, args.steps, prefetched))
        del loader
        model_rate, end_to_end = statistics.median(model_rates), statistics.median(end_to_end_rates)
        flops = step_flops(lambda: depth_losses(model, to_device(fixed, runtime), config, runtime)["loss"].backward())
        flops /= args.batch_size
        peak, memory = matmul_peak_tflops(runtime.device), peak_memory_gib(runtime.device)

        transfer(config)
        command = [sys.executable, "-m", "training.cli", "evaluate", "--data", f"kitti:{kitti}", "--split", "eigen",
                   "--ckpt", str(config.run_dir / "last.pt"), "--device", str(runtime.device)]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        evaluate_s = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"evaluate failed: {done.stderr.strip()}")
    print(f"device {runtime.device}, {width}x{height}, batch {args.batch_size}, mode {args.mode}, "
          f"{args.workers} loader workers, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs; "
          f"load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print(f"loader alone: {loader_rate:.1f} samples/s")
    print(f"model only (in-memory batch): {model_rate:.2f} samples/s "
          f"(median of {', '.join(f'{r:.2f}' for r in model_rates)})")
    print(f"end to end (loader + model): {end_to_end:.2f} samples/s "
          f"(median of {', '.join(f'{r:.2f}' for r in end_to_end_rates)}) = {end_to_end / model_rate:.2f}x "
          "model-only (goal >= 0.9x)")
    print(f"model FLOPs: {flops / 1e9:.1f} GFLOP per sample (forward + backward); {flops * end_to_end / 1e12:.2f} "
          f"TFLOP/s end to end = {flops * end_to_end / 1e12 / peak:.1%} of the {peak:.1f} TFLOP/s a plain matrix "
          f"product reaches here; peak memory {memory:.2f} GiB ({'GPU' if runtime.device.type == 'cuda' else 'RSS'})")
    print(f"{'reusing the export in ' + str(args.kitti) if reused else 'rendering'} {test_frames} test frames "
          f"(+{FRAMES_PER_DRIVE} training) at 1242x375 stereo: {render_s:.0f} s")
    if test_frames == EIGEN_TEST_FRAMES:
        print(f"geopt-train evaluate, {test_frames} images at 1242x375: {evaluate_s:.1f} s")
    else:
        print(f"geopt-train evaluate, {test_frames} images at 1242x375: {evaluate_s:.1f} s measured; "
              f"extrapolated to {EIGEN_TEST_FRAMES} images: {evaluate_s * EIGEN_TEST_FRAMES / test_frames:.1f} s")

if __name__ == "__main__":
    main()
