"""Why pretraining learned a flow worse than none at 640x192: the loss of three flows, per size and loss.

    python bench/flow_loss_landscape.py     # ~1 min on 2 cores

On world pairs with exact flow (2 unseen drives, 10 Hz) it scores, under the loss before the fix (each
pixel leaving the view charged a flat 0.1) and today's (charged at least its error when standing still):
- the true flow,
- no motion at all,
- "thrown out": no motion, but every pixel that matches worse than a threshold at zero flow sent 2 image
  heights down, out of view: what a net that has not yet found the far matches can learn instead.
A loss under which "thrown out" beats "no motion" rewards the degenerate flow. Its EPE (mean pixel distance
to the true flow) is what the GPU runs of issue 14 saw: several times the zero-flow score.

    python bench/flow_loss_landscape.py --along-truth   # ~1 min: each bench/flow_learning.py variant's loss

With --along-truth it scores the true flow scaled by 0, 0.25, ... 1.25 (every scale, area-downsampled)
under each loss variant of `bench/flow_learning.py`, as a share of the loss of no motion, at 192x64 and
5 Hz and at 640x192 and 10 Hz: does the loss fall all the way to the truth, and how steeply?
"""
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from training.flow.data import DataConfig, val_loader  # noqa: E402
from training.flow.loss import FlowLossConfig, flow_loss  # noqa: E402
from training.photometric import photometric_error  # noqa: E402
from world.shards import write_world_shards  # noqa: E402

LOSSES = {"flat 0.1 (before)": FlowLossConfig(exit_costs_standing_still=False, pyramid=False),
          "standing still (today)": FlowLossConfig()}
THRESHOLDS = (0.1, 0.2, 0.3)


def pairs(size: tuple[int, int], folder: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(target, source, true flow) of 2 unseen drives x 6 samples rendered at `size`."""
    shards = folder / f"{size[0]}x{size[1]}"
    write_world_shards(shards, drives=2, samples=6, first_seed=7000, width_px=size[0], height_px=size[1], workers=2)
    target, source, flow = next(iter(val_loader(DataConfig(shards=str(shards), width_px=size[0], height_px=size[1],
                                                           batch_size=12, workers=0))))[:3]
    return target.float() / 255, source.float() / 255, flow


def along_the_truth(folder: Path) -> None:
    """Loss of the scaled true flow per variant, relative to no motion, and the share of pixels excluded
    (out of view) at the truth."""
    import torch.nn.functional as F
    from flow_learning import VARIANTS  # bench/, this script's folder

    scales = (0, 0.25, 0.5, 0.75, 1.0, 1.25)
    for width, height, rate_hz in ((192, 64, 5.0), (640, 192, 10.0)):
        shards = folder / f"{width}x{height}@{rate_hz:g}"
        write_world_shards(shards, drives=2, samples=6, first_seed=7000, width_px=width, height_px=height,
                           frame_rate_hz=rate_hz, workers=2)
        target, source, flow = next(iter(val_loader(DataConfig(shards=str(shards), width_px=width,
                                                               height_px=height, batch_size=12, workers=0))))[:3]
        target, source = target.float() / 255, source.float() / 255
        print(f"{width}x{height} at {rate_hz:g} Hz (true flow {float(flow.norm(dim=1).mean()):.1f} px): loss of the "
              "true flow x " + ", ".join(f"{k:g}" for k in scales) + " / loss of no motion", flush=True)
        pyramid = {level: F.interpolate(flow, scale_factor=0.5**level, mode="area") if level else flow
                   for level in range(4)}
        for name, variant in VARIANTS.items():
            if (variant.half_size_share or variant.short_gap_share or not variant.film_starts_identity
                    or variant.motion_head or variant.coarse_to_fine):
                continue  # the same loss of the decoder's flow as another row
            scored = [flow_loss(target, source, {lv: f * k for lv, f in pyramid.items()}, None, variant.loss)
                      for k in scales]
            print(f"  {name:>24}: " + "  ".join(f"{float(s['loss'] / scored[0]['loss']):.3f}" for s in scored)
                  + f"   excluded at the truth {float(scored[4]['excluded']):.0%}", flush=True)


def main() -> None:
    if "--along-truth" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            along_the_truth(Path(tmp))
        return
    print(f"{'size':>9} {'loss':>24} {'true flow':>10} {'no motion':>10} " + " ".join(
        f"{'thrown out >' + str(t):>16}" for t in THRESHOLDS) + "   EPE px: no motion / thrown out >0.2")
    with tempfile.TemporaryDirectory() as tmp:
        for size in ((320, 96), (640, 192), (1024, 320)):
            target, source, true_flow = pairs(size, Path(tmp))
            still = torch.zeros_like(true_flow)
            unmatched = photometric_error(source, target)

            def thrown_out(threshold: float) -> torch.Tensor:
                return torch.cat([still[:, :1], (unmatched > threshold) * 2.0 * size[1]], dim=1)

            for name, config in LOSSES.items():
                score = lambda flow: float(flow_loss(target, source, {0: flow}, None, config)["photometric"])
                epe = lambda flow: float((flow - true_flow).norm(dim=1).mean())
                print(f"{size[0]:>4}x{size[1]:<4} {name:>24} {score(true_flow):>10.4f} {score(still):>10.4f} "
                      + " ".join(f"{score(thrown_out(t)):>16.4f}" for t in THRESHOLDS)
                      + f"   {epe(still):.1f} / {epe(thrown_out(0.2)):.1f}", flush=True)


if __name__ == "__main__":
    main()
