"""Shards into samples, for both pipelines: what users type for `--shards`, expanded to shard URLs or
paths (`expand_shards`, `parse_mixture`), opened (`open_shard`) and read into samples
(`samples_from_shards`), unreadable shards and corrupt samples skipped with one warning (`SkipOnce`).

Accepted, alone or several separated by commas or spaces:
- ``shards/<0000..0999>.tar``: GeoPt's own spelling of a numeric range (the design card's);
- ``shards/{0000..0999}.tar``: webdataset's brace form (also ``{a,b}``);
- globs (``shards/*.tar``) and plain directories (every ``*.tar`` directly inside, sorted);
- URLs and ``pipe:`` commands, passed through untouched after brace expansion, and opened as webdataset
  does (`open_shard`): ``pipe:`` runs the command, ``http(s)://`` goes through ``curl``, ``file://`` is a
  local path; any scheme webdataset has no opener for (``s3://``, ``gcs://``, ``az://``, ...) is read with
  fsspec, checked at expansion so a missing backend is one clear error rather than a stream of skips.
Several sources can be mixed by weight (`parse_mixture`):
``kitti=shards/kitti/<0000..0099>.tar:0.3,youtube=shards/<0000..0999>.tar:0.7`` or a YAML file
``sources: [{name: kitti, shards: ..., weight: 0.3}, ...]``.
Ranges keep the zero padding of their first bound. Range members that do not exist on disk are
dropped (a user's ``<0000..0999>`` usually covers more than was mined); a spec that matches nothing is
an error naming it.
"""
import glob
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from braceexpand import braceexpand
from webdataset.gopen import gopen, gopen_schemes
from webdataset.tariterators import group_by_keys, tar_file_expander

log = logging.getLogger(__name__)
_SHARD_NAME = re.compile(r"[^\s'\"<>()]+\.tar\b")

_ANGLE_RANGE = re.compile(r"<(\d+)\.\.(\d+)>")
_URL_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
_WEBDATASET_SCHEMES = {"file", *gopen_schemes}


def url_scheme(spec: str) -> str | None:
    """'pipe', 'http', 's3', ... for a URL or pipe: command; None for a local path."""
    if spec.startswith("pipe:"):
        return "pipe"
    match = _URL_SCHEME.match(spec)
    return match.group(1).lower() if match else None


def _check_opener(url: str) -> None:
    """A ValueError naming `url` when neither webdataset nor an installed fsspec backend can read it."""
    scheme = url_scheme(url)
    if scheme is None or scheme in _WEBDATASET_SCHEMES:
        return
    try:
        import fsspec
    except ImportError:
        raise ValueError(f"{url}: {scheme}:// shards are read with fsspec; pip install fsspec and its "
                         f"{scheme} backend (or stream them with 'pipe:COMMAND')") from None
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as error:
        raise ValueError(f"{url}: {scheme}:// needs an fsspec backend: {error}") from None
    except ValueError:
        raise ValueError(f"{url}: unknown URL scheme {scheme}:// (neither webdataset nor fsspec reads it)") from None


def open_shard(url: str):
    """A binary stream of one shard: webdataset's `gopen` for paths, file://, pipe:, http(s):// and its
    other schemes; fsspec for the rest."""
    if url_scheme(url) in (None, *_WEBDATASET_SCHEMES):
        return gopen(url, "rb")
    import fsspec
    return fsspec.open(url, "rb").open()


def _angle_to_brace(spec: str) -> str:
    return _ANGLE_RANGE.sub(lambda m: "{" + m.group(1) + ".." + m.group(2) + "}", spec)


def _split_specs(text: str) -> list[str]:
    """Comma/space separated parts, but not the commas inside a brace group or a pipe: command."""
    if text.strip().startswith("pipe:"):
        return [text.strip()]
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "{") - (char == "}")
        if char in ", " and depth == 0:
            if current:
                parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return parts


def expand_shards(spec: str | list[str]) -> list[str]:
    """Every shard named by `spec` (see the module doc), in order, without repeats."""
    specs = [s for item in ([spec] if isinstance(spec, str) else spec) for s in _split_specs(item)]
    if not specs:
        raise ValueError("no shards given")
    shards: list[str] = []
    for item in specs:
        found = _expand_one(item)
        if not found:
            raise ValueError(f"no shards match {item!r}")
        shards += [s for s in found if s not in shards]
    return shards


def _expand_one(item: str) -> list[str]:
    expanded = list(braceexpand(_angle_to_brace(item)))
    if url_scheme(item) is not None:
        for url in expanded:
            _check_opener(url)
        return expanded
    found = []
    for name in expanded:
        path = Path(name).expanduser()
        if path.is_dir():
            found += sorted(str(p) for p in path.glob("*.tar"))
        elif glob.has_magic(name):
            found += sorted(glob.glob(str(path)))
        elif path.is_file():
            found.append(str(path))
    return found


@dataclass(frozen=True)
class Source:
    name: str
    shards: list[str]
    weight: float


_NAMED = re.compile(r"^(?P<name>[A-Za-z][\w-]*)=(?P<spec>.+?)(?::(?P<weight>\d+(?:\.\d*)?|\.\d+))?$")


def parse_mixture(spec: str) -> list[Source]:
    """Sources to mix and their weights; a plain spec is one source named 'data' of weight 1."""
    path = Path(spec.strip())
    if path.suffix in (".yaml", ".yml") and path.is_file():
        entries = (yaml.safe_load(path.read_text()) or {}).get("sources")
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{path}: expected 'sources:' with a list of {{name, shards, weight}}")
        return [Source(str(e["name"]), expand_shards(str(e["shards"])), float(e.get("weight", 1.0)))
                for e in entries]
    parts = _split_specs(spec) if not spec.strip().startswith("pipe:") else [spec]
    named = [_NAMED.match(p) for p in parts]
    if not any(named):
        return [Source("data", expand_shards(spec), 1.0)]
    if not all(named):
        raise ValueError(f"mix every source as name=SHARDS:WEIGHT or none: {spec!r}")
    sources = [Source(m["name"], expand_shards(m["spec"]), float(m["weight"] or 1.0)) for m in named]
    if len({s.name for s in sources}) != len(sources) or any(s.weight <= 0 for s in sources):
        raise ValueError(f"source names must differ and weights be positive: {spec!r}")
    return sources


class SkipOnce:
    """A webdataset handler: log a failure once per shard (or sample), then carry on.

    A shard that cannot be opened or is empty (a missing file, an HTTP error, a failed pipe: command) is
    told apart from corrupt data inside a shard, since the fix differs (the URL or the shard)."""

    def __init__(self):
        self.seen: set[str] = set()

    def __call__(self, error: Exception) -> bool:
        texts = [a for a in getattr(error, "args", ()) if isinstance(a, str)] + [str(error)]
        found = (_SHARD_NAME.search(t) for t in reversed(texts))
        where = next((m.group(0) for m in found if m), None)
        name = where or str(error)[:200]
        if name not in self.seen:
            self.seen.add(name)
            reason = texts[0].split(" @ ")[0][:300]
            if isinstance(error, OSError) or reason == "empty file":
                log.warning("skipping shard %s: cannot read it (missing, unreachable or empty): %s",
                            where or "(unnamed)", reason)
            else:
                log.warning("skipping corrupt data in %s: %s", where or "a sample", reason)
        return True


def _opened_shards(shards, handler):
    """{'url'} items -> {'url', 'stream'}, as webdataset's url_opener but through `open_shard` (fsspec too)."""
    for shard in shards:
        try:
            yield {**shard, "stream": open_shard(shard["url"])}
        except Exception as error:
            error.args = error.args + (shard["url"],)
            if not handler(error):
                return


def samples_from_shards(shards, handler):
    """Shard URLs -> samples, as webdataset's tarfile_to_samples, except that a sample never spans two
    shard reads: a truncated shard's last partial sample would otherwise merge with the next read's
    first sample when both share a key (the same shard drawn twice in a row by resampling)."""

    def files_with_shard_ends():
        for opened in _opened_shards(shards, handler):
            yield from tar_file_expander([opened], handler=handler)
            yield {}  # group_by_keys closes the current sample here

    return group_by_keys(files_with_shard_ends(), handler=handler)


def sample_name(sample: dict) -> str:
    """'<shard url>#<key>': names a sample in warnings (keys never hold '#', see `formats.shard_schema`)."""
    return f"{sample.get('__url__')}#{sample['__key__']}"
