"""Catalog: what the store holds, read incrementally and in parallel.

A scan stats every candidate file. A file whose size, modification time and inode match the scan cache
(scan_cache.py) is not read again: its record comes from the cache. New and changed files are read
(store.read, then articles.read_article), on all cores when there are enough of them to pay for starting
worker processes. Either way the result is the same, in the same order.

Every article is held as a small Summary: what feed selection needs (identity, dates, topics). Its full
Article is kept encoded and decoded only when a feed lists it, so memory grows with the number of articles,
not with the size of their files.
"""

from __future__ import annotations

import logging
import marshal
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from itertools import repeat
from pathlib import Path
from typing import Any, Iterable, NamedTuple

from publisher import scan_cache, store
from publisher.articles import Article, Image, Problem, Provider, read_article
from publisher.config import Config
from publisher.errors import ArticleError
from publisher.progress import Progress
from publisher.selection import Feed

logger = logging.getLogger(__name__)

# What a file turned out to be.
NO_FRONT_MATTER, UNREADABLE, ARTICLE, INVALID, NOT_ARTICLE = range(5)

# Below this many files to read, one process does it: starting workers would cost more than it saves.
PARALLEL_FROM = 2000
CHUNK = 250  # files per task sent to a worker
# A file modified this close to the start of the scan that cached it may change again within the same
# tick of the file system's clock without its mtime moving: such an entry is read again next time.
RACY_NS = 1_000_000_000

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)

# A record is what one file yielded, as a flat tuple of plain values (cheap to send back from a worker,
# to store with marshal and to load again): RECORD_FIELDS below. Dates are microseconds since the epoch;
# problems are (source, field, reason, fatal) tuples; `encoded` is the marshalled Article (encode_article),
# decoded only when a feed lists it. A scan cache row is (size, mtime_ns, inode) followed by the record.
RECORD_FIELDS = ("kind", "canonical_url", "id", "published", "updated", "is_published", "topics", "problems",
                 "encoded")
STAT_FIELDS = 3
ROW_LENGTH = STAT_FIELDS + len(RECORD_FIELDS)
Record = tuple[Any, ...]


class Summary(NamedTuple):
    """What feed selection needs to know of an article (it reads like an Article for those fields)."""

    source: str
    canonical_url: str
    id: str
    published: datetime
    updated: datetime
    is_published: bool
    topics: tuple[str, ...]


@dataclass
class Collection:
    """What the store holds: a summary of each article (published or not) and every problem found."""

    files: int = 0
    articles: list[Summary] = field(default_factory=list)
    not_articles: int = 0
    invalid: int = 0
    problems: list[Problem] = field(default_factory=list)
    read: int = 0  # files read (parsed) by this scan; the others came from the scan cache
    encoded: dict[str, bytes] = field(default_factory=dict, repr=False)  # source -> encoded Article

    def article(self, source: str) -> Article:
        return decode_article(marshal.loads(self.encoded[source]))

    def resolve(self, feeds: Iterable[Feed]) -> list[Feed]:
        """The feeds with full Articles in place of the summaries that selection worked on."""
        decoded: dict[str, Article] = {}

        def article(entry: Any) -> Article:
            if entry.source not in decoded:
                decoded[entry.source] = self.article(entry.source)
            return decoded[entry.source]
        return [replace(feed, entries=tuple(article(entry) for entry in feed.entries)) for feed in feeds]


def collect(config: Config, save: bool = True, workers: int | None = None,
            parallel_from: int = PARALLEL_FROM) -> Collection:
    """Scan the store, reading only what the scan cache does not already know, and update the cache
    (unless `save` is false).

    `workers`: processes for reading (default: the cores this process may use). Raises StoreError when the
    store cannot be read.
    """
    store.warn_without_libyaml()
    started_ns = time.time_ns()
    candidates = store.scan(config.store, config.include, config.exclude, skip=(config.output, config.state))
    cache_file = scan_cache.cache_path(config.state, config.store)
    key = scan_cache.cache_key(config)
    cache = scan_cache.load(cache_file, key)
    trusted_before = cache.scanned_at - RACY_NS
    rows: dict[str, tuple[Any, ...]] = {}
    unread: list[store.Candidate] = []
    for candidate in candidates:
        row = cache.entries.get(candidate.path)
        if (row is not None and len(row) == ROW_LENGTH and row[:STAT_FIELDS] == candidate[1:]
                and candidate.mtime_ns < trusted_before):
            rows[candidate.path] = row
        else:
            unread.append(candidate)
    if unread:
        logger.debug("reading %d of %d files (the others are unchanged since the last scan)",
                     len(unread), len(candidates))
        records = read_files(config.store, [c.path for c in unread], config.assets_base_url,
                             workers or available_cores(), parallel_from)
        for candidate in unread:
            rows[candidate.path] = (candidate.size, candidate.mtime_ns, candidate.inode) + records[candidate.path]
    ordered = {c.path: rows[c.path] for c in candidates}
    if save and (unread or len(cache.entries) != len(ordered)):
        scan_cache.save(cache_file, key, scan_cache.ScanCache(started_ns, ordered))
    found = collection(ordered)
    found.read = len(unread)
    return found


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def read_files(folder: Path, paths: list[str], base: str | None, workers: int,
               parallel_from: int = PARALLEL_FROM) -> dict[str, Record]:
    """Read `paths` (relative to the store `folder`), in worker processes when there are many."""
    progress = Progress(len(paths), "files read")
    records: dict[str, Record] = {}
    try:
        if workers <= 1 or len(paths) < max(parallel_from, 2):
            for start in range(0, len(paths), CHUNK):
                chunk = paths[start:start + CHUNK]
                records.update(zip(chunk, read_chunk(str(folder), chunk, base)))
                progress.advance(len(chunk))
            return records
        chunks = [paths[start:start + CHUNK] for start in range(0, len(paths), CHUNK)]
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=_start_method()) as pool:
            # map() yields in submission order: the result does not depend on which worker was faster.
            for chunk, chunk_records in zip(chunks, pool.map(read_chunk, repeat(str(folder)), chunks, repeat(base))):
                records.update(zip(chunk, chunk_records))
                progress.advance(len(chunk))
        return records
    finally:
        progress.close()


def _start_method() -> multiprocessing.context.BaseContext:
    """fork when this process runs a single thread: workers start at once, with the code already loaded.
    spawn otherwise (the daemon builds from a thread): a forked child could inherit a lock that some other
    thread held at that moment, and wait for it forever."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def read_chunk(folder: str, paths: list[str], base: str | None) -> list[Record]:
    """Read some files of the store (runs in a worker process): plain data out, cheap to send back."""
    root = Path(folder)
    return [read_record(root, path, base) for path in paths]


def read_record(root: Path, path: str, base: str | None) -> Record:
    try:
        document = store.read(root, path)
    except ArticleError as exc:
        return (UNREADABLE, None, None, None, None, None, None, ((exc.source, exc.field, exc.reason, True),), None)
    if document is None:
        return (NO_FRONT_MATTER, None, None, None, None, None, None, (), None)
    article, problems = read_article(document, base)
    encoded_problems = tuple((p.source, p.field, p.reason, p.fatal) for p in problems)
    if article is None:
        return (INVALID if problems else NOT_ARTICLE, None, None, None, None, None, None, encoded_problems, None)
    return (ARTICLE, article.canonical_url, article.id, _microseconds(article.published),
            _microseconds(article.updated), article.is_published, article.topics, encoded_problems,
            marshal.dumps(encode_article(article)))


def collection(rows: dict[str, tuple[Any, ...]]) -> Collection:
    """Count and summarise scan rows, in the order given (the scan's path order)."""
    found = Collection()
    topics: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per distinct list of topics
    epoch, microsecond = EPOCH, _MICROSECOND
    for path, (_, _, _, kind, url, entry_id, published, updated, is_published, labels, problems,
               encoded) in rows.items():
        if kind == ARTICLE:
            found.files += 1
            if problems:
                found.problems.extend(Problem(*problem) for problem in problems)
            labels = topics.setdefault(labels, labels)
            found.articles.append(Summary(path, url, entry_id, epoch + published * microsecond,
                                          epoch + updated * microsecond, is_published, labels))
            found.encoded[path] = encoded
            continue
        found.problems.extend(Problem(*problem) for problem in problems)
        if kind == NO_FRONT_MATTER:
            logger.debug("%s: no front matter, not part of the store's data", path)
        elif kind == UNREADABLE:
            found.invalid += 1
        elif kind == INVALID:
            found.files += 1
            found.invalid += 1
        else:
            found.files += 1
            found.not_articles += 1
            logger.debug("%s: not an article (no title, no publishedDateTime)", path)
    return found


# An Article as nested tuples of plain values, in the order of its fields. Dates are microseconds since
# the epoch (exact: the article model keeps whole seconds in UTC). tests/test_incremental.py checks that
# decoding gives back an equal Article for every article of the corpus.

def encode_article(a: Article) -> tuple[Any, ...]:
    provider = None if a.provider is None else (a.provider.name, a.provider.domain, _image(a.provider.logo))
    return (a.source, a.id, a.url, a.title, a.summary, a.content, _microseconds(a.published),
            _microseconds(a.updated), provider, a.topics, tuple(_image(i) for i in a.images), a.is_published,
            a.quality, a.heat, a.kind)


def decode_article(t: tuple[Any, ...]) -> Article:
    provider = None if t[8] is None else Provider(t[8][0], t[8][1], _unimage(t[8][2]))
    return Article(source=t[0], id=t[1], url=t[2], title=t[3], summary=t[4], content=t[5],
                   published=EPOCH + t[6] * _MICROSECOND, updated=EPOCH + t[7] * _MICROSECOND,
                   provider=provider, topics=t[9], images=tuple(_unimage(i) for i in t[10]),
                   is_published=t[11], quality=t[12], heat=t[13], kind=t[14])


def _image(image: Image | None) -> tuple[Any, ...] | None:
    return None if image is None else (image.url, image.width, image.height, image.mime_type, image.length)


def _unimage(t: tuple[Any, ...] | None) -> Image | None:
    return None if t is None else Image(*t)


def _microseconds(moment: datetime) -> int:
    return (moment - EPOCH) // _MICROSECOND
