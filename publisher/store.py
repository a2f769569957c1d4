"""Store scan: find the candidate files of the article store and read their front matter.

A candidate is any regular file below the store folder (recursively, hidden folders included: a store may
keep templates there, and the include/exclude patterns are the way to narrow it) that starts with a YAML
front-matter fence. Reading stops at plain data: the metadata mapping and the body text.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from frontmatter.default_handlers import YAMLHandler

from publisher.errors import ArticleError, StoreError

logger = logging.getLogger(__name__)

FENCE = b"---"


@dataclass(frozen=True)
class Document:
    """One front-matter file as read from the store."""

    source: str  # path relative to the store, with "/" separators: what messages name
    metadata: dict[str, Any]
    body: str


class Candidate(NamedTuple):
    """A candidate file and what a stat says about it: enough to tell whether it changed since a scan."""

    path: str  # relative to the store, with "/" separators
    size: int
    mtime_ns: int
    inode: int


UNKNOWN = -1  # size, mtime and inode of a file that cannot be stat'ed: it never matches a cached record


def scan(store: Path, include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
         skip: tuple[Path, ...] = ()) -> list[Candidate]:
    """Return the candidate files with their size, modification time and inode, sorted by path so that
    every run sees one order.

    `skip` names folders never to enter (the output and state folders, when they sit inside the store).
    Folders that are symbolic links are not entered (a link could loop); files that are links are followed.
    """
    if not store.is_dir():
        raise StoreError(f"{store}: store folder not found")
    skipped = {str(p.resolve()) for p in skip}
    found: list[Candidate] = []
    # Strings, not Path objects, and one stat per file: a store of 100,000 files is scanned on every build.
    folders = [(str(store), "")]
    while folders:
        folder, prefix = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if _is_folder(entry):
                        if not entry.is_symlink() and os.path.realpath(entry.path) not in skipped:
                            folders.append((entry.path, f"{prefix}{entry.name}/"))
                        continue
                    relative = prefix + entry.name
                    if (include or exclude) and not _selected(relative, include, exclude):
                        continue
                    try:
                        stat = entry.stat()
                    except OSError:  # a dangling link: reading it reports the problem
                        found.append(Candidate(relative, UNKNOWN, UNKNOWN, UNKNOWN))
                        continue
                    found.append(Candidate(relative, stat.st_size, stat.st_mtime_ns, stat.st_ino))
        except OSError as error:
            # The store root itself must be readable; an unreadable subfolder is reported and passed over.
            if not prefix:
                raise StoreError(f"{store}: cannot read store folder: {error.strerror}") from None
            logger.warning("%s: cannot read folder: %s", folder, error.strerror)
    found.sort()
    return found


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _selected(relative: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
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
    path = store / relative
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ArticleError(relative, None, f"cannot read file: {exc.strerror}") from None
    if not raw.lstrip(b"\xef\xbb\xbf").startswith(FENCE):
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ArticleError(relative, None, f"not UTF-8 text (byte {exc.start})") from None
    # python-frontmatter's own parse() turns a missing closing fence or a front matter that is not a
    # mapping into empty metadata without a word; its handler's two steps let us say what is wrong.
    handler = YAMLHandler()
    try:
        front, body = handler.split(text)
    except ValueError:
        raise ArticleError(relative, "front matter", "no closing '---' line") from None
    try:
        metadata = handler.load(front, Loader=yaml_loader())
    except yaml.YAMLError as exc:
        raise ArticleError(relative, "front matter", f"YAML does not parse: {_yaml_problem(exc)}") from None
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ArticleError(relative, "front matter", f"expected a mapping of fields, got a {type(metadata).__name__}")
    return Document(source=relative, metadata=metadata, body=body.strip())


def yaml_loader() -> type[yaml.SafeLoader] | type[yaml.CSafeLoader]:
    """libyaml's CSafeLoader (what python-frontmatter picks when libyaml is there), passed explicitly so that
    front matter never silently falls back to the pure-Python parser while libyaml is installed."""
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
