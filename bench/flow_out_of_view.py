"""How much of the flow end-point error no photometric loss can reach: pixels whose match leaves the frame.

    python bench/flow_out_of_view.py                        # the 5 Hz proxy, 192x64 at 10 Hz, 640x192 at 10 Hz
    python bench/flow_out_of_view.py --case 1024x320@10     # any WIDTHxHEIGHT@HZ

For each case, renders the validation drives `bench/flow_learning.py` scores on (2 drives, 10 samples,
first seed 7000) and prints the mean true flow, the share of pixels whose match lands outside the frame,
their mean flow against the others', and the share of the zero-flow score (the mean flow length) they
carry. That share is the EPE/zero a net scores if it is exact wherever the match stays in view and
predicts no motion elsewhere: a floor that better matching in view cannot lower. Seconds per case.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.flow.data import DataConfig, val_loader  # noqa: E402
from training.flow.pretrain import true_match_in_view  # noqa: E402
from world.shards import write_world_shards  # noqa: E402

CASES = ("192x64@5", "192x64@10", "640x192@10")


def true_flows(shards: Path, width_px: int, height_px: int) -> torch.Tensor:
    """(N, 2, H, W) exact flows (pixels) of every sample in a folder of world shards, as validation reads them."""
    config = DataConfig(shards=str(shards), width_px=width_px, height_px=height_px, batch_size=8, workers=0)
    return torch.cat([flow for _, _, flow, _ in val_loader(config)])


def out_of_view(flows: torch.Tensor) -> dict[str, float]:
    """Flow statistics of (N, 2, H, W) flows split by whether each pixel's match stays inside the frame
    (`true_match_in_view`, validation's own split)."""
    inside = true_match_in_view(flows).bool()
    length = flows.norm(dim=1)
    return {"mean_flow_px": float(length.mean()), "share_of_width": float(length.mean() / flows.shape[-1]),
            "leaving_share": float(1 - inside.float().mean()), "leaving_flow_px": float(length[~inside].mean()),
            "staying_flow_px": float(length[inside].mean()),
            "zero_flow_score_leaving": float(length[~inside].sum() / length.sum())}


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
    args = parser.parse_args()
    for width, height, rate in args.case or [parse_case(c) for c in CASES]:
        size = f"{width}x{height}"
        with tempfile.TemporaryDirectory() as tmp:
            write_world_shards(Path(tmp), 2, 10, 7000, width_px=width, height_px=height, frame_rate_hz=rate)
            s = out_of_view(true_flows(Path(tmp), width, height))
        print(f"{size} at {rate:g} Hz: mean flow {s['mean_flow_px']:.2f} px ({s['share_of_width']:.1%} of the width); "
              f"{s['leaving_share']:.1%} of the pixels leave the view, moving {s['leaving_flow_px']:.1f} px against "
              f"{s['staying_flow_px']:.1f} px for the rest, and carry {s['zero_flow_score_leaving']:.0%} of the "
              "zero-flow score", flush=True)


if __name__ == "__main__":
    main()
