"""A real S3 endpoint for the tests: moto's server application (the one `moto_server` runs) on 127.0.0.1,
port 0, in a thread of the test process, spoken to over HTTP by boto3 in the publisher's subprocesses.

The application is wrapped to record every request it answers (method, bucket, key, query), so that tests
count PUTs and DELETEs at the server, and to drop the conditional-write headers on demand, as an S3 service
without conditional writes would ignore them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest

LOOPBACK = "127.0.0.1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class Call:
    method: str
    bucket: str
    key: str
    query: str


@dataclass
class S3Server:
    url: str = ""
    calls: list[Call] = field(default_factory=list)
    ignore_conditions: bool = False  # behave like a service that does not support conditional writes
    refuse: Callable[[str, str], bool] | None = None  # (method, key) -> answer 403 AccessDenied instead
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, **credentials: str) -> Any:
        import boto3  # here, not at the top: moto and boto3 take a second to import, in every xdist worker

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=credentials.get("key", "testing"),
                            aws_secret_access_key=credentials.get("secret", "testing"))

    def mark(self) -> int:
        """A position in the request log: calls_since() gives what came after it."""
        with self.lock:
            return len(self.calls)

    def calls_since(self, mark: int, bucket: str, methods: Iterable[str] = ("PUT", "POST", "DELETE"),
                    skip_keys: Iterable[str] = ()) -> list[Call]:
        skipped, wanted = set(skip_keys), set(methods)
        with self.lock:
            return [c for c in self.calls[mark:] if c.bucket == bucket and c.method in wanted
                    and c.key not in skipped]

    def wrap(self, app: Callable[..., Any]) -> Callable[..., Any]:
        def recording(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            path = unquote(environ.get("PATH_INFO", ""))
            bucket, _, key = path.lstrip("/").partition("/")
            with self.lock:
                self.calls.append(Call(environ["REQUEST_METHOD"], bucket, key, environ.get("QUERY_STRING", "")))
            if self.ignore_conditions:
                environ.pop("HTTP_IF_NONE_MATCH", None)
                environ.pop("HTTP_IF_MATCH", None)
            if self.refuse is not None and self.refuse(environ["REQUEST_METHOD"], key):
                body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
                environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                                 ("Content-Length", str(len(body)))])
                return [body]
            return app(environ, start_response)
        return recording


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class QuietHandler(MotoRequestHandler):  # type: ignore[misc]
        def log_request(self, *args: Any) -> None:  # one line per request would drown the test output
            pass

    server = S3Server()
    app = server.wrap(DomainDispatcherApplication(create_backend_app))
    httpd = make_server(LOOPBACK, 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    server.url = f"http://{LOOPBACK}:{httpd.server_port}"
    try:
        yield server
    finally:
        httpd.shutdown()
        thread.join()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def moto_server_process(**env: str) -> tuple[subprocess.Popen[bytes], str]:
    """`moto_server` as its own process (for settings moto reads once per process, like authentication)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
                               env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return process, f"http://{LOOPBACK}:{port}"
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto_server did not start")
