"""Archives (RFC 5005 section 4, https://www.rfc-editor.org/rfc/rfc5005#section-4): with `archives: true`,
every feed of every family also has its whole history as monthly archive documents, Atom and RSS, at
`archive/<feed path>/<YYYY>-<MM>.<ext>`: every live article of the feed published in that month (UTC),
newest first, with no max_items cap.

The chain, walked from the subscription feed: its `prev-archive` is the newest month's document; each
archive document links `current` (the subscription feed), `prev-archive` (the next older document) and
`next-archive` (the next newer one); months without articles have no document and are skipped. A month
too big for `max_bytes` is cut into parts, newest articles first: `2024-02.atom`, then `2024-02.2.atom`
and so on, each the `prev-archive` of the one before; so a month's first document is always `<YYYY>-<MM>`,
whatever its parts, and links into it never change when a part is added.

Archive documents are many (one per feed and month) and almost all of them never change, so they are not
rendered again unless they would change. Each month of each feed has a fingerprint made without reading a
single article: the scan stamps (size, mtime, inode) of its articles' files in order, the feed's spec, its
two neighbours in the chain, and the settings (those of the feed fingerprints, and the scan cache's key,
which covers how files are read). A month whose fingerprint and files are as recorded is kept as it is; the
others are rendered and written when their bytes differ. When not one file of the store changed since the
last build and the feeds are the same, not even the fingerprints are made: the last plan stands as long as
the files are as recorded. The record lives in the state folder, one file per output (marshal, like the
scan cache: fast to load with tens of thousands of documents).

Archive documents have no gzip copies: each is fetched once by a reader walking the history, and they would
double the number of files a no-op build looks at. They carry no WebSub hubs: nobody subscribes to them.
"""

from __future__ import annotations

import hashlib
import logging
import marshal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from publisher.caches import statefiles
from publisher.caches.fingerprints import rendering_settings
from publisher.config import Config
from publisher.stages import catalog
from publisher.stages.articles import Article
from publisher.stages.catalog import Collection
from publisher.stages.render import ARCHIVE_FORMATS, FORMATS, Format, render, render_within
from publisher.stages.selection import Family, Feed, History, Summary, archive_months
from publisher.stages.targets import Target
from publisher.stages.writer import WriteResult

logger = logging.getLogger(__name__)

FOLDER = "archive"
FORMAT = 2


@dataclass
class Month:
    """One month of one feed's archive: its articles and what its documents are made from."""

    feed: Feed
    month: str  # "2024-02"
    entries: list[Summary]  # newest first
    tokens: int  # a hash of the stamps of its articles' files, in order


@dataclass
class Archives:
    """The archive documents of a build: what to write, what is already in place, the subscription feeds'
    links into their archives, and what to record once written."""

    files: dict[str, bytes] = field(default_factory=dict)  # rendered documents
    kept: set[str] = field(default_factory=set)  # documents already as they would be rendered
    history: dict[str, History] = field(default_factory=dict)  # feed path -> its subscription feed's links
    units: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # (feed, month) -> fingerprint, parts, files
    recorded: dict[str, Any] = field(default_factory=dict)  # the state file's payload, as read
    recorded_header: dict[str, Any] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict)
    state: tuple[Path, str] | None = None  # the state file and its key; None: nothing to record
    settings: str = ""  # what every document depends on besides its articles (a digest)
    reused: bool = False  # the last plan, as it was: nothing to render, nothing new to record

    def record(self, writes: WriteResult, target: Target) -> None:
        """Remember the months whose every document is now in place (written, or found equal)."""
        if self.state is None or self.reused:  # a no-op build leaves even its records alone
            return
        done = set(writes.written) | set(writes.unchanged) | self.kept
        old = _units(self.recorded)
        units: dict[str, list[Any]] = {}
        for (path, month), (fingerprint, parts, names) in self.units.items():
            key = f"{path}\0{month}"
            previous = old.get(key)
            if previous is not None and previous[0] == fingerprint and set(names) <= self.kept:
                units[key] = previous
            elif all(name in done for name in names):
                found = target.stamps(names)
                if found is not None:
                    units[key] = [fingerprint, parts, found]
        stamps: dict[str, Any] = {}
        for _, _, files in units.values():
            stamps.update(files)
        history = {path: [h.prev] for path, h in sorted(self.history.items())}
        if (units == old and history == self.recorded.get("history") and stamps == self.recorded.get("stamps")
                and all(self.recorded_header.get(k) == v for k, v in self.header.items())):
            return  # nothing new to record
        # The units packed into one string: a no-op build reads only the stamps, and unpacking 40,000 units
        # it does not need cost a tenth of a second.
        payload = {"units": marshal.dumps(units), "stamps": stamps, "history": history}
        statefiles.write_binary(self.state[0], self.state[1], self.header, payload)


def prepare(collection: Collection, config: Config, feeds: Sequence[Feed], families: Sequence[Family],
            now: datetime, target: Target) -> Archives:
    """The archive documents of `feeds`, rendering only the months that changed."""
    formats = [FORMATS[name] for name in config.formats if name in ARCHIVE_FORMATS]
    archives = Archives()
    if not formats:
        return archives
    settings = _settings(config, formats, collection)
    path = _state_path(config, target)
    specs = hashlib.sha256(repr(sorted((feed.spec.path, feed.spec) for feed in feeds)).encode("utf-8")).hexdigest()
    archives.header = {"store": catalog.store_digest(collection), "specs": specs}
    archives.state, archives.settings = (path, settings), settings
    state = statefiles.open_binary(path, settings, "archive record")
    if state is not None:
        archives.recorded_header = state.header
        try:
            archives.recorded = state.payload()
        except ValueError as exc:
            logger.warning("%s: archive record is damaged (%s); every archive is rendered again", path, exc)
        if (not collection.changed and state.header.get("store") == archives.header["store"]
                and state.header.get("specs") == specs and _reuse(archives, feeds, target)):
            return archives
    _plan(archives, collection, config, feeds, families, formats, now, target)
    return archives


def _reuse(archives: Archives, feeds: Sequence[Feed], target: Target) -> bool:
    """Take the last plan as it is, when every document it recorded is still as written."""
    stamps: dict[str, Any] = archives.recorded.get("stamps", {})
    if target.stamps(stamps) != stamps:
        return False
    archives.kept = set(stamps)
    archives.reused = True
    for feed in feeds:
        newest = archives.recorded.get("history", {}).get(feed.spec.path)
        if newest is not None:
            archives.history[feed.spec.path] = History(archive=False, prev=newest[0])
    return True


def _plan(archives: Archives, collection: Collection, config: Config, feeds: Sequence[Feed],
          families: Sequence[Family], formats: Sequence[Format], now: datetime, target: Target) -> None:
    """Every month of every feed, newest first within a feed: kept when its fingerprint and files are as
    recorded, else rendered. Newest first, since a month's next-archive names the newer month's last part."""
    tokens = catalog.file_tokens(collection)
    by_feed = archive_months(catalog.live_now(collection, now), feeds, families)
    recorded = _units(archives.recorded)
    for feed in sorted(feeds, key=lambda feed: feed.spec.path):
        months = sorted(by_feed.get(feed.spec.path, {}).items(), reverse=True)
        if not months:
            continue
        base = f"{FOLDER}/{feed.spec.path}"
        archives.history[feed.spec.path] = History(archive=False, prev=_document(base, months[0][0], 1))
        newer: str | None = None  # the newer month's last part: this month's next-archive
        for index, (month, entries) in enumerate(months):
            older = _document(base, months[index + 1][0], 1) if index + 1 < len(months) else None
            unit = Month(feed, month, entries, hash(tuple(tokens.get(entry.source, 0) for entry in entries)))
            fingerprint = _fingerprint(archives.settings, unit, older, newer)
            previous = recorded.get(f"{feed.spec.path}\0{month}")
            if previous is not None and previous[0] == fingerprint and target.stamps(previous[2]) == previous[2]:
                parts, names = previous[1], list(previous[2])
                archives.kept.update(names)
            else:
                parts, names = _render_month(archives, unit, older, newer, formats, config, collection)
            archives.units[(feed.spec.path, month)] = [fingerprint, parts, names]
            newer = _document(base, month, parts)


def _render_month(archives: Archives, unit: Month, older: str | None, newer: str | None,
                  formats: Sequence[Format], config: Config, collection: Collection) -> tuple[int, list[str]]:
    """Render one month's documents (in parts when they would exceed max_bytes): how many parts, and their
    files."""
    feed, base = unit.feed, f"{FOLDER}/{unit.feed.spec.path}"
    found = catalog.full_articles(collection, [entry.source for entry in unit.entries])
    articles = tuple(found[entry.source] for entry in unit.entries if entry.source in found)
    whole = _part(feed, base, unit.month, 1, 1, articles, older, newer)
    rendered = {f"{whole.spec.path}{fmt.extension}": render(whole, fmt, config.site) for fmt in formats}
    if all(len(data) <= config.max_bytes for data in rendered.values()):  # most months: one document
        archives.files.update(rendered)
        logger.debug("%s/%s: %d articles", base, unit.month, len(articles))
        return 1, list(rendered)
    pages = _pages(feed, base, unit.month, articles, formats, config)
    names: list[str] = []
    for number, entries in enumerate(pages, start=1):
        document = _part(feed, base, unit.month, number, len(pages), entries, older, newer)
        for fmt in formats:
            name = f"{document.spec.path}{fmt.extension}"
            archives.files[name] = render(document, fmt, config.site)
            names.append(name)
    logger.debug("%s/%s: %d articles in %d parts", base, unit.month, len(articles), len(pages))
    return len(pages), names


def _part(feed: Feed, base: str, month: str, number: int, parts: int, entries: tuple[Article, ...],
          older: str | None, newer: str | None) -> Feed:
    """Part `number` of `parts` of a month, with its place in the chain: the parts of a month run from the
    newest articles (`<YYYY>-<MM>`) to the oldest, between the newer month's last part and the older month."""
    history = History(archive=True, current=feed.spec.path,
                      prev=_document(base, month, number + 1) if number < parts else older,
                      next=_document(base, month, number - 1) if number > 1 else newer)
    return replace(feed, spec=replace(feed.spec, path=_document(base, month, number)), entries=entries,
                   total=len(entries), history=history)


def _pages(feed: Feed, base: str, month: str, articles: tuple[Article, ...], formats: Sequence[Format],
           config: Config) -> list[tuple[Article, ...]]:
    """A month's articles cut into the pages its documents hold: one page unless a document would exceed
    max_bytes, else the newest articles that fit in every format, then the next ones, and so on. A page
    holds at least one article, even one that alone is over the budget (said in a warning)."""
    pages: list[tuple[Article, ...]] = []
    rest = articles
    while rest:
        # Sized with links as long as the longest a part of this month can have, minus a margin for the
        # difference between them: a document rendered with its own links is then within max_bytes.
        probe = replace(feed, spec=replace(feed.spec, path=_document(base, month, len(articles))), entries=rest,
                        total=len(rest), history=History(archive=True, current=feed.spec.path,
                                                         prev=_document(base, month, len(articles)),
                                                         next=_document(base, month, len(articles))))
        budget = max(config.max_bytes - _LINK_MARGIN, 1)
        fitted = [render_within(probe, fmt, config.site, (), budget) for fmt in formats]
        count = min(fit.kept for fit in fitted)
        if any(fit.over for fit in fitted) or (count == 1 and any(fit.without_content for fit in fitted)):
            logger.warning("%s/%s: an article over max_bytes (%d) on its own; its archive document is larger",
                           base, month, config.max_bytes)
        pages.append(rest[:count])
        rest = rest[count:]
    return pages


# Bytes kept free when a month is cut into parts: the links of a part differ from the ones it was sized with
# by a few characters per link.
_LINK_MARGIN = 256


def _document(base: str, month: str, part: int) -> str:
    """The path (without extension) of one part of a month: the first is `<YYYY>-<MM>`, then `.2`, `.3`."""
    return f"{base}/{month}" if part <= 1 else f"{base}/{month}.{part}"


def _fingerprint(settings: str, unit: Month, older: str | None, newer: str | None) -> str:
    text = repr((settings, unit.feed.spec, unit.month, len(unit.entries), unit.tokens, older, newer))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _settings(config: Config, formats: Iterable[Format], collection: Collection) -> str:
    """Everything an archive document depends on besides its articles: the feeds' rendering settings and the
    scan cache's key (how files are read)."""
    parts = [FORMAT, rendering_settings(config, formats), catalog.reading_key(collection)]
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()


def _units(recorded: dict[str, Any]) -> dict[str, Any]:
    """The recorded months: (feed path, month) -> fingerprint, parts, stamps of their documents."""
    packed = recorded.get("units")
    try:
        units = marshal.loads(packed) if isinstance(packed, bytes) else {}
    except (EOFError, ValueError, TypeError):
        return {}
    return units if isinstance(units, dict) else {}


def _state_path(config: Config, target: Target) -> Path:
    digest = hashlib.sha256(target.identity.encode("utf-8")).hexdigest()[:16]
    return config.state / "archives" / f"{digest}.state"
