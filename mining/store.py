"""Where mining output goes: a local folder or any fsspec URL (``file://``, ``s3://bucket/shards``, ...).

Every file is published whole: written locally first, copied to a temporary name beside its final one,
then moved into place (a rename on local disks; on object stores the object only appears once its
upload is complete). A reader, or a rerun after a crash, sees the whole file or none of it.
"""
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import fsspec

from formats.files import TEMP_SUFFIX, append_jsonl, parse_jsonl, read_jsonl, to_jsonable, write_bytes_atomic


class Store:
    """A folder of mining output named by a local path or an fsspec URL; paths below it are '/'-relative."""

    def __init__(self, location: str | Path):
        self.url = str(location)
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as error:  # an unknown scheme, or its fsspec backend not installed
            raise ValueError(f"cannot write to {self.url}: {error}") from None
        self.root = root.rstrip("/")
        self.local = Path(root) if _is_local(self.fs) else None
        """The folder itself when it is on this machine's file system (plain paths and file:// URLs)."""

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __reduce__(self):  # sent to Ray tasks and worker processes as its URL alone
        return Store, (self.url,)

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def exists(self, relative: str) -> bool:
        return self.fs.exists(self.path(relative))

    def read_bytes(self, relative: str) -> bytes:
        return self.fs.cat_file(self.path(relative))

    def open(self, relative: str):
        """A seekable binary file for reading (tarfile skips what it does not need)."""
        return self.fs.open(self.path(relative), "rb")

    def size(self, relative: str) -> int:
        return self.fs.size(self.path(relative))

    def files(self, folder: str, suffix: str) -> list[str]:
        """Relative paths of the files directly in `folder` ('' for the top) ending with `suffix`, sorted."""
        base = self.path(folder) if folder else self.root
        if not self.fs.isdir(base):
            return []
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False))
        return sorted(f"{folder}/{n}" if folder else n for n in names if n.endswith(suffix))

    def remove(self, relative: str) -> None:
        if self.fs.exists(self.path(relative)):
            self.fs.rm_file(self.path(relative))

    def write_bytes(self, relative: str, data: bytes) -> None:
        if self.local is not None:
            write_bytes_atomic(self.local / relative, data)
            return
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(scratch) / "data"
            local.write_bytes(data)
            self.put(local, relative)

    def write_json(self, relative: str, obj) -> None:
        self.write_bytes(relative, (json.dumps(to_jsonable(obj), indent=2) + "\n").encode())

    def put(self, local_file: Path, relative: str) -> None:
        """Publish a finished local file at `relative`: copied under a temporary name, then moved."""
        final = self.path(relative)
        parent, name = final.rsplit("/", 1)
        temporary = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"
        if self.local is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local_file, temporary)
            os.replace(temporary, final)
            return
        self.fs.makedirs(parent, exist_ok=True)
        self.fs.put_file(str(local_file), temporary)
        try:
            self.fs.mv(temporary, final)
        finally:
            if self.fs.exists(temporary):
                self.fs.rm_file(temporary)

    def append_row(self, relative: str, row: dict) -> None:
        """Add a row to a JSON-lines table (appended in place locally; rewritten whole on object stores)."""
        if self.local is not None:
            append_jsonl(self.local / relative, row)
            return
        rows = self.read_rows(relative) + [to_jsonable(row)]
        self.write_bytes(relative, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def read_rows(self, relative: str) -> list[dict]:
        if self.local is not None:
            return read_jsonl(self.local / relative)
        return parse_jsonl(self.read_bytes(relative).decode()) if self.exists(relative) else []

    def remove_temporaries(self, folder: str) -> None:
        """Delete what a killed writer left: temporaries are never complete files."""
        for relative in self.files(folder, TEMP_SUFFIX):
            self.remove(relative)


def _is_local(fs) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols
