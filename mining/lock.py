"""One mining run per output at a time: a second run on the same output refuses at once.

Two runs writing one staging folder race (renames fail half-way, status rows double). The lock is an
exclusive `fcntl.flock` on a file: the operating system releases it when its process ends, so a killed
run (even SIGKILL) never leaves it stuck. For a local output the file lies in the output folder; for a
remote one (s3://...) in a local folder keyed by the URL, which guards runs on this machine only.
"""
import contextlib
import fcntl
import hashlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

LOCK_FILE = ".geopt-mine.lock"


class OutputBusy(RuntimeError):
    """Another run holds the output; the message names it."""


def _lock_path(url: str, local: Path | None) -> Path:
    if local is not None:
        local.mkdir(parents=True, exist_ok=True)
        return local / LOCK_FILE
    folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "geopt" / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{hashlib.sha1(url.encode()).hexdigest()[:16]}.lock"


@contextlib.contextmanager
def exclusive_output(url: str, local: Path | None) -> Iterator[None]:
    """Hold the output `url` (its folder `local` when on this machine) for the duration; OutputBusy at
    once when another run holds it."""
    path = _lock_path(url, local)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise OutputBusy(f"{url} is being written by another geopt-mine run ({holder}); wait for it to "
                             "finish or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                     f"{' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
