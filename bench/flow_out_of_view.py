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
import io
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from formats.shard_schema import FLOW_MEMBER  # noqa: E402
from world.shards import write_world_shards  # noqa: E402

CASES = ("192x64@5", "192x64@10", "640x192@10")


def true_flows(shards: Path) -> np.ndarray:
    """(N, H, W, 2) exact flows (pixels) of every sample in a folder of world shards."""
    flows = []
    for path in sorted(shards.glob("*.tar")):
        with tarfile.open(path) as tar:
            flows += [np.load(io.BytesIO(tar.extractfile(m).read())) for m in tar.getmembers()
                      if m.name.endswith(FLOW_MEMBER)]
    return np.stack(flows)


def out_of_view(flows: np.ndarray) -> dict[str, float]:
    """Flow statistics of (N, H, W, 2) flows split by whether each pixel's match stays inside the frame."""
    height, width = flows.shape[1:3]
    rows, cols = np.mgrid[0:height, 0:width]
    x, y = cols + flows[..., 0], rows + flows[..., 1]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    length = np.linalg.norm(flows, axis=-1)
    return {"mean_flow_px": float(length.mean()), "share_of_width": float(length.mean() / width),
            "leaving_share": float(1 - inside.mean()), "leaving_flow_px": float(length[~inside].mean()),
            "staying_flow_px": float(length[inside].mean()),
            "zero_flow_score_leaving": float(length[~inside].sum() / length.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", help=f"WIDTHxHEIGHT@HZ, repeatable (default: {', '.join(CASES)})")
    args = parser.parse_args()
    for case in args.case or CASES:
        size, rate = case.split("@")
        width, height = (int(n) for n in size.split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            write_world_shards(Path(tmp), 2, 10, 7000, width_px=width, height_px=height, frame_rate_hz=float(rate))
            s = out_of_view(true_flows(Path(tmp)))
        print(f"{size} at {rate} Hz: mean flow {s['mean_flow_px']:.2f} px ({s['share_of_width']:.1%} of the width); "
              f"{s['leaving_share']:.1%} of the pixels leave the view, moving {s['leaving_flow_px']:.1f} px against "
              f"{s['staying_flow_px']:.1f} px for the rest, and carry {s['zero_flow_score_leaving']:.0%} of the "
              "zero-flow score", flush=True)


if __name__ == "__main__":
    main()
