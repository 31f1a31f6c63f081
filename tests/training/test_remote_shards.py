"""Shards streamed from URLs as webdataset users write them: http(s) through curl, pipe: commands, file://
and, through fsspec, other schemes; a shard that cannot be read is skipped with one warning naming it."""
import logging
import shutil
import sys

import fsspec
import pytest

from training.flow.data import DataConfig, train_loader, val_loader
from training.shard_stream import expand_shards


@pytest.fixture
def served_shards(http_root, tiny_shards):
    """(base URL of shards 0000..0001.tar on a 127.0.0.1 HTTP server, {file name: keys}); 0002.tar is missing."""
    root, base_url = http_root
    source, keys_by_shard = tiny_shards
    (root / "shards").mkdir()
    for name in ("0000.tar", "0001.tar"):
        shutil.copy(source / name, root / "shards" / name)
    return f"{base_url}/shards", {name: keys_by_shard[name] for name in ("0000.tar", "0001.tar")}


def _spec(form: str, base_url: str, folder) -> str:
    return {"http": f"{base_url}/{{0000..0002}}.tar",
            "pipe": f"pipe:curl -s {base_url}/{{0000..0002}}.tar",
            "file": f"file://{folder}/{{0000..0002}}.tar"}[form]


def _config(spec: str, **overrides) -> DataConfig:
    settings = dict(shards=spec, width_px=64, height_px=64, batch_size=2, workers=0, shuffle_buffer=2,
                    batches_per_epoch=6)
    return DataConfig(**{**settings, **overrides})


def _skip_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]


@pytest.mark.parametrize("form", ["http", "pipe", "file"])
def test_remote_shards_stream_and_a_missing_one_is_skipped_with_one_warning(form, served_shards, http_root, caplog):
    base_url, keys_by_shard = served_shards
    spec = _spec(form, base_url, http_root[0] / "shards")
    assert len(expand_shards(spec)) == 3, "URLs keep their braces expanded and are not checked on disk"
    served_keys = sorted(k for keys in keys_by_shard.values() for k in keys)
    caplog.set_level(logging.WARNING)
    batches = list(train_loader(_config(spec, batches_per_epoch=12))[0])
    assert len(batches) == 12 and batches[0][0].shape == (2, 3, 64, 64)
    assert {name.rsplit("#", 1)[1] for batch in batches for name in batch[3]} == set(served_keys)
    warned = [_skip_warnings(caplog)]
    caplog.clear()
    exact = [name for batch in train_loader(_config(spec, exact_epochs=True))[0] for name in batch[3]]
    assert sorted(name.rsplit("#", 1)[1] for name in exact) == served_keys
    warned.append(_skip_warnings(caplog))
    caplog.clear()
    assert sum(len(batch.target) for batch in val_loader(_config(spec))) == len(served_keys)
    warned.append(_skip_warnings(caplog))
    for warnings in warned:  # endless, exact-epoch and validation loader
        assert len(warnings) == 1 and "/0002.tar" in warnings[0] and "/0001.tar" not in warnings[0], warnings


def test_other_url_schemes_stream_through_fsspec(tiny_shards, caplog):
    source, keys_by_shard = tiny_shards
    memory = fsspec.filesystem("memory")
    for name in ("0000.tar", "0001.tar"):
        memory.pipe(f"/geopt-test/{name}", (source / name).read_bytes())
    spec = "memory://geopt-test/{0000..0001}.tar"
    try:
        with caplog.at_level(logging.WARNING):
            exact = [name for batch in train_loader(_config(spec, exact_epochs=True))[0] for name in batch[3]]
            validated = sum(len(batch.target) for batch in val_loader(_config(spec)))
    finally:
        memory.rm("/geopt-test", recursive=True)
    assert not _skip_warnings(caplog)
    assert len(exact) == validated == len(keys_by_shard["0000.tar"]) + len(keys_by_shard["0001.tar"])


def test_an_unreadable_url_scheme_is_one_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="unknown URL scheme nosuch://"):
        expand_shards("nosuch://bucket/{0000..0001}.tar")
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(ValueError, match="s3:// shards are read with fsspec; pip install fsspec"):
        expand_shards("s3://bucket/{0000..0001}.tar")
