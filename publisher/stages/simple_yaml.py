"""A fast reader for the plain block YAML that front matter is nearly always written in, with PyYAML's exact
results, or None to say "not sure: ask PyYAML".

Front matter written by tools and people is `key: value` lines, nested mappings, `- item` lists and lists of
mappings, with plain, single-quoted or double-quoted one-line scalars. For that subset this reader is several
times quicker than libyaml through PyYAML (which builds a node object, with two position marks, for every
scalar before constructing values). Everything else (flow collections `[a, b]` and `{a: b}`, block scalars
`|` and `>`, anchors, aliases, tags, comments after values, multi-line scalars, tabs, `? ` keys, quoted keys,
escapes other than the common ones, directives, several documents) makes it return None, and the caller
parses the text with PyYAML as before. A scalar's type is resolved with the loader's own implicit resolvers
and built with its own constructors, so `yes`, `1_000`, `2020-02-30` or `.inf` mean here exactly what they
mean to PyYAML (and raise the same errors). tests/test_simple_yaml.py compares the two on every file of the
corpus and on generated hostile input.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

import yaml

_STR = "tag:yaml.org,2002:str"
if TYPE_CHECKING:  # CSafeLoader exists only where PyYAML was built with libyaml
    Loader = type[yaml.SafeLoader] | type[yaml.CSafeLoader]
# A key: plain, starting with a letter or underscore; what front matter uses.
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*):(?: +|$)")
# Characters that cannot start a plain scalar, or that make it something else (YAML 1.1, 9.1.3).
_NOT_PLAIN_START = frozenset("-?:,[]{}#&*!|>'\"%@`")
# The escapes of a double-quoted scalar that are read here; any other backslash goes to PyYAML.
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r", "0": "\0", " ": " "}
_ESCAPE = re.compile(r"\\(.)")
# A line that is neither blank nor only a comment: its indentation and the text after it.
_ROW = re.compile(r"^( *)([^ \n#][^\n]*)", re.MULTILINE)
# Plain scalars remembered with what they resolve to (see _loader_facts): at most this many, this long.
_REMEMBERED, _REMEMBERED_LENGTH = 50_000, 64



# What PyYAML's reader refuses (yaml.reader.Reader.NON_PRINTABLE): PyYAML reports the error, not this reader.
_PRINTABLE_ASCII = bytes([0x09, 0x0A, 0x0D, *range(0x20, 0x7F)])
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


def _printable(text: str) -> bool:
    """Whether PyYAML's reader takes every character of `text` (_NON_PRINTABLE finds none). ASCII text, nearly
    all front matter, is checked as bytes, deleting those it takes and seeing whether any is left: a seventh
    of the time the expression takes."""
    if text.isascii():
        return not text.encode("ascii").translate(None, _PRINTABLE_ASCII)
    return _NON_PRINTABLE.search(text) is None


class _Unsure(Exception):
    """The text leaves the subset: PyYAML decides."""


def load(text: str, loader: Loader) -> Any:
    """The value PyYAML's `loader` gives for `text`, or None when `text` is outside the subset (then ask
    PyYAML; an empty front matter is also None, as it is for PyYAML)."""
    if "\t" in text or "\r" in text or "\ufeff" in text or not _printable(text):
        return None
    rows = [(len(indentation), content) for indentation, content in _ROW.findall(text)]
    if not rows or rows[0][0]:
        return None
    reader = _Reader(rows, loader)
    try:
        value = reader.block(0)
    except _Unsure:
        return None
    return value if reader.at == len(rows) else None


class _Reader:
    def __init__(self, rows: list[tuple[int, str]], loader: Loader) -> None:
        self.rows = rows
        self.at = 0
        self.resolvers = loader.yaml_implicit_resolvers
        self.constructor, self.resolved_first, self.known = _loader_facts(loader)  # type: ignore[arg-type]

    def block(self, indent: int) -> Any:
        """The mapping or list that starts at the current row, indented `indent`."""
        text = self.rows[self.at][1]
        if text == "-" or text.startswith("- "):
            return self.sequence(indent)
        return self.mapping(indent, text)

    def mapping(self, indent: int, text: str) -> dict[str, Any]:
        """A mapping whose first key is in `text` (the current row, or what follows a list item's "- ") and
        whose other keys stand at `indent`."""
        rows, count = self.rows, len(self.rows)
        result: dict[str, Any] = {}
        while True:
            match = _KEY.match(text)
            if match is None:
                raise _Unsure
            key = match.group(1)
            if key[0] in self.resolved_first and not isinstance(self.plain(key), str):
                raise _Unsure  # a key such as `yes` or `1` is not a string: PyYAML knows what it becomes
            value = text[match.end():]
            self.at += 1
            result[key] = self.scalar(value) if value else self.nested(indent)
            if self.at == count:
                return result
            width, text = rows[self.at]
            if width < indent:
                return result
            if width > indent:
                raise _Unsure  # a continuation line of a multi-line scalar, or a stray indentation

    def sequence(self, indent: int) -> list[Any]:
        rows, count = self.rows, len(self.rows)
        result: list[Any] = []
        text = rows[self.at][1]
        while True:
            item = text[2:]
            if not item:
                self.at += 1
                result.append(self.nested(indent, item=True))
            elif _KEY.match(item):  # "- key: value": a mapping whose keys line up after "- "
                result.append(self.mapping(indent + 2, item))
            else:
                self.at += 1
                result.append(self.scalar(item))
            if self.at == count:
                return result
            width, text = rows[self.at]
            if width < indent:
                return result
            if width > indent or not (text == "-" or text.startswith("- ")):
                raise _Unsure

    def nested(self, indent: int, item: bool = False) -> Any:
        """The value of a key (or, with `item`, a list item) left empty on its own line: a more indented
        block, or null."""
        if self.at == len(self.rows):
            return None
        width, text = self.rows[self.at]
        if width > indent:
            return self.block(width)
        if width == indent and not item and (text == "-" or text.startswith("- ")):
            raise _Unsure  # "key:" then a list at the key's own indentation: valid YAML, PyYAML decides
        return None

    def scalar(self, text: str) -> Any:
        first = text[0]
        if first == '"':
            return _double_quoted(text)
        if first == "'":
            if len(text) < 2 or text[-1] != "'" or "'" in text[1:-1].replace("''", ""):
                raise _Unsure
            return text[1:-1].replace("''", "'")
        if first in _NOT_PLAIN_START and not (first in "-?:" and len(text) > 1 and text[1] != " "):
            raise _Unsure
        if text[-1] in " :" or ": " in text or " #" in text:
            raise _Unsure
        if first not in self.resolved_first:
            return text
        return self.plain(text)

    def plain(self, text: str) -> Any:
        """What a plain scalar that some implicit resolver may match resolves to (`text` itself, when a
        string). The same few values (`true`, `-1`, widths, the dates of `related` lists) come back in
        file after file: each is resolved once, and remembered (all are immutable)."""
        known = self.known.get(text, self.known)
        if known is not self.known:
            return known
        tag = self.tag(text)
        if tag == _STR:
            value: Any = text
        else:
            construct = self.constructor.yaml_constructors.get(tag)
            if construct is None:  # `=` or `<<` as a value: PyYAML's constructor has its own word for it
                raise _Unsure
            try:
                value = construct(self.constructor, yaml.ScalarNode(tag, text))
            except (ValueError, OverflowError, yaml.YAMLError):
                # 2020-02-30: PyYAML reports it, unless the document has a syntax error further on, which
                # PyYAML reports first. Either way it is PyYAML's to say.
                raise _Unsure from None
        if len(text) <= _REMEMBERED_LENGTH:
            if len(self.known) >= _REMEMBERED:
                self.known.clear()
            self.known[text] = value
        return value

    def tag(self, value: str) -> str:
        """The tag PyYAML's Resolver.resolve gives a plain scalar: the first implicit resolver for the
        value's first character whose pattern matches it, else a string."""
        for tag, pattern in self.resolvers.get(value[:1], ()):
            if pattern.match(value):
                return str(tag)
        return _STR


def _double_quoted(text: str) -> str:
    if len(text) < 2 or text[-1] != '"':
        raise _Unsure
    inner = text[1:-1]
    if "\\" not in inner:
        if '"' in inner:
            raise _Unsure
        return inner
    # A backslash before the closing quote, an escaped quote at the end...: read escape by escape.
    if _ESCAPE.sub("", inner).count('"'):
        raise _Unsure
    if inner.endswith("\\") and (len(inner) - len(inner.rstrip("\\"))) % 2:
        raise _Unsure

    def unescape(match: re.Match[str]) -> str:
        character = _ESCAPES.get(match.group(1))
        if character is None:
            raise _Unsure
        return character

    return _ESCAPE.sub(unescape, inner)


@functools.cache
def _loader_facts(loader: Loader) -> tuple[yaml.SafeLoader | yaml.CSafeLoader, frozenset[str] | _Every,
                                           dict[str, Any]]:
    """A loader object, for its scalar constructors only (they read nothing but the node given); the first
    characters that some implicit resolver of the loader looks at (bool, int, float, null, timestamp ...): a
    plain scalar starting with any other character is a string; and the plain scalars already resolved with
    this loader, with their values (_Reader.plain)."""
    resolvers = loader.yaml_implicit_resolvers
    first: frozenset[str] | _Every = _Every() if None in resolvers else frozenset(key for key in resolvers if key)
    return loader(""), first, {}


class _Every:
    """Contains every character: for a loader with wildcard resolvers."""

    def __contains__(self, character: object) -> bool:
        return True
