"""The enclosure cache: what probing learned of each enclosure URL (its size and type, when it was checked,
its failures), kept in `<state>/enclosures.json` across builds and restarts (stages/probe.py decides what
to probe and when). A JSON file: an unreadable or foreign one is an empty cache with one warning."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from publisher.caches.statefiles import read_state_json, write_atomic

logger = logging.getLogger(__name__)

CACHE_NAME = "enclosures.json"
CACHE_VERSION = 1
_TOKEN = r"[a-z0-9][a-z0-9!#$&^_.+-]*"
MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}")  # a type/subtype as the cache keeps it (lower case)


@dataclass(frozen=True)
class ProbeRecord:
    """The cache's record of one URL."""

    length: int | None  # the last size learned; kept through later failures
    mime_type: str | None
    checked: float  # epoch seconds of the last attempt
    failures: int = 0  # failed attempts since the last success
    error: str | None = None  # the last failure's cause


def cache_path(state: Path) -> Path:
    return state / CACHE_NAME


def load_cache(path: Path) -> dict[str, ProbeRecord]:
    """The records in `path`; an unreadable or foreign file gives an empty cache (and a warning)."""
    data = read_state_json(path, "enclosure cache", "starting a new one")
    if data is None:
        return {}
    if not (isinstance(data, dict) and data.get("version") == CACHE_VERSION
            and isinstance(data.get("entries"), dict)):
        logger.warning("%s: enclosure cache of another version; starting a new one", path)
        return {}
    cache = {}
    for url, raw in data["entries"].items():
        known = _probe_record(raw)
        if known is None:
            logger.debug("%s: dropping a malformed record for %s", path, url)
        else:
            cache[url] = known
    return cache


def save_cache(path: Path, cache: Mapping[str, ProbeRecord]) -> None:
    """Write the cache atomically. A failure only costs repeated probes later, so it is a warning."""
    entries = {url: {"length": k.length, "type": k.mime_type, "checked": round(k.checked, 3),
                     "failures": k.failures, "error": k.error}
               for url, k in sorted(cache.items())}
    data = {"version": CACHE_VERSION, "entries": entries}
    try:
        write_atomic(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))
    except OSError as exc:
        logger.warning("%s: cannot save the enclosure cache: %s", path, exc.strerror or exc)


def _probe_record(raw: Any) -> ProbeRecord | None:
    if not isinstance(raw, dict):
        return None
    length, mime_type, checked = raw.get("length"), raw.get("type"), raw.get("checked")
    failures, error = raw.get("failures", 0), raw.get("error")
    if not (length is None or (isinstance(length, int) and not isinstance(length, bool) and length > 0)):
        return None
    if not (mime_type is None or (isinstance(mime_type, str) and MEDIA_TYPE.fullmatch(mime_type))):
        return None
    if isinstance(checked, bool) or not isinstance(checked, (int, float)):
        return None
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
        return None
    return ProbeRecord(length=length, mime_type=mime_type, checked=float(checked), failures=failures,
                 error=error if isinstance(error, str) else None)
