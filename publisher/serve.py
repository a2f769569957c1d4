"""Preview server: `publisher serve` answers HTTP over the output folder the way deploy/nginx.conf does, so
that feeds and pages can be tried out in a browser or a feed reader before a real web server is set up.

It is the standard library's SimpleHTTPRequestHandler (as Pelican's preview server is) with what the nginx
configuration adds: each feed's own Content-Type with charset=utf-8, a strong ETag built from the file's
modification time and size (nginx's form), 304 answers to If-None-Match and If-Modified-Since (RFC 9110
13.1), the precompressed `.gz` copy to a client that accepts gzip (as `gzip_static on`, with Vary), CORS on
the feeds and the OPML list with an OPTIONS preflight, Cache-Control from the build schedule, nosniff
everywhere, and the WebSub Link header. It is for trying things out, bound to loopback by default: use nginx,
or any static server, in production.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from publisher.config import DEFAULTS, STALE_WHILE_REVALIDATE, Config, ScheduleConfig, parse_duration
from publisher.errors import ServeError
from publisher.running.schedule import interval_seconds
from publisher.stages.pages import INDEX, OPML_MEDIA_TYPE, PAGE_EXTENSION
from publisher.stages.precompress import SUFFIX as GZIP_SUFFIX
from publisher.stages.render import FORMATS

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# The types nginx is told to send in deploy/nginx.conf; anything else goes by the standard table.
CONTENT_TYPES = {
    **{fmt.extension: fmt.media_type for fmt in FORMATS.values()},
    PAGE_EXTENSION: "text/html",
    ".opml": OPML_MEDIA_TYPE,
}
FEED_EXTENSIONS = frozenset(fmt.extension for fmt in FORMATS.values())
# What a script on another site may read: the feeds and the OPML list, with their validators, so that it can
# poll with If-None-Match (the preflight allows the conditional request headers).
CORS_SUFFIXES = FEED_EXTENSIONS | {".opml"}
CORS_HEADERS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "ETag, Last-Modified"}
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "If-None-Match, If-Modified-Since",
    "Access-Control-Max-Age": "86400",
    "Content-Length": "0",
}
DEFAULT_MAX_AGE = int(parse_duration(DEFAULTS["schedule"]["every"]) or 900)


class PreviewServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never keeps the process from stopping

    def __init__(self, address: tuple[str, int], root: Path, base_url: str, hubs: tuple[str, ...],
                 max_age: int) -> None:
        self.root = root
        self.base_url = base_url
        self.hubs = hubs
        self.file_headers = FileHeaders(max_age)
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET  # before binding
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]  # an IP socket's name: (host, port, ...), host a str
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def make_server(root: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, base_url: str = "",
                hubs: tuple[str, ...] = (), max_age: int = DEFAULT_MAX_AGE) -> PreviewServer:
    """A bound server over `root` (port 0 picks a free port). Raises ServeError when it cannot listen."""
    if not root.is_dir():
        raise ServeError(f"{root}: output folder not found; run `publisher build` first")
    try:
        return PreviewServer((host, port), root.resolve(), base_url, hubs, max_age)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(config: Config, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          announce: Callable[[str], None] = lambda url: None) -> None:
    """Serve `config.output` until SIGINT or SIGTERM. `announce` gets the URL once the server listens."""
    if not isinstance(config.output, Path):
        raise ServeError(f"output: {config.output} is a bucket: serve it with its CDN or the storage's own "
                         "website endpoint; `publisher serve` previews a local output folder")
    server = make_server(config.output, host, port, config.site.base_url, config.websub.hubs,
                         cache_max_age(config.schedule))
    with server:
        restore = _stop_on_signals(server)
        try:
            announce(server.url)
            logger.info("serving %s at %s", server.root, server.url)
            server.serve_forever()
        finally:
            restore()
    logger.info("stopped serving %s", server.root)


def _stop_on_signals(server: PreviewServer) -> Callable[[], None]:
    """SIGINT and SIGTERM end serve_forever(). shutdown() waits for the loop, so it runs on another thread
    (the handler runs on the loop's own). Returns a function that puts the old handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # only the main thread may set handlers; its caller stops the server itself

    def stop(signum: int, frame: object) -> None:
        logger.info("%s received, stopping", signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return restore


class _Handler(SimpleHTTPRequestHandler):
    """The standard library's static file handler (path translation, the redirect of a folder to its URL
    with "/", copying, errors), with what nginx does on top: the precompressed copy, ETag and
    If-None-Match, the headers of deploy/nginx.conf, and 404 for dotfiles, folder listings and anything
    outside the folder."""

    server: PreviewServer
    server_version = "publisher-serve"
    protocol_version = "HTTP/1.1"

    def __init__(self, request: socket.socket, client_address: tuple[str, int], server: PreviewServer) -> None:
        super().__init__(request, client_address, server, directory=str(server.root))

    def log_message(self, format: str, *args: object) -> None:
        logger.info("%s %s", self.address_string(), format % args)

    def end_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")  # every answer, errors included
        super().end_headers()

    def do_OPTIONS(self) -> None:
        """A CORS preflight for a feed or the OPML list (as nginx answers it); nothing else takes OPTIONS."""
        if Path(urlsplit(self.path).path).suffix not in CORS_SUFFIXES:
            self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
            self._headers({"Allow": "GET, HEAD", "Content-Length": "0"})
            return
        self.send_response(HTTPStatus.NO_CONTENT)
        self._headers({**PREFLIGHT_HEADERS, "Cache-Control": self.server.file_headers.feed_cache_control})

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(HTTPStatus.NOT_FOUND)  # no listing of folders, as nginx without autoindex
        return None

    def guess_type(self, path: str | os.PathLike[str]) -> str:
        return content_type(Path(path))

    def send_head(self) -> BinaryIO | None:
        """Answer the headers of a GET or HEAD; the open file to copy when a body follows."""
        url_path = unquote(urlsplit(self.path).path)
        if "\0" in url_path or any(part.startswith(".") for part in url_path.split("/")):
            self.send_error(HTTPStatus.NOT_FOUND)  # dotfiles include the writer's temporary files
            return None
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            if not url_path.endswith("/"):
                return super().send_head()  # 301 to the folder's URL with "/"
            path = path / INDEX
        target = self._inside(path)
        if target is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        chosen = self._variant(target)
        try:
            stream = chosen.open("rb")
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        try:
            return self._send_file_head(stream, target, gzipped=chosen != target)
        except BaseException:
            stream.close()
            raise

    def _inside(self, path: Path) -> Path | None:
        """The file at `path` when it is one, below the root once links are followed; else None."""
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        root = self.server.root
        if root not in resolved.parents or not resolved.is_file():
            return None
        return resolved

    def _variant(self, target: Path) -> Path:
        """The precompressed copy for a client that accepts gzip, when there is one and it is the copy of
        this very file (the writer gives a copy its file's modification time; a file changed by hand keeps
        its stale copy from being served)."""
        if target.suffix == GZIP_SUFFIX or not _accepts_gzip(self.headers.get("Accept-Encoding", "")):
            return target
        copy = target.with_name(target.name + GZIP_SUFFIX)
        return copy if _same_mtime(copy, target) else target

    def _send_file_head(self, stream: BinaryIO, target: Path, gzipped: bool) -> BinaryIO | None:
        # fstat the open file: a rebuild may replace the path meanwhile, the open file stays consistent.
        stat = os.fstat(stream.fileno())
        etag = f'"{int(stat.st_mtime):x}-{stat.st_size:x}"'  # nginx's form
        headers = {"ETag": etag, "Last-Modified": formatdate(int(stat.st_mtime), usegmt=True),
                   **self.server.file_headers.for_file(target)}
        if target.suffix != GZIP_SUFFIX and target.with_name(target.name + GZIP_SUFFIX).is_file():
            headers["Vary"] = "Accept-Encoding"  # as gzip_vary: the answer depends on it
        link = self._link_header(target)
        if link:
            headers["Link"] = link
        if _not_modified(self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since"),
                         etag, int(stat.st_mtime)):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self._headers(headers)
            stream.close()
            return None
        self.send_response(HTTPStatus.OK)
        headers["Content-Type"] = self.guess_type(target)
        headers["Content-Length"] = str(stat.st_size)
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        self._headers(headers)
        return stream

    def _link_header(self, target: Path) -> str | None:
        """WebSub discovery in HTTP (W3C WebSub 4): the hubs and the feed's own URL, as in the feed."""
        if not self.server.hubs or target.suffix not in FEED_EXTENSIONS:
            return None
        relative = target.relative_to(self.server.root).as_posix()
        links = [f'<{hub}>; rel="hub"' for hub in self.server.hubs]
        return ", ".join([*links, f'<{self.server.base_url}{relative}>; rel="self"'])

    def _headers(self, headers: dict[str, str]) -> None:
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()


@dataclass(frozen=True)
class FileHeaders:
    """The headers deploy/nginx.conf adds, by kind of file. `max_age` is the build interval: a reader
    polling more often gets nothing new; after it, a cache may serve the old feed for a day while it
    revalidates in the background (RFC 5861)."""

    max_age: int

    @property
    def feed_cache_control(self) -> str:
        return f"public, max-age={self.max_age}, stale-while-revalidate={STALE_WHILE_REVALIDATE}"

    def for_file(self, target: Path) -> dict[str, str]:
        if target.suffix in CORS_SUFFIXES:
            return {"Cache-Control": self.feed_cache_control, **CORS_HEADERS}
        if target.suffix == PAGE_EXTENSION:
            return {"Cache-Control": f"public, max-age={self.max_age}"}
        return {}


def cache_max_age(schedule: ScheduleConfig) -> int:
    """Seconds between two builds (`schedule.every`, or the shortest gap between runs of `schedule.cron`)."""
    return max(1, round(interval_seconds(schedule)))


def content_type(path: Path) -> str:
    """The Content-Type for a file, with charset=utf-8 for the text the publisher writes."""
    if path.suffix == GZIP_SUFFIX:  # asked for by name: the compressed bytes themselves, not a feed
        return "application/gzip"
    kind = CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    textual = path.suffix in CONTENT_TYPES or kind.startswith("text/") or kind.endswith(("+xml", "+json"))
    return f"{kind}; charset=utf-8" if textual else kind


def _accepts_gzip(header: str) -> bool:
    """Accept-Encoding names gzip (or *) with a quality above zero (RFC 9110 12.5.3)."""
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        quality = params.strip().lower()
        if quality.startswith("q="):
            try:
                return float(quality[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def _same_mtime(copy: Path, original: Path) -> bool:
    try:
        return copy.stat().st_mtime_ns == original.stat().st_mtime_ns
    except OSError:
        return False


def _not_modified(if_none_match: str | None, if_modified_since: str | None, etag: str, mtime: int) -> bool:
    """RFC 9110 13.2.2: If-None-Match wins over If-Modified-Since; weak comparison for If-None-Match."""
    if if_none_match is not None:
        tags = [tag.strip() for tag in if_none_match.split(",")]
        return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)
    if if_modified_since is None:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False  # an unparsable date is ignored (RFC 9110 13.1.3)
    return since.tzinfo is not None and mtime <= since.timestamp()
