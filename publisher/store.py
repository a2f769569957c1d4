"""Store scan: find the candidate files of the article store and read their front matter.

A candidate is any regular file below the store folder (recursively, hidden folders included: a store may
keep templates there, and the include/exclude patterns are the way to narrow it) that starts with a YAML
front-matter fence. Reading stops at plain data: the metadata mapping and the body text.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterator

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


def scan(store: Path, include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
         skip: tuple[Path, ...] = ()) -> list[str]:
    """Return the store-relative paths of the candidate files, sorted so that every run sees one order.

    `skip` names folders never to enter (the output and state folders, when they sit inside the store).
    """
    if not store.is_dir():
        raise StoreError(f"{store}: store folder not found")
    skipped = {p.resolve() for p in skip}
    found: list[str] = []

    def fail(error: OSError) -> None:
        # The store root itself must be readable; an unreadable subfolder is reported and passed over.
        if Path(error.filename or "") == store:
            raise StoreError(f"{store}: cannot read store folder: {error.strerror}")
        logger.warning("%s: cannot read folder: %s", error.filename, error.strerror)

    for folder, dirs, files in os.walk(store, onerror=fail):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if (here / d).resolve() not in skipped)
        for name in files:
            relative = (here / name).relative_to(store).as_posix()
            if _selected(relative, include, exclude):
                found.append(relative)
    return sorted(found)


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
        metadata = handler.load(front)
    except yaml.YAMLError as exc:
        raise ArticleError(relative, "front matter", f"YAML does not parse: {_yaml_problem(exc)}") from None
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ArticleError(relative, "front matter", f"expected a mapping of fields, got a {type(metadata).__name__}")
    return Document(source=relative, metadata=metadata, body=body.strip())


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        # The front matter text starts right after the opening "---", so its line 0 is the file's line 1.
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(problem).split())
