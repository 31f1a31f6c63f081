"""Near-duplicate videos: a compact perceptual fingerprint built from the frames the chain already decodes,
and the comparison that finds a later upload of a drive seen earlier (re-encoded, resized, cropped or zoomed
by up to ~10 %, trimmed, a timestamp burnt in), so that the copy yields no samples.

A fingerprint holds one 128-bit hash every `SAMPLE_STRIDE_FRAMES` frames: the signs of the low DCT
frequencies of a small Lab thumbnail of the frame's centre, each taken relative to that coefficient's
mean over the video. Road scenes share their layout (sky above, road below, facades converging on the
vanishing point), so raw hashes of two drives come close; what is left after the video's own mean is
taken out is what changes along this drive, and two drives have that in common no more than chance.
The mean also takes out what never moves: a bonnet, a logo, most of a burnt-in clock. The centre is what a
crop or a zoom leaves in view. A frame of another drive still comes near now and then, so a copy must also
match in order: most of the later video's moving samples must match the earlier one's at one time shift,
and nearly all of those where both videos run (another drive along the same route comes near wherever
the two pass the same spot, and only there).

Comparing every pair of videos costs ~5 ms per pair of full fingerprints: 40 min for 1,000 videos, 70 h for
10,000. `duplicates` therefore compares in full only the pairs an index brings up (locality-sensitive
hashing over bands of the bits): every moving sample is filed under `LSH_TABLES` bands of its hash, and
two videos are compared when their samples share a band at least `MIN_HITS` times at one time shift.
Keys are as long as the collection needs (`key_bits`): a small one is searched nearly exhaustively;
10,200 generated videos of 1-3 min take 18 s on a loaded 2-core machine (`bench/fingerprint_index.py`),
finding every re-encoded, zoomed or trimmed copy and 61 of 66 changed every way at once (a short one of
those, matching few samples and loosely, is the kind the index misses).
"""
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_STRIDE_FRAMES = 3
"""Every third frame is hashed: whatever a copy's trim, each of its samples lies within one frame (0.1 s at
10 frames/s) of one of the original's. Driving moves ~10 % of a hash's bits per frame, so the lag must stay small."""
MAX_SAMPLES = 600
"""The fingerprint covers the first 600 * 3 frames (3 min at 10 frames/s) in ~20 kB of JSON; a copy trimmed
by more than about half of that is not recognised."""
CENTRE_BOX = (0.2, 0.8, 0.15, 0.75)
"""(x0, x1, y0, y1) of the hashed region as fractions of the (bar-free) frame."""
THUMB_PX = 32
HASH_BITS = 128
"""8 x 8 DCT coefficients of lightness, 4 x 8 of each of Lab's colour channels a and b."""
MIN_DETAIL_GREY = 3.0
"""A centre whose lightness spreads less than this (std of the thumbnail, 0..255) is not hashed: fades,
black frames."""
NEAR_BITS = 36
"""Two hashes this close (of 128 bits) show the same view. Measured on the world's videos: re-encoding,
resizing or a burnt-in clock move 0-9 bits, an 8-10 % zoom with up to one frame of time lag 8-35 (97th
percentile 35); frames of two different drives differ by 64 on average and come this close in under 0.1 %
of pairs."""
STILL_BITS = 4
"""A sample this close to the previous one is the car standing still: it tells no drive from another (two
drives of one uploader may start parked at one spot) and is left out of the count."""
DUPLICATE_FRACTION = 0.5
"""Share of the later video's moving samples that must match in order. Measured on 3.5-4 s clips: copies
0.73-1.0 (a trimmed earlier one lacks the later's first samples), two different drives 0-0.14."""
OVERLAP_FRACTION = 0.8
"""And share of those of its moving samples that fall where the earlier video runs (at that shift) that
must match: a copy matches nearly all of them, another drive along the same route (another day: other
traffic, light, speed) only some, its hashes coming near where the two pass the same spot. Measured on
world drives (12 each, hashes 36 bits apart or closer): re-encoded, resized or zoomed copies 1.0, trimmed
0.91-1.0; the same route on another day 0.26-0.77 over 12 s, 0-0.85 over 4 s; a copy cropped, zoomed,
resized, re-encoded and trimmed all at once 0.82-1.0 over 12 s, 0.5-1.0 over 4 s, so a short one of those
can pass for another drive."""
MIN_MATCHED_SAMPLES = 4
"""And at least this many (1.2 s of driving): a match of a few samples proves nothing."""
LSH_TABLES = 16
"""Bands the index files every moving sample under: band t holds `key_bits` bits from bit 8 t on (wrapping
round the 128), so bands overlap once keys are longer than 8 bits."""
MIN_KEY_BITS = 8
COLLISIONS_PER_TABLE = 250_000
"""Chance pairs of samples one band may bring up (the index's time and memory)."""
CHANCE_CANDIDATES = 400
"""Pairs of unrelated videos the index may bring up to be compared in full (2-5 ms each), by the model in
`key_bits`; it underestimates about twofold (10,200 generated videos: 856 compared for nothing, 4 s)."""
MIN_HITS = 2
"""Pairs of samples sharing a band at one time shift (±1 sample) that make two videos worth comparing in
full. A copy's matches line up at one shift; chance matches of two unrelated drives scatter."""
MAX_KEY_SHARERS = 64
"""A key shared by more samples than this (a title card every upload of a channel opens with) tells no two
videos apart and is skipped."""


@dataclass(frozen=True)
class Fingerprint:
    """What a video's JSON report stores: {"stride_frames": 3, "hashes": ["9f3a...", null, ...]}.

    `hashes[i]` belongs to frame i * stride_frames (counted at the chain's decode rate) as 32 hex digits,
    or is None where that frame was too flat to hash.
    """

    stride_frames: int = SAMPLE_STRIDE_FRAMES
    hashes: list[str | None] = field(default_factory=list)

    @classmethod
    def from_json(cls, obj: dict) -> "Fingerprint":
        return cls(stride_frames=int(obj["stride_frames"]), hashes=list(obj["hashes"]))


def frame_coefficients(frame_rgb: np.ndarray) -> np.ndarray | None:
    """(HASH_BITS,) low DCT coefficients of the centre of an (H, W, 3) uint8 RGB frame, or None if too flat."""
    height, width = frame_rgb.shape[:2]
    x0, x1, y0, y1 = CENTRE_BOX
    centre = np.ascontiguousarray(frame_rgb[int(y0 * height):int(y1 * height), int(x0 * width):int(x1 * width)])
    lab = cv2.resize(cv2.cvtColor(centre, cv2.COLOR_RGB2LAB), (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA)
    lightness, a, b = np.moveaxis(lab.astype(np.float32), -1, 0)
    if lightness.std() < MIN_DETAIL_GREY:
        return None
    return np.concatenate([cv2.dct(lightness)[:8, :8].ravel(), cv2.dct(a)[:4, :8].ravel(),
                           cv2.dct(b)[:4, :8].ravel()])


class FingerprintBuilder:
    """Sees every decoded frame of one video in order (`push`) and keeps the sampled frames' coefficients,
    (MAX_SAMPLES, HASH_BITS) floats at most; `result` turns them into hashes once the video's mean is known."""

    def __init__(self, stride_frames: int = SAMPLE_STRIDE_FRAMES, max_samples: int = MAX_SAMPLES):
        self.stride_frames = stride_frames
        self.max_samples = max_samples
        self.frame_index = 0
        self.coefficients: list[np.ndarray | None] = []

    def push(self, frame_rgb: np.ndarray) -> None:
        """`frame_rgb`: (H, W, 3) uint8 RGB at the working size, black bars already cropped."""
        if self.frame_index % self.stride_frames == 0 and len(self.coefficients) < self.max_samples:
            self.coefficients.append(frame_coefficients(frame_rgb))
        self.frame_index += 1

    def result(self) -> Fingerprint:
        hashed = [c for c in self.coefficients if c is not None]
        mean = np.mean(hashed, axis=0) if hashed else None
        return Fingerprint(self.stride_frames, [None if c is None else np.packbits(c > mean).tobytes().hex()
                                                for c in self.coefficients])


@dataclass(frozen=True)
class _Samples:
    """A fingerprint ready to compare: (N, HASH_BITS) float32 0/1 bits, (N,) bool hashed, (N,) bool moving."""

    stride_frames: int
    bits: np.ndarray
    hashed: np.ndarray
    moving: np.ndarray


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) differing bits between (N, B) and (M, B) 0/1 bit arrays, as one matrix product (exact in float32)."""
    return a.sum(axis=1)[:, None] + b.sum(axis=1)[None, :] - 2 * a @ b.T


def _samples(fingerprint: Fingerprint) -> _Samples:
    hashed = np.array([h is not None for h in fingerprint.hashes], dtype=bool)
    packed = np.zeros((len(hashed), HASH_BITS // 8), dtype=np.uint8)
    for i, text in enumerate(fingerprint.hashes):
        if text is not None:
            packed[i] = np.frombuffer(bytes.fromhex(text), dtype=np.uint8)
    bits = np.unpackbits(packed, axis=1).astype(np.float32)
    moving = hashed.copy()
    rows = np.flatnonzero(hashed)
    step_bits = np.abs(bits[rows[1:]] - bits[rows[:-1]]).sum(axis=1)
    moving[rows[1:][step_bits <= STILL_BITS]] = False
    return _Samples(fingerprint.stride_frames, bits, hashed, moving)


def _match_counts(earlier: _Samples, later: _Samples) -> tuple[int, int, int]:
    if earlier.stride_frames != later.stride_frames:
        raise ValueError(f"fingerprints sampled every {earlier.stride_frames} and {later.stride_frames} frames")
    moving = int(later.moving.sum())
    if not moving or not earlier.hashed.any():
        return 0, moving, 0
    near = ((_hamming(later.bits, earlier.bits) <= NEAR_BITS)
            & later.moving[:, None] & earlier.hashed[None, :])
    count_later, count_earlier = near.shape
    rows, cols = np.nonzero(near)
    by_shift = np.zeros((count_later, count_later + count_earlier + 1), dtype=bool)
    by_shift[rows, rows - cols + count_earlier] = True
    in_window = by_shift[:, :-1] | by_shift[:, 1:]
    matched = in_window.sum(axis=0)
    best = int(matched.argmax())
    partner = np.arange(count_later) + count_earlier - best  # earlier samples `partner` and `partner` - 1
    overlapping = np.zeros(count_later, dtype=bool)
    for candidate in (partner, partner - 1):
        inside = (candidate >= 0) & (candidate < count_earlier)
        overlapping[inside] |= earlier.hashed[candidate[inside]]
    return int(matched[best]), moving, int((overlapping & later.moving).sum())


def match_counts(earlier: Fingerprint, later: Fingerprint) -> tuple[int, int, int]:
    """(matched, moving, overlapping): how many of the later video's samples show a moving car, how many of
    those have a near match in the earlier video at the one time shift that gives the most, and how many
    of them fall where the earlier video has a hashed sample at that shift.

    A shift k pairs later sample i with earlier samples i - k and i - k - 1 (a trim rarely falls on the
    sampling grid), so copies that start at different times or run for different lengths still match.
    """
    return _match_counts(_samples(earlier), _samples(later))


def match_fraction(earlier: Fingerprint, later: Fingerprint) -> float:
    """Share (0..1) of the later video's moving samples that match the earlier video in order; 0 if none move."""
    matched, moving, _ = match_counts(earlier, later)
    return matched / moving if moving else 0.0


def _is_duplicate(earlier: _Samples, later: _Samples) -> bool:
    matched, moving, overlapping = _match_counts(earlier, later)
    return (matched >= MIN_MATCHED_SAMPLES and matched >= DUPLICATE_FRACTION * moving
            and matched >= OVERLAP_FRACTION * overlapping)


def is_duplicate(earlier: Fingerprint, later: Fingerprint) -> bool:
    """True if `later` copies `earlier`: at least MIN_MATCHED_SAMPLES and DUPLICATE_FRACTION of its moving
    samples match in order, and OVERLAP_FRACTION of those where both videos run."""
    return _is_duplicate(_samples(earlier), _samples(later))


def duplicates(fingerprints: Sequence[tuple[str, Fingerprint]]) -> dict[str, str]:
    """{later video id: earlier video id} for every video that copies one before it in the given order.

    The first copy stays; a copy of a copy names the first. Only the pairs the index brings up
    (`candidate_pairs`) are compared in full, a later video's candidates in order, those that are not
    copies themselves first (a copy's original is compared instead of it wherever both came up), and none
    once the video is known to be a copy. A fingerprint that cannot be read, or that was sampled at
    another stride than most, is left out with one warning naming its video.
    """
    readable = []
    for video_id, fingerprint in fingerprints:
        try:
            readable.append((video_id, fingerprint, _moving_hashes(fingerprint)))
        except ValueError as error:
            logger.warning("%s: fingerprint left out of the re-upload search: %s", video_id, error)
    if not readable:
        return {}
    stride = Counter(f.stride_frames for _, f, _ in readable).most_common(1)[0][0]
    for video_id, fingerprint, _ in readable:
        if fingerprint.stride_frames != stride:
            logger.warning("%s: fingerprint sampled every %d frames, the others every %d: not compared",
                           video_id, fingerprint.stride_frames, stride)
    readable = [entry for entry in readable if entry[1].stride_frames == stride]
    candidates = candidate_pairs([moving for _, _, moving in readable])
    prepared: dict[int, _Samples] = {}

    def samples(position: int) -> _Samples:
        if position not in prepared:
            prepared[position] = _samples(readable[position][1])
        return prepared[position]

    first_of: dict[str, str] = {}
    for later, (video_id, _, _) in enumerate(readable):
        earlier_ids = {earlier: readable[earlier][0] for earlier in candidates.get(later, [])}
        for earlier in sorted(earlier_ids, key=lambda e: (earlier_ids[e] in first_of, e)):
            if _is_duplicate(samples(earlier), samples(later)):
                earlier_id = earlier_ids[earlier]
                first_of[video_id] = first_of.get(earlier_id, earlier_id)
                break
    return first_of


def _moving_hashes(fingerprint: Fingerprint) -> tuple[np.ndarray, np.ndarray]:
    """((M, HASH_BITS // 8) uint8 hashes, (M,) sample indices) of the fingerprint's moving samples (hashed and
    more than `STILL_BITS` from the hash before). Raises ValueError on a hash that is not 32 hex digits."""
    rows = [i for i, text in enumerate(fingerprint.hashes) if text is not None]
    texts = [fingerprint.hashes[i] for i in rows]
    if any(not isinstance(text, str) or len(text) != HASH_BITS // 4 for text in texts):
        raise ValueError(f"a hash is not {HASH_BITS // 4} hex digits")
    hashes = np.frombuffer(bytes.fromhex("".join(texts)), np.uint8).reshape(len(texts), HASH_BITS // 8)
    step_bits = np.unpackbits(hashes[1:] ^ hashes[:-1], axis=1).sum(axis=1)
    moving = np.concatenate([[True], step_bits > STILL_BITS])[:len(rows)]
    return hashes[moving], np.array(rows, dtype=np.int64)[moving]


def key_bits(sample_count: int, video_count: int) -> int:
    """Bits per band key, 8..64: the fewest that keep both the chance collisions of one band under
    `COLLISIONS_PER_TABLE` and the expected chance candidates under `CHANCE_CANDIDATES`. Two unrelated
    videos of S samples each meet in a band at each of their ~2 S shifts ~S L 2^-k / 2 times (L bands,
    k bits), a Poisson count; over V^2 / 2 pairs, two such meetings in one window of shifts come up
    ~V^2 S^3 L^2 2^-2k / 4 times. With fewer bits a copy is found more surely: the sharpest search the
    collection affords. 10 videos of 4 s: 8 bits; 1,000 of 1-3 min: 22; 10,000: 26."""
    chance_pairs = sample_count * (sample_count - 1) / 2
    for_collisions = np.log2(max(chance_pairs / COLLISIONS_PER_TABLE, 1.0))
    per_video = sample_count / max(video_count, 1)
    for_candidates = 0.5 * np.log2(max(video_count**2 * per_video**3 * LSH_TABLES**2 / (4 * CHANCE_CANDIDATES), 1.0))
    return int(np.clip(np.ceil(max(for_collisions, for_candidates)), MIN_KEY_BITS, 64))


def candidate_pairs(moving: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[int, list[int]]:
    """{later position: [earlier positions]}: the pairs of videos with at least `MIN_HITS` pairs of moving
    samples that share a band key at one time shift (±1 sample); a pair of samples counts once however
    many (overlapping) bands it shares. `moving[v]` is video v's ((M, 16) uint8 hashes,
    (M,) sample indices), videos in order."""
    video = np.concatenate([np.full(len(hashes), v, np.int64) for v, (hashes, _) in enumerate(moving)])
    sample = np.concatenate([indices for _, indices in moving])
    if len(video) < 2:
        return {}
    hashes = np.concatenate([hashes for hashes, _ in moving])
    high, low = (hashes[:, half * 8:(half + 1) * 8].copy().view(">u8").ravel().astype(np.uint64) for half in (0, 1))
    bits = key_bits(len(video), len(moving))
    shift_span = 2 * int(sample.max()) + 4  # shifts -max..max, and room for the window's shift + 1
    sample_pairs = []
    for table in range(LSH_TABLES):
        left, right = _sharing(_band(high, low, 8 * table % HASH_BITS, bits))
        other = video[left] != video[right]
        earlier, later = np.minimum(left[other], right[other]), np.maximum(left[other], right[other])
        sample_pairs.append(later * len(video) + earlier)  # positions follow the video order
    earlier, later = np.divmod(np.unique(np.concatenate(sample_pairs)), len(video))[::-1]
    shift = sample[later] - sample[earlier] + shift_span // 2
    codes, counts = np.unique((video[later] * len(moving) + video[earlier]) * shift_span + shift, return_counts=True)
    next_shift = np.searchsorted(codes, codes + 1).clip(max=len(codes) - 1)
    window = counts + np.where(codes[next_shift] == codes + 1, counts[next_shift], 0)
    pairs = np.unique(codes[window >= MIN_HITS] // shift_span)
    found: dict[int, list[int]] = {}
    for later, earlier in zip(*np.divmod(pairs, len(moving))):
        found.setdefault(int(later), []).append(int(earlier))
    return found


def _band(high: np.ndarray, low: np.ndarray, start_bit: int, bits: int) -> np.ndarray:
    """(N,) uint64: bits `start_bit` .. `start_bit` + `bits` - 1 of each 128-bit hash (wrapping round), whose
    bits 0-63 are `high` and 64-127 `low` (most significant first)."""
    if start_bit >= 64:
        high, low, start_bit = low, high, start_bit - 64
    if start_bit:
        left, right = np.uint64(start_bit), np.uint64(64 - start_bit)
        high, low = (high << left) | (low >> right), (low << left) | (high >> right)
    return high >> np.uint64(64 - bits) if bits < 64 else high


def _sharing(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) positions of every pair of entries of `keys` (N,) with equal values, keys shared by
    more than `MAX_KEY_SHARERS` entries left out."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    sizes = np.diff(np.append(starts, len(keys)))
    shared = (sizes >= 2) & (sizes <= MAX_KEY_SHARERS)
    starts, sizes = starts[shared], sizes[shared]
    lefts, rights = [], []
    for gap in range(1, int(sizes.max(initial=1))):
        wide = sizes > gap
        counts = sizes[wide] - gap  # pairs `gap` apart in each group of more than `gap` entries
        first = np.repeat(starts[wide], counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        lefts.append(order[first])
        rights.append(order[first + gap])
    if not lefts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(lefts), np.concatenate(rights)
