"""Streaming GeoPt shards into training batches of frame pairs.

Each sample (a run of consecutive frames, see `formats.shard_schema`) becomes one pair: the middle frame as
target and its next or previous frame as source, the direction drawn at random, so both 0 -> +1 and
0 -> -1 are learned. All frames of a sample share one random crop (aspect of the training size, 80-100 %
of the largest that fits), one colour jitter and one flip, so the pair stays geometrically consistent.

Training streams endlessly by default: shards are drawn at random per rank and worker (webdataset's
resampling, seeded by rank and worker), samples pass a shuffle buffer, and an epoch is a fixed number of
batches. With `DataConfig.exact_epochs` an epoch is instead one pass over every sample: the shard list is
shuffled alike on all ranks and split between ranks and loader workers (`EpochShards`), so no sample is
seen twice and none is left out. Several sources (e.g. KITTI, Cityscapes and mined video) are mixed by
weight with webdataset's RandomMix. Shards may be paths or URLs (see `training.shard_stream`).
Unreadable shards and corrupt samples are skipped with one warning (per loader process) naming them.
"""
import io
import logging
import math
import random
from dataclasses import dataclass, replace
from functools import partial
from typing import NamedTuple

import cv2
import numpy as np
import torch
import webdataset as wds

from formats.shard_schema import FLOW_MEMBER, FLOW_PREVIOUS_MEMBER, decode_mask, decode_sample_frames, frame_count
from training.augment import STRENGTH, ColourJitter
from training.shard_stream import SkipOnce, expand_shards, parse_mixture, sample_name, samples_from_shards

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataConfig:
    shards: str
    width_px: int = 640
    height_px: int = 192
    batch_size: int = 8
    workers: int = 2
    shuffle_buffer: int = 256
    batches_per_epoch: int = 1000
    """Batches per epoch of the endless stream, all ranks and workers together; unused with `exact_epochs`."""
    exact_epochs: bool = False
    """Each epoch reads every training sample exactly once over all ranks (see `EpochShards`)."""
    jitter: float = STRENGTH
    """Colour jitter strength (`training.augment`), Monodepth2's 0.2."""
    flip: bool = True
    min_crop_fraction: float = 0.8
    frame_gap: int = 1
    """Frames between target and source in training pairs: the middle frame and the one `frame_gap`
    before or after it, so samples need 2 * frame_gap + 1 frames (`geopt-mine shard --frames`). Validation
    pairs are always the middle and the next frame, where the true flow is known."""
    triplets: bool = False
    """Each training sample gives its middle frame with both neighbours `frame_gap` away, not one pair, and
    the middle frame's principal point (`PairAugment`): the loss can then carry each direction's flow
    over to the other where a pixel leaves the view (`FlowLossConfig.extrapolation`). `PretrainConfig` sets
    it from that loss."""
    seed: int = 0


class ValBatch(NamedTuple):
    """A validation batch: the pairs (middle -> next frame) every metric scores, and (middle -> previous
    frame) for the backward one. Frames (B, 3, H, W) uint8, `visible` (B, 1, H, W) uint8; the true flows
    (B, 2, H, W) in pixels, None unless every sample has one (world shards); `previous` None for
    two-frame samples."""
    target: torch.Tensor
    source: torch.Tensor
    true_flow: torch.Tensor | None
    visible: torch.Tensor
    previous: torch.Tensor | None = None
    true_flow_previous: torch.Tensor | None = None


class PairAugment:
    """One shard sample -> (target, source) uint8 tensors (3, H, W) at the training size and `visible`
    (1, H, W) uint8, 1 where the scene shows, 0 under the sample's static overlays (`MASK_MEMBER`); with
    `DataConfig.triplets` also the previous frame (3, H, W) uint8 (the source is then always the next one)
    and the principal point (2,) float32 (x, y) in training pixels, taken at the centre of the stored frame
    and carried through the crop and the flip; with `train` False a `ValBatch` of one sample, unbatched:
    also the true flows and the previous frame (each None where the sample lacks it)."""

    def __init__(self, config: DataConfig, train: bool, rank: int = 0):
        self.config, self.train, self.rank = config, train, rank
        self._rng: random.Random | None = None

    @property
    def rng(self) -> random.Random:
        """Seeded on first use inside each loader worker, so workers and ranks draw different streams."""
        if self._rng is None:
            info = torch.utils.data.get_worker_info()
            worker = info.id if info is not None else 0
            self._rng = random.Random(self.config.seed + 7919 * worker + 104_729 * self.rank)
        return self._rng

    def _crop(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) with the training aspect; random on train, the largest centred one otherwise."""
        aspect = self.config.width_px / self.config.height_px
        full_w = min(width, int(height * aspect))
        full_h = int(round(full_w / aspect))
        fraction = self.rng.uniform(self.config.min_crop_fraction, 1.0) if self.train else 1.0
        w, h = max(2, int(full_w * fraction)), max(2, int(full_h * fraction))
        if self.train:
            return self.rng.randint(0, width - w), self.rng.randint(0, height - h), w, h
        return (width - w) // 2, (height - h) // 2, w, h

    def _cropped(self, frame: np.ndarray, crop: tuple[int, int, int, int]) -> torch.Tensor:
        """(H, W, 3) uint8 frame -> its `crop` at the training size, (3, H, W) uint8."""
        x, y, w, h = crop
        frame = cv2.resize(frame[y:y + h, x:x + w], (self.config.width_px, self.config.height_px),
                           interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)))

    def _true_flow(self, sample: dict, crop: tuple[int, int, int, int], member: str) -> torch.Tensor | None:
        """The sample's exact flow `member` (world shards), cropped and resized like the frames, in training
        pixels."""
        if member not in sample:
            return None
        x, y, w, h = crop
        flow = np.load(io.BytesIO(sample[member]))[y:y + h, x:x + w]
        size = (self.config.width_px, self.config.height_px)
        flow = cv2.resize(flow, size, interpolation=cv2.INTER_LINEAR) * np.float32([size[0] / w, size[1] / h])
        return torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1)))

    def __call__(self, sample: dict) -> tuple:
        gap = self.config.frame_gap if self.train else 1
        triplet = self.train and self.config.triplets
        frames = decode_sample_frames(sample, minimum=2 if gap == 1 and not triplet else 2 * gap + 1)
        middle = (len(frames) - 1) // 2 if len(frames) > 2 else 0
        if len(frames) == 2:
            pair = [frames[0], frames[1]]
        else:
            step = gap if triplet or not self.train else self.rng.choice((-gap, gap))
            pair = [frames[middle], frames[middle + step]]
        if self.train and len(frames) == 2 and self.rng.random() < 0.5:
            pair.reverse()
        x, y, w, h = crop = self._crop(*pair[0].shape[:2])
        size = (self.config.width_px, self.config.height_px)
        target, source = (self._cropped(f, crop) for f in pair)
        visible = decode_mask(sample)
        visible = (np.ones(size[::-1], np.uint8) if visible is None else
                   cv2.resize(visible[y:y + h, x:x + w].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST))
        visible = torch.from_numpy(visible)[None]
        if not self.train:
            previous = self._cropped(frames[middle - 1], crop) if len(frames) > 2 else None
            return ValBatch(target, source, self._true_flow(sample, crop, FLOW_MEMBER), visible, previous,
                            self._true_flow(sample, crop, FLOW_PREVIOUS_MEMBER) if previous is not None else None)
        frames = [target, source] + ([self._cropped(frames[middle - gap], crop)] if triplet else [])
        jitter = ColourJitter.draw(self.rng, self.config.jitter)
        frames = [(jitter(f.float() / 255) * 255).round_().to(torch.uint8) for f in frames]
        stored_h, stored_w = pair[0].shape[:2]
        principal_px = torch.tensor([(stored_w / 2 - x) * size[0] / w, (stored_h / 2 - y) * size[1] / h])
        if self.config.flip and self.rng.random() < 0.5:
            frames, visible = [f.flip(-1) for f in frames], visible.flip(-1)
            principal_px[0] = size[0] - principal_px[0]
        if triplet:
            return frames[0], frames[1], visible, frames[2], principal_px
        return frames[0], frames[1], visible


class EpochShards(torch.utils.data.IterableDataset):
    """Shard URLs for exact epochs, as {'url': ...} items: each pass is the next epoch.

    Epoch e shuffles the whole list with seed `seed + e`, the same on every rank, and shard i of that
    order goes to the loader worker whose global index ``rank * workers + worker`` equals
    ``i % (world_size * workers)``: over all ranks and workers each shard is read once per epoch. Every
    loader worker holds its own copy and counts its own passes, so the loader's workers must be
    persistent (`train_loader` makes them so); `start_epoch` resumes the count.
    """

    def __init__(self, urls: list[str], seed: int, rank: int, world_size: int, start_epoch: int = 0):
        super().__init__()
        self.urls, self.seed, self.rank, self.world_size = list(urls), seed, rank, world_size
        self.start_epoch, self.passes = start_epoch, 0

    def __iter__(self):
        epoch = self.start_epoch + self.passes
        self.passes += 1
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        order = list(self.urls)
        random.Random(self.seed + epoch).shuffle(order)
        for url in order[self.rank * workers + worker::self.world_size * workers]:
            yield {"url": url}


def _training_pair(sample: dict, augment: PairAugment, origin: int) -> tuple:
    target, source, visible, *triplet = augment(sample)
    return target, source, origin, sample_name(sample), visible, *triplet


def _collate(batch: list) -> tuple:
    """(target, source, origins, names, visible) and, from triplets, (previous, principal_px): each stacked."""
    targets, sources, origins, names, visible, *triplet = zip(*batch)
    return (torch.stack(targets), torch.stack(sources), torch.tensor(origins), list(names), torch.stack(visible),
            *(torch.stack(field) for field in triplet))


def _collate_validation(batch: list[ValBatch]) -> ValBatch:
    """Stacks each field; a field some sample lacks is None for the batch."""
    return ValBatch(*(torch.stack(field) if all(x is not None for x in field) else None for field in zip(*batch)))


def check_frame_gap(config: DataConfig) -> None:
    """A frame gap, or triplets, need samples of 2 * gap + 1 frames. Checked on the first sample of the first
    shard, so a run on shards mined with too few frames stops with one line, instead of skipping every
    sample of an endless stream."""
    needed = 2 * config.frame_gap + 1
    first_shard = parse_mixture(config.shards)[0].shards[0]
    sample = next(iter(samples_from_shards([{"url": first_shard}], handler=SkipOnce())), None)
    if sample is not None and frame_count(sample) < needed:
        pairs_would_do = config.triplets and config.frame_gap == 1
        raise ValueError(f"{'triplets (for --extrapolation) with ' if config.triplets else ''}frame gap "
                         f"{config.frame_gap} needs samples of {needed} frames; {first_shard} has "
                         f"{frame_count(sample)} (mine with geopt-mine shard --frames {needed}"
                         f"{', or train on pairs: --extrapolation 0' if pairs_would_do else ''})")


def train_loader(config: DataConfig, rank: int = 0, world_size: int = 1, start_batch: int = 0,
                 start_epoch: int = 0) -> tuple[wds.WebLoader, list[str]]:
    """Batches (target, source, origin, names, visible): frames (B, 3, H, W) uint8, the (B,) index of the
    data source each pair came from, the B `sample_name`s and (B, 1, H, W) uint8 masks of the pixels that
    show the scene (`PairAugment`), then with `triplets` the previous frames (B, 3, H, W) uint8 and principal
    points (B, 2) in pixels; and the source names. Each pass over the loader
    is one epoch: `batches_per_epoch` full batches drawn endlessly, or with `exact_epochs` this rank's
    share of every sample (partial last batches kept, so ranks may end with different batch counts).
    Sources given with weights (see `training.shard_stream.parse_mixture`) are drawn by weight; in exact
    epochs every source is read whole and the weights only set how they interleave. `start_batch`
    reseeds a resumed endless run, `start_epoch` says which epoch an exact run resumes."""
    sources = parse_mixture(config.shards)
    if config.frame_gap > 1 or config.triplets:
        check_frame_gap(config)
    handler = SkipOnce()
    seed = config.seed * 1_000_003 + start_batch
    workers = max(1, config.workers)
    if config.exact_epochs and rank == 0 and min(len(s.shards) for s in sources) < world_size * workers:
        log.warning("exact epochs: fewer shards than the %d loader workers of all ranks, so some workers (or "
                    "ranks) idle; write at least that many shards per source", world_size * workers)
    streams = []
    for index, source in enumerate(sources):
        if config.exact_epochs:
            shards = EpochShards(source.shards, config.seed, rank, world_size, start_epoch)
        else:
            shards = wds.ResampledShards(source.shards, seed=seed + index, deterministic=True)
        augment = PairAugment(replace(config, seed=seed + 31 * index), train=True, rank=rank)
        streams.append(wds.DataPipeline(
            shards,
            partial(samples_from_shards, handler=handler),
            wds.shuffle(config.shuffle_buffer, initial=config.shuffle_buffer // 2, rng=random.Random(seed + index)),
            wds.map(partial(_training_pair, augment=augment, origin=index), handler=handler),
        ))
    probs = [s.weight for s in sources]
    mixed = streams[0] if len(streams) == 1 else wds.RandomMix(streams, probs, longest=config.exact_epochs)
    pipeline = wds.DataPipeline(mixed, wds.batched(config.batch_size, collation_fn=_collate,
                                                   partial=config.exact_epochs))
    if not config.exact_epochs:
        pipeline = pipeline.with_epoch(max(1, math.ceil(config.batches_per_epoch / (world_size * workers))))
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=config.workers,
                           persistent_workers=config.workers > 0)
    return loader, [s.name for s in sources]


def val_loader(config: DataConfig) -> wds.WebLoader:
    """One pass over the validation shards in order, centre crops, no augmentation, every sample once.
    Batches are `ValBatch`es: the pair middle -> next frame, and the previous frame."""
    urls = expand_shards(config.shards)
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(urls),
        partial(samples_from_shards, handler=SkipOnce()),
        wds.map(PairAugment(config, train=False), handler=SkipOnce()),
        wds.batched(config.batch_size, collation_fn=_collate_validation, partial=True),
    )
    return wds.WebLoader(pipeline, batch_size=None, num_workers=0)
