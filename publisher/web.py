"""How the publisher talks to other people's servers: one User-Agent that names the project, a session that
speaks only http and https, and a short description of a failed request for log lines.

Shared by the two stages that make requests: enclosure probing (probe.py) and WebSub pings (websub.py).
"""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter

from publisher import __version__

SCHEMES = ("http", "https")


def user_agent(home: str) -> str:
    """A User-Agent that lets a server's operator see who asks and where to complain (RFC 9110 10.1.5)."""
    return f"publisher/{__version__} (+{home})"


def new_session(agent: str, connections: int) -> requests.Session:
    """A session for `connections` concurrent requests. Only http and https adapters are mounted, so a URL
    of any other scheme fails instead of reaching, say, the local file system."""
    session = requests.Session()
    session.adapters.clear()
    for scheme in SCHEMES:
        session.mount(f"{scheme}://", HTTPAdapter(pool_connections=connections, pool_maxsize=connections))
    session.headers["User-Agent"] = agent
    # Requests follows no redirect by itself here: the callers follow them one by one (checking each
    # target), and this bound is only a second line of defence.
    session.max_redirects = 3
    return session


def describe_failure(exc: requests.RequestException) -> str:
    """One short line for a log: the kind of failure, without urllib3's nested reprs."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.ReadTimeout):
        return "no answer within the timeout"
    if isinstance(exc, requests.TooManyRedirects):
        return "too many redirects"
    cause = _innermost(exc)
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
