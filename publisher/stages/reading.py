"""Reading store files into records: on all cores for a cold build, in this process for a few files.

A FileRecord is what one file yielded, as a flat named tuple of plain values, cheap to send back from a
worker process: its kind, what selection needs of an article (id, dates as microseconds since the epoch,
publication flag, topics, facets: provider key, name and logo as an encoded Image, quality, heat, type),
its problems, and the whole Article marshalled (encode_article). Reading stores nothing: the catalog keeps
what it needs in the scan cache. The result never depends on how many processes read the files, nor on
which finished first.
"""
from __future__ import annotations

import gc
import hashlib
import marshal
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

from publisher.errors import ArticleError
from publisher.progress import Progress
from publisher.stages import store
from publisher.stages.articles import DEFAULT_BODY_LIMIT, Article, Image, Provider, read_article

# What a file turned out to be.
NO_FRONT_MATTER, UNREADABLE, ARTICLE, INVALID, NOT_ARTICLE = range(5)

Problem = tuple[str, str | None, str, bool]  # source, field, reason, fatal: an articles.Problem as plain values


class FileRecord(NamedTuple):
    """What one file of the store yielded: a flat tuple of plain values, cheap to send back from a worker
    process. Fields that do not apply (an article's, for a file that is none) are None."""

    kind: int  # ARTICLE, INVALID, NOT_ARTICLE, NO_FRONT_MATTER or UNREADABLE
    id: str | None
    published: int | None  # microseconds since the epoch
    updated: int | None
    is_published: bool | None
    topics: tuple[str, ...] | None
    facets: tuple[Any, ...] | None  # provider key, name, logo (an encoded Image), quality, heat, type
    problems: tuple[Problem, ...]
    digest: int | None  # of `encoded`: changes when the Article does (fingerprints of feeds and archives)
    encoded: bytes | None  # the Article, marshalled (encode_article)


# Below this many files to read, one process does it: starting workers would cost more than it saves
# (reading a file costs about 0.3 ms; starting a worker, tens of milliseconds).
PARALLEL_FROM = 2000
CHUNK = 250  # at most this many files per task sent to a worker
PREFETCH_SAMPLE = 32  # files of a batch asked whether they are in the page cache (_prefetch)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


Take = Callable[[list[str], list[FileRecord]], None]


def read_files(folder: Path, paths: list[str], base: str | None, workers: int, take: Take,
               parallel_from: int = PARALLEL_FROM, body_limit: int = DEFAULT_BODY_LIMIT) -> None:
    """Read `paths` (relative to the store `folder`), in worker processes when there are many, handing each
    batch of paths and their records to `take` as they come, in the order of `paths`. Reading stores
    nothing: what to keep is the caller's business (the catalog puts each batch into index columns, and
    the encoded Articles of a big read into the record table at once). `body_limit`: see
    articles.read_article()."""
    progress = Progress(len(paths), "files read")
    try:
        if workers <= 1 or len(paths) < max(parallel_from, 2):
            for start in range(0, len(paths), CHUNK):
                chunk = paths[start:start + CHUNK]
                take(chunk, read_chunk(str(folder), chunk, base, body_limit))
                progress.advance(len(chunk))
            return
        # Several chunks per worker, so that none waits long for the last one to finish.
        size = max(1, min(CHUNK, -(-len(paths) // (workers * 4))))
        starts = range(0, len(paths), size)
        chunks = [paths[start:start + size] for start in starts]
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=_start_method(),
                                 initializer=gc.disable) as pool:
            # map() yields in submission order: the result does not depend on which worker was faster.
            results = pool.map(_read_packed, repeat(str(folder)), chunks, repeat(base), repeat(body_limit))
            for chunk, packed in zip(chunks, results, strict=False):
                take(chunk, _unpacked(packed))
                progress.advance(len(chunk))
    finally:
        progress.close()


def _start_method() -> multiprocessing.context.BaseContext:
    """fork when this process runs a single thread: workers start at once, with the code already loaded.
    spawn otherwise (the daemon builds from a thread): a forked child could inherit a lock that some other
    thread held at that moment, and wait for it forever."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def read_chunk(folder: str, paths: list[str], base: str | None,
               body_limit: int = DEFAULT_BODY_LIMIT) -> list[FileRecord]:
    """Read some files of the store: plain data out, cheap to send back from a worker process (whose
    cyclic garbage collector is off: what reading builds is freed by reference counting alone)."""
    _prefetch(folder, paths)
    root = Path(folder)
    return [read_record(root, path, base, body_limit) for path in paths]


def _read_packed(folder: str, paths: list[str], base: str | None, body_limit: int) -> bytes:
    """read_chunk() in a worker, its records marshalled: half the cost of pickling named tuples there, and
    less to unpickle here."""
    return marshal.dumps([tuple(record) for record in read_chunk(folder, paths, base, body_limit)])


def _unpacked(packed: bytes) -> list[FileRecord]:
    new = tuple.__new__
    return [new(FileRecord, fields) for fields in marshal.loads(packed)]


def _prefetch(folder: str, paths: list[str]) -> bool:
    """Ask the kernel to start reading all these files now, so that the disk works while this process
    parses: a cold build of a store that is not in the page cache otherwise waits on every file in turn
    (it halves such a build). Not when PREFETCH_SAMPLE of them, spread over the list, are all in the page
    cache already: asking costs 7 us a file, and the batch is then nearly all there. Several, not one: the
    kernel (or a reclaimer such as DAMON) evicts files one by one. With a tenth of the files of 100,000
    evicted at random, a cold build took 16.1 s asking about the first file of each batch, 12.2 s asking
    about 32 (11.2 s with every file in the page cache). Returns whether it asked."""
    sample = paths[::max(1, len(paths) // PREFETCH_SAMPLE)]
    if not hasattr(os, "posix_fadvise") or all(_in_page_cache(os.path.join(folder, path)) for path in sample):
        return False
    for path in paths:
        try:
            fd = os.open(os.path.join(folder, path), os.O_RDONLY | os.O_NONBLOCK)
        except OSError:  # reading it will say what is wrong
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)
    return True


def _in_page_cache(path: str) -> bool:
    """Whether the first byte of the file is in the page cache (a read that must not wait for the disk
    succeeds); False when that cannot be told. Asking may start reading the file, which is read next
    anyway."""
    if not hasattr(os, "RWF_NOWAIT"):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT) == 1
    except OSError:  # EAGAIN: it would wait for the disk; or a file system without RWF_NOWAIT
        return False
    finally:
        os.close(fd)


def read_record(root: Path, path: str, base: str | None, body_limit: int = DEFAULT_BODY_LIMIT) -> FileRecord:
    try:
        document = store.read(root, path)
    except ArticleError as exc:
        return FileRecord(UNREADABLE, None, None, None, None, None, None,
                          ((exc.source, exc.field, exc.reason, True),), None, None)
    if document is None:
        return FileRecord(NO_FRONT_MATTER, None, None, None, None, None, None, (), None, None)
    article, problems = read_article(document, base, body_limit)
    found = tuple((p.source, p.field, p.reason, p.fatal) for p in problems)
    if article is None:
        return FileRecord(INVALID if problems else NOT_ARTICLE, None, None, None, None, None, None, found, None, None)
    logo = article.provider.logo if article.provider else None
    facets = (article.provider_key, article.provider_name, _image(logo), article.quality, article.heat,
              article.kind)
    encoded = marshal.dumps(encode_article(article))
    return FileRecord(ARTICLE, article.id, microseconds(article.published), microseconds(article.updated),
                      article.is_published, article.topics, facets, found, record_digest(encoded), encoded)


def record_digest(encoded: bytes) -> int:
    """A 64-bit digest of an encoded Article, the same in every process (unlike hash() of bytes)."""
    return int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "big", signed=True)


# An Article as nested tuples of plain values, in the order of its fields. Dates are microseconds since
# the epoch (exact: the article model keeps whole seconds in UTC). tests/test_incremental.py checks that
# decoding gives back an equal Article for every article of the corpus.

def encode_article(a: Article) -> tuple[Any, ...]:
    provider = None if a.provider is None else (a.provider.name, a.provider.domain, _image(a.provider.logo))
    return (a.source, a.id, a.url, a.title, a.summary, a.content, microseconds(a.published),
            microseconds(a.updated), provider, a.topics, tuple(_image(i) for i in a.images), a.is_published,
            a.quality, a.heat, a.kind)


def decode_article(t: tuple[Any, ...]) -> Article:
    provider = None if t[8] is None else Provider(t[8][0], t[8][1], None if t[8][2] is None else _unimage(t[8][2]))
    return Article(source=t[0], id=t[1], url=t[2], title=t[3], summary=t[4], content=t[5],
                   published=EPOCH + t[6] * MICROSECOND, updated=EPOCH + t[7] * MICROSECOND,
                   provider=provider, topics=t[9], images=tuple(_unimage(i) for i in t[10]),
                   is_published=t[11], quality=t[12], heat=t[13], kind=t[14])


def decode(encoded: bytes) -> Article:
    return decode_article(marshal.loads(encoded))


def _image(image: Image | None) -> tuple[Any, ...] | None:
    return None if image is None else (image.url, image.width, image.height, image.mime_type, image.length)


def _unimage(t: tuple[Any, ...]) -> Image:
    return Image(*t)


def microseconds(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND
