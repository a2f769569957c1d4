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
from collections.abc import Iterable, Mapping
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


# One folder as a scan listed it: its device, inode, ctime_ns and mtime_ns (taken before listing it), then
# its entries in listing order, the store-relative paths of its candidate files and of the folders to enter
# (those end with "/"), then how many of those folders there are. Plain data, kept in the state folder.
# Adding, removing or renaming an entry sets a folder's ctime (POSIX), and nothing can set it back, so while
# a folder's stat is the same its entries are: the next scan reuses them instead of listing the folder
# again (the listing and its sorting are a third of a scan of 100,000 files). A folder changed less than
# RACY_NS before the scan began is not kept.
Folder = tuple[int, int, int, int, list[str], int]
# A file or folder changed this close to the start of a scan may change again within the same tick of the
# file system's clock without its mtime or ctime moving: the next scan does not judge it by its stat (the
# scan cache reads such a file again; such a folder is listed again).
RACY_NS = 1_000_000_000


@dataclass
class Listing:
    """The candidate files of the store, sorted by path, with what a stat says about each: enough to tell
    whether a file changed since an earlier scan. Columns, not a tuple per file: a store of 100,000 files
    is listed on every build, and 100,000 small objects cost more to make than the stat calls themselves."""

    paths: list[str] = field(default_factory=list)  # relative to the store, with "/" separators
    stats: array[int] = field(default_factory=lambda: array("q"))  # size, mtime_ns, inode of each path
    started_ns: int = 0  # time.time_ns() when the scan began: files modified since may change unseen
    # What the scan saw of each folder it may skip listing next time (see Folder), by store-relative prefix.
    folders: dict[str, Folder] = field(default_factory=dict)
    folders_changed: bool = True  # whether `folders` differ from those the scan was given (worth saving)

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
         skip: tuple[Path, ...] = (), known: Mapping[str, Folder] | None = None) -> Listing:
    """Return the candidate files with their size, modification time and inode, sorted by path so that
    every run sees one order.

    `skip` names folders never to enter (the output and state folders, when they sit inside the store).
    Folders that are symbolic links are not entered (a link could loop); files that are links are followed.
    Files that are not regular files (pipes, sockets, devices) are left out: reading a pipe could block.
    `known`: the folders of an earlier scan with the same include and exclude patterns (Listing.folders),
    whose entries are taken as they were wherever a folder's stat is unchanged.
    """
    if not store.is_dir():
        raise StoreError(f"{store}: store folder not found")
    started_ns = time.time_ns()
    walk = _Walk(str(store), {str(p.resolve()) for p in skip}, include, exclude, known or {}, started_ns)
    _walk(walk, "")
    paths = walk.paths
    # Worth saving when a folder is kept that was not, or with another stat. One no longer kept (changed a
    # moment ago, or gone) is not: its old stat matches nothing, so the next scan lists it either way.
    changed = any(walk.known.get(prefix, ())[:4] != folder[:4] for prefix, folder in walk.folders.items())
    if _two_processes(len(paths)):
        stats, kinds = _stat_in_two(walk.root, paths)
    else:
        stats, kinds = _stat(walk.root, paths, 0, len(paths))
    if not kinds.count(_OTHER):
        return Listing(paths, stats, started_ns, walk.folders, changed)
    listing = Listing(started_ns=started_ns, folders=walk.folders, folders_changed=changed)
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
    # Its folders stay: a folder whose entries changed since has another stat, and is listed again.
    return Listing(paths, stats, started_ns, dict(listing.folders), folders_changed=False)


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


@dataclass
class _Walk:
    """One scan's walk through the store's folders: what it was asked, and what it found so far."""

    root: str
    skipped: set[str]  # real paths of the folders not to enter
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    known: Mapping[str, Folder]  # an earlier scan's folders
    started_ns: int
    paths: list[str] = field(default_factory=list)  # the candidate files, in listing order
    folders: dict[str, Folder] = field(default_factory=dict)  # the folders this scan's successor may reuse


def _walk(walk: _Walk, prefix: str) -> None:
    """Add the candidate files of the folder at `prefix` ("" for the store, else a relative path ending
    with "/") and of each folder below it, depth first, in the order of their paths."""
    folder = os.path.join(walk.root, prefix)
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            found = os.fstat(fd)  # before listing: a change made while listing moves it, and is seen next time
            stamp = (found.st_dev, found.st_ino, found.st_ctime_ns, found.st_mtime_ns)
            known = walk.known.get(prefix)
            if known is not None and known[:4] == stamp:
                entries, subfolders = known[4], known[5]
            else:
                entries, subfolders = _entries(fd, prefix, walk.include, walk.exclude)
        finally:
            os.close(fd)
    except OSError as error:
        if not prefix:  # the store root itself must be readable; a subfolder is reported and passed over
            raise StoreError(f"{folder}: cannot read store folder: {error.strerror}") from None
        logger.warning("%s: cannot read folder: %s", folder.rstrip("/"), error.strerror)
        return
    if stamp[2] < walk.started_ns - RACY_NS:
        walk.folders[prefix] = (*stamp, entries, subfolders)
    if not subfolders:  # the common case: files alone
        walk.paths.extend(entries)
        return
    for entry in entries:
        if entry[-1] != "/":
            walk.paths.append(entry)
        elif os.path.realpath(os.path.join(walk.root, entry)) not in walk.skipped:
            _walk(walk, entry)


def _entries(fd: int, prefix: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> tuple[list[str], int]:
    """The entries of the open folder `fd` (at `prefix`), as a Folder keeps them, and how many are folders.
    Sorted by name with "/" appended to the folders' names: exactly the order of the full paths, so that
    the listing needs no sorting."""
    with os.scandir(fd) as listed:
        names, entered = _names(list(listed))
    names.sort()
    if not entered and not (include or exclude):
        return [prefix + name for name in names], 0
    entries = [prefix + name for name in names
               if name[-1] == "/" or selected(prefix + name, include, exclude)]
    return entries, sum(1 for entry in entries if entry[-1] == "/")


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


def _stat(root: str, paths: list[str], start: int, stop: int) -> tuple[array[int], array[int]]:
    """(size, mtime_ns, inode) and the kind of paths start..stop, looked up from the open store folder."""
    stats, kinds = array("q"), array("b")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        stats.extend((UNKNOWN,) * (3 * (stop - start)))
        kinds.extend((_MISSING,) * (stop - start))
        return stats, kinds
    try:
        for path in paths[start:stop]:
            try:
                stat = os.stat(path, dir_fd=fd)
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


def _stat_in_two(root: str, paths: list[str]) -> tuple[array[int], array[int]]:
    """_stat() of the whole listing, the second half in a forked child that writes its results into
    memory shared with this process. Should the child fail, this process stats that half itself."""
    count = len(paths)
    half = count // 2
    rest = count - half
    shared = mmap.mmap(-1, _STAT * rest)
    pid = os.fork()
    if pid == 0:  # the child: no clean-up of the parent's state, no exit handlers, just the work
        status = 1
        try:
            stats, kinds = _stat(root, paths, half, count)
            shared[:] = stats.tobytes() + kinds.tobytes()
            status = 0
        finally:
            os._exit(status)
    try:
        stats, kinds = _stat(root, paths, 0, half)
    finally:
        _, status = os.waitpid(pid, 0)
    if status == 0:
        stats.frombytes(shared[:(_STAT - 1) * rest])
        kinds.frombytes(shared[(_STAT - 1) * rest:])
    else:
        logger.debug("the stat helper process failed (status %s); stat'ing its half here", status)
        more_stats, more_kinds = _stat(root, paths, half, count)
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
    try:
        front, body = split_front_matter(text)
    except ValueError:
        raise ArticleError(relative, "front matter", "no closing '---' line") from None
    try:
        # The plain block YAML of nearly all front matter, read quickly with PyYAML's exact results; anything
        # else (or anything doubtful) is PyYAML's to parse.
        metadata = simple_yaml.load(front, yaml_loader())
        if metadata is None:
            metadata = YAMLHandler().load(front, Loader=yaml_loader())
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


# python-frontmatter's fence: a line of three or more dashes (what follows may take blank lines with it).
_BOUNDARY = YAMLHandler.FM_BOUNDARY


def split_front_matter(text: str) -> tuple[str, str]:
    """What python-frontmatter's YAMLHandler().split(text) gives, the front matter and the body between and
    after its first two fences, a third of the time quicker: its regular expression looks for a line start
    at every character of the front matter, where only the lines starting with "---" can be fences. Raises
    ValueError (as it does) when there are fewer than two. tests/test_simple_yaml.py compares the two."""
    spans: list[tuple[int, int]] = []
    after = 0  # where the next fence may start: fences do not overlap
    line = 0 if text.startswith("---") else text.find("\n---") + 1  # the start of a line of dashes
    while line or text.startswith("---"):
        if line >= after:
            fence = _BOUNDARY.match(text, line)
            if fence is not None:
                spans.append(fence.span())
                after = fence.end()
                if len(spans) == 2:
                    return text[spans[0][1]:spans[1][0]], text[spans[1][1]:]
        following = text.find("\n---", line)
        if following < 0:
            break
        line = following + 1
    raise ValueError("fewer than two front matter fences")


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
