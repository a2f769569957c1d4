"""Article model: turn one document's raw front matter into a validated, publishable Article.

Everything a feed shows is decided here, once: text is cleaned of characters XML 1.0 forbids, dates become
aware UTC datetimes in whole seconds, URLs become absolute percent-encoded http(s) URLs, and fields that must
never be published (`secured`, `related`, AMP URLs, `isCached`) are simply not carried over.
"""

from __future__ import annotations

import functools
import html
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from publisher.stages.body import BodyError, render_body
from publisher.stages.store import Document
from publisher.stages.urls import InvalidURL, absolute_link, canonical, entry_id, publishable
from publisher.stages.xmltext import clean_text

logger = logging.getLogger(__name__)

T = TypeVar("T")


_IMAGE_TYPES = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "jpe": "image/jpeg", "jfif": "image/jpeg",
    "png": "image/png", "gif": "image/gif", "webp": "image/webp", "avif": "image/avif",
    "svg": "image/svg+xml", "bmp": "image/bmp", "ico": "image/vnd.microsoft.icon",
    "tif": "image/tiff", "tiff": "image/tiff", "heic": "image/heic",
}
UNKNOWN_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Image:
    url: str
    width: int | None = None
    height: int | None = None
    mime_type: str = UNKNOWN_TYPE
    length: int = 0  # bytes; 0 means unknown (RSS 2.0 allows it)


@dataclass(frozen=True)
class Provider:
    name: str | None
    domain: str | None
    logo: Image | None

    @property
    def uri(self) -> str | None:
        return f"https://{self.domain}/" if self.domain else None


@dataclass(frozen=True)
class Article:
    source: str
    id: str
    url: str
    title: str
    summary: str | None
    content: str | None
    published: datetime
    updated: datetime
    provider: Provider | None
    topics: tuple[str, ...]
    images: tuple[Image, ...]
    is_published: bool = True
    quality: float | None = None
    heat: float | None = None
    kind: str | None = None

    @property
    def canonical_url(self) -> str:
        return canonical(self.url)

    # What feed selection reads of the provider: the catalog's summaries carry the same (reading.FileRecord.facets).
    @property
    def provider_key(self) -> str | None:
        return provider_key(self.provider)

    @property
    def provider_name(self) -> str | None:
        return self.provider.name if self.provider else None

    @property
    def enclosures(self) -> tuple[Image, ...]:
        """Every article image, then the provider logo: what Atom and Media RSS carry."""
        logo = (self.provider.logo,) if self.provider and self.provider.logo else ()
        return self.images + logo


def provider_key(provider: Provider | None) -> str | None:
    """What a provider is known by (its feed): its domain, lower case, without a leading "www.", else its
    name."""
    if provider is None:
        return None
    if provider.domain:
        domain = provider.domain.lower()
        return domain[4:] if domain.startswith("www.") and len(domain) > 4 else domain
    return provider.name or None


@dataclass(frozen=True)
class Problem:
    source: str
    field: str | None
    reason: str
    fatal: bool  # True: the article was left out of every feed

    def __str__(self) -> str:
        where = f"{self.source}: {self.field}" if self.field else self.source
        return f"{where}: {self.reason}"


DEFAULT_BODY_LIMIT = 512 * 1024


def body_limit(content: str, max_bytes: int) -> int:
    """How long a body may be to be rendered: 0 for `content: summary` (no bodies at all), else max_bytes.
    A longer body would seldom fit in a feed file once rendered (Markdown only grows, and Atom and RSS
    escape the HTML), and rendering megabytes of hostile text costs seconds: such an article is published
    with its excerpt."""
    return 0 if content == "summary" else max_bytes


@dataclass
class _Reader:
    """Reads one document's fields, collecting every problem: a field that cannot be read raises _Invalid
    inside its own `field()` call, which records it and goes on with the next field, so that one pass finds
    every problem of a file (`publisher check` lists them all)."""

    doc: Document
    base: str | None
    body_limit: int = DEFAULT_BODY_LIMIT  # bodies longer than this (bytes) are not rendered; 0: no bodies
    problems: list[Problem] = field(default_factory=list)

    @property
    def invalid(self) -> bool:
        return any(problem.fatal for problem in self.problems)

    def warn(self, name: str, reason: str) -> None:
        self.problems.append(Problem(self.doc.source, name, reason, fatal=False))

    def fail(self, name: str | None, reason: str) -> _Invalid:
        return _Invalid(Problem(self.doc.source, name, reason, fatal=True))

    def field(self, read: Callable[[], T], fallback: T) -> T:
        """`read()`, or `fallback` when it fails (the problem is recorded; the article will be left out)."""
        try:
            return read()
        except _Invalid as invalid:
            self.problems.append(invalid.problem)
            return fallback


class _Invalid(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def read_article(doc: Document, assets_base_url: str | None, body_limit: int = DEFAULT_BODY_LIMIT
                 ) -> tuple[Article | None, list[Problem]]:
    """Return (article, problems). (None, []) means the document is not an article at all; (None, [p])
    means it is a broken article, left out for the fatal problem p.

    A body longer than `body_limit` bytes is not rendered (see body_limit()); 0 leaves every article without
    content (`content: summary`)."""
    meta = doc.metadata
    if "title" not in meta and "publishedDateTime" not in meta:
        return None, []
    reader = _Reader(doc, assets_base_url, body_limit)
    article = _article(reader, meta, doc.body)
    return (None if reader.invalid else article), reader.problems


def _article(r: _Reader, meta: dict[str, Any], body: str) -> Article | None:
    """The Article, reading every field even after a bad one; None when any field was fatal."""
    title = r.field(lambda: _required_text(r, meta, "title"), "")
    published = r.field(lambda: _required_date(r, meta, "publishedDateTime"), None)
    updated = r.field(lambda: _optional_date(r, meta, "updatedDateTime"), None)
    if published is not None and updated is not None and updated < published:
        r.warn("updatedDateTime", "earlier than publishedDateTime; using publishedDateTime")
        updated = published
    url = r.field(lambda: _link(r, meta), "")
    excerpt = r.field(lambda: _optional_text(r, meta, "excerpt"), None)
    # Excerpts are text that may carry HTML entities (&nbsp;, &amp;): decode them once, here.
    summary = " ".join(clean_text(html.unescape(excerpt)).split()) if excerpt else None
    provider = r.field(lambda: _remembered(r, _provider, meta.get("provider")), None)
    topics = _remembered(r, _topics, meta.get("topics"))
    no_images: tuple[Image, ...] = ()
    images = r.field(lambda: _images(r, meta.get("images"), "images"), no_images)
    is_published = r.field(lambda: _flag(r, meta, "published"), True)
    quality = r.field(lambda: _number(r, meta, "quality"), None)
    heat = r.field(lambda: _number(r, meta, "heat"), None)
    kind = r.field(lambda: _optional_text(r, meta, "type"), None)
    if r.invalid or published is None:
        return None
    return Article(
        source=r.doc.source,
        id=entry_id(url),
        url=url,
        title=title,
        summary=summary or None,
        content=_content(r, body, url),
        published=published,
        updated=updated or published,
        provider=provider,
        topics=topics,
        images=images,
        is_published=is_published,
        quality=quality,
        heat=heat,
        kind=kind,
    )


def _content(r: _Reader, body: str, url: str) -> str | None:
    """The body as safe HTML (body.py), or None: none to publish, or a body that cannot be used (a warning;
    the article is published with its excerpt)."""
    if not r.body_limit:
        return None
    if r.doc.body_problem:
        r.warn("body", f"{r.doc.body_problem}; published without it")
        return None
    if not body:
        return None
    size = len(body.encode("utf-8", "surrogatepass"))
    if size > r.body_limit:
        r.warn("body", f"{size} bytes, longer than max_bytes ({r.body_limit}): not rendered; "
                       "published without it")
        return None
    try:
        return render_body(clean_text(body), r.doc.source, r.base or url, url)
    except BodyError as exc:
        r.warn("body", f"{exc}; published without it")
        return None


def _scalar_text(value: Any) -> str | None:
    """Text for a YAML scalar that a person meant as text (a title "1984" parses as a number)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _required_text(r: _Reader, meta: dict[str, Any], name: str) -> str:
    if meta.get(name) is None:
        raise r.fail(name, "missing")
    text = _optional_text(r, meta, name)
    if not text:
        raise r.fail(name, "empty")
    return text


def _optional_text(r: _Reader, meta: dict[str, Any], name: str) -> str | None:
    value = meta.get(name)
    if value is None:
        return None
    text = _scalar_text(value)
    if text is None:
        raise r.fail(name, f"expected text, got {_kind(value)}")
    return " ".join(clean_text(text).split()) or None


def _required_date(r: _Reader, meta: dict[str, Any], name: str) -> datetime:
    if meta.get(name) is None:
        raise r.fail(name, "missing")
    value = _optional_date(r, meta, name)
    assert value is not None
    return value


def _optional_date(r: _Reader, meta: dict[str, Any], name: str) -> datetime | None:
    value = meta.get(name)
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except ValueError as exc:
        raise r.fail(name, str(exc)) from None


def parse_datetime(value: Any) -> datetime:
    """An aware UTC datetime in whole seconds. Naive values (no offset, no Z) are taken as UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not an ISO 8601 date: {value!r}") from None
    else:
        raise ValueError(f"expected a date, got {_kind(value)}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def _link(r: _Reader, meta: dict[str, Any]) -> str:
    candidates = [name for name in ("webUrl", "originalUrl") if meta.get(name) is not None]
    if not candidates:
        raise r.fail("webUrl", "missing (and no originalUrl)")
    reasons = []
    for name in candidates:
        try:
            url = absolute_link(meta[name])
        except InvalidURL as exc:
            reasons.append((name, str(exc)))
            continue
        for bad_name, reason in reasons:
            r.warn(bad_name, f"{reason}; using {name}")
        return url
    raise r.fail(*reasons[0])


class _Same:
    """A front-matter value (YAML gives dicts and lists) known by its repr, which tells apart every two values
    of the types YAML gives that are not the same, so that a cache can hold it."""

    __slots__ = ("value", "_text", "_hash")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._text = repr(value)
        self._hash = hash(self._text)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and self._text == other._text


_NOWHERE = Document(source="", metadata={}, body="")
Remembered = tuple[Any, tuple[tuple[str | None, str, bool], ...], tuple[str | None, str] | None]


def _remembered(r: _Reader, read: Callable[[_Reader, Any], T], value: Any) -> T:
    """read(r, value), worked out once for each distinct value: the provider of an article (its name,
    domain and logo, whose URL is checked and normalised) and its topics come back in thousands of files
    of a store, and reading them is a sixth of reading a file. The problems found are told again for each
    file, with its name. What is read is immutable, so articles can share it."""
    result, problems, failure = _read_once(read, _Same(value), r.base)
    r.problems.extend(Problem(r.doc.source, name, reason, fatal) for name, reason, fatal in problems)
    if failure is not None:
        raise r.fail(*failure)
    return result  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=4096)
def _read_once(read: Callable[[_Reader, Any], Any], value: _Same, base: str | None) -> Remembered:
    """What read() gives for `value`, the problems it finds and the one it fails with, found by a reader of
    no file in particular."""
    scratch = _Reader(_NOWHERE, base)
    try:
        result, failure = read(scratch, value.value), None
    except _Invalid as invalid:
        result, failure = None, (invalid.problem.field, invalid.problem.reason)
    return result, tuple((p.field, p.reason, p.fatal) for p in scratch.problems), failure


def _provider(r: _Reader, value: Any) -> Provider | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise r.fail("provider", f"expected a mapping, got {_kind(value)}")
    name = _optional_text(r, value, "name")
    domain = _optional_text(r, value, "domain")
    if domain and not re.fullmatch(r"[A-Za-z0-9.-]+(:\d+)?", domain):
        r.warn("provider.domain", f"not a domain name: {domain!r}")
        domain = None
    logos = _images(r, value.get("images"), "provider.images")
    if name is None and domain is None and not logos:
        return None
    return Provider(name=name, domain=domain.lower() if domain else None, logo=logos[0] if logos else None)


def _topics(r: _Reader, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        r.problems.append(r.fail("topics", f"expected a list of topics, got {_kind(value)}").problem)
        return ()
    topics: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(value):
        if item is None:
            continue
        text = _scalar_text(item)
        if text is None:  # every bad topic is told, not only the first
            r.problems.append(r.fail(f"topics[{index}]", f"expected a topic name, got {_kind(item)}").problem)
            continue
        name = " ".join(clean_text(text).split())
        if name and name.casefold() not in seen:
            seen.add(name.casefold())
            topics.append(name)
    return tuple(topics)


def _images(r: _Reader, value: Any, name: str) -> tuple[Image, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise r.fail(name, f"expected a list of images, got {_kind(value)}")
    images: list[Image] = []
    for index, item in enumerate(value):
        where = f"{name}[{index}]"
        if isinstance(item, dict):
            raw_url, width, height = item.get("url"), item.get("width"), item.get("height")
            where += ".url"
        else:
            raw_url, width, height = item, None, None
        if raw_url is None:
            continue  # the store writes `url: null` for an image it could not fetch: nothing to publish
        try:
            url = publishable(clean_text(raw_url) if isinstance(raw_url, str) else raw_url, r.base)
        except InvalidURL as exc:
            r.warn(where, f"{exc}; image dropped")
            continue
        if any(image.url == url for image in images):
            continue
        images.append(Image(url=url, width=_dimension(width), height=_dimension(height),
                            mime_type=guess_image_type(url)))
    return tuple(images)


def _dimension(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and value.strip().isdigit() and int(value) > 0:
        return int(value)
    return None


def guess_image_type(url: str) -> str:
    """MIME type from the path's extension, else from a `format=` query parameter (image CDNs use it)."""
    path, query = _path_and_query(url)
    extension = path.rsplit("/", 1)[-1].rpartition(".")[2].lower() if "." in path else ""
    if extension in _IMAGE_TYPES:
        return _IMAGE_TYPES[extension]
    for key, value in parse_qsl(query):
        if key.lower() in ("format", "fm") and value.lower() in _IMAGE_TYPES:
            return _IMAGE_TYPES[value.lower()]
    # Not the mimetypes module: it reads the machine's own tables, and the same store must give the same
    # bytes on every machine.
    return UNKNOWN_TYPE


def _path_and_query(url: str) -> tuple[str, str]:
    """The path and the query of a URL, as urlsplit() gives them; for an http(s) URL (every one an Article
    holds) without its cost: a cold build asks for every image of every article."""
    if not (url.startswith(("https://", "http://")) and url.isascii() and url.isprintable() and " " not in url):
        parts = urlsplit(url)
        return parts.path, parts.query
    rest, _, query = url.partition("#")[0].partition("?")
    start = rest.find("/", rest.find("//") + 2)
    return (rest[start:] if start >= 0 else ""), query


def _flag(r: _Reader, meta: dict[str, Any], name: str) -> bool:
    value = meta.get(name, True)
    if value is None:
        return True
    if not isinstance(value, bool):
        raise r.fail(name, f"expected true or false, got {_kind(value)}")
    return value


def _number(r: _Reader, meta: dict[str, Any], name: str) -> float | None:
    value = meta.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise r.fail(name, f"expected a number, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"[:80]
