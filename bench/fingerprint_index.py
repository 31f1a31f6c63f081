"""Re-upload search at scale: `mining.fingerprint.duplicates` over 10,000 generated fingerprints.

    python bench/fingerprint_index.py                    # 10,000 videos, 2 % of them planted copies
    python bench/fingerprint_index.py --videos 1000      # smaller

Goal (issue 23): 10,000 videos compared in under a minute (comparing every pair cost ~5 ms per pair of
full fingerprints: ~70 h). Prints the time of `duplicates` (reading the fingerprints, the index, and the
full comparison of the pairs it brings up), the copies found by kind, the videos wrongly taken for copies,
and the time one full pairwise comparison takes here, with what comparing every pair would cost.

The fingerprints are generated the way mining stores them (hex hashes, `Fingerprint`), shaped like the
world's: a drive is a walk through hash space that flips each bit with probability 0.3 from one sample to
the next (world drives move 20-57 of the 128 bits between samples, 37 on average), 1-4 minutes long
(200-800 samples, cut at `MAX_SAMPLES`), one in five starting parked (10-100 identical samples). A copy is
a stretch of an earlier video (trimmed at both ends) whose bits flip independently at the rate measured on
the world's ffmpeg-made copies (`tests/mining/test_fingerprint.py`): re-encoded 0.05 (median 6 bits),
zoomed or trimmed 0.12 (16 bits), cropped + zoomed + resized + re-encoded at once 0.23 (29 bits). Real copies
flip their weakest bits, not random ones, so the index finds them at least as often as these.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mining.fingerprint import (HASH_BITS, LSH_TABLES, MAX_SAMPLES, SAMPLE_STRIDE_FRAMES, Fingerprint,  # noqa: E402
                                _is_duplicate, _samples, duplicates, key_bits)

STEP_FLIP = 0.3
COPY_FLIPS = {"re-encoded": 0.05, "zoomed or trimmed": 0.12, "all at once": 0.23}


def drive_hashes(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, HASH_BITS) bool: a random walk through hash space, parked at the start one time in five."""
    flips = rng.random((count, HASH_BITS)) < STEP_FLIP
    flips[0] = rng.random(HASH_BITS) < 0.5
    if rng.random() < 0.2:
        flips[1:min(count, int(rng.integers(10, 100)))] = False
    return np.logical_xor.accumulate(flips, axis=0)


def fingerprint(bits: np.ndarray) -> Fingerprint:
    return Fingerprint(SAMPLE_STRIDE_FRAMES, [row.tobytes().hex() for row in np.packbits(bits, axis=1)])


def generate(videos: int, copy_share: float, seed: int) -> tuple[list, dict]:
    """([(video id, Fingerprint)] in id order, {copy id: (original id, kind)})."""
    rng = np.random.default_rng(seed)
    originals = [drive_hashes(rng, min(MAX_SAMPLES, int(rng.integers(200, 801)))) for _ in range(videos)]
    order = [(f"v{i:05d}", bits) for i, bits in enumerate(originals)]
    planted = {}
    for c in range(int(copy_share * videos)):
        original = int(rng.integers(videos))
        kind = list(COPY_FLIPS)[c % len(COPY_FLIPS)]
        bits = originals[original]
        start = int(rng.integers(0, len(bits) // 5 + 1))
        length = int(rng.integers((len(bits) - start) // 2, len(bits) - start + 1))
        copied = bits[start:start + length] ^ (rng.random((length, HASH_BITS)) < COPY_FLIPS[kind])
        copy_id = f"v{original:05d}_copy{c}"  # sorts right after its original
        order.append((copy_id, copied))
        planted[copy_id] = (f"v{original:05d}", kind)
    order.sort(key=lambda item: item[0])
    return [(video_id, fingerprint(bits)) for video_id, bits in order], planted


def pairwise_ms(fingerprints: list, pairs: int, seed: int) -> float:
    """Milliseconds one full comparison of two fingerprints takes, averaged over random pairs."""
    rng = np.random.default_rng(seed)
    chosen = [tuple(rng.choice(len(fingerprints), 2, replace=False)) for _ in range(pairs)]
    start = time.perf_counter()
    for a, b in chosen:
        _is_duplicate(_samples(fingerprints[a][1]), _samples(fingerprints[b][1]))
    return 1000 * (time.perf_counter() - start) / pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=10_000, help="originals (copies come on top)")
    parser.add_argument("--copy-share", type=float, default=0.02, help="planted copies per original")
    parser.add_argument("--seed", type=int, default=23)
    args = parser.parse_args()
    fingerprints, planted = generate(args.videos, args.copy_share, args.seed)
    samples = sum(sum(h is not None for h in f.hashes) for _, f in fingerprints)
    print(f"command: python bench/fingerprint_index.py --videos {args.videos} --copy-share {args.copy_share} "
          f"--seed {args.seed}")
    print(f"{len(fingerprints)} videos ({len(planted)} planted copies), {samples} samples; "
          f"index: {LSH_TABLES} bands of {key_bits(samples, len(fingerprints))} bits", flush=True)
    start = time.perf_counter()
    found = duplicates(fingerprints)
    seconds = time.perf_counter() - start
    print(f"duplicates(): {seconds:.1f} s for {len(fingerprints)} videos")
    for kind in COPY_FLIPS:
        ids = [c for c, (_, k) in planted.items() if k == kind]
        hits = sum(found.get(c) == planted[c][0] for c in ids)
        print(f"  {kind:>18}: {hits}/{len(ids)} copies found, naming their original")
    print(f"  videos wrongly taken for copies: {sum(v not in planted for v in found)}")
    per_pair_ms = pairwise_ms(fingerprints, 50, args.seed)
    pairs = len(fingerprints) * (len(fingerprints) - 1) / 2
    print(f"one full comparison: {per_pair_ms:.1f} ms; every pair ({pairs:.3g}) would take "
          f"{pairs * per_pair_ms / 3.6e6:.1f} h")


if __name__ == "__main__":
    main()
