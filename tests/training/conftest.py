"""Training fixtures: small shards of world frames written in the mining schema, and tiny shards of noise
frames with known keys for checking which samples a loader yields."""
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from formats.shard_schema import SampleMeta, sample_dict, write_sample
from world.shards import write_world_shard

TINY_SHARD_SAMPLES = (5, 4, 3, 5, 2, 4)
"""Samples in tiny shards 0000..0005: uneven and odd, so ranks and workers get unequal shares."""


@pytest.fixture(scope="session")
def world_shards(tmp_path_factory):
    """shards/0000.tar, 0001.tar (train, 6 samples each) and shards/val/0000.tar (4 samples)."""
    root = tmp_path_factory.mktemp("shards")
    (root / "val").mkdir()
    write_world_shard(root / "0000.tar", seed=21, samples=6, width_px=192, height_px=72)
    write_world_shard(root / "0001.tar", seed=22, samples=6, width_px=192, height_px=72)
    write_world_shard(root / "val" / "0000.tar", seed=23, samples=4, width_px=192, height_px=72)
    return root


def write_tiny_shard(path: Path, shard_index: int, samples: int, width_px: int = 96, height_px: int = 64) -> list[str]:
    """`samples` samples of 3 smoothed-noise JPEG frames, keys 'tiny<shard>_<i:07d>'; returns the keys."""
    rng = np.random.default_rng(shard_index)
    keys = []
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(samples):
            key = f"tiny{shard_index}_{i:07d}"
            noise = rng.integers(0, 256, (height_px, width_px, 3), dtype=np.uint8)
            frame = cv2.GaussianBlur(noise, (5, 5), 0)
            jpegs = [cv2.imencode(".jpg", np.roll(frame, shift, axis=1))[1].tobytes() for shift in (0, 2, 4)]
            meta = SampleMeta(video_id=f"tiny{shard_index}", source_url="test:noise", frame_indices=[i, i + 1, i + 2],
                              timestamps_s=[i / 10, (i + 1) / 10, (i + 2) / 10], fps_out=10.0, scene_index=0,
                              motion_px=[2.0, 2.0], crop_box=(0, 0, width_px, height_px),
                              working_size=(width_px, height_px), original_size=(width_px, height_px))
            write_sample(tar, sample_dict(key, jpegs, meta))
            keys.append(key)
    return keys


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    """(folder, {shard file name: its keys}) for shards 0000.tar..0005.tar of `TINY_SHARD_SAMPLES` samples."""
    root = tmp_path_factory.mktemp("tiny_shards")
    keys = {f"{i:04d}.tar": write_tiny_shard(root / f"{i:04d}.tar", i, n) for i, n in enumerate(TINY_SHARD_SAMPLES)}
    return root, keys
