"""Writing files that others read: through a temporary name in the same folder, then an atomic rename.

A reader (or a rerun after a crash) therefore sees either the whole file or no file, never half of one.
"""
import contextlib
import dataclasses
import json
import os
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Iterator

_UMASK = os.umask(0o022)
os.umask(_UMASK)
TEMP_SUFFIX = ".part"
"""Every temporary file ends so; a rerun may delete any it finds, they are never complete."""


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; the finished file gets the usual permissions
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path, obj) -> None:
    """Write `obj` (dataclasses allowed) as indented JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n").encode())


def to_jsonable(obj):
    """Dataclasses, Paths and tuples -> plain JSON types, so configs can be saved beside their outputs."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def fields_of(config_class, options: dict) -> dict:
    """The entries of `options` that are fields of the dataclass `config_class`, as keyword arguments: CLIs
    name their parameters after the config fields they fill and build configs with this."""
    names = {f.name for f in dataclasses.fields(config_class)}
    return {name: value for name, value in options.items() if name in names}


def append_jsonl(path: Path, row: dict) -> None:
    """Append one JSON line and flush it to disk: status tables survive a kill between rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        torn = False
        if size:
            f.seek(size - 1)
            torn = f.read(1) != b"\n"
        f.write((("\n" if torn else "") + json.dumps(to_jsonable(row)) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """All complete rows of a JSON-lines file; a torn last line (a kill mid-write) is ignored."""
    path = Path(path)
    return parse_jsonl(path.read_text()) if path.is_file() else []


def parse_jsonl(text: str) -> list[dict]:
    """The complete rows of JSON-lines text; a torn line is skipped."""
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
