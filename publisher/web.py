"""How the publisher talks to other people's servers: one User-Agent that names the project, a session that
speaks only http and https, retries left to urllib3's Retry, and a short description of a failed request for
log lines.

Shared by the two stages that make requests: enclosure probing (probe.py) and WebSub pings (websub.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import InvalidHeader, MaxRetryError, ReadTimeoutError, ResponseError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from publisher import __version__

SCHEMES = ("http", "https")


class Retries(Retry):
    """urllib3's Retry, as the session's adapters apply it to every request: which failures are retried, and
    how many times, is urllib3's. What differs is the pause before a retry: the server's Retry-After when it
    sends one (on any retried answer; RFC 9110 10.2.3), else `delays[n]` before the n-th retry. A Retry-After
    longer than `longest_wait` is not waited for: the answer stands, and a later build tries again. `pause`
    does the waiting (time.sleep; tests pass one that records instead)."""

    def __init__(self, *args: Any, delays: Sequence[float] = (), longest_wait: float = 30.0,
                 pause: Callable[[float], None] = time.sleep, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delays = tuple(delays)
        self.longest_wait = longest_wait
        self.pause = pause

    def new(self, **kwargs: Any) -> Self:
        retry = super().new(**kwargs)  # urllib3 makes a new Retry for every attempt: pass ours on
        retry.delays, retry.longest_wait, retry.pause = self.delays, self.longest_wait, self.pause
        return retry

    def get_backoff_time(self) -> float:
        if not self.delays:
            return 0.0
        return self.delays[min(max(len(self.history), 1), len(self.delays)) - 1]  # history holds this failure

    def increment(self, method: str | None = None, url: str | None = None,
                  response: BaseHTTPResponse | None = None, error: Exception | None = None,
                  _pool: ConnectionPool | None = None, _stacktrace: TracebackType | None = None) -> Self:
        wait = self.requested_wait(response)
        if wait is not None and wait > self.longest_wait:
            reason = ResponseError(f"Retry-After {wait:.0f}s: not waited for")
            # urllib3's own increment() passes the same optional pool (its annotation asks for one).
            raise MaxRetryError(_pool, url or "", reason)  # type: ignore[arg-type]
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        wait = self.requested_wait(response)
        self.pause(self.get_backoff_time() if wait is None else wait)

    def requested_wait(self, response: BaseHTTPResponse | None) -> float | None:
        """The seconds a response's Retry-After asks for; None when it asks nothing readable."""
        if response is None or not self.respect_retry_after_header:
            return None
        try:
            return self.get_retry_after(response)
        except InvalidHeader:
            return None


class _OtherSchemes(BaseAdapter):
    """Mounted for every scheme but http and https, so that a redirect to file:, ftp: or data: fails with a
    message naming the URL, before anything is asked of anyone."""

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: float | tuple[float, float] | tuple[float, None] | None = None,
             verify: bool | str = True, cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
             proxies: Mapping[str, str] | None = None) -> requests.Response:
        raise requests.exceptions.InvalidSchema(f"refused a URL that is not http(s): {str(request.url)[:200]}",
                                                request=request)

    def close(self) -> None:
        pass


def user_agent(home: str) -> str:
    """A User-Agent that lets a server's operator see who asks and where to complain (RFC 9110 10.1.5)."""
    return f"publisher/{__version__} (+{home})"


def new_session(agent: str, connections: int, retries: Retries | None = None,
                max_redirects: int = 0) -> requests.Session:
    """A session for `connections` concurrent requests that speaks only http and https, retrying as
    `retries` says (none by default) and following at most `max_redirects` redirects (requests does)."""
    session = requests.Session()
    session.adapters.clear()
    for scheme in SCHEMES:
        session.mount(f"{scheme}://", HTTPAdapter(pool_connections=connections, pool_maxsize=connections,
                                                  max_retries=retries or Retries(0, read=False)))
    session.mount("", _OtherSchemes())  # the shortest prefix: only what no other adapter takes
    session.headers["User-Agent"] = agent
    session.max_redirects = max_redirects
    return session


def describe_failure(exc: requests.RequestException) -> str:
    """One short line for a log: the kind of failure, without urllib3's nested reprs."""
    cause = _innermost(exc)
    if isinstance(exc, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.ReadTimeout) or isinstance(cause, ReadTimeoutError):
        return "no answer within the timeout"
    if isinstance(exc, requests.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, requests.exceptions.InvalidSchema):
        return str(exc)
    if isinstance(exc, requests.ConnectionError):
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
            return "connection refused"
        return f"connection failed: {_one_line(cause)}"
    return _one_line(cause)


def _innermost(exc: BaseException) -> BaseException:
    """The error underneath requests' and urllib3's wrappers (MaxRetryError(reason=...),
    ProtocolError('Connection aborted.', BadStatusLine(...)))."""
    seen = {id(exc)}
    while True:
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((arg for arg in exc.args if isinstance(arg, BaseException)), None)
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def _one_line(exc: BaseException) -> str:
    """`Type: message` on one line (a server's garbage can hold line breaks), at most 160 characters."""
    text = " ".join(str(exc).split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return f"{type(exc).__name__}: {text}"[:160]
