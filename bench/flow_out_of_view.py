"""How much of the flow end-point error no photometric loss can reach: pixels whose match leaves the frame.

    python bench/flow_out_of_view.py                        # the 5 Hz proxy, 192x64 at 10 Hz, 640x192 at 10 Hz
    python bench/flow_out_of_view.py --case 1024x320@10     # any WIDTHxHEIGHT@HZ
    python bench/flow_out_of_view.py --case 192x64@5 --run OUT/runs/192x64/VARIANT   # a trained net, by region

For each case, renders the validation drives `bench/flow_learning.py` scores on (2 drives, 10 samples,
first seed 7000) and prints the mean true flow, the share of pixels whose match lands outside the frame,
their mean flow against the others', and the share of the zero-flow score (the mean flow length) they
carry, in all and by the edge they leave through. That share is the EPE/zero a net scores if it is exact
wherever the match stays in view and predicts no motion elsewhere: a floor that better matching in view
cannot lower. With --run (a pretraining run folder: config.json and last.pt, e.g. from `flow_learning.py
--keep-runs`), also that net's EPE/zero and mean flow against the truth in each region, for the pairs
validation scores (middle frame -> next) and the same frames backwards (middle -> previous): a net that
guesses one direction from the target frame alone does well on one and badly on the other. Seconds per
case.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.checkpoints import load_checkpoint  # noqa: E402
from training.flow.data import DataConfig, val_loader  # noqa: E402
from training.flow.model import GeoPtFlowModel  # noqa: E402
from training.flow.pretrain import flow_model, true_match_in_view  # noqa: E402
from world.shards import write_world_shards  # noqa: E402

CASES = ("192x64@5", "192x64@10", "640x192@10")


REGIONS = ("in view", "bottom", "sides", "top")


def validation_pairs(shards: Path, width_px: int, height_px: int) -> dict[str, list[tuple]]:
    """Batches (target, source, exact flow in pixels) of a folder of world shards, as validation reads them:
    'forward' pairs each middle frame with the next, 'backward' with the previous one."""
    config = DataConfig(shards=str(shards), width_px=width_px, height_px=height_px, batch_size=8, workers=0)
    batches = list(val_loader(config))
    return {"forward": [(b.target, b.source, b.true_flow) for b in batches],
            "backward": [(b.target, b.previous, b.true_flow_previous) for b in batches]}


def regions(flows: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N, 2, H, W) flows -> (N, H, W) masks of where each pixel's match lands, one region per pixel: 'in
    view' (`true_match_in_view`), else below the frame ('bottom'), else left or right of it ('sides'),
    else above it ('top')."""
    inside = true_match_in_view(flows).bool()
    y_px = torch.arange(flows.shape[-2], dtype=flows.dtype).view(-1, 1) + flows[:, 1]
    bottom = ~inside & (y_px > flows.shape[-2] - 1)
    top = ~inside & ~bottom & (y_px < 0)
    return {"in view": inside, "bottom": bottom, "sides": ~inside & ~bottom & ~top, "top": top}


def out_of_view(flows: torch.Tensor) -> dict[str, float]:
    """Flow statistics of (N, 2, H, W) flows split by whether each pixel's match stays inside the frame
    (`true_match_in_view`, validation's own split)."""
    inside = true_match_in_view(flows).bool()
    length = flows.norm(dim=1)
    return {"mean_flow_px": float(length.mean()), "share_of_width": float(length.mean() / flows.shape[-1]),
            "leaving_share": float(1 - inside.float().mean()), "leaving_flow_px": float(length[~inside].mean()),
            "staying_flow_px": float(length[inside].mean()),
            "zero_flow_score_leaving": float(length[~inside].sum() / length.sum()),
            **{f"zero_flow_score_{name}": float(length[mask].sum() / length.sum())
               for name, mask in regions(flows).items() if name != "in view"}}


def load_run(run_dir: Path) -> GeoPtFlowModel:
    """The net of a pretraining run folder (its config.json and last.pt), in eval mode."""
    model = flow_model(json.loads((run_dir / "config.json").read_text()))
    model.load_state_dict(load_checkpoint(run_dir / "last.pt")["model"])
    return model.eval()


@torch.no_grad()
def score_by_region(model: GeoPtFlowModel, pairs) -> dict[str, dict[str, float]]:
    """A net's flow on validation `pairs` (target, source, exact flow) by `regions`: its EPE over the
    zero-flow score there ('epe_over_zero'), its mean flow and the true mean flow ('flow_px', 'true_px')."""
    sums = {name: torch.zeros(3) for name in ("all", *REGIONS)}  # EPE, flow, true flow summed over pixels
    counts = dict.fromkeys(sums, 0)
    for target, source, flow in pairs:
        predicted = model(target.float() / 255, source.float() / 255)[0]
        per_pixel = torch.stack([(predicted - flow).norm(dim=1), predicted.norm(dim=1), flow.norm(dim=1)])
        for name, mask in {"all": torch.ones_like(flow[:, 0], dtype=torch.bool), **regions(flow)}.items():
            sums[name] += per_pixel[:, mask].sum(dim=1)
            counts[name] += int(mask.sum())
    return {name: {"epe_over_zero": float(s[0] / s[2]), "flow_px": float(s[1] / max(1, counts[name])),
                   "true_px": float(s[2] / max(1, counts[name]))} for name, s in sums.items() if counts[name]}


def both_ways(by_direction: dict[str, dict[str, dict[str, float]]]) -> float:
    """All pixels' EPE over the zero-flow score, summed over the forward and backward pairs of the same
    targets (`score_by_region`'s output per direction): a guess of one direction scores about 1 or worse."""
    scores = [by_region["all"] for by_region in by_direction.values()]
    return sum(s["epe_over_zero"] * s["true_px"] for s in scores) / sum(s["true_px"] for s in scores)


def parse_case(text: str) -> tuple[int, int, float]:
    """'WIDTHxHEIGHT@HZ' -> (width, height, rate); argparse turns a ValueError into one line."""
    try:
        size, rate = text.split("@")
        width, height = (int(n) for n in size.split("x"))
        return width, height, float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT@HZ, e.g. 640x192@10") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", type=parse_case,
                        help=f"WIDTHxHEIGHT@HZ, repeatable (default: {', '.join(CASES)})")
    parser.add_argument("--run", type=Path, action="append", default=[],
                        help="a pretraining run folder (config.json, last.pt) to score by region on each case's "
                             "drives, forward, backward and both ways; repeatable")
    args = parser.parse_args()
    try:
        nets = {run: load_run(run) for run in args.run}
    except (OSError, KeyError, RuntimeError) as error:
        parser.error(f"--run: {error}")
    for width, height, rate in args.case or [parse_case(c) for c in CASES]:
        size = f"{width}x{height}"
        with tempfile.TemporaryDirectory() as tmp:
            write_world_shards(Path(tmp), 2, 10, 7000, width_px=width, height_px=height, frame_rate_hz=rate)
            pairs = validation_pairs(Path(tmp), width, height)
        s = out_of_view(torch.cat([flow for _, _, flow in pairs["forward"]]))
        scores = {run: {direction: score_by_region(net, pairs[direction]) for direction in pairs}
                  for run, net in nets.items()}
        print(f"{size} at {rate:g} Hz: mean flow {s['mean_flow_px']:.2f} px ({s['share_of_width']:.1%} of the width); "
              f"{s['leaving_share']:.1%} of the pixels leave the view, moving {s['leaving_flow_px']:.1f} px against "
              f"{s['staying_flow_px']:.1f} px for the rest, and carry {s['zero_flow_score_leaving']:.0%} of the "
              f"zero-flow score (through the bottom {s['zero_flow_score_bottom']:.0%}, the sides "
              f"{s['zero_flow_score_sides']:.0%}, the top {s['zero_flow_score_top']:.0%})", flush=True)
        for run, by_direction in scores.items():
            print(f"  {run}:")
            for direction, by_region in by_direction.items():
                print(f"    {direction}: EPE/zero " + "; ".join(
                    f"{name} {r['epe_over_zero']:.2f} (flow {r['flow_px']:.1f} vs {r['true_px']:.1f} px)"
                    for name, r in by_region.items()), flush=True)
            print(f"    both ways: EPE/zero {both_ways(by_direction):.2f}", flush=True)


if __name__ == "__main__":
    main()
