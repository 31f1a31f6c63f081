"""Does geometric pretraining learn motion at all? Flow end-point error on world drives with true flow.

    python bench/flow_learning.py --lr 6e-4           # 300 steps per variant at 320x96, ~15 min each on 2 cores
    python bench/flow_learning.py --steps 1000 --size 640x192

Pretrains on world shards (`geopt-world shards`, exact flow in every sample) with the real loop, once
per loss variant, and reports the validation EPE on an unseen drive over the steps next to the EPE of
predicting no motion. A model whose EPE stays at the zero-flow score has learned nothing its structure
encoder could pass on to depth, whatever its photometric loss says.
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geopt_vs_scratch import curve, zero_flow_epe_px  # noqa: E402  (bench/, this script's folder)
from training.losses import FlowLossConfig  # noqa: E402
from training.pretrain import PretrainConfig, pretrain  # noqa: E402

VARIANTS = {"no_fb_check": FlowLossConfig(occlusion_masking=False), "fb_check": FlowLossConfig(occlusion_masking=True)}
"""Loss variants by name: without and with the forward-backward occlusion check."""


def world_shards(out: Path, drives: int, samples: int, seed: int) -> Path:
    subprocess.run([sys.executable, "-m", "world.cli", "shards", "--out", str(out), "--drives", str(drives),
                    "--samples", str(samples), "--size", "640x192", "--seed", str(seed)], check=True,
                   capture_output=True, cwd=ROOT)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="pretraining steps per variant")
    parser.add_argument("--size", default="320x96", help="training size WIDTHxHEIGHT (multiples of 32)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    parser.add_argument("--lr", type=float, default=PretrainConfig.lr, help="peak learning rate for a batch of 8")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    from training.cli import parse_size
    from training.data import DataConfig

    width, height = parse_size(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train = world_shards(tmp / "train", drives=3, samples=20, seed=300)
        val = world_shards(tmp / "val", drives=1, samples=20, seed=7000)
        zero = zero_flow_epe_px(val, args.size)
        print(f"predicting no motion: EPE {zero:.2f} px on the unseen drive at {args.size}", flush=True)
        for name in args.variants.split(","):
            run_dir = tmp / name
            started = time.perf_counter()
            pretrain(PretrainConfig(
                data=DataConfig(shards=str(train / "*.tar"), width_px=width, height_px=height,
                                batch_size=args.batch_size, workers=1),
                run_dir=run_dir, val_shards=str(val), steps=args.steps, warmup_steps=max(1, args.steps // 20),
                val_every=max(1, args.steps // 5), log_every=max(1, args.steps // 5), device="cpu",
                lr=args.lr, loss=VARIANTS[name]))
            epe = curve(run_dir / "log.jsonl", "val/epe_px")
            print(f"{name:>10}: EPE " + " -> ".join(f"{e:.2f}" for _, e in epe) + f" px at steps "
                  f"{', '.join(str(s) for s, _ in epe)} ({(time.perf_counter() - started) / 60:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
