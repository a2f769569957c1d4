"""Scan cache: what each store file yielded last time, kept in the state folder, so that a rescan reads only
the files that are new or changed, and the last selection made from them.

ScanCache is its one interface, opened by each build with the store's listing (which last_folders() helps
to make): unchanged() / index() / articles() / last_selection() look up, adopt() / remember_selection()
store, later() + save_deferred() save. Nothing else reads or writes these files.

Five files per store folder, in `<state>/scan/`, named after a digest of the store's path:
- `.index`: one row per file: its path, size, mtime_ns and inode, and what selection needs of the article
  (RECORD_COLUMNS below), with the problems of the files that have any. Columns of plain values in marshal
  form: 100,000 rows load in a few hundredths of a second.
- `.journal`: the rows changed since the index was written, with the header of the last scan, while they
  are few (journal_rows()): a build that changed a few files writes kilobytes, not the whole index.
- `.records`: an SQLite table of articles' full records (the encoded Article, reading.py), written row by
  row, so that one new file costs one insert, not a rewrite of everything: those of the files incremental
  builds read, and of a cold build's those it asked for (see Spill); any other is read from its file.
- `.feeds`: the last selection (catalog.select), reused while the store is unchanged and updated in place
  when a few files change.
- `.folders`: the entries of each folder of the store as the last scan listed them (store.Listing.folders),
  reused by the next scan for the folders whose stat has not changed.

The binary files start with a header line (format, cache key, payload length and CRC-32), so
that a file from another version or configuration is discarded unread and a damaged one is caught before
anything is decoded. The key covers the publisher version, a digest of the code that reads articles, the
Python and PyYAML versions, and the settings that change what a file yields. A file with another key or a
damaged one is discarded with one log line, and the store read again. Their format, and writing them
atomically, is statefiles' (open_binary, write_binary).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sqlite3
import sys
import tempfile
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import yaml

import publisher
from publisher.caches import statefiles
from publisher.config import Config
from publisher.stages import reading, store
from publisher.stages.articles import Article, body_limit
from publisher.stages.reading import FileRecord

if TYPE_CHECKING:
    from publisher.stages.store import Folder, Listing

logger = logging.getLogger(__name__)

FORMAT = 5
# Modules whose code decides what a file yields or what selection makes of it: a change to any of them
# invalidates every cache, even without a new version number.
CODE = (
    "stages.store", "stages.simple_yaml", "stages.articles", "stages.body", "stages.urls", "stages.xmltext",
    "stages.reading", "stages.catalog", "caches.scan_cache", "stages.selection",
)


def cache_prefix(state: Path, store: Path) -> Path:
    """The cache files of one store folder share this prefix (a --store override must not clobber the
    cache of the configured store)."""
    digest = hashlib.sha256(str(store.resolve()).encode("utf-8")).hexdigest()[:16]
    return state / "scan" / digest


def cache_key(config: Config) -> str:
    """What a record depends on besides the file itself."""
    parts = {
        "format": FORMAT,
        "publisher": publisher.__version__,
        "code": publisher.source_digest(*CODE),
        "python": sys.version,  # marshal's format is only stable within a Python version
        "pyyaml": [yaml.__version__, getattr(yaml, "__with_libyaml__", False)],
        "store": str(config.store),
        "assets_base_url": config.assets_base_url,
        "include": list(config.include),
        "exclude": list(config.exclude),
        "body_limit": body_limit(config.content, config.max_bytes),  # which bodies are rendered
        # The body renderer and sanitizer: another version may render the same body otherwise.
        "bodies": [_version("markdown-it-py"), _version("nh3")],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()


@functools.cache  # an installed package's version does not change while the process runs
def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def last_folders(config: Config) -> dict[str, Folder]:
    """The folders of the store as the last scan saved them (ScanCache.save_folders), for the next scan to
    reuse those unchanged since; {} when there are none, or none for these settings."""
    saved = statefiles.open_binary(_folders_file(config), cache_key(config), "folder listing")
    if saved is None:
        return {}
    try:
        saved_folders = saved.payload()["folders"]
        return {prefix: (*stamp, entries.split("\0") if entries else [], subfolders)
                for prefix, (*stamp, entries, subfolders) in saved_folders.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("%s: folder listing is damaged (%s); discarded, listing every folder", saved.path, exc)
        return {}


def _folders_file(config: Config) -> Path:
    base = cache_prefix(config.state, config.store)
    return base.with_name(f"{base.name}.folders")


def journal_rows(rows: int) -> int:
    """How many rows changed since the index was written are kept in the journal (beyond that, the index
    is written again): loading the index then patches it with them, a copy of each column."""
    return max(JOURNAL_MIN_ROWS, rows // 50)


JOURNAL_MIN_ROWS = 100


# The index's columns besides paths and stats, one entry per file in path order: the FileRecord fields that
# selection and counting need, by column name. Problems are kept by path, for the few files that have any;
# the encoded Articles live in the record table.
RECORD_FIELDS = {"kinds": "kind", "ids": "id", "published": "published", "updated": "updated",
                 "flags": "is_published", "topics": "topics", "digests": "digest"}
# FileRecord.facets, as four columns: the provider (key, name, logo), the scores, the article's type. The
# provider and the type are shared by thousands of rows, so their columns load as references to a few
# objects; a tuple of facets per row took a third of the time the index takes to load.
FACET_COLUMNS = ("providers", "quality", "heat", "types")
RECORD_COLUMNS = tuple(RECORD_FIELDS) + FACET_COLUMNS
# Columns of 64-bit integers, held as arrays (8 bytes a row, not an int object of 32): an article's dates
# (microseconds) and its record's digest; 0 in the rows of files that are not articles, which nothing reads.
INTEGER_COLUMNS = ("published", "updated", "digests")


@dataclass
class Changes:
    """How a new listing of the store differs from the one an index was made from."""

    runs: list[tuple[int, int, int]]  # (row in the listing, row in the index, length): same paths
    unread: list[int]  # rows of the listing to read: new, changed, or too recent to judge by their stat
    deleted: list[str]

    @property
    def none(self) -> bool:
        return not self.unread and not self.deleted


@dataclass
class Index:
    """One row per file of the store: its stat and what reading it yielded, as columns."""

    paths: list[str] = field(default_factory=list)
    stats: array[int] = field(default_factory=lambda: array("q"))  # size, mtime_ns, inode per row
    columns: dict[str, Any] = field(default_factory=lambda: _empty_columns(0))  # lists, arrays (INTEGER_COLUMNS)
    problems: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def from_payload(cls, payload: Any) -> Index:
        """Raises ValueError when the payload is not an index."""
        if not isinstance(payload, dict) or not isinstance(payload.get("paths"), list):
            raise ValueError("not an index")
        stats = array("q")
        stats.frombytes(payload["stats"])
        columns = {name: payload[name] for name in RECORD_COLUMNS}
        for name in INTEGER_COLUMNS:
            columns[name] = array("q")
            columns[name].frombytes(payload[name])
        index = cls(payload["paths"], stats, columns, payload["problems"])
        rows = len(index.paths)
        if len(stats) != 3 * rows or any(not isinstance(column, (list, array)) or len(column) != rows
                                         for column in index.columns.values()):
            raise ValueError("columns of different lengths")
        if not isinstance(index.problems, dict):
            raise ValueError("no problems column")
        return index

    def row(self, path: str) -> int | None:
        """The row of `path` (the paths are sorted), or None."""
        row = bisect_left(self.paths, path)
        return row if row < len(self.paths) and self.paths[row] == path else None

    def stat_of(self, path: str) -> tuple[int, int, int]:
        """The stat of `path`, a file of the index."""
        row = self.row(path)
        if row is None:
            raise KeyError(path)
        return (self.stats[3 * row], self.stats[3 * row + 1], self.stats[3 * row + 2])

    def digest_of(self, path: str) -> int | None:
        """The digest of the record of `path` (reading.record_digest); None for a file the index lacks."""
        row = self.row(path)
        if row is None or self.columns["kinds"][row] != reading.ARTICLE:
            return None
        digest: int = self.columns["digests"][row]
        return digest

    def rows_of(self, paths: Iterable[str]) -> Index:
        """An index of the rows of `paths` alone (those this index has), in path order."""
        rows = sorted(row for row in map(self.row, set(paths)) if row is not None)
        part = Index([self.paths[row] for row in rows], array("q", [value for row in rows
                                                                 for value in self.stats[3 * row:3 * row + 3]]))
        for name, column in self.columns.items():
            values = [column[row] for row in rows]
            part.columns[name] = array("q", values) if name in INTEGER_COLUMNS else values
        part.problems = {path: self.problems[path] for path in part.paths if path in self.problems}
        return part

    def patched(self, deleted: Iterable[str], rows: Index) -> Index:
        """A new index: this one without the rows of `deleted` paths, with those of `rows` (an index of a
        few paths) put in, each in place of this index's row of the same path if it has one. Columns are
        put together from slices, so that a few rows cost a copy of each column and no more."""
        drops = sorted(row for row in map(self.row, set(deleted) | set(rows.paths)) if row is not None)
        segments: list[tuple[int, int]] = []  # (start, stop) of this index's rows, or (-1, row of `rows`)
        cursor = done = 0
        for new, path in enumerate(rows.paths):
            at = bisect_left(self.paths, path)
            while done < len(drops) and drops[done] < at:
                segments.append((cursor, drops[done]))
                cursor, done = drops[done] + 1, done + 1
            segments += [(cursor, at), (-1, new)]
            cursor = at
        for drop in drops[done:]:
            segments.append((cursor, drop))
            cursor = drop + 1
        segments.append((cursor, len(self.paths)))
        gone = set(deleted) | set(rows.paths)
        problems = {path: found for path, found in self.problems.items() if path not in gone}
        problems.update(rows.problems)
        return Index(_spliced(self.paths, rows.paths, segments), _spliced(self.stats, rows.stats, segments, 3),
                     {name: _spliced(column, rows.columns[name], segments) for name, column in self.columns.items()},
                     dict(sorted(problems.items())))

    def payload(self) -> dict[str, Any]:
        columns = {name: column.tobytes() if name in INTEGER_COLUMNS else column
                   for name, column in self.columns.items()}
        return {"paths": self.paths, "stats": self.stats.tobytes(), **columns, "problems": self.problems}

    def changes(self, paths: list[str], stats: array[int], trusted_before: int) -> Changes:
        """What differs between this index and a listing (`paths`, sorted, and their `stats`). Files at the
        same place in both are compared in runs, as array slices: a few changes cost a few comparisons."""
        added, deleted = _added_and_deleted(paths, self.paths)
        runs = _runs(len(paths), len(self.paths), added, deleted)
        unread = set(added)
        for new, old, length in runs:
            _differing(stats, self.stats, new, old, length, unread)
        mtimes = stats[1::3]
        if mtimes and max(mtimes) >= trusted_before:
            unread.update(row for row, mtime in enumerate(mtimes) if mtime >= trusted_before)
        return Changes(runs, sorted(unread), [self.paths[row] for row in deleted])

    def updated(self, paths: list[str], stats: array[int], changes: Changes, read: ReadRows) -> Index:
        """A new index for the listing: rows copied from this one in runs, `read` for the rows read (in the
        order of changes.unread)."""
        rows = len(paths)
        if not changes.runs and len(changes.unread) == rows:  # every file read (a cold build): its columns
            return Index(paths, stats, read.columns, read.problems)
        columns = _empty_columns(rows)
        for new, old, length in changes.runs:
            for name in RECORD_COLUMNS:
                columns[name][new:new + length] = self.columns[name][old:old + length]
        for name in RECORD_COLUMNS:
            column = columns[name]
            for row, value in zip(changes.unread, read.columns[name], strict=True):
                column[row] = value
        problems = dict(self.problems)
        for path in changes.deleted:
            problems.pop(path, None)
        for row in changes.unread:
            problems.pop(paths[row], None)
        problems.update(read.problems)
        return Index(paths, stats, columns, dict(sorted(problems.items())))


class ReadRows:
    """What the files read by one scan yielded, as index columns in the order they were read, added batch
    by batch as the reading workers hand their records back, so that a cold build never holds 100,000
    records at once; with their problems, and their encoded Articles unless the record table took them.

    The topics lists, provider names, logos and types repeat across thousands of rows: each distinct one
    is held once, so marshal writes it once and a reference after (the index of 100,000 files is a quarter
    smaller and loads in two thirds of the time) and it takes less memory once loaded."""

    def __init__(self) -> None:
        self.columns = _empty_columns(0)
        self.problems: dict[str, tuple[Any, ...]] = {}
        self.fresh: dict[str, bytes] = {}  # encoded Articles not stored elsewhere (add()'s `stored`)
        self._shared: dict[Any, Any] = {}

    def add(self, paths: list[str], records: list[FileRecord], stored: bool = False) -> None:
        """Add the records of `paths`, in order; `stored`: their encoded Articles are kept elsewhere (Spill)."""
        if not records:
            return
        fields = list(zip(*records, strict=True))
        share = self._shared.setdefault
        for name, attribute in RECORD_FIELDS.items():
            values: Iterable[Any] = fields[FileRecord._fields.index(attribute)]
            if name in INTEGER_COLUMNS:
                values = (0 if value is None else value for value in values)
            elif name == "topics":
                values = [share(topics, topics) for topics in values]
            self.columns[name].extend(values)
        facets = fields[FileRecord._fields.index("facets")]
        providers = [facet and facet[:3] for facet in facets]  # a record without facets (no article): None
        self.columns["providers"].extend([provider and share(provider, provider) for provider in providers])
        self.columns["quality"].extend([facet and facet[3] for facet in facets])
        self.columns["heat"].extend([facet and facet[4] for facet in facets])
        self.columns["types"].extend([facet and share(facet[5], facet[5]) for facet in facets])
        self.problems.update((path, record.problems) for path, record in zip(paths, records, strict=True)
                             if record.problems)
        if not stored:
            self.fresh.update((path, record.encoded) for path, record in zip(paths, records, strict=True)
                              if record.encoded is not None)


def _spliced(old: Any, new: Any, segments: list[tuple[int, int]], width: int = 1) -> Any:
    """A column (list or array, `width` values a row) made of `segments` (Index.patched) of `old` and `new`."""
    out = old[:0]
    for start, stop in segments:
        if start < 0:
            out += new[width * stop:width * (stop + 1)]
        elif stop > start:
            out += old[width * start:width * stop]
    return out


def _empty_columns(rows: int) -> dict[str, Any]:
    """Index columns of `rows` rows, each None (0 in the integer columns)."""
    return {name: array("q", bytes(8 * rows)) if name in INTEGER_COLUMNS else [None] * rows
            for name in RECORD_COLUMNS}


# Beyond this many paths added or deleted, _added_and_deleted compares sets instead.
_FEW_DIFFERENCES = 2000
_STRETCH = 1024  # paths compared at once


def _added_and_deleted(new: list[str], old: list[str]) -> tuple[list[int], list[int]]:
    """The rows of the paths only `new` has, and of those only `old` has (both sorted, without repeats).
    Equal stretches are compared as list slices (in C) and a difference is found by halving a stretch, so
    that one new file in 100,000 costs a millisecond, not the two sets of 100,000 paths that many
    differences need."""
    added: list[int] = []
    deleted: list[int] = []
    i = j = 0
    while i < len(new) and j < len(old):
        length = min(_STRETCH, len(new) - i, len(old) - j)
        if new[i:i + length] == old[j:j + length]:
            i, j = i + length, j + length
            continue
        same, differs = 0, length  # new[i:i+same] == old[j:j+same]; the first `differs` do not all match
        while differs - same > 1:
            middle = (same + differs) // 2
            if new[i:i + middle] == old[j:j + middle]:
                same = middle
            else:
                differs = middle
        i, j = i + same, j + same
        if new[i] < old[j]:  # sorted: new[i] comes before anything old has left
            added.append(i)
            i += 1
        else:
            deleted.append(j)
            j += 1
        if len(added) + len(deleted) > _FEW_DIFFERENCES:
            known, present = set(old), set(new)
            return ([bisect_left(new, path) for path in sorted(present - known)],
                    [bisect_left(old, path) for path in sorted(known - present)])
    return added + list(range(i, len(new))), deleted + list(range(j, len(old)))


def _runs(new_rows: int, old_rows: int, added: list[int], deleted: list[int]) -> list[tuple[int, int, int]]:
    """The stretches of rows that two sorted listings share, given the rows only one of them has."""
    runs = []
    new = old = a = d = 0
    while new < new_rows and old < old_rows:
        if a < len(added) and added[a] == new:
            new, a = new + 1, a + 1
        elif d < len(deleted) and deleted[d] == old:
            old, d = old + 1, d + 1
        else:
            length = min((added[a] if a < len(added) else new_rows) - new,
                         (deleted[d] if d < len(deleted) else old_rows) - old)
            runs.append((new, old, length))
            new, old = new + length, old + length
    return runs


def _differing(new_stats: array[int], old_stats: array[int], new: int, old: int, length: int,
               found: set[int]) -> None:
    """Add to `found` the rows of a run whose stats differ, halving the run until it is one row."""
    if new_stats[3 * new:3 * (new + length)] == old_stats[3 * old:3 * (old + length)]:
        return
    if length == 1:
        found.add(new)
        return
    half = length // 2
    _differing(new_stats, old_stats, new, old, half, found)
    _differing(new_stats, old_stats, new + half, old + half, length - half, found)


class Records:
    """Each article's encoded record, by path, with the stat it was read at: a row whose stat is not the one
    the index has is never used (the index and this table are written one after the other). A connection
    is opened for each operation, so that nothing stays open between builds."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key

    def get(self, wanted: Mapping[str, tuple[int, int, int]]) -> dict[str, bytes]:
        """The records of `wanted` (path -> stat) whose stored stat matches."""
        found: dict[str, bytes] = {}
        if not self.path.exists():
            return found
        paths = list(wanted)
        try:
            with self._connection() as connection:
                for start in range(0, len(paths), 500):
                    chunk = paths[start:start + 500]
                    rows = connection.execute(
                        f"SELECT path, size, mtime, inode, record FROM records WHERE path IN "
                        f"({','.join('?' * len(chunk))})", chunk)
                    for path, size, mtime, inode, record in rows:
                        if wanted[path] == (size, mtime, inode):
                            found[path] = record
        except sqlite3.Error as exc:  # what is not found is read from the store again
            self._failed(exc)
        return found

    def update(self, rows: Iterable[tuple[str, int, int, int, bytes]], deleted: Iterable[str]) -> None:
        try:
            with self._connection() as connection:
                connection.execute("BEGIN")
                connection.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?)", rows)
                connection.executemany("DELETE FROM records WHERE path = ?", ((path,) for path in deleted))
                connection.execute("COMMIT")
        except sqlite3.Error as exc:  # the next build reads these files again
            self._failed(exc)

    def _failed(self, exc: sqlite3.Error) -> None:
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            logger.warning("%s: record cache is damaged (%s); discarded, starting afresh", self.path, exc)
            statefiles.remove(self.path, Path(f"{self.path}-journal"))
        else:  # busy, disk full, read-only: keep it for next time
            logger.warning("%s: record cache not usable now: %s", self.path, exc)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """An open table: created when missing, emptied when written with another key."""
        connection = self._connect()
        try:
            yield connection
        finally:
            connection.close()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
            # A cache: a write lost to a power cut costs a re-read; waiting for the disk on each costs more.
            connection.execute("PRAGMA synchronous=OFF")
            # Records are 1 to 2 KB: on 16 KB pages a cold build stores 100,000 of them in two thirds of the
            # time 4 KB pages take (a page size applies to a new file only).
            connection.execute("PRAGMA page_size=16384")
            connection.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
            connection.execute("CREATE TABLE IF NOT EXISTS records (path TEXT PRIMARY KEY, size INTEGER, "
                               "mtime INTEGER, inode INTEGER, record BLOB)")
            stored = connection.execute("SELECT value FROM meta WHERE name = 'key'").fetchone()
            if stored is None or stored[0] != self.key:
                connection.execute("BEGIN")
                connection.execute("DELETE FROM records")
                connection.execute("INSERT OR REPLACE INTO meta VALUES ('key', ?)", (self.key,))
                connection.execute("COMMIT")
        except BaseException:
            connection.close()
            raise
        return connection


class Spill:
    """The encoded Articles of a big read (a cold build) while its build runs, in a file of the state folder
    without a name (gone with the process, however it ends), rather than all of them in the record table:
    when the cache is saved, only those the build asked for (its feeds' entries) go into the table, and a
    later build reads any other from its file on the rare occasion it needs one. Inserting 100,000 records
    cost the build process half a second of CPU beside the reading workers; writing them here, a tenth of
    that. A write that fails ends the spill: what it does not hold is read from the files again."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO | None = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - closed by close()
        self._at: dict[str, tuple[int, int]] = {}  # path -> offset, length
        self._end = 0

    def add(self, rows: list[tuple[str, bytes]]) -> None:
        if self._file is None or not rows:
            return
        paths, records = zip(*rows, strict=True)
        try:
            self._file.write(b"".join(records))
        except OSError as exc:
            logger.debug("spilling records stopped: %s", exc)
            self.close()
            return
        lengths = list(map(len, records))
        ends = list(accumulate(lengths, initial=self._end))
        self._at.update(zip(paths, zip(ends, lengths, strict=False), strict=False))
        self._end = ends[-1]

    def get(self, path: str) -> bytes | None:
        at = self._at.get(path)
        if at is None or self._file is None:
            return None
        try:
            self._file.flush()
            data = os.pread(self._file.fileno(), at[1], at[0])
        except OSError:
            return None
        return data if len(data) == at[1] else None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ScanCache:
    """The scan cache as one build sees it, the one way the catalog reaches its files: open it with the
    build's listing (ScanCache(...)); ask whether the store is as it last saw it (unchanged()), for its
    index and for the records of some articles (index(), articles()), and for the last selection
    (last_selection()); give it what this scan read (adopt(), remember_selection()); save it (later() and
    save_deferred(), or save()). Three files in the state folder: the index, the record table and the last
    selection (see the top of this module)."""

    def __init__(self, config: Config, listing: Listing, save: bool, memory: statefiles.Memory | None = None,
                 defer_save: bool = False, decoded: dict[str, tuple[bytes, Article]] | None = None) -> None:
        self.config = config
        self.decoded = decoded  # the daemon's: the Articles of the last selection, by source, with their record
        self.save_enabled = save
        self.memory = memory
        self.defer_save = defer_save
        self._deferred: list[Callable[[], None]] = []
        self.key = cache_key(config)
        base = cache_prefix(config.state, config.store)
        self.index_path = base.with_name(f"{base.name}.index")
        self.feeds_path = base.with_name(f"{base.name}.feeds")
        self.journal_path = base.with_name(f"{base.name}.journal")
        self.folders_path = _folders_file(config)
        self.records = Records(base.with_name(f"{base.name}.records"), self.key)
        digest = hashlib.sha256("\0".join(listing.paths).encode("utf-8", "surrogateescape"))
        digest.update(listing.stats.tobytes())
        self.digest = digest.hexdigest()  # changes when any file is added, removed, or changes its stat
        self.newest = max(listing.stats[1::3], default=0)
        self._file = statefiles.open_binary(self.index_path, self.key, "scan cache", memory)
        self.header = self._file.header if self._file is not None else None
        # The journal: the rows changed since the index was written, with the header of the last scan.
        self._journal = None
        self._token = self.header.get("token") if self.header is not None else None  # the index's
        if self._token:
            self._journal = statefiles.open_binary(self.journal_path, self.key, "scan cache journal", memory)
            if self._journal is not None and self._journal.header.get("base") == self._token:
                self.header = self._journal.header
            elif self._journal is not None:  # of an index written since: what it says is in the index
                self._journal.close()
                self._journal = None
        self._since_written: set[str] = set()  # paths changed since the index was written (in the journal)
        self._index: Index | None = None
        self.fresh: dict[str, bytes] = {}  # encoded Articles read by this scan
        # What this scan changed: the index it started from, and the files read again or deleted.
        self.previous: Index | None = None
        self.changes: Changes | None = None
        self.changed_paths: set[str] = set()
        self.entry_digests: dict[str, int | None] = {}  # record digests of the selected feeds' entries
        self.spill: Spill | None = None  # the records a big read did not put into the table (spilling())

    def trusted_before(self) -> int:
        """Files modified before this time can be judged by their stat (see store.RACY_NS)."""
        return self.header["scanned_at"] - store.RACY_NS if self.header else 0

    def unchanged(self) -> bool:
        """Whether the store is exactly as the cached scan saw it, with every file too old to be racy."""
        return (self.header is not None and self.header.get("digest") == self.digest
                and self.newest < self.trusted_before())

    def counts(self) -> dict[str, Any]:
        """What the last scan counted (files, articles, not_articles, invalid) and its problems (as lists)."""
        assert self.header is not None
        return {**self.header["counts"], "problems": self.header["problems"]}

    def index(self) -> Index:
        """The cached index (empty when there is none, or when it is damaged)."""
        if self._index is None:
            self._index = Index()
            if self._file is not None:
                path = self.index_path
                try:
                    self._index = Index.from_payload(self._file.payload())
                    if self._journal is not None:
                        path = self.journal_path
                        journal = self._journal.payload()
                        rows = Index.from_payload(journal)
                        self._index = self._index.patched(journal["deleted"], rows)
                        self._since_written = set(journal["deleted"]) | set(rows.paths)
                except (ValueError, TypeError, KeyError) as exc:
                    logger.warning("%s: scan cache is damaged (%s); discarded, reading every file", path, exc)
                    self._index, self.header, self._token, self._since_written = Index(), None, None, set()
                self._file = self._journal = None
        return self._index

    def spilling(self) -> Callable[[list[tuple[str, bytes]]], None] | None:
        """Where a big read puts its records as they come (Spill.add); None when no spill file can be made:
        the records are then kept by the read."""
        try:
            self.spill = Spill(self.records.path.parent)
        except OSError as exc:
            logger.debug("no spill file for the records: %s", exc)
            return None
        return self.spill.add

    def adopt(self, index: Index, fresh: dict[str, bytes]) -> None:
        """Take `index` as the index of this scan; `fresh` holds the encoded Articles it read."""
        self._index = index
        self.fresh = fresh

    def later(self, save: Callable[[], None]) -> None:
        """Save now, or when save_deferred() is called (collect's `defer_save`)."""
        if self.defer_save:
            self._deferred.append(save)
        else:
            save()

    def save_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)()

    def save(self, counts: dict[str, int], problems: list[list[Any]], started_ns: int, deleted: list[str]) -> None:
        """Save the index this scan made (adopt()) and the records it read (of a big read, those asked for)."""
        index = self.index()
        if self.spill is not None:
            self.spill.close()
            self.spill = None
        self.records.update(((path, *index.stat_of(path), encoded)
                             for path, encoded in self.fresh.items()), deleted)
        header = {"scanned_at": started_ns, "digest": self.digest, "counts": counts, "problems": problems}
        changed = self._since_written | self.changed_paths
        if self._token and len(changed) <= journal_rows(len(index)):
            # A few files changed since the index was written: the journal says which, in a few kilobytes,
            # instead of the index of every file written again (21 MB at 100,000 files).
            rows = index.rows_of(changed)
            gone = sorted(changed.difference(rows.paths))
            header["base"] = self._token
            statefiles.write_binary(self.journal_path, self.key, header, {"deleted": gone, **rows.payload()},
                                    self.memory)
            return
        header["token"] = os.urandom(8).hex()  # what a journal names to be read with this index, no other
        if statefiles.write_binary(self.index_path, self.key, header, index.payload(), self.memory):
            statefiles.remove(self.journal_path)

    def save_folders(self, folders: dict[str, Folder]) -> None:
        """Save the folders of this scan's listing, for the next scan (last_folders())."""
        # Each folder's entries as one string, NUL between them (no file name has one): that loads as a copy
        # of a few strings and a split, a third of the time 100,000 strings of their own take.
        saved = {prefix: (*stamp, "\0".join(entries), subfolders) for prefix, (*stamp, entries, subfolders)
                 in folders.items()}
        statefiles.write_binary(self.folders_path, self.key, {}, {"folders": saved})

    def articles(self, sources: Iterable[str]) -> dict[str, Article]:
        """The full Articles of `sources` (see encoded_articles)."""
        return {source: reading.decode(encoded) for source, encoded in self.encoded_articles(sources).items()}

    def encoded_articles(self, sources: Iterable[str], known: dict[str, bytes] | None = None) -> dict[str, bytes]:
        """The encoded Articles of `sources`: read by this scan, else in `known` (the last selection's, for
        files this scan did not read), else from the record cache, else read again. A file that changed
        while the build ran is left out (a warning; the next build sees what it has become)."""
        sources = list(sources)
        index = self.index()
        found = {source: self.fresh[source] for source in sources if source in self.fresh}
        if self.spill is not None:  # read by this scan, and asked for: saved into the table with the rest
            for source in sources:
                encoded = None if source in found else self.spill.get(source)
                if encoded is not None:
                    found[source] = self.fresh[source] = encoded
        if known:
            found.update((source, known[source]) for source in sources
                         if source not in found and source in known and source not in self.changed_paths)
        wanted = {source: index.stat_of(source) for source in sources if source not in found}
        found.update(self.records.get(wanted))
        missing = [source for source in wanted if source not in found]
        if missing:
            logger.debug("%d articles missing from the record cache; reading their files again", len(missing))
            for path in missing:
                record = reading.read_record(self.config.store, path, self.config.assets_base_url,
                                             body_limit(self.config.content, self.config.max_bytes))
                if record.encoded is not None:
                    found[path] = record.encoded
                else:  # changed since the scan: left out now, the next build sees what it has become
                    logger.warning("%s: changed while the build ran; left out until the next build", path)
            if self.save_enabled:
                self.records.update(((path, *wanted[path], found[path]) for path in missing if path in found), ())
        return found

    def decoder(self, encoded: dict[str, bytes]) -> Callable[[str], Article]:
        """The Article of a source of `encoded` (the selection's entries), decoded when first asked for: a
        rebuild that renders few feeds decodes few Articles. With the daemon's memory of the last
        selection's Articles, one whose record is unchanged is not decoded again; the memory then keeps this
        selection's entries, no more."""
        decoded = self.decoded if self.decoded is not None else {}
        for source in [source for source in decoded if source not in encoded]:
            del decoded[source]

        def article(source: str) -> Article:
            record = encoded[source]
            last = decoded.get(source)
            if last is not None and last[0] == record:
                return last[1]
            made = reading.decode(record)
            decoded[source] = (record, made)
            return made

        return article

    def last_selection(self, settings: list[Any], moment: int) -> dict[str, Any] | None:
        """The last selection, when it was made with these settings, on the store as the scan cache last saw
        it, and no scheduled article has fallen due since (`moment`: microseconds since the epoch)."""
        state = statefiles.open_binary(self.feeds_path, self.key, "last selection", self.memory)
        if state is None:
            return None
        header = state.header
        if (self.header is None or header.get("digest") != self.header.get("digest")
                or header.get("settings") != settings or moment < header["now"]
                or (header["next_due"] is not None and moment >= header["next_due"])):
            state.close()
            return None
        try:
            payload: dict[str, Any] = state.payload()
            return payload
        except ValueError as exc:
            logger.warning("%s: last selection is damaged (%s); selecting again", self.feeds_path, exc)
            return None

    def remember_selection(self, settings: list[Any], moment: int, next_due: int | None,
                           payload: dict[str, Any]) -> None:
        """Keep a selection for last_selection(): made at `moment` with `settings`, valid until `next_due`."""
        header = {"digest": self.digest, "settings": settings, "now": moment, "next_due": next_due}
        statefiles.write_binary(self.feeds_path, self.key, header, payload, self.memory)
