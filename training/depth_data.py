"""Training samples for the depth transfer: KITTI raw through Monodepth2's split files, or mined shards.

A sample is a dict:
- 'frames' {frame id: (3, H, W) float32 in 0..1}: 0 the target; -1, +1 its neighbours in time; 's' the
  other camera of the stereo pair at the same instant. These feed the loss.
- 'frames_aug': the same after colour jitter; these feed the networks (Monodepth2 keeps the loss on the
  original colours).
- 'K' (3, 3) float32 intrinsics normalised by image size (`training.geometry`); absent when unknown.
- 'stereo_T' (4, 4) float32 target camera -> stereo partner (metres), with 's' only.

Augmentation is Monodepth2's: with probability 1/2 a colour jitter shared by all frames (brightness,
contrast, saturation x0.8..1.2, hue +-0.1, in random order), with probability 1/2 a horizontal flip of
all frames (which swaps the side of the stereo partner, hence the baseline's sign).

Data sources are written 'kitti:PATH' (a KITTI raw root with splits/<split>/train_files.txt) or
'shards:SPEC' (mined triplets, see `mining.schema`; SPEC as `training.shard_spec.expand_shards` reads it).

Frames to predict come from image files (`read_rgb`) or videos, which ffmpeg decodes and encodes through
pipes one frame at a time (`probe_video`, `read_video_frames`, `write_h264`), so no video is ever held whole.
"""
import json
import logging
import math
import random
import subprocess
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import ffmpeg
import numpy as np
import torch
import torchvision.transforms.functional as TF
import webdataset as wds
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torchvision.transforms import ColorJitter

from geopt_io import atomic_path
from mining.schema import META_EXTENSION
from training.data import SkipOnce, decode_sample_frames, frame_count, samples_from_shards
from training.depth_losses import stereo_transform
from training.geometry import KITTI_K_NORMALISED
from training.kitti import SplitEntry, image_path, read_split_file
from training.shard_spec import expand_shards

log = logging.getLogger(__name__)

FRAME_IDS = {"M": (0, -1, 1), "S": (0, "s"), "MS": (0, -1, 1, "s")}
"""Frames each training mode loads (Monodepth2's --frame_ids, plus 's' with --use_stereo)."""
JITTER_RANGE = (0.8, 1.2)
HUE_RANGE = (-0.1, 0.1)
OTHER_SIDE = {"l": "r", "r": "l"}


def parse_data_spec(text: str) -> tuple[str, str]:
    """'kitti:PATH' or 'shards:SPEC' -> ('kitti', PATH) or ('shards', SPEC)."""
    kind, sep, value = text.partition(":")
    if not sep or kind not in ("kitti", "shards") or not value:
        raise ValueError(f"data must be kitti:PATH or shards:SPEC, got {text!r}")
    return kind, value


@dataclass(frozen=True)
class LoaderConfig:
    """What the loaders need; `transfer.TransferConfig` fills it."""

    data: str
    split: str = "eigen_zhou"
    mode: str = "M"
    width_px: int = 640
    height_px: int = 192
    batch_size: int = 12
    workers: int = 4
    fov_deg: float | None = None
    """Horizontal field of view of the shards' stored frames; None when unknown."""
    train_fraction: float = 1.0
    augment: bool = True
    shuffle_buffer: int = 256
    seed: int = 0


def read_rgb(path: Path) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB; ValueError naming the file if it cannot be decoded."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return image[..., ::-1]


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb).transpose(2, 0, 1).copy()).float().div_(255)


def frame_tensor(rgb: np.ndarray, width_px: int, height_px: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, height_px, width_px) float32 in 0..1 (area interpolation, aspect not kept)."""
    return _to_tensor(cv2.resize(rgb, (width_px, height_px), interpolation=cv2.INTER_AREA))


def load_image(path: Path, width_px: int, height_px: int) -> torch.Tensor:
    """An image file -> (3, H, W) float32 in 0..1 at the given size (area interpolation)."""
    return frame_tensor(read_rgb(path), width_px, height_px)


def random_jitter() -> tuple:
    """Monodepth2's colour jitter parameters: (order of the four operations, brightness, contrast, saturation, hue)."""
    return ColorJitter.get_params(JITTER_RANGE, JITTER_RANGE, JITTER_RANGE, HUE_RANGE)


def apply_jitter(image: torch.Tensor, params: tuple) -> torch.Tensor:
    """Apply `random_jitter` parameters to a (3, H, W) image in 0..1."""
    order, brightness, contrast, saturation, hue = params
    operations = {0: (TF.adjust_brightness, brightness), 1: (TF.adjust_contrast, contrast),
                  2: (TF.adjust_saturation, saturation), 3: (TF.adjust_hue, hue)}
    for index in order.tolist():
        function, factor = operations[index]
        image = function(image, factor)
    return image


def _augmented(frames: dict, flip: bool, jitter: tuple | None) -> tuple[dict, dict]:
    if flip:
        frames = {f: image.flip(-1) for f, image in frames.items()}
    jittered = {f: apply_jitter(image, jitter) for f, image in frames.items()} if jitter else frames
    return frames, jittered


def _draw_augmentation(augment: bool) -> tuple[bool, tuple | None]:
    """(flip, jitter or None), each with probability 1/2 when augmenting; torch's RNG, seeded per worker."""
    if not augment:
        return False, None
    jitter = random_jitter() if torch.rand(()) > 0.5 else None
    return bool(torch.rand(()) > 0.5), jitter


def _frame_entry(entry: SplitEntry, frame_id) -> SplitEntry:
    if frame_id == "s":
        return SplitEntry(entry.folder, entry.frame_index, OTHER_SIDE[entry.side])
    return SplitEntry(entry.folder, entry.frame_index + frame_id, entry.side)


class KittiDepthDataset(Dataset):
    """Monodepth2's KITTI raw training set: split entries -> samples (see the module doc).

    Entries whose frames (neighbours in time, the stereo partner) are missing are dropped with one
    warning that counts them. Images are resized to `width_px` x `height_px` whatever their size;
    intrinsics are `KITTI_K_NORMALISED`, which holds at every size.
    """

    def __init__(self, root: Path, entries: list[SplitEntry], frame_ids: tuple, width_px: int, height_px: int,
                 augment: bool):
        self.root, self.frame_ids, self.size, self.augment = Path(root), frame_ids, (width_px, height_px), augment
        self.paths, missing = [], []
        for entry in entries:
            try:
                self.paths.append((entry, {f: image_path(self.root, _frame_entry(entry, f)) for f in frame_ids}))
            except FileNotFoundError as error:
                missing.append((entry, error))
        if missing:
            log.warning("skipped %d of %d split entries with missing frames, e.g. %s", len(missing), len(entries),
                        missing[0][1])

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int, flip: bool = False, jitter: tuple | None = None) -> dict:
        entry, paths = self.paths[index]
        frames = {f: load_image(path, *self.size) for f, path in paths.items()}
        frames, jittered = _augmented(frames, flip, jitter)
        K = torch.from_numpy(KITTI_K_NORMALISED.astype(np.float32))
        sample = {"frames": frames, "frames_aug": jittered, "K": K}
        if "s" in self.frame_ids:
            sample["stereo_T"] = stereo_transform(entry.side, flip)
        return sample

    def __getitem__(self, index: int) -> dict:
        return self.load(index, *_draw_augmentation(self.augment))


def kitti_training_entries(root: Path, split: str, train_fraction: float = 1.0) -> list[SplitEntry]:
    """The first `train_fraction` of the split's train_files.txt lines, in file order (deterministic few-shot)."""
    entries = read_split_file(Path(root) / "splits" / split / "train_files.txt")
    return entries[:max(1, math.ceil(train_fraction * len(entries)))]


class EpochSampler(Sampler):
    """Each epoch a permutation seeded by (seed, epoch); this rank takes every world_size-th index, in whole
    batches, from batch `skip_batches` on, so a resumed run continues mid-epoch without loading what it skips."""

    def __init__(self, count: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.count, self.batch_size, self.seed, self.rank, self.world_size = count, batch_size, seed, rank, world_size
        self.batches_per_epoch = (count // world_size) // batch_size
        self.epoch, self.skip_batches = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        share = torch.randperm(self.count, generator=generator)[self.rank::self.world_size]
        share = share[self.skip_batches * self.batch_size:self.batches_per_epoch * self.batch_size]
        return iter(share.tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip_batches) * self.batch_size


def _endless(loader: DataLoader, sampler: EpochSampler, start_batch: int) -> Iterator[dict]:
    epoch, skip = divmod(start_batch, sampler.batches_per_epoch)
    while True:
        sampler.set_epoch(epoch, skip)
        yield from loader
        epoch, skip = epoch + 1, 0


def _kitti_batches(config: LoaderConfig, root: Path, rank: int, world_size: int, start_batch: int) -> Iterator[dict]:
    entries = kitti_training_entries(root, config.split, config.train_fraction)
    dataset = KittiDepthDataset(root, entries, FRAME_IDS[config.mode], config.width_px, config.height_px,
                                config.augment)
    sampler = EpochSampler(len(dataset), config.batch_size, config.seed, rank, world_size)
    if sampler.batches_per_epoch == 0:
        raise ValueError(f"{len(dataset)} usable training entries in {root}/splits/{config.split} are fewer than "
                         f"one batch of {config.batch_size} per process")
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                        num_workers=config.workers, persistent_workers=config.workers > 0,
                        pin_memory=torch.cuda.is_available())
    return _endless(loader, sampler, start_batch)


def fov_intrinsics(fov_deg: float, width_px: int, height_px: int) -> np.ndarray:
    """(3, 3) normalised K of a `width_px` x `height_px` image with horizontal field of view `fov_deg`,
    square pixels and the principal point at the centre: fx = 0.5 W / tan(fov / 2)."""
    focal_px = 0.5 * width_px / math.tan(math.radians(fov_deg) / 2)
    return np.array([[focal_px / width_px, 0.0, 0.5], [0.0, focal_px / height_px, 0.5], [0.0, 0.0, 1.0]])


class ShardTriplet:
    """A shard sample (frames t-1, t, t+1, see `mining.schema`) -> a depth training sample (frames -1, 0, +1).

    Frames are centre-cropped to the training aspect (the largest such crop, so pixels stay square and the
    principal point central), then resized. K comes from the sample's own known intrinsics (imported KITTI
    or Cityscapes, world shards), else from `fov_deg` (of the stored frame's width); without either the
    sample has no 'K' and the intrinsics must be learned.
    """

    def __init__(self, config: LoaderConfig):
        self.config = config

    def __call__(self, sample: dict) -> dict:
        middle = (frame_count(sample) - 1) // 2
        stored = decode_sample_frames(sample, minimum=3, positions=(middle - 1, middle, middle + 1))
        height, width = stored[0].shape[:2]
        size = (self.config.width_px, self.config.height_px)
        crop_w = min(width, int(height * size[0] / size[1]))
        crop_h = min(height, int(round(crop_w * size[1] / size[0])))
        x, y = (width - crop_w) // 2, (height - crop_h) // 2
        images = [cv2.resize(f[y:y + crop_h, x:x + crop_w], size, interpolation=cv2.INTER_AREA) for f in stored]
        frames = {f: _to_tensor(image) for f, image in zip((-1, 0, 1), images)}
        frames, jittered = _augmented(frames, *_draw_augmentation(self.config.augment))
        out = {"frames": frames, "frames_aug": jittered}
        known = json.loads(sample.get(META_EXTENSION, b"{}")).get("extra", {}).get("intrinsics_normalised")
        if known is not None or self.config.fov_deg is not None:
            # Normalised K of the stored frame (known from an imported dataset, else from the field of view),
            # re-expressed for the centre crop: pixels = normalised x stored size, minus the crop offset.
            K = np.array(known, dtype=np.float64) if known is not None else fov_intrinsics(self.config.fov_deg,
                                                                                           width, height)
            K[0, 0], K[0, 2] = K[0, 0] * width / crop_w, (K[0, 2] * width - x) / crop_w
            K[1, 1], K[1, 2] = K[1, 1] * height / crop_h, (K[1, 2] * height - y) / crop_h
            out["K"] = torch.from_numpy(K.astype(np.float32))
        return out


def _shard_batches(config: LoaderConfig, spec: str, start_batch: int) -> Iterator[dict]:
    urls = expand_shards(spec)
    urls = urls[:max(1, math.ceil(config.train_fraction * len(urls)))]
    seed = config.seed * 1_000_003 + start_batch
    handler = SkipOnce()
    pipeline = wds.DataPipeline(
        wds.ResampledShards(urls, seed=seed, deterministic=True),
        partial(samples_from_shards, handler=handler),
        wds.shuffle(config.shuffle_buffer, initial=config.shuffle_buffer // 2, rng=random.Random(seed)),
        wds.map(ShardTriplet(config), handler=handler),
        wds.batched(config.batch_size, collation_fn=default_collate, partial=False),
    )
    return iter(wds.WebLoader(pipeline, batch_size=None, num_workers=config.workers))


def training_batches(config: LoaderConfig, rank: int = 0, world_size: int = 1, start_batch: int = 0) -> Iterator[dict]:
    """Endless collated batches (the sample dicts of the module doc with a leading batch dimension).

    KITTI: epochs over the split, reshuffled each epoch, resumable at `start_batch`. Shards: streamed at
    random (webdataset seeds the shard draws by rank and worker; only mode M; `train_fraction` keeps the
    first part of the shard list), reseeded by `start_batch` on resume.
    """
    kind, value = parse_data_spec(config.data)
    if config.mode not in FRAME_IDS:
        raise ValueError(f"mode must be M, S or MS, got {config.mode!r}")
    if not 0 < config.train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {config.train_fraction}")
    if kind == "kitti":
        root = Path(value)
        if not root.is_dir():
            raise ValueError(f"KITTI root {root} is not a folder")
        return _kitti_batches(config, root, rank, world_size, start_batch)
    if config.mode != "M":
        raise ValueError(f"shards hold monocular video only: mode must be M, got {config.mode}")
    return _shard_batches(config, value, start_batch)


# --- videos for prediction ---------------------------------------------------------------------------

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")
FFMPEG_QUIET = ("-loglevel", "error", "-nostdin")


@dataclass(frozen=True)
class VideoInfo:
    """The first video stream of a file as decoding yields it."""

    width_px: int
    height_px: int
    """As displayed: ffmpeg applies a rotation tag while decoding, so a 90 degree one swaps the coded sizes."""
    frame_rate: str
    """ffprobe's average rate as a fraction, e.g. '30000/1001'."""
    frame_count: int | None
    """What the container states; None when it does not (only decoding then counts the frames)."""


def _last_line(stderr: bytes | None) -> str:
    lines = (stderr or b"").decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no message from ffmpeg"


def _rotation_deg(stream: dict) -> int:
    for side_data in stream.get("side_data_list", []):
        if "rotation" in side_data:
            return int(float(side_data["rotation"]))
    return int(float(stream.get("tags", {}).get("rotate", 0)))


def probe_video(path: Path) -> VideoInfo:
    """ffprobe's view of `path`; ValueError (one line naming the file) if it holds no readable video."""
    try:
        probe = ffmpeg.probe(str(path), select_streams="v:0")
    except ffmpeg.Error as error:
        message = _last_line(error.stderr).removeprefix(f"{path}: ")
        raise ValueError(f"cannot read video {path}: {message}") from None
    if not probe.get("streams"):
        raise ValueError(f"cannot read video {path}: no video stream")
    stream = probe["streams"][0]
    width, height = int(stream["width"]), int(stream["height"])
    if _rotation_deg(stream) % 180:
        width, height = height, width
    rate = stream.get("avg_frame_rate", "0/0")
    if rate.startswith("0") or rate.endswith("/0"):
        rate = stream.get("r_frame_rate", "25/1")
    count = stream.get("nb_frames")
    return VideoInfo(width, height, rate, int(count) if count and count.isdigit() else None)


def read_video_frames(path: Path, info: VideoInfo) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 RGB frames of `path`, each decoded frame once (no frames duplicated or dropped to
    reach a constant rate), read one at a time from ffmpeg's pipe; ValueError if decoding fails."""
    frame_bytes = info.width_px * info.height_px * 3
    command = (ffmpeg.input(str(path)).output("pipe:", format="rawvideo", pix_fmt="rgb24", vsync="passthrough")
               .global_args(*FFMPEG_QUIET).compile())
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: a chatty decoder cannot block on it
        decoder = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
        try:
            while len(data := decoder.stdout.read(frame_bytes)) == frame_bytes:
                yield np.frombuffer(data, np.uint8).reshape(info.height_px, info.width_px, 3)
            returncode = decoder.wait()
        finally:
            if decoder.poll() is None:
                decoder.kill()
                decoder.wait()
            decoder.stdout.close()
        stderr.seek(0)
        if returncode != 0 or data:
            raise ValueError(f"cannot decode video {path}: {_last_line(stderr.read())}")


def write_h264(path: Path, frames: Iterable[np.ndarray], frame_rate: str, crf: int = 18) -> int:
    """Encode (H, W, 3) uint8 RGB frames of one size into an H.264 mp4 at `frame_rate`; returns their count.

    The frames stream into ffmpeg through a pipe; an odd side gains one black row or column (yuv420p
    needs even sizes). The file appears under `path` only when complete (`geopt_io.atomic_path`).
    """
    count, encoder = 0, None
    with atomic_path(Path(path)) as tmp, tempfile.TemporaryFile() as stderr:
        try:
            for frame in frames:
                if encoder is None:
                    height, width = frame.shape[:2]
                    command = (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}",
                                            framerate=frame_rate)
                               .filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")
                               .output(str(tmp), format="mp4", vcodec="libx264", pix_fmt="yuv420p", crf=crf,
                                       preset="veryfast", movflags="+faststart")
                               .global_args(*FFMPEG_QUIET).overwrite_output().compile())
                    encoder = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=stderr)
                encoder.stdin.write(np.ascontiguousarray(frame).tobytes())
                count += 1
            if encoder is None:
                raise ValueError(f"no frames to encode into {path}")
            encoder.stdin.close()
            failed = encoder.wait() != 0
        except BrokenPipeError:
            failed = True
        finally:
            if encoder is not None and encoder.poll() is None:
                encoder.kill()
                encoder.wait()
        if failed:
            stderr.seek(0)
            raise RuntimeError(f"ffmpeg could not encode {path}: {_last_line(stderr.read())}")
    return count
