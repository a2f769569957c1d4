"""Real HTTP servers for the tests of the stages that talk to the web (enclosure probing, WebSub pings).

A LocalServer is a threaded http.server on 127.0.0.1, port 0, started inside the test. It answers each
request with what a `respond` function of the test returns, sends real bytes, and records every request it
got. The `local_only` fixture makes sure that nothing a test does reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering (cut short when the server stops)
    raw: bytes | None = None  # sent as is instead of a well-formed response
    send_length: bool = True  # False: no Content-Length header unless `headers` has one


class LocalServer:
    """A threaded HTTP server on 127.0.0.1:<free port> answering with `respond(request)`."""

    def __init__(self, respond: Callable[[Request], Reply]) -> None:
        self.respond = respond
        self.requests: list[Request] = []
        self.sent_bytes: list[int] = []  # body bytes each GET managed to send before the client left
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), _handler(self))
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits for the next poll.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def count(self, method: str | None = None, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if (method is None or r.method == method)
                       and (path is None or r.path == path))

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self) -> None:
            self._answer()

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                              self.rfile.read(size) if size else b"")
            server._record(request)
            try:
                reply = server.respond(request)
                if reply.delay:
                    server.stopping.wait(reply.delay)
            finally:
                # Out of flight before the first byte of the answer leaves: a client that has it may already
                # send its next request, which counted this one too would make more in flight than it had.
                server._done()
            if reply.raw is not None:
                self.wfile.write(reply.raw)
                self.close_connection = True
                return
            self.send_response(reply.status)
            names = {name.lower() for name, _ in reply.headers}
            for name, value in reply.headers:
                self.send_header(name, value)
            if reply.send_length and "content-length" not in names:
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD" and reply.body:
                self._send_body(reply.body)

        def _send_body(self, body: bytes) -> None:
            sent = 0
            try:
                for start in range(0, len(body), 65536):
                    self.wfile.write(body[start:start + 65536])
                    sent += len(body[start:start + 65536])
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            with server._lock:
                server.sent_bytes.append(sent)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the test reads server.requests instead

    return Handler


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def png(extra: int = 0) -> bytes:
    """A real 1x1 PNG, padded with a text chunk of `extra` bytes to give it a chosen size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    padding = chunk(b"tEXt", b"pad\x00" + b"x" * extra) if extra else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + padding + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


def wait_for(condition: Callable[[], bool], deadline: float = 10.0) -> bool:
    """Poll `condition` until it holds or `deadline` seconds pass."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def local_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Nothing leaves 127.0.0.1: no proxy from the environment, and any name or address other than the
    loopback fails the test instead of going out."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in (LOOPBACK, b"127.0.0.1"):
            raise AssertionError(f"a test tried to reach {host!r}, outside 127.0.0.1")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    yield
