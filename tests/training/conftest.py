"""Training fixtures: small shards of world frames written in the mining schema."""
import pytest

from world.shards import write_world_shard


@pytest.fixture(scope="session")
def world_shards(tmp_path_factory):
    """shards/0000.tar, 0001.tar (train, 6 samples each) and shards/val/0000.tar (4 samples)."""
    root = tmp_path_factory.mktemp("shards")
    (root / "val").mkdir()
    write_world_shard(root / "0000.tar", seed=21, samples=6, width_px=192, height_px=72)
    write_world_shard(root / "0001.tar", seed=22, samples=6, width_px=192, height_px=72)
    write_world_shard(root / "val" / "0000.tar", seed=23, samples=4, width_px=192, height_px=72)
    return root
