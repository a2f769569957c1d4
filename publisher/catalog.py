"""Catalog: what the store holds, read incrementally, and the feeds selected from it.

A scan stats every candidate file (store.scan). A file whose size, modification time and inode are the
ones in the scan cache (scan_cache.py) is not read again: its record comes from the cache. New and
changed files are read (reading.py), on all cores when there are many; deleted files drop out.

Every article is held as a small Summary, what feed selection needs (identity, dates, topics); its full
Article is stored encoded and decoded only when a feed lists it, so memory grows with the number of
articles, not with the size of their files. When not one file changed since the last scan, even the
summaries stay on disk unless asked for, and select() reuses the last selection as long as no scheduled
article has fallen due.
"""

from __future__ import annotations

import hashlib
import logging
import marshal
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence, TypeVar

from publisher import reading, scan_cache, store
from publisher.articles import Article, Problem
from publisher.config import Config
from publisher.reading import ARTICLE, EPOCH, INVALID, MICROSECOND, NO_FRONT_MATTER, NOT_ARTICLE, UNREADABLE
from publisher.selection import Feed, FeedSpec, Live, live_articles, select_feeds

logger = logging.getLogger(__name__)

# A file modified this close to the start of the scan that cached it may change again within the same
# tick of the file system's clock without its mtime moving: such a file is read again next time.
RACY_NS = 1_000_000_000

T = TypeVar("T")


class Summary(NamedTuple):
    """What feed selection needs to know of an article (it reads like an Article for those fields)."""

    source: str
    id: str  # derived from the canonical URL: equal ids are the same article
    published: datetime
    updated: datetime
    is_published: bool
    topics: tuple[str, ...]


class OnDemand(Sequence[T]):
    """A sequence of known length whose items are only produced when someone looks at them."""

    def __init__(self, length: int, produce: Callable[[], Sequence[T]]) -> None:
        self._length = length
        self._produce = produce
        self._items: Sequence[T] | None = None

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: Any) -> Any:
        return self.items()[index]

    def __iter__(self) -> Iterator[T]:
        return iter(self.items())

    def items(self) -> Sequence[T]:
        if self._items is None:
            self._items = self._produce()
        return self._items


@dataclass
class Collection:
    """What the store holds: a summary of each article (published or not) and every problem found."""

    files: int = 0
    articles: Sequence[Summary] = field(default_factory=list)
    not_articles: int = 0
    invalid: int = 0
    problems: list[Problem] = field(default_factory=list)
    read: int = 0  # files read (parsed) by this scan; the others came from the scan cache
    changed: bool = True  # False: not one file changed since the last scan
    cache: ScanState | None = field(default=None, repr=False)

    def resolve(self, feeds: Iterable[Feed]) -> list[Feed]:
        """The feeds with full Articles in place of the summaries that selection worked on."""
        feeds = list(feeds)
        if self.cache is None:
            return feeds
        articles = self.cache.articles({entry.source for feed in feeds for entry in feed.entries})
        return [replace(feed, entries=tuple(articles[entry.source] for entry in feed.entries
                                            if entry.source in articles)) for feed in feeds]


def collect(config: Config, save: bool = True, workers: int | None = None,
            parallel_from: int | None = None) -> Collection:
    """Scan the store, reading only what the scan cache does not already know, and update the cache
    (unless `save` is false: `publisher check` writes nothing).

    `workers`: processes for reading (default: the cores this process may use); `parallel_from`: fewest
    files to read that are worth starting them (default reading.PARALLEL_FROM). Raises StoreError when the
    store cannot be read.
    """
    store.warn_without_libyaml()
    started_ns = time.time_ns()
    listing = store.scan(config.store, config.include, config.exclude, skip=(config.output, config.state))
    cache = ScanState(config, listing, save)
    if cache.unchanged():
        return cache.unchanged_collection()
    old = cache.index()
    changes = old.changes(listing.paths, listing.stats, cache.trusted_before())
    unread = [listing.paths[row] for row in changes.unread]
    records: dict[str, reading.Record] = {}
    if unread:
        logger.debug("reading %d of %d files (the others are unchanged since the last scan)",
                     len(unread), len(listing))
        records = reading.read_files(config.store, unread, config.assets_base_url,
                                     workers or reading.available_cores(),
                                     reading.PARALLEL_FROM if parallel_from is None else parallel_from)
    index = old if changes.none else old.updated(listing.paths, listing.stats, changes, records)
    cache.adopt(index, {path: record[reading.ENCODED] for path, record in records.items()
                        if record[reading.KIND] == ARTICLE})
    found = _collection(index, cache)
    found.read = len(unread)
    if save and (not changes.none or cache.header is None):
        cache.save(found, started_ns, changes.deleted)
    return found


class ScanState:
    """The scan cache as one scan sees it: the files in the state folder, and what this scan found."""

    def __init__(self, config: Config, listing: store.Listing, save: bool) -> None:
        self.config = config
        self.save_enabled = save
        self.key = scan_cache.cache_key(config)
        base = scan_cache.folder(config.state, config.store)
        self.index_path = base.with_name(f"{base.name}.index")
        self.feeds_path = base.with_name(f"{base.name}.feeds")
        self.records = scan_cache.Records(base.with_name(f"{base.name}.records"), self.key)
        digest = hashlib.sha256("\0".join(listing.paths).encode("utf-8", "surrogateescape"))
        digest.update(listing.stats.tobytes())
        self.digest = digest.hexdigest()  # changes when any file is added, removed, or changes its stat
        self.newest = max(listing.stats[1::3], default=0)
        self._file = scan_cache.open_state(self.index_path, self.key, "scan cache")
        self.header = self._file.header if self._file is not None else None
        self._index: scan_cache.Index | None = None
        self.rows: dict[str, int] = {}
        self.fresh: dict[str, bytes] = {}  # encoded Articles read by this scan

    def trusted_before(self) -> int:
        """Files modified before this time can be judged by their stat (see RACY_NS)."""
        return self.header["scanned_at"] - RACY_NS if self.header else 0

    def unchanged(self) -> bool:
        """Whether the store is exactly as the cached scan saw it, with every file too old to be racy."""
        return (self.header is not None and self.header.get("digest") == self.digest
                and self.newest < self.trusted_before())

    def unchanged_collection(self) -> Collection:
        """The Collection of an unchanged store, from the cache's header: summaries load when asked for."""
        assert self.header is not None
        counts = self.header["counts"]
        return Collection(files=counts["files"], not_articles=counts["not_articles"], invalid=counts["invalid"],
                          articles=OnDemand(counts["articles"], lambda: summaries(self.index())),
                          problems=[Problem(*p) for p in self.header["problems"]], read=0, changed=False,
                          cache=self)

    def index(self) -> scan_cache.Index:
        """The cached index (empty when there is none, or when it is damaged)."""
        if self._index is None:
            self._index = scan_cache.Index()
            if self._file is not None:
                try:
                    self._index = scan_cache.Index.from_payload(self._file.payload())
                except (ValueError, TypeError, KeyError) as exc:
                    logger.warning("%s: scan cache is damaged (%s); discarded, reading every file",
                                   self.index_path, exc)
                    self.header = None
                self._file = None
        return self._index

    def adopt(self, index: scan_cache.Index, fresh: dict[str, bytes]) -> None:
        """Take `index` as the index of this scan; `fresh` holds the encoded Articles it read."""
        self._index = index
        self.rows = {}
        self.fresh = fresh

    def save(self, found: Collection, started_ns: int, deleted: list[str]) -> None:
        index = self.index()
        rows = self.row_numbers()
        self.records.update(((path, *_stat(index, rows[path]), encoded) for path, encoded in self.fresh.items()),
                            deleted)
        counts = {"files": found.files, "articles": len(found.articles), "not_articles": found.not_articles,
                  "invalid": found.invalid}
        header = {"scanned_at": started_ns, "digest": self.digest, "counts": counts,
                  "problems": [[p.source, p.field, p.reason, p.fatal] for p in found.problems]}
        scan_cache.write_state(self.index_path, self.key, header, index.payload())

    def row_numbers(self) -> dict[str, int]:
        """path -> row of the index."""
        if not self.rows:
            self.rows = {path: row for row, path in enumerate(self.index().paths)}
        return self.rows

    def articles(self, sources: Iterable[str]) -> dict[str, Article]:
        """The full Articles of `sources`: read by this scan, else from the record cache, else read again."""
        index, rows = self.index(), self.row_numbers()
        found = {source: self.fresh[source] for source in sources if source in self.fresh}
        wanted = {source: _stat(index, rows[source]) for source in sources if source not in found}
        found.update(self.records.get(wanted))
        missing = [source for source in wanted if source not in found]
        if missing:
            logger.info("%d articles missing from the record cache; reading their files again", len(missing))
            for path in missing:
                record = reading.read_record(self.config.store, path, self.config.assets_base_url)
                if record[reading.KIND] == ARTICLE:
                    found[path] = record[reading.ENCODED]
                else:  # changed since the scan: left out now, the next build sees what it has become
                    logger.warning("%s: changed while the build ran; left out until the next build", path)
            if self.save_enabled:
                self.records.update(((path, *wanted[path], found[path]) for path in missing if path in found), ())
        return {source: reading.decode(encoded) for source, encoded in found.items()}


def _stat(index: scan_cache.Index, row: int) -> tuple[int, int, int]:
    return (index.stats[3 * row], index.stats[3 * row + 1], index.stats[3 * row + 2])


def select(collection: Collection, config: Config, now: datetime) -> tuple[Live, list[Feed]]:
    """live_articles(), select_feeds() and Collection.resolve() in one: the feeds, with full Articles.

    When no file changed since the last selection, with the same settings, and no scheduled article fell
    due in between, that selection is reused: it is kept in the state folder beside the scan cache."""
    cache = collection.cache
    settings = [config.site.title, config.max_items]
    if cache is not None and not collection.changed:
        reused = _reuse(cache, settings, now, collection)
        if reused is not None:
            return reused
    live = live_articles(collection.articles, now)
    feeds = collection.resolve(select_feeds(live.articles, config.site.title, config.max_items))
    if cache is not None and cache.save_enabled:
        _remember(cache, settings, now, live, feeds)
    return live, feeds


def _remember(cache: ScanState, settings: list[Any], now: datetime, live: Live, feeds: list[Feed]) -> None:
    articles = {entry.source: marshal.dumps(reading.encode_article(entry))
                for feed in feeds for entry in feed.entries}
    header = {"digest": cache.digest, "settings": settings, "now": reading.microseconds(now),
              "next_due": None if live.next_due is None else reading.microseconds(live.next_due)}
    payload = {"live": [len(live.articles), live.unpublished, live.scheduled, live.duplicates],
               "feeds": [[f.spec.family, f.spec.path, f.spec.title, f.spec.label, f.total,
                          [entry.source for entry in f.entries]] for f in feeds],
               "articles": articles}
    scan_cache.write_state(cache.feeds_path, cache.key, header, payload)


def _reuse(cache: ScanState, settings: list[Any], now: datetime, collection: Collection
           ) -> tuple[Live, list[Feed]] | None:
    state = scan_cache.open_state(cache.feeds_path, cache.key, "last selection")
    if state is None:
        return None
    header, moment = state.header, reading.microseconds(now)
    if (header.get("digest") != cache.digest or header.get("settings") != settings
            or moment < header["now"] or (header["next_due"] is not None and moment >= header["next_due"])):
        state.close()
        return None
    try:
        payload = state.payload()
        articles = {path: reading.decode(encoded) for path, encoded in payload["articles"].items()}
        feeds = [Feed(FeedSpec(family, path, title, label), tuple(articles[s] for s in entries), total)
                 for family, path, title, label, total, entries in payload["feeds"]]
        live_count, unpublished, scheduled, duplicates = payload["live"]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        logger.warning("%s: last selection is damaged (%s); selecting again", cache.feeds_path, exc)
        return None
    next_due = None if header["next_due"] is None else EPOCH + header["next_due"] * MICROSECOND
    live = OnDemand(live_count, lambda: live_articles(collection.articles, now).articles)
    return Live(live, unpublished, scheduled, duplicates, next_due), feeds


def _collection(index: scan_cache.Index, cache: ScanState) -> Collection:
    """Counts, problems and article summaries of an index, in path order."""
    kinds = index.columns["kinds"]
    counts = Counter(kinds)
    found = Collection(files=len(kinds) - counts[NO_FRONT_MATTER] - counts[UNREADABLE],
                       not_articles=counts[NOT_ARTICLE], invalid=counts[INVALID] + counts[UNREADABLE],
                       problems=[Problem(*problem) for problems in index.problems.values() for problem in problems],
                       cache=cache)
    if logger.isEnabledFor(logging.DEBUG):
        for path, kind in zip(index.paths, kinds):
            if kind == NO_FRONT_MATTER:
                logger.debug("%s: no front matter, not part of the store's data", path)
            elif kind == NOT_ARTICLE:
                logger.debug("%s: not an article (no title, no publishedDateTime)", path)
    found.articles = summaries(index)
    return found


def summaries(index: scan_cache.Index) -> list[Summary]:
    """A Summary of each article of the index, in path order."""
    c = index.columns
    topics: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per distinct list of topics
    dates: dict[int, datetime] = {}  # many articles share a date (a day, at midnight)
    new = tuple.__new__  # Summary(...) without the argument handling of its generated __new__

    def date(microseconds: int) -> datetime:
        moment = dates.get(microseconds)
        if moment is None:
            moment = dates[microseconds] = EPOCH + microseconds * MICROSECOND
        return moment

    return [new(Summary, (path, entry_id, date(published), date(updated), flag, topics.setdefault(labels, labels)))
            for path, kind, entry_id, published, updated, flag, labels
            in zip(index.paths, c["kinds"], c["ids"], c["published"], c["updated"], c["flags"], c["topics"])
            if kind == ARTICLE]
