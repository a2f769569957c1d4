"""Preview server: `publisher serve` answers HTTP over the output folder the way deploy/nginx.conf does, so
that feeds can be tried out in a browser or a feed reader before a real web server is set up.

Like nginx it sends each feed's own Content-Type with charset=utf-8, a strong ETag built from the file's
modification time and size, Last-Modified, 304 answers to If-None-Match and If-Modified-Since (RFC 9110
13.1), and the precompressed `.gz` copy to a client that accepts gzip (as `gzip_static on`). It is
for trying things out, bound to loopback by default: use nginx, or any static server, in production.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import signal
import socket
import threading
from collections.abc import Callable
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from publisher.config import Config
from publisher.errors import ServeError
from publisher.pages import INDEX, OPML_MEDIA_TYPE
from publisher.precompress import SUFFIX as GZIP_SUFFIX
from publisher.render import FORMATS

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# The types nginx is told to send in deploy/nginx.conf; anything else goes by the standard table.
CONTENT_TYPES = {
    **{fmt.extension: fmt.media_type for fmt in FORMATS.values()},
    ".html": "text/html",
    ".opml": OPML_MEDIA_TYPE,
}
# Previews must show a rebuild at once: the browser may cache, but revalidates every time (cheap: 304).
CACHE_CONTROL = "no-cache"
FEED_EXTENSIONS = frozenset(fmt.extension for fmt in FORMATS.values())


class PreviewServer(ThreadingHTTPServer):
    daemon_threads = True  # a slow client never keeps the process from stopping

    def __init__(self, address: tuple[str, int], root: Path, base_url: str, hubs: tuple[str, ...]) -> None:
        self.root = root
        self.base_url = base_url
        self.hubs = hubs
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET  # before binding
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def make_server(root: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, base_url: str = "",
                hubs: tuple[str, ...] = ()) -> PreviewServer:
    """A bound server over `root` (port 0 picks a free port). Raises ServeError when it cannot listen."""
    if not root.is_dir():
        raise ServeError(f"{root}: output folder not found; run `publisher build` first")
    try:
        return PreviewServer((host, port), root.resolve(), base_url, hubs)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(config: Config, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          announce: Callable[[str], None] = lambda url: None) -> None:
    """Serve `config.output` until SIGINT or SIGTERM. `announce` gets the URL once the server listens."""
    if not isinstance(config.output, Path):
        raise ServeError(f"output: {config.output} is a bucket: serve it with its CDN or the storage's own "
                         "website endpoint; `publisher serve` previews a local output folder")
    server = make_server(config.output, host, port, config.site.base_url, config.websub.hubs)
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


class _Handler(BaseHTTPRequestHandler):
    server: PreviewServer
    server_version = "publisher-serve"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def log_message(self, format: str, *args: object) -> None:
        logger.info("%s %s", self.address_string(), format % args)

    def _answer(self, send_body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        target = self._resolve(path)
        if target is None:
            self._error(HTTPStatus.NOT_FOUND)
            return
        if target.is_dir():
            if not path.endswith("/"):
                self._redirect(f"{path}/")
                return
            target = target / INDEX
        gzipped = target.with_name(target.name + GZIP_SUFFIX)
        has_gzip = target.suffix != GZIP_SUFFIX and gzipped.is_file()
        chosen = gzipped if has_gzip and _accepts_gzip(self.headers.get("Accept-Encoding", "")) else target
        try:
            stream = chosen.open("rb")
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            self._error(HTTPStatus.NOT_FOUND)
            return
        with stream:
            self._send_file(stream, target, chosen is gzipped, has_gzip, send_body)

    def _resolve(self, path: str) -> Path | None:
        """The file or folder below the root for a URL path; None for anything outside it or hidden
        (dotfiles include the writer's temporary files)."""
        parts = [part for part in path.split("/") if part]
        if "\0" in path or any(part.startswith(".") for part in parts):
            return None
        candidate = self.server.root.joinpath(*parts)
        try:
            resolved = candidate.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError, RuntimeError, OSError):
            return None
        if resolved != self.server.root and self.server.root not in resolved.parents:
            return None
        return resolved

    def _send_file(self, stream: BinaryIO, target: Path, gzipped: bool, has_gzip: bool, send_body: bool) -> None:
        # fstat the open file: a rebuild may replace the path meanwhile, the open file stays consistent.
        stat = os.fstat(stream.fileno())
        etag = f'"{int(stat.st_mtime):x}-{stat.st_size:x}"'  # nginx's form
        last_modified = formatdate(int(stat.st_mtime), usegmt=True)
        headers = {"ETag": etag, "Last-Modified": last_modified, "Cache-Control": CACHE_CONTROL}
        if has_gzip:
            headers["Vary"] = "Accept-Encoding"
        link = self._link_header(target)
        if link:
            headers["Link"] = link
        if _not_modified(self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since"),
                         etag, int(stat.st_mtime)):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self._headers(headers)
            return
        self.send_response(HTTPStatus.OK)
        headers["Content-Type"] = content_type(target)
        headers["Content-Length"] = str(stat.st_size)
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        self._headers(headers)
        if send_body:
            self.wfile.write(stream.read())

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

    def _redirect(self, location: str) -> None:
        self.send_response(HTTPStatus.MOVED_PERMANENTLY)
        self._headers({"Location": location, "Content-Length": "0"})

    def _error(self, status: HTTPStatus) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self._headers({"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body))})
        if self.command != "HEAD":
            self.wfile.write(body)


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
