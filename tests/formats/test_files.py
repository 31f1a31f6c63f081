"""Status tables and atomic files: what a kill mid-write leaves is never taken for a whole file or row."""
from formats.files import append_jsonl, atomic_path, read_jsonl


def test_status_rows_are_one_per_line_and_a_torn_row_is_ignored(tmp_path):
    path = tmp_path / "status.jsonl"
    append_jsonl(path, {"video": "a"})
    append_jsonl(path, {"video": "b"})
    path.write_bytes(path.read_bytes() + b'{"video": "c", "sta')  # killed mid-row
    append_jsonl(path, {"video": "d"})
    assert path.read_text().splitlines()[:2] == ['{"video": "a"}', '{"video": "b"}']
    assert "" not in path.read_text().splitlines()
    assert [row["video"] for row in read_jsonl(path)] == ["a", "b", "d"]


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "shard.tar"
    try:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert list(tmp_path.iterdir()) == []
