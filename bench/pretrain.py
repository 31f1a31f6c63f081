"""Pretraining benchmark: is the loader ever the limit?

    python bench/pretrain.py                    # CPU here; unchanged on CUDA (bf16, channels_last)
    python bench/pretrain.py --batch-size 8 --steps 10 --size 640x192

Measures, in one run and at the same batch and size: the loader alone (samples/s), model steps on
in-memory tensors (forward + backward + AdamW, samples/s), and the real loop fed by the loader. Goal
(issue 5): end-to-end >= 0.9x model-only. Shards come from mining the real clip in ../shared/media
(looped to a minute) or, without it, from world videos.
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.flow.data import DataConfig, train_loader  # noqa: E402
from training.flow.model import GeoPtFlowModel  # noqa: E402
from training.flow.pretrain import PretrainConfig, flow_losses, to_input  # noqa: E402
from training.runtime import start_runtime  # noqa: E402
from timing import loader_samples_per_s, matmul_peak_tflops, peak_memory_gib, step_flops  # noqa: E402

REAL_CLIP = ROOT.parent / "shared" / "media" / "drive_udacity_solidWhiteRight_960x540.mp4"


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


def timed_steps(model, optimiser, batches, config, runtime, steps: int) -> float:
    """Samples/s over `steps` optimiser steps after one warm-up step; `batches` yields (target, source)."""
    iterator = iter(batches)
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        target, source = next(iterator)
        target, source = to_input(target, runtime), to_input(source, runtime)
        out = flow_losses(model, target, source, config, runtime)
        optimiser.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimiser.step()
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * target.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="640x192", help="training size WIDTHxHEIGHT")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    parser.add_argument("--workers", type=int, default=2, help="loader processes")
    parser.add_argument("--shards", default=None, help="existing shards to read (default: mine fresh ones)")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    runtime = start_runtime()
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or str(make_shards(Path(tmp)))
        data = DataConfig(shards=shards, width_px=width, height_px=height, batch_size=args.batch_size,
                          workers=args.workers, batches_per_epoch=10_000)
        config = PretrainConfig(data=data)

        loader_rate = loader_samples_per_s(iter(train_loader(data)[0]), args.batch_size)

        torch.manual_seed(0)
        model = GeoPtFlowModel().to(runtime.device)
        if runtime.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
        fixed = (torch.randint(0, 255, (args.batch_size, 3, height, width), dtype=torch.uint8),) * 2

        def in_memory():
            while True:
                yield fixed

        model_rate = timed_steps(model, optimiser, in_memory(), config, runtime, args.steps)
        end_to_end = timed_steps(model, optimiser, (b[:2] for b in train_loader(data)[0]), config, runtime,
                                 args.steps)
        flops = step_flops(lambda: flow_losses(model, *(to_input(f, runtime) for f in fixed), config, runtime)[
            "loss"].backward()) / args.batch_size
        peak = matmul_peak_tflops(runtime.device)
    print(f"device {runtime.device}, {width}x{height}, batch {args.batch_size}, {args.workers} loader workers")
    print(f"loader alone: {loader_rate:.1f} samples/s")
    print(f"model only (in-memory batches): {model_rate:.2f} samples/s")
    print(f"end to end (loader + model): {end_to_end:.2f} samples/s = {end_to_end / model_rate:.2f}x model-only "
          f"(goal >= 0.9x)")
    print(f"model FLOPs: {flops / 1e9:.1f} GFLOP per sample (forward + backward, both flow directions); "
          f"{flops * end_to_end / 1e12:.2f} TFLOP/s end to end = {flops * end_to_end / 1e12 / peak:.1%} of the "
          f"{peak:.1f} TFLOP/s a plain matrix product reaches here")
    print(f"peak memory: {peak_memory_gib(runtime.device):.2f} GiB ({'GPU' if runtime.device.type == 'cuda' else 'RSS'})")


if __name__ == "__main__":
    main()
