"""Mining output on a file system that is not this machine's: fsspec's in-memory one stands in for s3://."""
import fsspec
import pytest
from click.testing import CliRunner

from mining.chain import ChainConfig
from mining.cli import main
from mining.decode import DecodeConfig
from mining.shard import ShardConfig, shard_videos
from mining.shard_writer import ShardLayout
from mining.store import Store
from tests.mining.videos import panning, write_video


def test_shards_written_to_a_remote_store_equal_a_local_run(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for seed in (1, 2, 3):
        write_video(videos / f"clip_{seed}.mp4", panning(60, 144, 320, seed=seed, speed_px=2.5 + seed))
    settings = {"layout": ShardLayout(shard_size_mb=0.2, val_fraction=0.3),
                "chain": ChainConfig(decode=DecodeConfig(width_px=256))}
    local = shard_videos(ShardConfig(in_dir=videos, out_dir=tmp_path / "local", **settings))
    assert local["stats"]["totals"]["samples"] > 0, local["stats"]
    remote = shard_videos(ShardConfig(in_dir=videos, out_dir="memory://geopt-test/shards", **settings))
    assert remote["manifest"] == local["manifest"] and len(local["manifest"]["train"]) >= 2
    memory = fsspec.filesystem("memory")
    for entry in local["manifest"]["train"] + local["manifest"]["val"]:
        assert memory.cat_file(f"/geopt-test/shards/{entry['name']}") == (tmp_path / "local" / entry["name"]).read_bytes()
    names = memory.find("/geopt-test/shards")
    assert not [n for n in names if n.endswith(".part")]  # temporaries were all moved into place
    rerun = shard_videos(ShardConfig(in_dir=videos, out_dir="memory://geopt-test/shards", **settings))
    assert rerun["manifest"] == local["manifest"]
    assert [r["status"] for r in Store("memory://geopt-test/shards").read_rows("status.jsonl")] == ["ok"] * 3 + [
        "skipped"] * 3
    memory.rm("/geopt-test", recursive=True)


def test_an_unknown_output_scheme_is_a_clear_error(tmp_path):
    (tmp_path / "videos").mkdir()
    result = CliRunner().invoke(main, ["shard", "--in", str(tmp_path / "videos"), "--out", "nosuchscheme://x/y"])
    assert result.exit_code != 0 and "cannot write to nosuchscheme://x/y" in result.output


def test_store_publishes_whole_files_only(tmp_path):
    store = Store((tmp_path / "out").as_uri())
    assert store.local == tmp_path / "out"
    source = tmp_path / "data.bin"
    source.write_bytes(b"x" * 1000)
    store.put(source, "sub/data.bin")
    assert (tmp_path / "out" / "sub" / "data.bin").read_bytes() == b"x" * 1000
    assert store.files("sub", "") == ["sub/data.bin"]
    with pytest.raises(FileNotFoundError):
        store.put(tmp_path / "missing.bin", "sub/other.bin")
    assert store.files("sub", "") == ["sub/data.bin"]  # a failed copy leaves no file behind
