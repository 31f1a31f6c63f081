"""The shard sample schema: the one place that says what a GeoPt sample is.

A sample is a run of `n` consecutive kept frames of one scene of one video, stored as plain WebDataset
members sharing a key::

    <key>.0.jpg  <key>.1.jpg  ...  <key>.<n-1>.jpg   frames in time order (RGB JPEG)
    <key>.json                                       SampleMeta
    <key>.mask.png                                   optional: 8-bit grey, the frames' size, 0 where a
                                                     static overlay (a logo, a clock, the tip of the
                                                     car's hood) covers the pixel in every frame, 255
                                                     where the scene shows; losses ignore the 0 pixels.
                                                     Absent: every pixel shows the scene
    <key>.flow.npy                                   optional, world-rendered shards only: the exact
                                                     flow (H, W, 2) float32 in pixels from the middle
                                                     frame to the next, for end-point-error validation
    <key>.flow_previous.npy                          optional, world-rendered shards only: the same from
                                                     the middle frame to the previous one, so validation
                                                     scores both directions (a net that guesses one
                                                     direction from the target frame alone fails one)

For the default n = 3 the frames are t-1, t, t+1: pretraining uses the pairs (1 -> 2) and (1 -> 0),
the depth transfer the triplet with frame 1 as target. Keys are ``<video id>_<first frame index:07d>``
(frame index at the output rate), so reruns and parallel runs give identical keys.
"""
import io
import json
import re
import tarfile
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

FRAME_EXTENSION = "jpg"
META_EXTENSION = "json"
FLOW_MEMBER = "flow.npy"
FLOW_PREVIOUS_MEMBER = "flow_previous.npy"
MASK_MEMBER = "mask.png"
_SAFE_ID = re.compile(r"[^A-Za-z0-9_-]+")


def safe_video_id(raw_id: str) -> str:
    """A video id usable in file names and WebDataset keys: letters, digits, '-' and '_' only.

    WebDataset splits a member name at its first '.', and ids come from the internet: no dots, no slashes.
    """
    cleaned = _SAFE_ID.sub("_", raw_id).strip("_")
    return cleaned[:120] or "video"


def sample_key(video_id: str, first_frame_index: int) -> str:
    return f"{video_id}_{first_frame_index:07d}"


def frame_member(position: int) -> str:
    """Member suffix of the frame at `position` in the run: '0.jpg', '1.jpg', ..."""
    return f"{position}.{FRAME_EXTENSION}"


@dataclass
class SampleMeta:
    """The `json` member of a sample. Pixel quantities are at the stored (working, cropped) size."""

    video_id: str
    source_url: str
    frame_indices: list[int]
    """Indices at the output rate `fps_out`, counted from the start of the video."""
    timestamps_s: list[float]
    fps_out: float
    scene_index: int
    motion_px: list[float]
    """Camera motion of each consecutive pair (len n - 1), in stored pixels, as `mining.motion` measures it
    (over a grid of textured cells; a frame-wide median of the optical flow before 2026-12)."""
    crop_box: tuple[int, int, int, int]
    """(x, y, width, height) of the stored frames within the decoded working-size frame."""
    working_size: tuple[int, int]
    """(width, height) of the decoded frame before cropping."""
    original_size: tuple[int, int]
    """(width, height) of the source video after rotation."""
    extra: dict = field(default_factory=dict)
    """Source-specific facts, e.g. known intrinsics of imported datasets."""

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "SampleMeta":
        fields = json.loads(data)
        fields["crop_box"] = tuple(fields["crop_box"])
        fields["working_size"] = tuple(fields["working_size"])
        fields["original_size"] = tuple(fields["original_size"])
        return cls(**fields)


def encode_jpeg(frame_rgb: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 RGB -> the JPEG bytes of a frame member."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    return data.tobytes()


def frame_count(sample: dict) -> int:
    """Number of frames ('0.jpg', '1.jpg', ...) in a shard sample."""
    return sum(1 for k in sample if k.endswith(".jpg") and k.split(".")[0].isdigit())


def decode_sample_frames(sample: dict, minimum: int, positions=None) -> list[np.ndarray]:
    """RGB (H, W, 3) uint8 frames of a shard sample at `positions` (default all), in order; a ValueError
    naming the shard and key when there are fewer than `minimum` frames or one is not a JPEG."""
    count = frame_count(sample)
    if count < minimum:
        raise ValueError(f"{sample.get('__url__')} {sample.get('__key__')}: {count} frames, need {minimum}")
    frames = []
    for position in positions if positions is not None else range(count):
        image = cv2.imdecode(np.frombuffer(sample[frame_member(position)], np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{sample.get('__url__')} {sample.get('__key__')}: frame {position} is not a JPEG")
        frames.append(image[..., ::-1])
    return frames


def encode_mask(scene_visible: np.ndarray) -> bytes:
    """(H, W) bool, True where the scene shows -> the PNG bytes of a `MASK_MEMBER`."""
    ok, data = cv2.imencode(".png", np.where(scene_visible, 255, 0).astype(np.uint8))
    if not ok:
        raise RuntimeError("OpenCV failed to encode a PNG")
    return data.tobytes()


def decode_mask(sample: dict) -> np.ndarray | None:
    """(H, W) bool, True where the scene shows, from a sample's `MASK_MEMBER`; None when it has none (every
    pixel shows the scene); a ValueError naming the shard and key when the member is not a PNG."""
    if MASK_MEMBER not in sample:
        return None
    mask = cv2.imdecode(np.frombuffer(sample[MASK_MEMBER], np.uint8), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ValueError(f"{sample.get('__url__')} {sample.get('__key__')}: {MASK_MEMBER} is not a PNG")
    return mask > 127


def sample_dict(key: str, jpegs: list[bytes], meta: SampleMeta, flow_npy: bytes | None = None,
                mask_png: bytes | None = None, flow_previous_npy: bytes | None = None) -> dict:
    """One sample as suffix -> bytes plus '__key__' (what `write_sample` and webdataset's TarWriter take)."""
    sample = {"__key__": key, META_EXTENSION: meta.to_bytes()}
    if flow_npy is not None:
        sample[FLOW_MEMBER] = flow_npy
    if flow_previous_npy is not None:
        sample[FLOW_PREVIOUS_MEMBER] = flow_previous_npy
    if mask_png is not None:
        sample[MASK_MEMBER] = mask_png
    for position, jpeg in enumerate(jpegs):
        sample[frame_member(position)] = jpeg
    return sample


def write_sample(tar: tarfile.TarFile, sample: dict) -> int:
    """Append one sample (a `sample_dict`) to an open tar as WebDataset lays it out; returns bytes of payload.

    Written with the standard library rather than webdataset's TarWriter, whose import pulls in torch
    (~0.5 GB per mining worker). Members are sorted and stamped with mtime 0, so equal samples give
    equal bytes.
    """
    key, total = sample["__key__"], 0
    for suffix in sorted(k for k in sample if k != "__key__"):
        data = sample[suffix]
        info = tarfile.TarInfo(f"{key}.{suffix}")
        info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o444, "geopt", "geopt"
        tar.addfile(info, io.BytesIO(data))
        total += len(data)
    return total
