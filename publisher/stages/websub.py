"""Notifying: tell each WebSub hub which feeds changed, so that subscribers hear of it within seconds.

The W3C WebSub recommendation leaves the publisher-to-hub call to the hub (section 6, "Publishing"); every
public hub takes the form PubSubHubbub 0.4 defined: a form-encoded POST of `hub.mode=publish` and
`hub.url=<feed URL>`, answered with a 2xx (usually 202 or 204). One POST per feed URL and hub.

Only feeds whose bytes changed in this build are announced (a no-op build pings nothing). A failed ping is
retried (urllib3's Retry, honouring the hub's Retry-After) with a growing pause; a hub that does not answer
at all gets no more pings in the build; a hub that is down is logged and never fails the build.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import requests

from publisher.stages.render import FORMATS
from publisher.web import Retries, describe_failure, new_session

logger = logging.getLogger(__name__)

RETRY_DELAYS = (1.0, 2.0)  # seconds to wait before each retry of a ping: three attempts in all
LONGEST_WAIT = 30.0  # a hub's Retry-After up to this is waited for; a longer one fails the ping
TIMEOUT = 10.0  # connect and read timeout of one ping
_RETRIABLE_STATUS = frozenset({408, 429, *range(500, 600)})  # the hub may take it a moment later


@dataclass(frozen=True)
class Ping:
    hub: str
    url: str
    attempts: int  # 0 when the hub never answered in this build, so this ping was never sent
    error: str | None = None  # None: the hub took it

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class _Outcome:
    error: str | None
    hub_down: bool = False  # no answer at all: send this hub no more pings in this build


def changed_feed_urls(written: Iterable[str], base_url: str) -> list[str]:
    """Public URLs of the feeds among `written` (paths relative to the output folder): files with a feed
    format's extension, not their gzip copies, other pages or archive documents (nobody subscribes to
    those)."""
    extensions = tuple(fmt.extension for fmt in FORMATS.values())
    return [f"{base_url}{path}" for path in sorted(written)
            if path.endswith(extensions) and not path.startswith("archive/")]


def ping_hubs(hubs: Sequence[str], urls: Sequence[str], agent: str,
              delays: Sequence[float] | None = None, timeout: float = TIMEOUT,
              sleep: Callable[[float], None] = time.sleep) -> list[Ping]:
    """Announce every URL in `urls` to every hub; one Ping per (hub, URL), ordered by hub then URL. A failed
    ping is retried by urllib3 (web.Retries) after each pause in `delays` (default RETRY_DELAYS), or after
    what the hub's Retry-After asks; `sleep` does the waiting."""
    if not hubs or not urls:
        return []
    delays = RETRY_DELAYS if delays is None else tuple(delays)
    waits = _Waits(sleep)
    tries = len(delays)
    retries = Retries(total=tries, connect=tries, read=tries, status=tries, other=0, allowed_methods={"POST"},
                      status_forcelist=_RETRIABLE_STATUS, raise_on_status=False, delays=delays,
                      longest_wait=LONGEST_WAIT, pause=waits.pause)
    pings: list[Ping] = []
    down: dict[str, str] = {}  # hub -> why it did not answer
    with new_session(agent, 1, retries) as session:
        for hub in dict.fromkeys(hubs):
            for url in dict.fromkeys(urls):
                if hub in down:
                    pings.append(Ping(hub, url, 0, f"not sent, the hub did not answer ({down[hub]})"))
                    continue
                waits.count = 0
                outcome = _publish(session, hub, url, timeout)
                pings.append(Ping(hub, url, 1 + waits.count, outcome.error))
                if outcome.hub_down:
                    down[hub] = outcome.error or "no answer"
    _log(pings)
    return pings


@dataclass
class _Waits:
    """The pauses before retries: urllib3 asks for one before each retry, so they also count the attempts."""

    sleep: Callable[[float], None]
    count: int = 0

    def pause(self, seconds: float) -> None:
        self.count += 1
        logger.debug("WebSub: ping failed, retrying in %.1fs", seconds)
        self.sleep(seconds)


def _publish(session: requests.Session, hub: str, url: str, timeout: float) -> _Outcome:
    try:
        # stream: the hub's answer body is of no interest, and may be large; closing drops it unread.
        with session.post(hub, data={"hub.mode": "publish", "hub.url": url}, timeout=(timeout, timeout),
                          allow_redirects=False, stream=True) as response:
            status = response.status_code
            reason = response.reason
    except (requests.ConnectionError, requests.Timeout) as exc:
        return _Outcome(describe_failure(exc), hub_down=True)
    except requests.RequestException as exc:
        return _Outcome(describe_failure(exc))
    if 200 <= status < 300:
        return _Outcome(None)
    error = f"HTTP {status}{f' {reason}' if reason else ''}"
    if 300 <= status < 400:
        # A POST that is redirected is not re-sent: the configured hub URL should be the final one.
        return _Outcome(f"{error}: the hub redirects; configure its final URL in websub.hubs")
    return _Outcome(error)


def _log(pings: Sequence[Ping]) -> None:
    """One line per hub: a hub that is down must not flood the log with a warning per feed."""
    by_hub: dict[str, list[Ping]] = defaultdict(list)
    for ping in pings:
        by_hub[ping.hub].append(ping)
    for hub, hub_pings in by_hub.items():
        failed = [ping for ping in hub_pings if not ping.ok]
        for ping in failed:
            logger.debug("WebSub: %s not told about %s after %d attempts: %s",
                         hub, ping.url, ping.attempts, ping.error)
        if not failed:
            logger.debug("WebSub: %s told about %d changed feeds", hub, len(hub_pings))
            continue
        sent = [ping for ping in failed if ping.attempts] or failed  # the cause a hub gave, if any
        more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
        logger.warning("WebSub: %s not told about %d of %d changed feeds (%s%s) after %d attempts: %s",
                       hub, len(failed), len(hub_pings), failed[0].url, more,
                       max(ping.attempts for ping in failed), sent[0].error)
