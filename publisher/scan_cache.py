"""Scan cache: what each store file yielded last time, kept in the state folder, so that a rescan reads
only the files that are new or changed.

An entry is keyed by the file's store-relative path and holds its size, modification time (ns) and inode
as a stat saw them, with the record read from it (catalog.Record). A file whose stat still matches is not
read again. The cache as a whole carries a key: the publisher version, a digest of the code that reads
articles, the Python and PyYAML versions, and the settings that change what a file yields (store,
assets_base_url, include, exclude). A cache with another key, or one that is corrupt, is discarded with one
log line and rebuilt by reading every file.

The file is a JSON header line (format, key, scan time, payload length and CRC-32) followed by a marshal
payload of columns: loading 100,000 entries takes a fraction of a second, and the CRC-32 catches a torn or
damaged file before anything is decoded. It is written to a temporary file and renamed over the old one, not
fsynced: after a crash the cache is at worst discarded and rebuilt, never trusted when damaged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import marshal
import os
import platform
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import publisher
from publisher.config import Config

logger = logging.getLogger(__name__)

FORMAT = 1
MAGIC = b"publisher scan cache\n"
# Modules whose code decides what a file yields: a change to any of them invalidates every cache.
PARSING_MODULES = ("store", "articles", "urls", "catalog", "scan_cache")


@dataclass
class ScanCache:
    """path -> row, and when the scan that recorded them started. A row is a flat tuple of plain values
    that starts with the file's size, mtime_ns and inode (catalog.py says what follows)."""

    scanned_at: int = 0  # time.time_ns() at the start of that scan
    entries: dict[str, tuple[Any, ...]] = field(default_factory=dict)


def cache_path(state: Path, store: Path) -> Path:
    """One cache per store folder (a --store override must not clobber the cache of the configured one)."""
    digest = hashlib.sha256(str(store.resolve()).encode("utf-8")).hexdigest()[:16]
    return state / "scan" / f"{digest}.cache"


def cache_key(config: Config) -> str:
    """What a record depends on besides the file itself."""
    parts = {
        "format": FORMAT,
        "publisher": publisher.__version__,
        "code": _code_digest(),
        "python": platform.python_version(),  # marshal's format is only stable within a Python version
        "pyyaml": [yaml.__version__, getattr(yaml, "__with_libyaml__", False)],
        "store": str(config.store),
        "assets_base_url": config.assets_base_url,
        "include": list(config.include),
        "exclude": list(config.exclude),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()


def load(path: Path, key: str) -> ScanCache:
    """The cache at `path`, or an empty one when it is missing, from another key, or corrupt."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        return ScanCache()
    except OSError as exc:
        logger.warning("%s: scan cache unreadable (%s); reading every file", path, exc.strerror or exc)
        return ScanCache()
    try:
        header, payload = _split(data)
    except ValueError as exc:
        logger.warning("%s: scan cache is corrupt (%s); discarded, reading every file", path, exc)
        return ScanCache()
    if header.get("format") != FORMAT or header.get("key") != key:
        logger.info("%s: scan cache is from another publisher version or configuration; reading every file",
                    path)
        return ScanCache()
    try:
        columns = marshal.loads(payload)
        entries = _entries(columns)
    except (ValueError, EOFError, TypeError, KeyError) as exc:
        logger.warning("%s: scan cache is corrupt (%s); discarded, reading every file", path, exc)
        return ScanCache()
    return ScanCache(scanned_at=header["scanned_at"], entries=entries)


def save(path: Path, key: str, cache: ScanCache) -> None:
    """Replace the cache file. A failure is logged, not raised: the next build just reads more files."""
    payload = marshal.dumps({"paths": list(cache.entries), "rows": list(cache.entries.values())})
    header = {"format": FORMAT, "key": key, "scanned_at": cache.scanned_at, "length": len(payload),
              "crc32": zlib.crc32(payload)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(MAGIC + json.dumps(header).encode("ascii") + b"\n")
                stream.write(payload)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as exc:
        logger.warning("%s: cannot write the scan cache: %s", path, exc.strerror or exc)


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    if not data.startswith(MAGIC):
        raise ValueError("not a scan cache file")
    line_end = data.find(b"\n", len(MAGIC))
    if line_end < 0:
        raise ValueError("no header")
    header = json.loads(data[len(MAGIC):line_end])
    if not isinstance(header, dict) or not isinstance(header.get("scanned_at"), int):
        raise ValueError("bad header")
    payload = data[line_end + 1:]
    if len(payload) != header.get("length") or zlib.crc32(payload) != header.get("crc32"):
        raise ValueError("payload does not match its length and checksum")
    return header, payload


def _entries(columns: Any) -> dict[str, tuple[Any, ...]]:
    if not isinstance(columns, dict) or not isinstance(columns.get("paths"), list) \
            or not isinstance(columns.get("rows"), list) or len(columns["paths"]) != len(columns["rows"]):
        raise ValueError("missing columns")
    return dict(zip(columns["paths"], columns["rows"]))


def _code_digest() -> str:
    digest = hashlib.sha256()
    package = Path(publisher.__file__).parent
    for name in PARSING_MODULES:
        try:
            digest.update((package / f"{name}.py").read_bytes())
        except OSError:  # an installation without sources: the version alone has to do
            digest.update(name.encode("ascii"))
    return digest.hexdigest()
