"""Enclosure probing: learn the real size and type of each enclosure (article images, provider logos) with
HTTP requests, without hammering anyone's server.

RSS 2.0 requires an enclosure's length in bytes and its MIME type; the store only knows image URLs.
- One probe per URL: a HEAD; when the server refuses HEAD (400, 403, 405, 406, 501) or gives no length, a GET
  of the first byte (`Range: bytes=0-0`) whose `Content-Range` names the total size (RFC 9110 14.4). No body
  is ever read: responses are streamed and closed unread.
- A cache in the state folder (never the served folder), keyed by URL, keeps what was learned across builds
  and restarts: a success is re-checked after `enclosures.max_age`, a failure is retried after a back-off
  that doubles with each failure (1 hour, 2, 4, ... at most max_age). A build probes at most
  `enclosures.max_probes` URLs, never-seen ones first; a build with a warm cache makes no request at all.
- Politeness: one requests.Session, a User-Agent naming the project, connect and read timeouts, a small
  thread pool (`enclosures.workers`) with at most `enclosures.per_host` requests to one host at a time,
  http and https only, at most MAX_REDIRECTS redirects (followed by requests). A 429 or 503 whose
  Retry-After asks for a short pause is retried after it (urllib3's Retry, web.Retries). A host that does
  not answer at all (refused, timed out) is not asked again in the same build.
- A probe that fails (404, 500, timeout, garbage headers, a page that is not an image) never fails the
  build: the enclosure keeps what was known before, else its inferred type and length 0, and the failure is
  logged and counted.

The stage is plain data in and out: probe_enclosures() takes URLs and returns what is known about them;
apply_sizes() puts that into the feeds' images. Only the HTTP requests run on the pool's threads.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from itertools import zip_longest
from pathlib import Path
from urllib.parse import urlsplit

import requests

from publisher.caches.enclosures import MEDIA_TYPE, ProbeRecord, cache_path, load_cache, save_cache
from publisher.config import EnclosureConfig
from publisher.stages.articles import Article, Image
from publisher.stages.selection import Feed
from publisher.web import Retries, describe_failure, new_session

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3
PROBE_RETRIES = 2  # retries within a build, only when the server asks for a short pause (Retry-After)
LONGEST_WAIT = 10.0  # seconds: a longer Retry-After is left to the back-off between builds
RETRY_AFTER = 3600.0  # seconds before the first retry of a failed probe; doubles with each failure
MAX_LENGTH = 10**12  # a larger "size" is garbage, not an image

# HEAD refusals seen in the wild: 405 and 501 by the book, 400/403/406 from CDNs and signed-URL stores.
_HEAD_REFUSED = frozenset({400, 403, 405, 406, 501})
# Identity: a Content-Length of a compressed response would not be the size a reader downloads.
_PROBE_HEADERS = {"Accept-Encoding": "identity"}
# Types that say nothing: the type inferred from the URL is more useful.
_VAGUE_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
_CONTENT_RANGE = re.compile(r"bytes\s+\d+-\d+/(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Answer:
    """What one probe learned: a length and perhaps a type, or an error."""

    length: int | None = None
    mime_type: str | None = None  # None: the server's type says nothing useful
    error: str | None = None
    unreachable: bool = False  # the host did not answer at all (refused, timed out)
    asked: bool = True  # False: not asked, its host was unreachable earlier in this run


@dataclass(frozen=True)
class Plan:
    due: tuple[str, ...]  # the URLs to probe in this build, in order
    deferred: int  # URLs due but over this build's budget: left for the next build


@dataclass(frozen=True)
class ProbeReport:
    sizes: dict[str, ProbeRecord]  # URL -> what is known, for every given URL whose length is known
    probed: int = 0  # URLs probed in this build
    failed: int = 0  # of those, how many failed
    deferred: int = 0


class _Refused(Exception):
    """The server answered, but not with a usable size."""


def enclosure_urls(feeds: Iterable[Feed]) -> list[str]:
    """Every enclosure URL of the feeds' entries, once, in feed order (the overall feed, newest first,
    comes first: the budget goes to what readers see first)."""
    return list(dict.fromkeys(image.url for feed in feeds for article in feed.entries
                              for image in article.enclosures))


def probe_enclosures(urls: Sequence[str], state: Path, settings: EnclosureConfig, agent: str, now: float,
                     stop_requested: Callable[[], bool] = lambda: False) -> ProbeReport:
    """Learn the size and type of `urls`: from the cache in `state` where it is fresh, else with at most
    `settings.max_probes` probes. `now` is epoch seconds."""
    path = cache_path(state)
    cache = load_cache(path)
    plan = plan_probes(urls, cache, now, settings)
    answers = probe_urls(plan.due, settings, agent, stop_requested) if plan.due else {}
    _log_answers(answers, plan.deferred)
    known = prune(record(cache, answers, now), urls, now, settings.max_age)
    if known != cache:
        save_cache(path, known)
    sizes = {url: known[url] for url in dict.fromkeys(urls) if url in known and known[url].length}
    failed = sum(1 for answer in answers.values() if answer.error)
    return ProbeReport(sizes=sizes, probed=len(answers), failed=failed, deferred=plan.deferred)


def apply_sizes(feeds: Iterable[Feed], sizes: Mapping[str, ProbeRecord]) -> list[Feed]:
    """The feeds with every enclosure's learned length and type. Where no type was learned the inferred
    one stays; where no length was learned the image is unchanged (length 0)."""
    changed: dict[Article, Article] = {}  # an article sits in several feeds: resize it once

    def image(old: Image) -> Image:
        known = sizes.get(old.url)
        if known is None or not known.length:
            return old
        return replace(old, length=known.length, mime_type=known.mime_type or old.mime_type)

    def article(old: Article) -> Article:
        if old not in changed:
            provider = old.provider
            if provider is not None and provider.logo is not None:
                provider = replace(provider, logo=image(provider.logo))
            changed[old] = replace(old, images=tuple(image(i) for i in old.images), provider=provider)
        return changed[old]

    return [replace(feed, entries=tuple(article(a) for a in feed.entries)) for feed in feeds]


# --- what to probe --------------------------------------------------------------------------------------

def plan_probes(urls: Iterable[str], cache: Mapping[str, ProbeRecord], now: float, settings: EnclosureConfig) -> Plan:
    """The URLs due for a probe, never-seen ones first (in the given order), then the longest unchecked;
    at most settings.max_probes of them."""
    new: list[str] = []
    stale: list[str] = []
    for url in dict.fromkeys(urls):
        known = cache.get(url)
        if known is None:
            new.append(url)
        elif is_due(known, now, settings.max_age):
            stale.append(url)
    stale.sort(key=lambda url: cache[url].checked)
    due = new + stale
    budget = settings.max_probes
    return Plan(due=tuple(due[:budget]), deferred=max(0, len(due) - budget))


def is_due(known: ProbeRecord, now: float, max_age: float) -> bool:
    age = now - known.checked
    return age < 0 or age >= retry_after(known.failures, max_age)  # age < 0: the clock went back


def retry_after(failures: int, max_age: float) -> float:
    """Seconds a record stays good: max_age after a success; after failures a back-off doubling from
    RETRY_AFTER, never longer than max_age."""
    if failures <= 0:
        return max_age
    return min(RETRY_AFTER * 2.0 ** min(failures - 1, 32), max_age)


def record(cache: Mapping[str, ProbeRecord], answers: Mapping[str, Answer], now: float) -> dict[str, ProbeRecord]:
    """The cache after this build's answers. A failure keeps the size learned before (a flapping server
    must not flip a feed's bytes back and forth) and counts towards the back-off."""
    updated = dict(cache)
    for url, answer in answers.items():
        before = cache.get(url)
        if answer.error is None:
            updated[url] = ProbeRecord(length=answer.length, mime_type=answer.mime_type, checked=now)
        else:
            updated[url] = ProbeRecord(length=before.length if before else None,
                                 mime_type=before.mime_type if before else None, checked=now,
                                 failures=(before.failures if before else 0) + 1, error=answer.error)
    return updated


def prune(cache: Mapping[str, ProbeRecord], urls: Iterable[str], now: float, max_age: float) -> dict[str, ProbeRecord]:
    """Forget URLs no feed uses whose record has expired anyway, so the cache does not grow forever."""
    wanted = set(urls)
    return {url: known for url, known in cache.items() if url in wanted or now - known.checked < max_age}


# --- the requests ---------------------------------------------------------------------------------------

def probe_urls(urls: Sequence[str], settings: EnclosureConfig, agent: str,
               stop_requested: Callable[[], bool] = lambda: False) -> dict[str, Answer]:
    """Probe every URL once with one session on a pool of settings.workers threads, at most
    settings.per_host at a time to one host. URLs left when a stop is requested are not probed (and are
    missing from the answers)."""
    gates = {host: threading.BoundedSemaphore(settings.per_host) for host in map(_host, urls)}
    unreachable: dict[str, str] = {}  # host -> why it did not answer
    lock = threading.Lock()

    def task(session: requests.Session, url: str) -> Answer | None:
        host = _host(url)
        with gates[host]:
            if stop_requested():
                return None
            with lock:
                reason = unreachable.get(host)
            if reason is not None:
                return Answer(error=f"not asked: {host} did not answer earlier ({reason})",
                              unreachable=True, asked=False)
            answer = probe_url(session, url, settings.timeout)
            if answer.unreachable:
                with lock:
                    unreachable.setdefault(host, answer.error or "no answer")
            return answer

    answers: dict[str, Answer] = {}
    # Leaving the `with` shuts the pool down (waiting for its threads) before the session closes.
    with new_session(agent, settings.workers, _retries(), MAX_REDIRECTS) as session, \
            ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="probe") as pool:
        # Hosts taken in turn, so that the per-host gates rarely hold a worker idle.
        futures = {pool.submit(task, session, url): url for url in _alternate_hosts(urls)}
        for future in as_completed(futures):
            answer = future.result()
            if answer is not None:
                answers[futures[future]] = answer
    return {url: answers[url] for url in urls if url in answers}


def _retries() -> Retries:
    """Only an answer that names its own short pause (429 or 503 with a Retry-After of at most
    LONGEST_WAIT seconds) is retried within the build; every other failure waits for the back-off between
    builds (retry_after()), which a longer Retry-After falls to as well."""
    return Retries(total=PROBE_RETRIES, connect=0, read=0, other=0, status=PROBE_RETRIES,
                   allowed_methods={"HEAD", "GET"}, raise_on_status=False, longest_wait=LONGEST_WAIT)


def probe_url(session: requests.Session, url: str, timeout: float) -> Answer:
    """The size and type of one URL, or why they could not be learned. Never raises for what a server
    does or fails to do."""
    try:
        return _probe(session, url, timeout)
    except _Refused as exc:
        return Answer(error=str(exc))
    except (requests.ConnectionError, requests.Timeout) as exc:
        return Answer(error=describe_failure(exc), unreachable=True)
    except requests.RequestException as exc:
        return Answer(error=describe_failure(exc))


def _probe(session: requests.Session, url: str, timeout: float) -> Answer:
    with _open(session, "HEAD", url, timeout) as head:
        if _success(head):
            length = _content_length(head)
            if length:
                return _answer(head, length)
        elif head.status_code not in _HEAD_REFUSED:
            raise _Refused(_status(head))
    with _open(session, "GET", url, timeout, {"Range": "bytes=0-0"}) as get:
        if get.status_code == 206:
            length = _range_total(get)
        elif _success(get):
            length = _content_length(get)  # the server ignored the range: the full size, left unread
        else:
            raise _Refused(_status(get))
        if not length:
            raise _Refused("no usable Content-Length or Content-Range")
        return _answer(get, length)


def _open(session: requests.Session, method: str, url: str, timeout: float,
          headers: Mapping[str, str] | None = None) -> requests.Response:
    """The response to `method` on `url`, after the redirects requests follows (at most MAX_REDIRECTS, each
    to an http(s) URL: the session has no adapter for another scheme); the body is not read (the caller
    closes the response)."""
    try:
        return session.request(method, url, headers={**_PROBE_HEADERS, **(headers or {})},
                               timeout=(timeout, timeout), stream=True, allow_redirects=True)
    except requests.TooManyRedirects:
        raise _Refused(f"more than {MAX_REDIRECTS} redirects") from None


def _answer(response: requests.Response, length: int) -> Answer:
    mime_type = _media_type(response.headers.get("Content-Type"))
    if mime_type is None or mime_type in _VAGUE_TYPES:
        return Answer(length=length)
    if not mime_type.startswith("image/"):
        # An HTML "not found" page served with 200 (a soft 404): its size is not the image's.
        raise _Refused(f"serves {mime_type}, not an image")
    return Answer(length=length, mime_type=mime_type)


def _success(response: requests.Response) -> bool:
    return 200 <= response.status_code < 300


def _status(response: requests.Response) -> str:
    return f"HTTP {response.status_code}{f' {response.reason}' if response.reason else ''}"


def _content_length(response: requests.Response) -> int | None:
    return _size(response.headers.get("Content-Length", ""))


def _range_total(response: requests.Response) -> int | None:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    return _size(match.group(1)) if match else None


def _size(text: str) -> int | None:
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if 0 < value <= MAX_LENGTH else None


def _media_type(header: str | None) -> str | None:
    """`image/png` from `image/png; charset=binary`; None for a missing or malformed header."""
    if not header:
        return None
    value = header.split(";", 1)[0].strip().lower()
    return value if MEDIA_TYPE.fullmatch(value) else None


def _host(url: str) -> str:
    """Host and port: what "one server" means for the per-host limit."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return parts.netloc.lower()
    return f"{parts.hostname or ''}:{port or (443 if parts.scheme == 'https' else 80)}"


def _alternate_hosts(urls: Sequence[str]) -> list[str]:
    """The URLs reordered to take hosts in turn: a.com, b.org, a.com, b.org, ..."""
    by_host: dict[str, list[str]] = defaultdict(list)
    for url in urls:
        by_host[_host(url)].append(url)
    return [url for turn in zip_longest(*by_host.values()) for url in turn if url is not None]


def _log_answers(answers: Mapping[str, Answer], deferred: int) -> None:
    not_asked: dict[str, int] = defaultdict(int)
    for url, answer in sorted(answers.items()):
        if answer.error is None:
            logger.debug("enclosure %s: %s bytes, %s", url, answer.length, answer.mime_type or "type not given")
        elif answer.asked:
            logger.warning("enclosure %s: %s; retried in a later build", url, answer.error)
        else:
            not_asked[_host(url)] += 1
    for host, count in sorted(not_asked.items()):
        logger.warning("%d more enclosures on %s not probed: the host did not answer", count, host)
    if answers or deferred:
        failed = sum(1 for answer in answers.values() if answer.error)
        logger.debug("probed %d enclosures, %d failed; %d left for later builds (enclosures.max_probes)",
                    len(answers), failed, deferred)
