"""Feed fingerprints: a feed whose files would come out as the bytes already served is not rendered again.

A feed's fingerprint is a digest of everything its files are made from: its spec and its entries (every
field of every Article, enclosure sizes included), the rendering settings (site, WebSub hubs, formats,
precompression) and the code that renders (publisher version, a digest of the rendering modules, feedgen's
version). After a build has written each file of a feed, or found it already equal, the fingerprint is
recorded in the state folder with the size and mtime of each file. The next build skips a feed whose
fingerprint matches and whose files are still exactly as recorded: the writer keeps them as they are.
Anything else (a new entry, a changed setting, a file someone touched or deleted) renders the feed again,
and the writer still compares bytes before writing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import publisher
from publisher.caches.statefiles import read_state_json, write_atomic
from publisher.config import Config
from publisher.stages.pages import page_path
from publisher.stages.precompress import SUFFIX
from publisher.stages.render import Format
from publisher.stages.s3 import S3Location
from publisher.stages.selection import Feed
from publisher.stages.targets import Target, open_target
from publisher.stages.writer import WriteResult

logger = logging.getLogger(__name__)

FORMAT = 1
RENDERING_CODE = (
    "stages.render", "stages.pages", "stages.precompress", "stages.xmltext", "caches.fingerprints",
)


@dataclass(frozen=True)
class Trim:
    """A feed file cut down to max_bytes (render.render_within): remembered with the feed's fingerprint, so
    that a build which does not render the feed again still counts it."""

    feed: str  # the feed's path
    kept: int
    total: int
    without_content: bool
    size: int
    max_bytes: int

    def __str__(self) -> str:
        dropped = ", without its content" if self.without_content else ""
        return (f"trimmed to max_bytes ({self.max_bytes} bytes): {self.kept} of {self.total} entries kept"
                f"{dropped}, {self.size} bytes")


@dataclass
class FeedFingerprints:
    """The feeds of this build whose files are already as they would be rendered, and what to record."""

    path: Path  # the state file
    output: str  # the target's identity
    stamps: Callable[[Iterable[str]], dict[str, list[Any]] | None]  # the target's
    settings: str
    fingerprints: dict[str, str]  # feed path -> fingerprint, for every feed of this build
    files: dict[str, list[str]]  # feed path -> its files in the output folder
    recorded: dict[str, Any]  # the state file's feeds, as read
    unchanged: set[str] = field(default_factory=set)  # feed paths to skip
    trimmed: dict[str, Trim] = field(default_factory=dict)  # file name -> how it was cut to max_bytes

    @property
    def kept(self) -> set[str]:
        """The output files of the skipped feeds."""
        return {name for feed in self.unchanged for name in self.files[feed]}

    def record(self, writes: WriteResult) -> None:
        """Remember the feeds whose every file is now in place (written, or already equal)."""
        done = set(writes.written) | set(writes.unchanged)
        feeds: dict[str, Any] = {}
        for feed, fingerprint in self.fingerprints.items():
            if feed in self.unchanged:
                feeds[feed] = self.recorded[feed]
            elif all(name in done for name in self.files[feed]):
                stats = self.stamps(self.files[feed])
                if stats is not None:
                    feeds[feed] = {"fingerprint": fingerprint, "files": stats,
                                   "trimmed": {name: [trim.kept, trim.total, trim.without_content, trim.size]
                                               for name, trim in self.trimmed.items() if trim.feed == feed}}
        if feeds == self.recorded:
            return
        data = {"format": FORMAT, "output": self.output, "settings": self.settings, "feeds": feeds}
        try:
            write_atomic(self.path, (json.dumps(data, indent=0, sort_keys=True) + "\n").encode("utf-8"))
        except OSError as exc:  # the next build renders every feed again
            logger.warning("%s: cannot record feed fingerprints: %s", self.path, exc.strerror or exc)


def known_feeds(config: Config, feeds: Sequence[Feed], formats: Sequence[Format], target: Target | None = None,
                tokens: Tokens | None = None) -> FeedFingerprints:
    """Which of `feeds` need no rendering: same fingerprint as recorded, files untouched since (in `target`,
    by default the output folder).

    `tokens` (catalog.stamp_tokens): each entry's file stamp and the key of how files are read. An entry is
    then known by its file's stamp, as the scan cache knows it, instead of by every field of its Article:
    the same fingerprint, a fraction of the work (a repr of 5,000 Articles costs a tenth of a second).
    Without them (enclosure sizes probed into the Articles), every field counts."""
    target = target or open_target(config)
    settings = _settings(config, formats)
    if tokens is not None:
        settings = hashlib.sha256(f"{settings}\0{tokens.key}".encode()).hexdigest()
    extensions = [fmt.extension for fmt in formats]
    files = {}
    for feed in feeds:
        names = [f"{feed.spec.path}{extension}" for extension in extensions] + [page_path(feed)]
        files[feed.spec.path] = names + [f"{name}{SUFFIX}" for name in names] if target.gzip_copies else names
    known = FeedFingerprints(path=state_path(config.state, config.output), output=target.identity, stamps=target.stamps,
                  settings=settings,
                  fingerprints={feed.spec.path: fingerprint(feed, settings, tokens) for feed in feeds},
                  files=files,
                  recorded=_recorded(state_path(config.state, config.output), target.identity, settings))
    for path, value in known.fingerprints.items():
        entry = known.recorded.get(path)
        if (isinstance(entry, dict) and entry.get("fingerprint") == value
                and entry.get("files") == target.stamps(files[path])):
            known.unchanged.add(path)
            known.trimmed.update(_trims(path, entry.get("trimmed"), config.max_bytes))
    if known.unchanged:
        logger.debug("%d of %d feeds unchanged since they were written: not rendered again",
                     len(known.unchanged), len(feeds))
    return known


@dataclass(frozen=True)
class Tokens:
    """Per article file, a number that changes when the file does (its stat as scanned), and the key of
    everything else an Article depends on (code, versions, reading settings)."""

    key: str
    of: Mapping[str, int | None]  # source -> token


def fingerprint(feed: Feed, settings: str, tokens: Tokens | None = None) -> str:
    """A digest of the feed and the settings: repr() of plain values, stable from one run to the next."""
    digest = hashlib.sha256(settings.encode("utf-8"))
    digest.update(repr((feed.spec, feed.history, feed.total)).encode("utf-8"))  # a feed's image among them
    if tokens is not None:
        digest.update(repr([(source, tokens.of[source]) for source in feed.sources]).encode(
            "utf-8", "surrogatepass"))
        return digest.hexdigest()
    for entry in feed.entries:
        digest.update(repr(entry).encode("utf-8", "surrogatepass"))  # the Article as its dataclass shows it
    return digest.hexdigest()


def state_path(state: Path, output: Path | S3Location) -> Path:
    """One file per output folder or bucket prefix, like the writer's manifest."""
    name = str(output.resolve()) if isinstance(output, Path) else str(output)
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
    return state / "fingerprints" / f"{digest}.json"


def rendering_settings(config: Config, formats: Iterable[Format]) -> str:
    """A digest of what every document depends on besides its entries (the archives use it too)."""
    return _settings(config, formats)


def _settings(config: Config, formats: Iterable[Format]) -> str:
    parts = [FORMAT, publisher.__version__, publisher.source_digest(*RENDERING_CODE), _feedgen_version(),
             repr(config.site),
             list(config.websub.hubs), [fmt.name for fmt in formats], config.precompress, config.max_bytes]
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()


def _trims(feed: str, recorded: Any, max_bytes: int) -> dict[str, Trim]:
    try:
        return {name: Trim(feed, kept, total, without_content, size, max_bytes)
                for name, (kept, total, without_content, size) in recorded.items()}
    except (AttributeError, TypeError, ValueError):  # not as recorded by this version: count nothing
        return {}


def _recorded(path: Path, output: str, settings: str) -> dict[str, Any]:
    data = read_state_json(path, "feed fingerprints", "every feed is rendered")
    if (not isinstance(data, dict) or data.get("format") != FORMAT or data.get("output") != output
            or data.get("settings") != settings or not isinstance(data.get("feeds"), dict)):
        return {}  # other settings or code: every feed is rendered again
    feeds: dict[str, Any] = data["feeds"]
    return feeds


def _feedgen_version() -> str:
    try:
        return version("feedgen")
    except PackageNotFoundError:
        return "unknown"

