"""Store scan: find the candidate files of the article store and read their front matter.

A candidate is any regular file below the store folder (recursively, hidden folders included: a store may
keep templates there, and the include/exclude patterns are the way to narrow it) that starts with a YAML
front-matter fence. Reading stops at plain data: the metadata mapping and the body text.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import mmap
import os
import re
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import Any

import yaml
from frontmatter.default_handlers import YAMLHandler

from publisher.errors import ArticleError, StoreError
from publisher.stages import simple_yaml

logger = logging.getLogger(__name__)

FENCE = b"---"


@dataclass(frozen=True)
class Document:
    """One front-matter file as read from the store."""

    source: str  # path relative to the store, with "/" separators: what messages name
    metadata: dict[str, Any]
    body: str
    body_problem: str | None = None  # why the body could not be read (it is then empty)


@dataclass
class Listing:
    """The candidate files of the store, sorted by path, with what a stat says about each: enough to tell
    whether a file changed since an earlier scan. Columns, not a tuple per file: a store of 100,000 files
    is listed on every build, and 100,000 small objects cost more to make than the stat calls themselves."""

    paths: list[str] = field(default_factory=list)  # relative to the store, with "/" separators
    stats: array[int] = field(default_factory=lambda: array("q"))  # size, mtime_ns, inode of each path
    started_ns: int = 0  # time.time_ns() when the scan began: files modified since may change unseen

    def __len__(self) -> int:
        return len(self.paths)

    def stat(self, index: int) -> tuple[int, int, int]:
        return (self.stats[3 * index], self.stats[3 * index + 1], self.stats[3 * index + 2])


UNKNOWN = -1  # size, mtime and inode of a file that cannot be stat'ed: it never matches a cached record
# From this many files on, a second process stats half of them: the stat calls are most of a scan, and
# the store is scanned on every build.
PARALLEL_STAT_FROM = 20_000
_STAT = array("q").itemsize * 3 + 1  # bytes per file from _stat(): three stat values and its kind
_REGULAR, _OTHER, _MISSING = 1, 0, -1


def scan(store: Path, include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
         skip: tuple[Path, ...] = ()) -> Listing:
    """Return the candidate files with their size, modification time and inode, sorted by path so that
    every run sees one order.

    `skip` names folders never to enter (the output and state folders, when they sit inside the store).
    Folders that are symbolic links are not entered (a link could loop); files that are links are followed.
    Files that are not regular files (pipes, sockets, devices) are left out: reading a pipe could block.
    """
    if not store.is_dir():
        raise StoreError(f"{store}: store folder not found")
    started_ns = time.time_ns()
    folders: list[tuple[str, str, list[str]]] = []
    _walk(str(store), "", folders, {str(p.resolve()) for p in skip}, include, exclude)
    count = sum(len(names) for _, _, names in folders)
    stats, kinds = _stat_in_two(folders, count) if _two_processes(count) else _stat(folders, 0, count)
    paths = [prefix + name for _, prefix, names in folders for name in names]
    if not kinds.count(_OTHER):
        return Listing(paths, stats, started_ns)
    listing = Listing(started_ns=started_ns)
    for position, (path, kind) in enumerate(zip(paths, kinds, strict=False)):
        if kind == _OTHER:
            logger.debug("%s: not a regular file, skipped", path)
            continue
        listing.paths.append(path)
        listing.stats.extend(stats[3 * position:3 * position + 3])
    return listing


def rescan(store: Path, listing: Listing, changed: Iterable[str], include: tuple[str, ...] = (),
           exclude: tuple[str, ...] = (), skip: tuple[Path, ...] = ()) -> Listing | None:
    """`listing` (an earlier scan) brought up to date by a stat of the `changed` paths alone, as a file
    watcher reports them: what scan() would return if nothing else changed. None when that cannot be told
    from these paths (a folder among them, or a path whose folders are not plain folders of the store):
    scan() then. The earlier listing is left as it was."""
    paths, stats = list(listing.paths), array("q", listing.stats)
    started_ns = time.time_ns()
    root = os.path.realpath(store)
    skipped = {os.path.realpath(folder) for folder in skip}
    for path in sorted(set(changed)):
        if not _plain_folders(root, path, skipped):
            return None
        full = os.path.join(root, path)
        try:
            found = os.stat(full)
            row: tuple[int, int, int] | None = (found.st_size, found.st_mtime_ns, found.st_ino)
            if S_ISDIR(found.st_mode):
                return None
            if not S_ISREG(found.st_mode):
                row = None  # a pipe or a device: never read (scan() leaves it out too)
        except OSError:  # gone; or a dangling link, kept (as scan() keeps it) so that reading it says so
            row = (UNKNOWN, UNKNOWN, UNKNOWN) if os.path.lexists(full) else None
        if row is not None and not selected(path, include, exclude):
            row = None
        at = bisect_left(paths, path)
        present = at < len(paths) and paths[at] == path
        if row is None and present:
            del paths[at]
            del stats[3 * at:3 * at + 3]
        elif row is not None and present:
            stats[3 * at:3 * at + 3] = array("q", row)
        elif row is not None:
            paths.insert(at, path)
            stats[3 * at:3 * at] = array("q", row)
    return Listing(paths, stats, started_ns)


def _plain_folders(root: str, path: str, skipped: set[str]) -> bool:
    """Whether every folder on the way to `path` (relative) is a folder that scan() enters: a real folder,
    not a link, not one of the skipped ones, with no ".." or absolute part."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return False
    folder = root
    for part in parts[:-1]:
        folder = os.path.join(folder, part)
        try:
            if not S_ISDIR(os.lstat(folder).st_mode) or folder in skipped:
                return False
        except OSError:
            return False
    return True


def _walk(folder: str, prefix: str, folders: list[tuple[str, str, list[str]]], skipped: set[str],
          include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
    """Add (folder, its store-relative prefix, its candidate files) for `folder` and each folder below it,
    depth first. Each folder's entries are visited in the order of their names with "/" appended to
    folders' names: exactly the order of the full paths, so that the listing needs no sorting."""
    try:
        with os.scandir(folder) as listed:
            entries = list(listed)
    except OSError as error:
        if not prefix:  # the store root itself must be readable; a subfolder is reported and passed over
            raise StoreError(f"{folder}: cannot read store folder: {error.strerror}") from None
        logger.warning("%s: cannot read folder: %s", folder, error.strerror)
        return
    names, entered = _names(entries)
    names.sort()
    selecting = bool(include or exclude)
    if not selecting and not entered:  # the common case: files alone
        folders.append((folder, prefix, names))
        return
    files: list[str] = []
    folders.append((folder, prefix, files))
    for name in names:
        if name[-1] != "/":
            if not selecting or selected(prefix + name, include, exclude):
                files.append(name)
            continue
        path = os.path.join(folder, name[:-1])
        if os.path.realpath(path) in skipped:
            continue
        _walk(path, prefix + name, folders, skipped, include, exclude)
        files = []  # the files after this folder come after its own files in the listing
        folders.append((folder, prefix, files))


def _names(entries: list[os.DirEntry[str]]) -> tuple[list[str], bool]:
    """The names of a folder's entries, with "/" after those of folders to enter (not links to folders), and
    whether there is any such folder. Comprehensions, since a folder of the store may hold 100,000 files."""
    try:
        entered = {entry.name for entry in entries if entry.is_dir() and not entry.is_symlink()}
    except OSError:  # a link whose target cannot be looked at: a file, for reading to report
        entered = set()
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    entered.add(entry.name)
    if not entered:
        return [entry.name for entry in entries], False
    return [entry.name + "/" if entry.name in entered else entry.name for entry in entries], True


def _stat(folders: list[tuple[str, str, list[str]]], start: int, stop: int) -> tuple[array[int], array[int]]:
    """(size, mtime_ns, inode) and the kind of files start..stop of the listing. Each stat looks up one
    name in an open folder (fstatat), not the whole path again."""
    stats, kinds = array("q"), array("b")
    position = 0
    for folder, _, names in folders:
        first, last = max(start - position, 0), min(stop - position, len(names))
        position += len(names)
        if first >= last:
            continue
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            stats.extend((UNKNOWN,) * (3 * (last - first)))
            kinds.extend((_MISSING,) * (last - first))
            continue
        try:
            for name in names[first:last]:
                try:
                    stat = os.stat(name, dir_fd=fd)
                except OSError:  # a dangling link: reading it reports the problem
                    stats.extend((UNKNOWN, UNKNOWN, UNKNOWN))
                    kinds.append(_MISSING)
                    continue
                stats.extend((stat.st_size, stat.st_mtime_ns, stat.st_ino))
                kinds.append(_REGULAR if S_ISREG(stat.st_mode) else _OTHER)
        finally:
            os.close(fd)
    return stats, kinds


def _two_processes(count: int) -> bool:
    """Fork only a process with a single thread (a forked child of a threaded process could wait forever
    on a lock some other thread held), with more than one core to run on."""
    if count < PARALLEL_STAT_FROM or not hasattr(os, "fork") or threading.active_count() > 1:
        return False
    return hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > 1


def _stat_in_two(folders: list[tuple[str, str, list[str]]], count: int) -> tuple[array[int], array[int]]:
    """_stat() of the whole listing, the second half in a forked child that writes its results into
    memory shared with this process. Should the child fail, this process stats that half itself."""
    half = count // 2
    rest = count - half
    shared = mmap.mmap(-1, _STAT * rest)
    pid = os.fork()
    if pid == 0:  # the child: no clean-up of the parent's state, no exit handlers, just the work
        status = 1
        try:
            stats, kinds = _stat(folders, half, count)
            shared[:] = stats.tobytes() + kinds.tobytes()
            status = 0
        finally:
            os._exit(status)
    try:
        stats, kinds = _stat(folders, 0, half)
    finally:
        _, status = os.waitpid(pid, 0)
    if status == 0:
        stats.frombytes(shared[:(_STAT - 1) * rest])
        kinds.frombytes(shared[(_STAT - 1) * rest:])
    else:
        logger.debug("the stat helper process failed (status %s); stat'ing its half here", status)
        more_stats, more_kinds = _stat(folders, half, count)
        stats.extend(more_stats)
        kinds.extend(more_kinds)
    shared.close()
    return stats, kinds


def selected(relative: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    if include and not any(_matches(relative, p) for p in include):
        return False
    return not any(_matches(relative, p) for p in exclude)


def _matches(relative: str, pattern: str) -> bool:
    """Glob match where `**/` may also match nothing, so `**/*.md` covers files at the top level too."""
    if fnmatchcase(relative, pattern):
        return True
    return pattern.startswith("**/") and fnmatchcase(relative, pattern[3:])


def read(store: Path, relative: str) -> Document | None:
    """Read one candidate. None when the file has no front matter (not part of the store's data).

    Raises ArticleError when the file cannot be read or its front matter does not parse.
    """
    try:
        raw = _read_bytes(os.path.join(store, relative))
    except OSError as exc:
        raise ArticleError(relative, None, f"cannot read file: {exc.strerror}") from None
    if not raw.lstrip(b"\xef\xbb\xbf").startswith(FENCE):
        return None
    body_problem = None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        text, body_problem = _front_matter_only(raw, exc)
        if body_problem is None:
            raise ArticleError(relative, None, f"not UTF-8 text (byte {exc.start})") from None
    # python-frontmatter's own parse() turns a missing closing fence or a front matter that is not a
    # mapping into empty metadata without a word; its handler's two steps let us say what is wrong.
    handler = YAMLHandler()
    try:
        front, body = handler.split(text)
    except ValueError:
        raise ArticleError(relative, "front matter", "no closing '---' line") from None
    try:
        # The plain block YAML of nearly all front matter, read quickly with PyYAML's exact results; anything
        # else (or anything doubtful) is PyYAML's to parse.
        metadata = simple_yaml.load(front, yaml_loader())
        if metadata is None:
            metadata = handler.load(front, Loader=yaml_loader())
    except yaml.YAMLError as exc:
        raise ArticleError(relative, "front matter", f"YAML does not parse: {_yaml_problem(exc)}") from None
    except (ValueError, OverflowError) as exc:  # a value that looks like a date but is none: 2020-02-30
        raise ArticleError(relative, "front matter", f"YAML does not parse: {exc}") from None
    except RecursionError:
        raise ArticleError(relative, "front matter", "YAML does not parse: nested too deeply") from None
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ArticleError(relative, "front matter", f"expected a mapping of fields, got a {type(metadata).__name__}")
    return Document(source=relative, metadata=metadata, body=body.strip(), body_problem=body_problem)


_CLOSING_FENCE = re.compile(rb"^-{3,}[ \t]*\r?$", re.MULTILINE)


def _front_matter_only(raw: bytes, error: UnicodeDecodeError) -> tuple[str, str | None]:
    """When the bytes that are not UTF-8 all lie in the body, the front matter alone (with an empty body)
    and why the body was left out; the article can still be published from its front matter. Otherwise
    ("", None)."""
    start = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    fences = list(_CLOSING_FENCE.finditer(raw, start, error.start))
    if len(fences) < 2:  # the bad bytes come before the front matter ends
        return "", None
    head = raw[start:fences[1].end()]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "", None
    offset = error.start - (fences[1].end() + 1)
    return text + "\n", f"not UTF-8 text (byte {error.start}, {max(offset, 0)} bytes into the body)"


def _read_bytes(path: str) -> bytes:
    """The file's bytes, with plain system calls: a read costs a third of what Path.read_bytes() costs."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = [os.read(fd, 1 << 16)]
        while chunks[-1]:
            chunks.append(os.read(fd, 1 << 20))
    finally:
        os.close(fd)
    return b"".join(chunks)


def yaml_loader() -> type[yaml.SafeLoader] | type[yaml.CSafeLoader]:
    """libyaml's CSafeLoader (the loader python-frontmatter picks when libyaml is there) with a quicker
    constructor, passed explicitly so that front matter never falls back to the pure-Python parser while
    libyaml is installed. Without libyaml: PyYAML's SafeLoader."""
    return _FrontMatterLoader if _FrontMatterLoader is not None else yaml.SafeLoader


_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
# Scalars whose SafeConstructor functions return a value directly (no generator, no recursion).
_PLAIN_SCALARS = frozenset({_STR, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
                            "tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp"})


def _fast_document(loader: Any, root: yaml.Node) -> Any:
    """What SafeConstructor.construct_document gives, built without its generic machinery (a generator and
    bookkeeping per node) for the plain YAML of front matter: strings, numbers, booleans, nulls, dates,
    lists and mappings with plain keys. Any other node (merge keys, sets, binary, unknown tags) goes through
    SafeConstructor itself, so results and errors are the same; only about half the time is spent."""
    return _construct(root, loader, {})


def _construct(node: yaml.Node, loader: Any, built: dict[yaml.Node, Any]) -> Any:
    # A module-level function, not a closure: a closure that calls itself is a reference cycle, left for
    # the cyclic garbage collector, which reading workers run without.
    tag, kind = node.tag, node.__class__
    if kind is yaml.ScalarNode and tag == _STR:
        return node.value
    if node in built:  # an alias: the same object, as SafeConstructor gives
        return built[node]
    if kind is yaml.MappingNode and tag == _MAP and all(
            key.__class__ is yaml.ScalarNode and key.tag in _PLAIN_SCALARS for key, _ in node.value):
        mapping: dict[Any, Any] = {}
        built[node] = mapping
        for key, value in node.value:
            mapping[_construct(key, loader, built)] = _construct(value, loader, built)
        return mapping
    if kind is yaml.SequenceNode and tag == _SEQ:
        sequence: list[Any] = []
        built[node] = sequence
        sequence.extend([_construct(child, loader, built) for child in node.value])
        return sequence
    if kind is yaml.ScalarNode and tag in _PLAIN_SCALARS:
        return loader.yaml_constructors[tag](loader, node)
    built[node] = loader.construct_object(node, deep=True)
    return built[node]


if hasattr(yaml, "CSafeLoader"):
    class _FrontMatterLoader(yaml.CSafeLoader):
        # The implicit resolvers to try for a plain scalar, by its first character: Resolver.resolve()
        # builds this list again for every scalar.
        _implicit = {first: tuple(resolvers) + tuple(yaml.CSafeLoader.yaml_implicit_resolvers.get(None, ()))
                     for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items() if first is not None}
        _wildcard = tuple(yaml.CSafeLoader.yaml_implicit_resolvers.get(None, ()))

        def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
            if kind is yaml.ScalarNode and not self.yaml_path_resolvers:
                if implicit[0]:
                    for tag, regexp in self._implicit.get(value[:1], self._wildcard):
                        if regexp.match(value):
                            return str(tag)
                return str(self.DEFAULT_SCALAR_TAG)
            return str(super().resolve(kind, value, implicit))  # type: ignore[no-untyped-call]

        def construct_document(self, node: yaml.Node) -> Any:
            try:
                return _fast_document(self, node)
            finally:
                self.constructed_objects, self.recursive_objects = {}, {}
else:
    _FrontMatterLoader = None  # type: ignore[assignment,misc]


@functools.cache  # once per process: the daemon builds many times
def warn_without_libyaml() -> bool:
    """Say once, at WARNING level, when PyYAML has no libyaml: parsing is then about eight times slower.
    Returns whether libyaml is used."""
    if yaml_loader() is yaml.SafeLoader:
        logger.warning("PyYAML runs without libyaml: front matter is parsed in pure Python, about 8 times "
                       "slower; install a PyYAML built with libyaml (the PyPI wheels are)")
        return False
    return True


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        # The front matter text starts right after the opening "---", so its line 0 is the file's line 1.
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(problem).split())
