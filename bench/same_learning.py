"""Do the speed-ups change what pretraining learns? Same data, same seed, with and without them.

    python bench/same_learning.py                                              # CPU: tiny, fast = compile
    python bench/same_learning.py --size 640x192 --steps 400 --batch-size 16 --workers 6    # a GPU

Three pretraining runs on the same world shards: `plain` (float32, eager, seed 0), `fast` (every speed-up:
the device's default precision, bf16 autocast and channels_last on CUDA, and torch.compile; seed 0) and
`plain_seed1` (plain with another seed: how far two equally valid runs drift apart, i.e. the noise).
Prints the mean gap between the loss curves over the second half of the run, fast vs plain next to
seed 1 vs plain; the speed-ups pass when their gap is within the seeds' (or within 2 % of the loss).
Draws all three curves in OUT/same_learning.png.
"""
import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geopt_vs_scratch import curve, plot_curves  # noqa: E402  (bench/, this script's folder)
from training.flow.data import DataConfig  # noqa: E402
from training.flow.pretrain import PretrainConfig, pretrain  # noqa: E402
from world.shards import write_world_shards  # noqa: E402


def second_half_gap(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> float:
    """Mean |a - b| over the logged steps of the second half, relative to b's mean there."""
    pairs = [(x, y) for (_, x), (_, y) in zip(a, b)][len(a) // 2:]
    return sum(abs(x - y) for x, y in pairs) / max(1e-12, sum(y for _, y in pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="128x64", help="training size WIDTHxHEIGHT, multiples of 32")
    parser.add_argument("--steps", type=int, default=60, help="pretraining steps per run")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    parser.add_argument("--drives", type=int, default=4, help="world training drives")
    parser.add_argument("--workers", type=int, default=1, help="loader processes per run")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "same_learning", help="picture and logs")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_world_shards(Path(tmp) / "shards", args.drives, 30, 300, width, height,
                           workers=min(args.drives, os.cpu_count() or 1))
        data = DataConfig(shards=str(Path(tmp) / "shards"), width_px=width, height_px=height, batch_size=args.batch_size,
                          workers=args.workers, batches_per_epoch=10_000)
        plain = PretrainConfig(data=data, run_dir=args.out / "plain", steps=args.steps, lr=6e-4,
                               warmup_steps=max(1, args.steps // 20), log_every=max(1, args.steps // 40),
                               image_every=10**9, checkpoint_every=10**9, device=args.device, precision="fp32")
        runs = {"plain": plain, "fast": replace(plain, run_dir=args.out / "fast", precision="auto", compile=True),
                "plain_seed1": replace(plain, run_dir=args.out / "plain_seed1", seed=1)}
        curves = {}
        for name, config in runs.items():
            result = pretrain(config)
            curves[name] = curve(Path(config.run_dir) / "log.jsonl")
            print(f"{name}: final loss {result['loss']:.4f}, {result['samples_per_s']:.1f} samples/s "
                  "(whole run, start-up and compilation included)", flush=True)
    plot_curves(curves, args.out / "same_learning.png")
    fast_gap, seed_gap = (second_half_gap(curves[n], curves["plain"]) for n in ("fast", "plain_seed1"))
    verdict = "within noise" if fast_gap <= max(seed_gap, 0.02) else "OUTSIDE noise"
    print(f"{width}x{height}, batch {args.batch_size}, {args.steps} steps: mean loss gap over the second half, "
          f"fast vs plain {fast_gap:.1%}, seed 1 vs seed 0 {seed_gap:.1%}: {verdict}; picture "
          f"{args.out / 'same_learning.png'}")


if __name__ == "__main__":
    main()
