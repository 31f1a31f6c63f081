"""Pretraining speed: the loader alone, the model alone, both together, in one run and at the same size.

    python bench/pretrain.py                                  # CPU here: 640x192, batch 4
    python bench/pretrain.py --batch-size 16,64 --variants default,compile --steps 60 --workers 12   # a GPU

Both model-only and end to end run the real training loop (`training.loop.train`: guard, logging,
scheduler), model-only on one in-memory batch served endlessly, end to end on the loader. A rate is the
steady state: samples/s from step SKIP to the last, so start-up, compilation and loader spin-up stay out.
Each variant changes one thing against the default (bf16 autocast and channels_last on CUDA, float32 on
the CPU): `compile` (torch.compile), `fp32` (no autocast). Per batch size and variant it prints samples/s
(loader, model only, end to end and its ratio to model only; goal >= 0.9x), the loss alone per step
(forward + backward on fixed flows, without the extrapolation, which needs a net's stretch: its share of
a model-only step), model FLOPs per sample (forward + backward, both flow directions), the share of a
bf16 (CUDA) or float32 (CPU) matrix-product peak measured in the same run, and the peak memory. Shards come from mining the real clip in
../shared/media (looped to a minute) or, without it, from world videos; `--shards` reuses others.
"""
import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.flow.data import DataConfig, train_loader  # noqa: E402
from training.flow.pretrain import (PretrainConfig, PretrainTask, flow_losses, flow_model, pretrain,  # noqa: E402
                                    to_input)
from training.loop import train  # noqa: E402
from training.runtime import start_runtime  # noqa: E402
from timing import (loader_samples_per_s, matmul_peak_tflops, peak_memory_gib, reset_peak_memory,  # noqa: E402
                    steady_samples_per_s, step_flops, synchronize)

REAL_CLIP = ROOT.parent / "shared" / "media" / "drive_udacity_solidWhiteRight_960x540.mp4"
VARIANTS = {"default": {}, "compile": {"compile": True}, "fp32": {"precision": "fp32"}}


def make_shards(folder: Path) -> Path:
    videos = folder / "videos"
    videos.mkdir()
    if REAL_CLIP.is_file():
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-stream_loop", "6", "-i", str(REAL_CLIP), "-an",
                        "-c", "copy", str(videos / "real.mp4")], check=True)
    else:
        subprocess.run([sys.executable, "-m", "world.cli", "render", "--out", str(videos), "--videos", "2",
                        "--duration", "20"], check=True, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "mining.cli", "shard", "--in", str(videos), "--out", str(folder / "shards"),
                    "--val-fraction", "0"], check=True, cwd=ROOT, capture_output=True)
    return folder / "shards"


class InMemoryTask(PretrainTask):
    """Pretraining on one batch served endlessly: the model's rate, free of the loader."""

    def __init__(self, config: PretrainConfig, batch):
        super().__init__(config)
        self.batch = batch

    def batches(self, runtime, step, epoch):
        self.source_names = ["memory"]
        self.source_counts = torch.zeros(1)
        return itertools.repeat(self.batch)


class FixedFlows(torch.nn.Module):
    """Stands in for the model: the same multi-scale flows (as parameters) whatever the frames."""

    def __init__(self, pairs: int, height_px: int, width_px: int, device):
        super().__init__()
        self.flows = torch.nn.ParameterDict({str(s): torch.nn.Parameter(torch.randn(
            2 * pairs, 2, height_px >> s, width_px >> s, device=device)) for s in range(4)})

    def forward(self, target, source):
        return {int(s): f for s, f in self.flows.items()}


def loss_seconds(config: PretrainConfig, frames, runtime, repeats: int = 5) -> float:
    """Median seconds of the loss alone per step (both directions, every scale, forward + backward)."""
    flows = FixedFlows(frames[0].shape[0], *frames[0].shape[-2:], runtime.device)
    seconds = []
    for _ in range(repeats + 1):
        synchronize(runtime.device)
        started = time.perf_counter()
        flow_losses(flows, *frames, config, runtime)["loss"].backward()
        synchronize(runtime.device)
        seconds.append(time.perf_counter() - started)
    return sorted(seconds[1:])[repeats // 2]


def measure(config: PretrainConfig, batch, skip: int) -> dict:
    """Model-only and end-to-end steady rates of one configuration, its FLOPs per sample and peak memory."""
    runtime = start_runtime(config.device, config.precision)
    reset_peak_memory(runtime.device)
    model_only = replace(config, run_dir=config.run_dir / "model_only")
    train(InMemoryTask(model_only, batch), model_only)
    end_to_end = replace(config, run_dir=config.run_dir / "end_to_end")
    pretrain(end_to_end)
    steps, size = config.steps, config.data.batch_size
    rates = {name: steady_samples_per_s(c.run_dir / "log.jsonl", skip, steps, size)
             for name, c in (("model_only", model_only), ("end_to_end", end_to_end))}
    model = flow_model(vars(config)).to(runtime.device)
    frames = [to_input(f, runtime) for f in batch[:2]]
    triplets = ({"previous": to_input(batch[5], runtime), "principal_px": batch[6].to(runtime.device),
                 "extrapolation_weight": config.loss.extrapolation} if config.data.triplets else {})
    flops = step_flops(lambda: flow_losses(model, *frames, config, runtime, **triplets)["loss"].backward()) / size
    return {**rates, "loss_s": loss_seconds(config, frames, runtime), "flops_per_sample": flops, "peak_memory_gib": peak_memory_gib(runtime.device),
            "device": runtime.device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="640x192", help="training size WIDTHxHEIGHT")
    parser.add_argument("--batch-size", default="4", help="pairs per step; a comma list measures each")
    parser.add_argument("--variants", default="default", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=10, help="steps per run, the first --skip untimed")
    parser.add_argument("--skip", type=int, default=None, help="untimed first steps (default: a fifth, at least 2)")
    parser.add_argument("--workers", type=int, default=2, help="loader processes")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")
    parser.add_argument("--shards", default=None, help="existing shards to read (default: mine fresh ones)")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    batch_sizes = [int(b) for b in args.batch_size.split(",")]
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        sys.exit(f"unknown variant(s) {', '.join(sorted(unknown))}: choose from {', '.join(VARIANTS)}")
    skip = args.skip if args.skip is not None else max(2, args.steps // 5)
    if args.steps <= skip:
        sys.exit(f"--steps must exceed the untimed first {skip} steps")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or str(make_shards(Path(tmp)))
        for batch_size in batch_sizes:
            data = DataConfig(shards=shards, width_px=width, height_px=height, batch_size=batch_size,
                              workers=args.workers, batches_per_epoch=10_000)
            data = PretrainConfig(data=data).data  # what the default loss trains on (triplets)
            loader_rate = loader_samples_per_s(iter(train_loader(data)[0]), batch_size)
            batch = next(iter(train_loader(replace(data, workers=0))[0]))
            for variant in variants:
                config = PretrainConfig(data=data, run_dir=Path(tmp) / f"b{batch_size}_{variant}", steps=args.steps,
                                        warmup_steps=1, log_every=skip, image_every=10**9, checkpoint_every=10**9,
                                        device=args.device, **VARIANTS[variant])
                torch.manual_seed(0)
                rows.append({"batch": batch_size, "variant": variant, "loader": loader_rate,
                             **measure(config, batch, skip)})
                print_row(rows[-1], flush=True)
        device = rows[-1]["device"]
        peak = matmul_peak_tflops(device)
    print(f"\n{device}, {width}x{height}, {args.workers} loader workers, {args.steps} steps per run (first {skip} "
          f"untimed); matrix-product peak here {peak:.1f} TFLOP/s ({'bf16' if device.type == 'cuda' else 'float32'})")
    for row in rows:
        print_row(row, peak)


def print_row(row: dict, peak: float | None = None, flush: bool = False) -> None:
    tflops = row["flops_per_sample"] * row["end_to_end"] / 1e12
    share = f" = {tflops / peak:.1%} of peak" if peak else ""
    print(f"batch {row['batch']:>3} {row['variant']:<8} loader {row['loader']:8.1f} | model only "
          f"{row['model_only']:8.2f} | end to end {row['end_to_end']:8.2f} samples/s "
          f"({row['end_to_end'] / row['model_only']:.2f}x model-only) | loss alone {row['loss_s'] * 1e3:.0f} ms/step = "
          f"{row['loss_s'] * row['model_only'] / row['batch']:.0%} of a step | {row['flops_per_sample'] / 1e9:.1f} "
          f"GFLOP/sample, {tflops:.2f} TFLOP/s{share} | peak memory {row['peak_memory_gib']:.2f} GiB", flush=flush)


if __name__ == "__main__":
    main()
