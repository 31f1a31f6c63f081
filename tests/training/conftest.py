"""Training fixtures: small shards of world frames written in the mining schema."""
import tarfile

import numpy as np
import pytest

from mining.pack import encode_jpeg
from mining.schema import SampleMeta, sample_dict, sample_key, write_sample
from world.camera import PinholeCamera
from world.drive import Drive, DriveSpec
from world.render import Renderer


def write_world_shard(path, seed: int, samples: int, width_px: int = 192, height_px: int = 72) -> None:
    """`samples` triplets of consecutive frames (10 Hz) of world drive `seed`, as one shard."""
    drive = Drive(DriveSpec(seed=seed, duration_s=0.1 * (2 * samples + 2)))
    renderer = Renderer(drive.scene, PinholeCamera.kitti_like(width_px, height_px))
    times = np.arange(2 * samples + 1) * 0.1
    jpegs = [encode_jpeg(renderer.render(pose).rgb, 92) for pose in drive.poses(times)]
    with tarfile.open(path, "w") as tar:
        for i in range(samples):
            indices = [2 * i, 2 * i + 1, 2 * i + 2]
            meta = SampleMeta(f"world-{seed}", "world", indices, [0.1 * j for j in indices], 10.0, 0, [1.0, 1.0],
                              (0, 0, width_px, height_px), (width_px, height_px), (width_px, height_px))
            write_sample(tar, sample_dict(sample_key(f"world-{seed}", indices[0]), [jpegs[j] for j in indices], meta))


@pytest.fixture(scope="session")
def world_shards(tmp_path_factory):
    """shards/0000.tar, 0001.tar (train, 6 samples each) and shards/val/0000.tar (4 samples)."""
    root = tmp_path_factory.mktemp("shards")
    (root / "val").mkdir()
    write_world_shard(root / "0000.tar", seed=21, samples=6)
    write_world_shard(root / "0001.tar", seed=22, samples=6)
    write_world_shard(root / "val" / "0000.tar", seed=23, samples=4)
    return root
