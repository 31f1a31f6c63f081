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
match in order: most of the later video's moving samples must match the earlier one's at one time shift.
"""
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

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
MIN_MATCHED_SAMPLES = 4
"""And at least this many (1.2 s of driving): a match of a few samples proves nothing."""


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


def _match_counts(earlier: _Samples, later: _Samples) -> tuple[int, int]:
    if earlier.stride_frames != later.stride_frames:
        raise ValueError(f"fingerprints sampled every {earlier.stride_frames} and {later.stride_frames} frames")
    moving = int(later.moving.sum())
    if not moving or not earlier.hashed.any():
        return 0, moving
    near = ((_hamming(later.bits, earlier.bits) <= NEAR_BITS)
            & later.moving[:, None] & earlier.hashed[None, :])
    count_later, count_earlier = near.shape
    rows, cols = np.nonzero(near)
    by_shift = np.zeros((count_later, count_later + count_earlier + 1), dtype=bool)
    by_shift[rows, rows - cols + count_earlier] = True
    in_window = by_shift[:, :-1] | by_shift[:, 1:]
    return int(in_window.sum(axis=0).max()), moving


def match_counts(earlier: Fingerprint, later: Fingerprint) -> tuple[int, int]:
    """(matched, moving): how many of the later video's samples show a moving car, and how many of those
    have a near match in the earlier video at the one time shift that gives the most.

    A shift k pairs later sample i with earlier samples i - k and i - k - 1 (a trim rarely falls on the
    sampling grid), so copies that start at different times or run for different lengths still match.
    """
    return _match_counts(_samples(earlier), _samples(later))


def match_fraction(earlier: Fingerprint, later: Fingerprint) -> float:
    """Share (0..1) of the later video's moving samples that match the earlier video in order; 0 if none move."""
    matched, moving = match_counts(earlier, later)
    return matched / moving if moving else 0.0


def _is_duplicate(earlier: _Samples, later: _Samples) -> bool:
    matched, moving = _match_counts(earlier, later)
    return matched >= MIN_MATCHED_SAMPLES and matched >= DUPLICATE_FRACTION * moving


def is_duplicate(earlier: Fingerprint, later: Fingerprint) -> bool:
    """True if `later` copies `earlier`: at least DUPLICATE_FRACTION of its moving samples, and at least
    MIN_MATCHED_SAMPLES, match in order."""
    return _is_duplicate(_samples(earlier), _samples(later))


def duplicates(fingerprints: Sequence[tuple[str, Fingerprint]]) -> dict[str, str]:
    """{later video id: earlier video id} for every video that copies one before it in the given order.

    The first copy stays; a copy of a copy names the first. Every pair is compared, ~5 ms each for full
    fingerprints: ~25 s for 100 videos of 3 min or more.
    """
    prepared = [(video_id, _samples(fingerprint)) for video_id, fingerprint in fingerprints]
    first_of: dict[str, str] = {}
    for index, (video_id, later) in enumerate(prepared):
        for earlier_id, earlier in prepared[:index]:
            if _is_duplicate(earlier, later):
                first_of[video_id] = first_of.get(earlier_id, earlier_id)
                break
    return first_of
