"""Training samples for the depth transfer: KITTI raw through Monodepth2's split files, or mined shards.

A sample is a dict:
- 'frames' {frame id: (3, H, W) float32 in 0..1}: 0 the target; -1, +1 its neighbours in time; 's' the
  other camera of the stereo pair at the same instant. These feed the loss.
- 'frames_aug': the same after colour jitter; these feed the networks (Monodepth2 keeps the loss on the
  original colours).
- 'K' (3, 3) float32 intrinsics normalised by image size (`formats.camera`); absent when unknown.
- 'stereo_T' (4, 4) float32 target camera -> stereo partner (metres), with 's' only.
- 'visible' (1, H, W) float32, shards only: 0 where a static overlay hides the scene, 1 elsewhere.

Augmentation is Monodepth2's: with probability 1/2 a colour jitter shared by all frames
(`training.augment`), with probability 1/2 a horizontal flip of all frames (which swaps the side of the
stereo partner, hence the baseline's sign).

Data sources are written 'kitti:PATH' (a KITTI raw root with splits/<split>/train_files.txt) or
'shards:SPEC' (mined triplets, see `formats.shard_schema`; SPEC as `training.shard_stream.expand_shards`
reads it).
"""
import json
import logging
import math
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from formats.camera import KITTI_K_NORMALISED, fov_intrinsics
from formats.kitti import SplitEntry, image_path, read_split_file
from formats.shard_schema import META_EXTENSION, decode_mask, decode_sample_frames, frame_count
from training.augment import ColourJitter
from training.depth.loss import stereo_transform
from training.shard_stream import SkipOnce, expand_shards, samples_from_shards

log = logging.getLogger(__name__)

FRAME_IDS = {"M": (0, -1, 1), "S": (0, "s"), "MS": (0, -1, 1, "s")}
"""Frames each training mode loads (Monodepth2's --frame_ids, plus 's' with --use_stereo)."""
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


def _augmented(frames: dict, flip: bool, jitter: ColourJitter | None) -> tuple[dict, dict]:
    if flip:
        frames = {f: image.flip(-1) for f, image in frames.items()}
    jittered = {f: jitter(image) for f, image in frames.items()} if jitter else frames
    return frames, jittered


def _draw_augmentation(augment: bool) -> tuple[bool, ColourJitter | None]:
    """(flip, jitter or None), each with probability 1/2 when augmenting; Python's RNG, which the data
    loader seeds in each worker."""
    if not augment:
        return False, None
    jitter = ColourJitter.draw(random) if random.random() > 0.5 else None
    return random.random() > 0.5, jitter


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


class ShardTriplet:
    """A shard sample (frames t-1, t, t+1, see `formats.shard_schema`) -> a depth training sample (frames -1, 0, +1).

    Frames are centre-cropped to the training aspect (the largest such crop, so pixels stay square and the
    principal point central), then resized; 'visible' (1, H, W) float32 is 0 under the video's static
    overlays (`formats.shard_schema.MASK_MEMBER`), 1 elsewhere. K comes from the sample's own known intrinsics (imported KITTI
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
        flip, jitter = _draw_augmentation(self.config.augment)
        frames, jittered = _augmented(frames, flip, jitter)
        visible = decode_mask(sample)
        visible = (np.ones(size[::-1], np.float32) if visible is None else cv2.resize(
            visible[y:y + crop_h, x:x + crop_w].astype(np.float32), size, interpolation=cv2.INTER_NEAREST))
        visible = torch.from_numpy(visible)[None]
        out = {"frames": frames, "frames_aug": jittered, "visible": visible.flip(-1) if flip else visible}
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
