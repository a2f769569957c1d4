"""Catalog: what the store holds, read incrementally, and the feeds selected from it.

A scan stats every candidate file (store.scan). A file whose size, modification time and inode are the
ones in the scan cache (scan_cache.py) is not read again: its record comes from the cache. New and
changed files are read (reading.py), on all cores when there are many; deleted files drop out.

Every article is held as a small Summary, what feed selection needs (identity, dates, topics, provider,
quality, heat, type); its full Article is stored encoded and decoded only when a feed lists it, so memory
grows with the number of articles, not with the size of their files. When not one file changed since the
last scan, even the summaries stay on disk unless asked for, and select() reuses the last selection as long
as no scheduled article has fallen due.
"""

from __future__ import annotations

import functools
import gc
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from publisher.caches import scan_cache, statefiles
from publisher.caches.fingerprints import Tokens
from publisher.config import Config
from publisher.stages import reading, store
from publisher.stages.articles import Article, Image, Problem, body_limit
from publisher.stages.reading import ARTICLE, INVALID, NO_FRONT_MATTER, NOT_ARTICLE, UNREADABLE
from publisher.stages.selection import (
    LIVE,
    SCHEDULED,
    UNPUBLISHED,
    Curated,
    Entries,
    Family,
    Feed,
    FeedSpec,
    Live,
    SelectedFeed,
    Summary,
    Tally,
    as_datetime,
    families_of,
    feeds_from,
    live_articles,
    publication_state,
    tally,
    updated_tally,
    where,
)

logger = logging.getLogger(__name__)

# From this many files to read (a cold build), their encoded Articles go into a spill file as they are read
# instead of being held until the scan is saved (scan_cache.Spill).
STORE_WHILE_READING = 2000

T = TypeVar("T")


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

    def forget(self) -> None:
        """Let go of the items: they are produced again if asked for."""
        self._items = None


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
    cache: scan_cache.ScanCache | None = field(default=None, repr=False)  # what select() works from


@contextmanager
def _many_objects() -> Iterator[None]:
    """Pause the cyclic garbage collector while a scan or a selection makes hundreds of thousands of small
    objects in one go: every pass of the collector walks all of them, and they form no cycles (reference
    counting frees them). It halves the time of a rescan of 100,000 files. Then the objects made are
    frozen (gc.freeze): they would all be in the youngest generation, and its next two passes would walk
    them all again (0.07 s of a one-file rebuild of 100,000 files). Frozen objects are still freed when no
    longer referenced; the daemon looks at everything again after each build. The collector's previous
    state is restored."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


@dataclass
class BuildMemory:
    """What a long-running process (`publisher run`) keeps from one build to the next, so that a build
    after a few changes costs what those changes cost: the state files it wrote (statefiles.Memory), and the
    store's listing with the paths changed since it was made, as the store watcher reported them (None:
    unknown, the next build scans the whole store)."""

    files: statefiles.Memory = field(default_factory=statefiles.Memory)
    listing: store.Listing | None = None
    listed: tuple[Any, ...] = ()  # what the listing is of: store, include, exclude, skipped folders
    unscanned: set[str] | None = None
    decoded: dict[str, tuple[bytes, Article]] = field(default_factory=dict)  # source -> record, its Article

    def changed(self, paths: Iterable[str] | None) -> None:
        """Note paths changed in the store (relative, "/"-separated); None: changes that paths cannot say."""
        if paths is None or self.unscanned is None:
            self.unscanned = None
        else:
            self.unscanned.update(paths)


def collect(config: Config, save: bool = True, workers: int | None = None,
            parallel_from: int | None = None, memory: BuildMemory | None = None,
            defer_save: bool = False) -> Collection:
    """Scan the store, reading only what the scan cache does not already know, and update the cache
    (unless `save` is false: `publisher check` writes nothing; with `defer_save`, only when save() is
    called, after the feeds are published).

    `workers`: processes for reading (default: the cores this process may use); `parallel_from`: fewest
    files to read that are worth starting them (default reading.PARALLEL_FROM). `memory`: the daemon's, to
    stat only the paths the watcher reported and to reuse the state files it wrote last. Raises StoreError
    when the store cannot be read.
    """
    return read(config, scan(config, memory), save, workers, parallel_from, memory, defer_save)


def scan(config: Config, memory: BuildMemory | None = None) -> store.Listing:
    """The first stage of a build: the store's candidate files and their stat (store.scan), or, with the
    daemon's `memory`, its last listing with the paths the watcher reported since stat'ed again, when those
    paths can tell."""
    folders = (config.output, config.state)
    skip = tuple(folder for folder in folders if isinstance(folder, Path))
    listed = (config.store, config.include, config.exclude, skip)
    listing = None
    if memory is not None and memory.listing is not None and memory.unscanned is not None and memory.listed == listed:
        listing = store.rescan(config.store, memory.listing, memory.unscanned, config.include, config.exclude, skip)
        if listing is None:
            logger.debug("the changes seen need a scan of the whole store")
    if listing is None:
        # The folders of the last listing, to skip listing those unchanged since: the daemon's own, else
        # those the last build saved (with the same include and exclude patterns, which the cache key covers).
        if memory is not None and memory.listing is not None and memory.listed == listed:
            known = memory.listing.folders
        else:
            known = scan_cache.last_folders(config)
        listing = store.scan(config.store, config.include, config.exclude, skip=skip, known=known)
    if memory is not None:
        memory.listing, memory.listed, memory.unscanned = listing, listed, set()
    return listing


def read(config: Config, listing: store.Listing, save: bool = True, workers: int | None = None,
         parallel_from: int | None = None, memory: BuildMemory | None = None, defer_save: bool = False
         ) -> Collection:
    """The second stage: what each file of `listing` yields, read only when the scan cache does not already
    know it (see collect() for the arguments)."""
    with _many_objects():
        return _collect(config, listing, save, workers, parallel_from, memory, defer_save)


def save(collection: Collection) -> None:
    """Write what collect(defer_save=True) and select() left to save: the scan cache and the selection."""
    if collection.cache is not None:
        with _many_objects():  # the collector would walk the whole index on its way out
            collection.cache.save_deferred()


def _collect(config: Config, listing: store.Listing, save: bool, workers: int | None, parallel_from: int | None,
             memory: BuildMemory | None, defer_save: bool) -> Collection:
    store.warn_without_libyaml()
    started_ns = listing.started_ns
    cache = scan_cache.ScanCache(config, listing, save, memory.files if memory is not None else None,
                                 defer_save, memory.decoded if memory is not None else None)
    if save and listing.folders_changed:
        cache.later(functools.partial(cache.save_folders, listing.folders))
    if cache.unchanged():
        return _unchanged_collection(cache)
    old = cache.index()
    changes = old.changes(listing.paths, listing.stats, cache.trusted_before())
    unread = [listing.paths[row] for row in changes.unread]
    read = scan_cache.ReadRows()
    if unread:
        logger.debug("reading %d of %d files (the others are unchanged since the last scan)",
                     len(unread), len(listing))
        spill = cache.spilling() if save and len(unread) >= STORE_WHILE_READING else None
        reading.read_files(config.store, unread, config.assets_base_url, workers or reading.available_cores(),
                           _taken(read, spill),
                           reading.PARALLEL_FROM if parallel_from is None else parallel_from,
                           body_limit(config.content, config.max_bytes))
    index = old if changes.none else old.updated(listing.paths, listing.stats, changes, read)
    cache.previous, cache.changes = old, changes
    cache.changed_paths = set(unread) | set(changes.deleted)
    cache.adopt(index, read.fresh)
    found = _collection(index, cache)
    found.read = len(unread)
    if save and (not changes.none or cache.header is None):
        counts = {"files": found.files, "articles": len(found.articles), "not_articles": found.not_articles,
                  "invalid": found.invalid}
        problems = [[p.source, p.field, p.reason, p.fatal] for p in found.problems]
        cache.later(functools.partial(cache.save, counts, problems, started_ns, changes.deleted))
    return found


def _unchanged_collection(cache: scan_cache.ScanCache) -> Collection:
    """The Collection of an unchanged store, from what the cache counted last: summaries load when asked for."""
    counts = cache.counts()
    return Collection(files=counts["files"], not_articles=counts["not_articles"], invalid=counts["invalid"],
                      articles=OnDemand(counts["articles"], lambda: summaries(cache.index())),
                      problems=[Problem(*p) for p in counts["problems"]], read=0, changed=False, cache=cache)


def _taken(read: scan_cache.ReadRows, spill: Callable[[list[tuple[str, bytes]]], None] | None) -> reading.Take:
    """What becomes of the records as they are read: each batch goes into `read` at once, and with `spill`
    (a big read: a cold build) its encoded Articles go into the spill file (scan_cache.Spill), so that
    nothing holds 100,000 records until the index is made."""

    def take(paths: list[str], records: list[reading.FileRecord]) -> None:
        if spill is not None:
            spill([(path, record.encoded) for path, record in zip(paths, records, strict=True)
                   if record.encoded is not None])
        read.add(paths, records, stored=spill is not None)

    return take


def select(collection: Collection, config: Config, now: datetime) -> tuple[Live, list[Feed]]:
    """live_articles(), tally() and feeds_from() on the summaries of a collect()ed store, then the feeds with
    the full Articles of their entries.

    The last selection is kept in the state folder beside the scan cache. When no file changed since,
    with the same settings, and no scheduled article fell due in between, it is reused as it is; when a
    few files changed, it is updated with them (selection.updated_tally) unless that cannot be done
    exactly, and only then is everything selected from scratch."""
    cache = collection.cache
    if cache is None:
        raise ValueError("select() takes a Collection made by collect()")
    families = feed_families(config)
    settings = selection_settings(config)
    moment = reading.microseconds(now)
    with _many_objects():
        last = cache.last_selection(settings, moment)
        if last is not None and not collection.changed:
            return _reused(last, collection, cache, moment)
        if last is not None and cache.changes is not None:
            updated = _updated(last, cache, config, moment, families)
            if updated is not None:
                return updated
        live = live_articles(collection.articles, moment)
        counted = tally(live.articles, config.max_items, families)
        feeds = feeds_from(counted, config.site.title, config.max_items, families)
        # A summary of every article (100,000 of them: 20 MB) is not looked at again, unless the archives
        # go through them next: made again if anything asks, not held while the feeds are rendered.
        live = replace(live, articles=OnDemand(len(live.articles),
                                               lambda: live_articles(collection.articles, moment).articles))
        if isinstance(collection.articles, OnDemand) and not config.archives:
            collection.articles.forget()
        return _finish(cache, settings, moment, live, counted, feeds, {})


def feed_families(config: Config) -> tuple[Family, ...]:
    return families_of(config.families, [Curated(c.name, c.title, where(**dict(c.where)), c.max_items)
                                         for c in config.curated])


def selection_settings(config: Config) -> list[Any]:
    """What the last selection depends on besides the store: it is reused only with the same settings."""
    return [config.site.title, config.max_items, list(config.families), repr(config.curated)]


def _reused(last: dict[str, Any], collection: Collection, cache: scan_cache.ScanCache,
            moment: int) -> tuple[Live, list[Feed]]:
    cache.entry_digests = last.get("digests", {})  # the entries' digests, without loading the index
    article = cache.decoder(last["articles"])  # each Article decoded when a stage first looks at it
    feeds = [Feed(_spec(spec), Entries(tuple(entries), article), total) for spec, total, entries in last["feeds"]]
    live_count, unpublished, scheduled, duplicates = last["live"]
    held = [Summary(source, *last["entries"][source]) for source in last["held"]]
    live = OnDemand(live_count, lambda: live_articles(collection.articles, moment).articles)
    return Live(live, unpublished, scheduled, duplicates, _next_due(held), held), feeds


def _updated(last: dict[str, Any], cache: scan_cache.ScanCache, config: Config, moment: int,
             families: tuple[Family, ...]) -> tuple[Live, list[Feed]] | None:
    """The last selection updated with the files this scan read, or None when that cannot be exact: a
    changed file shares its URL with another file (which of them wins is a question for all of them), or
    an article that left was among the newest of a feed with more articles than it lists."""
    assert cache.changes is not None and cache.previous is not None
    index, previous = cache.index(), cache.previous
    removed, added = [], []
    for path in cache.changed_paths:
        old_row, new_row = previous.row(path), index.row(path)
        old = _summary(previous, old_row) if old_row is not None else None
        new = _summary(index, new_row) if new_row is not None else None
        if old != new:  # a file that changed in ways selection does not see (its title) changes nothing here
            removed += [old] if old is not None else []
            added += [new] if new is not None else []
    ids = _counts(index.columns["ids"], {a.id for a in removed + added})
    ids_removed, ids_added = Counter(a.id for a in removed), Counter(a.id for a in added)
    if any(ids[a.id] != 1 for a in added) or any(ids[a.id] + ids_removed[a.id] - ids_added[a.id] != 1
                                                 for a in removed):
        return None
    live_count, unpublished, scheduled, duplicates = last["live"]
    held = {source: Summary(source, *last["entries"][source]) for source in last["held"]}
    counts = Counter({UNPUBLISHED: unpublished, SCHEDULED: scheduled, LIVE: live_count})
    for article in removed:
        counts[publication_state(article, moment)] -= 1
        held.pop(article.source, None)
    for article in added:
        counts[publication_state(article, moment)] += 1
        if publication_state(article, moment) == SCHEDULED:
            held[article.source] = article
    kept = {family: {label: [Summary(source, *last["entries"][source]) for source in sources]
                     for label, sources in labels.items()} for family, (_, labels) in last["tally"].items()}
    before = Tally({family: Counter(counted) for family, (counted, _) in last["tally"].items()}, kept)
    counted = updated_tally(before, [a for a in removed if publication_state(a, moment) == LIVE],
                            [a for a in added if publication_state(a, moment) == LIVE], config.max_items,
                            families)
    if counted is None:
        return None
    logger.debug("selection updated with %d changed articles", len(removed) + len(added))
    held_list = [held[source] for source in sorted(held)]
    live = Live(OnDemand(counts[LIVE], lambda: live_articles(summaries(cache.index()), moment).articles),
                counts[UNPUBLISHED], counts[SCHEDULED], duplicates, _next_due(held_list), held_list)
    feeds = feeds_from(counted, config.site.title, config.max_items, families)
    return _finish(cache, selection_settings(config), moment, live, counted, feeds, last["articles"])


def _counts(column: list[Any], wanted: set[Any]) -> Counter[Any]:
    """How often each of `wanted` occurs in `column`: a few are counted one by one (list.count walks the
    column in C), many in one pass."""
    if len(wanted) > 16:
        return Counter(value for value in column if value in wanted)
    return Counter({value: column.count(value) for value in wanted})


def _finish(cache: scan_cache.ScanCache, settings: list[Any], moment: int, live: Live, counted: Tally,
            selected: list[SelectedFeed], known: dict[str, bytes]) -> tuple[Live, list[Feed]]:
    """Resolve the feeds' entries into Articles, and keep the selection for the next build."""
    encoded = cache.encoded_articles({entry.source for feed in selected for entry in feed.entries}, known)
    article = cache.decoder(encoded)  # each Article decoded when a stage first looks at it
    feeds = [Feed(feed.spec, Entries(tuple(entry.source for entry in feed.entries if entry.source in encoded),
                                     article), feed.total) for feed in selected]
    index = cache.index()
    cache.entry_digests.update((source, index.digest_of(source)) for source in encoded)
    if cache.save_enabled:
        cache.later(functools.partial(_remember, cache, settings, moment, live, counted, feeds, encoded))
    return live, feeds


def _remember(cache: scan_cache.ScanCache, settings: list[Any], moment: int, live: Live, counted: Tally,
              feeds: list[Feed], encoded: dict[str, bytes]) -> None:
    kept = {entry.source: entry for labels in counted.kept.values() for newest in labels.values()
            for entry in newest}
    kept.update((entry.source, entry) for entry in live.held)
    payload = {
        "live": [len(live.articles), live.unpublished, live.scheduled, live.duplicates],
        "held": [entry.source for entry in live.held],
        "tally": {family: [dict(counted.counts[family]),
                           {label: [entry.source for entry in newest] for label, newest in labels.items()}]
                  for family, labels in counted.kept.items()},
        "entries": {source: entry[1:] for source, entry in kept.items()},
        "feeds": [[astuple(f.spec), f.total, list(f.sources)] for f in feeds],
        "articles": encoded,
        "digests": {source: cache.entry_digests.get(source) for source in encoded},
    }
    next_due = None if live.next_due is None else reading.microseconds(live.next_due)
    cache.remember_selection(settings, moment, next_due, payload)


# What the archives (archives.py) ask of the catalog: the live articles and a digest of each one's record, to
# tell which months changed without reading an article, and the full Articles of the months that did.

def live_now(collection: Collection, now: datetime) -> Sequence[Summary]:
    """The live articles of the store (duplicates collapsed, unpublished and scheduled ones left out)."""
    return live_articles(collection.articles, reading.microseconds(now)).articles


def file_tokens(collection: Collection) -> dict[str, int]:
    """Per article file, a number that changes when the Article it yields does: the digest of its record
    (reading.record_digest), kept in the index, so no article is loaded to know it."""
    index = _cache(collection).index()
    return {path: digest for path, kind, digest in zip(index.paths, index.columns["kinds"], index.columns["digests"],
                                                       strict=True) if kind == ARTICLE}


def stamp_tokens(collection: Collection, feeds: Iterable[Feed]) -> Tokens:
    """The file tokens (as file_tokens gives them) of the entries of `feeds`, for their fingerprints."""
    cache = _cache(collection)
    found = dict(cache.entry_digests)  # what select() knew of them (a no-op build never loads the index)
    for feed in feeds:
        found.update((source, cache.index().digest_of(source)) for source in feed.sources if source not in found)
    return Tokens(reading_key(collection), found)


def full_articles(collection: Collection, sources: Iterable[str]) -> dict[str, Article]:
    """The full Articles of `sources`, from the record cache (or read again)."""
    return _cache(collection).articles(sources)


def store_digest(collection: Collection) -> str:
    """Changes when any file of the store is added, removed, or changes its stat."""
    return _cache(collection).digest


def reading_key(collection: Collection) -> str:
    """The scan cache's key: what a file yields depends on it (code, versions, settings)."""
    return _cache(collection).key


def _cache(collection: Collection) -> scan_cache.ScanCache:
    if collection.cache is None:
        raise ValueError("the archives need a Collection made by collect()")
    return collection.cache


def _spec(fields: list[Any]) -> FeedSpec:
    """A FeedSpec from its fields as _remember() kept them (astuple: its image as a tuple)."""
    spec = FeedSpec(*fields)
    image: Any = spec.image
    return replace(spec, image=Image(*image)) if image is not None else spec


def _next_due(held: Sequence[Summary]) -> datetime | None:
    return as_datetime(min(entry.published for entry in held)) if held else None


def _summary(index: scan_cache.Index, row: int) -> Summary | None:
    c = index.columns
    if c["kinds"][row] != ARTICLE:
        return None
    key, name, logo = c["providers"][row]
    return Summary(index.paths[row], c["ids"][row], c["published"][row], c["updated"][row], c["flags"][row],
                   c["topics"][row], key, name, logo, c["quality"][row], c["heat"][row], c["types"][row])


def _collection(index: scan_cache.Index, cache: scan_cache.ScanCache) -> Collection:
    """Counts, problems and article summaries of an index, in path order."""
    kinds = index.columns["kinds"]
    counts = Counter(kinds)
    found = Collection(files=len(kinds) - counts[NO_FRONT_MATTER] - counts[UNREADABLE],
                       not_articles=counts[NOT_ARTICLE], invalid=counts[INVALID] + counts[UNREADABLE],
                       problems=[Problem(*problem) for problems in index.problems.values() for problem in problems],
                       cache=cache)
    if logger.isEnabledFor(logging.DEBUG):
        for path, kind in zip(index.paths, kinds, strict=False):
            if kind == NO_FRONT_MATTER:
                logger.debug("%s: no front matter, not part of the store's data", path)
            elif kind == NOT_ARTICLE:
                logger.debug("%s: not an article (no title, no publishedDateTime)", path)
    # Made when selection goes through every article; updating the last selection does not need them.
    found.articles = OnDemand(counts[ARTICLE], lambda: summaries(index))
    return found


def summaries(index: scan_cache.Index) -> list[Summary]:
    """A Summary of each article of the index, in path order."""
    c = index.columns
    topics: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per distinct list of topics
    new = tuple.__new__  # Summary(...) without the argument handling of its generated __new__
    return [new(Summary, (path, entry_id, published, updated, flag, topics.setdefault(labels, labels), *provider,
                          quality, heat, kind))
            for path, record, entry_id, published, updated, flag, labels, provider, quality, heat, kind
            in zip(index.paths, c["kinds"], c["ids"], c["published"], c["updated"], c["flags"], c["topics"],
                   c["providers"], c["quality"], c["heat"], c["types"], strict=False)
            if record == ARTICLE]
