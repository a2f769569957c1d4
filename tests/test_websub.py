"""WebSub pings against real hubs on 127.0.0.1 (threaded HTTP servers on port 0, counting requests): only
changed feeds, once per hub; retries with back-off; a hub that is down never fails the build."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from publisher.build import build
from publisher.config import Config
from publisher.stages import websub
from publisher.stages.websub import RETRY_DELAYS, Ping, changed_feed_urls, ping_hubs
from tests.conftest import make_config, run_main, write_article
from tests.local_http import LocalServer, Reply, closed_port, local_only

pytestmark = pytest.mark.usefixtures(local_only.__name__)

BASE = "https://feeds.example.org/news/"  # site.base_url of tests.conftest.SITE


def hub(status: int = 202, headers: tuple[tuple[str, str], ...] = ()):
    return lambda request: Reply(status, list(headers))


def announced(server: LocalServer) -> list[str]:
    """The feed URLs a hub was told about, one entry per POST, after checking each POST's form."""
    urls = []
    for request in server.requests:
        assert request.method == "POST" and request.path == "/hub"
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        assert request.headers["user-agent"].startswith("publisher/")
        form = parse_qs(request.body.decode("ascii"), strict_parsing=True)
        assert form["hub.mode"] == ["publish"]
        urls.extend(form["hub.url"])
    return sorted(urls)


def site(tmp_path: Path, *hubs: str, **settings: object) -> Config:
    store = tmp_path / "store"
    # No images: with probing off nothing but the hubs is ever asked anything.
    write_article(store, "a.md", topics=["AI", "Robots"], images=None, provider=None,
                  publishedDateTime="2024-01-01T10:00:00Z")
    write_article(store, "b.md", topics=["AI"], images=None, provider=None, publishedDateTime="2024-01-02T10:00:00Z")
    return make_config(tmp_path, websub={"hubs": list(hubs)}, **settings)


def feed_urls(*paths: str, formats: tuple[str, ...] = (".atom", ".json", ".rss")) -> list[str]:
    return sorted(f"{BASE}{path}{ext}" for path in paths for ext in formats)


def test_only_changed_feeds_are_pinged_once_per_hub(tmp_path):
    with LocalServer(hub(202)) as first, LocalServer(hub(204)) as second:
        config = site(tmp_path, first.url("/hub"), second.url("/hub"))
        report = build(config)
        everything = feed_urls("all", "topics/ai", "topics/robots")
        assert announced(first) == announced(second) == everything
        assert len(report.pings) == 2 * len(everything) and all(ping.ok for ping in report.pings)
        assert f"WebSub: {2 * len(everything)} pings sent, 0 failed" in report.summary()

        write_article(tmp_path / "store", "b.md", topics=["AI"], images=None, provider=None, title="Changed",
                      publishedDateTime="2024-01-02T10:00:00Z")
        build(config)
        changed = feed_urls("all", "topics/ai")  # not topics/robots: b.md is not in it
        assert announced(first) == announced(second) == sorted(everything + changed)

        noop = build(config)
        assert noop.pings == [] and "WebSub" not in noop.summary()
        assert first.count() == second.count() == len(everything) + len(changed)


def test_gzip_copies_and_pages_are_not_announced():
    written = ["all.atom", "all.atom.gz", "all.json", "all.json.gz", "all.rss", "feeds.opml", "index.html",
               "index.html.gz", "topics/ai.rss", "topics/ai.rss.gz"]
    assert changed_feed_urls(written, BASE) == [f"{BASE}all.atom", f"{BASE}all.json", f"{BASE}all.rss",
                                                f"{BASE}topics/ai.rss"]


def test_no_hubs_no_pings(tmp_path):
    report = build(site(tmp_path))
    assert report.ok and report.pings == []


def test_hub_answering_500_gets_the_retries_and_the_build_exits_0(tmp_path):
    # "Retry-After: 0": the hub asks for no pause, and is obeyed, so this test does not wait RETRY_DELAYS.
    with LocalServer(hub(500, (("Retry-After", "0"),))) as failing, LocalServer(hub(204)) as working:
        config = site(tmp_path, failing.url("/hub"), working.url("/hub"), formats=["atom"], precompress=False)
        result = run_main("build", "-c", config.source)
    assert result.returncode == 0, result.stderr
    feeds = feed_urls("all", "topics/ai", "topics/robots", formats=(".atom",))
    attempts = 1 + len(RETRY_DELAYS)
    assert announced(failing) == sorted(feeds * attempts)  # every changed feed, every attempt
    assert announced(working) == feeds  # once each: a working hub is not pinged again
    assert "WebSub: 3 pings sent, 3 failed" in result.stdout
    assert (f"{failing.url('/hub')} not told about 3 of 3 changed feeds ({BASE}all.atom and 2 more) "
            f"after {attempts} attempts: HTTP 500") in result.stderr


def test_retries_wait_longer_each_round_and_stop_when_taken(tmp_path):
    answers = iter([500, 503, 204])
    waits: list[float] = []
    with LocalServer(lambda request: Reply(next(answers))) as server:
        (ping,) = ping_hubs([server.url("/hub")], [f"{BASE}all.atom"], "publisher-test", delays=(0.5, 1.5),
                            sleep=waits.append)
    assert ping == Ping(server.url("/hub"), f"{BASE}all.atom", attempts=3, error=None)
    assert waits == [0.5, 1.5]


def test_retry_after_is_honoured_and_a_long_one_is_not_waited_for():
    answers = iter([Reply(503, [("Retry-After", "7")]), Reply(429, [("Retry-After", "3600")])])
    waits: list[float] = []
    with LocalServer(lambda request: next(answers)) as server:
        (ping,) = ping_hubs([server.url("/hub")], [f"{BASE}all.atom"], "publisher-test", delays=(0.5, 1.5),
                            sleep=waits.append)
    assert waits == [7.0]  # the hub's pause, not delays[0]; an hour is more than a build waits
    assert ping == Ping(server.url("/hub"), f"{BASE}all.atom", attempts=2, error="HTTP 429 Too Many Requests")


@pytest.mark.parametrize("status, attempts", [(400, 1), (404, 1), (429, 3), (503, 3), (301, 1)])
def test_only_failures_that_may_pass_later_are_retried(status, attempts):
    with LocalServer(hub(status)) as server:
        (ping,) = ping_hubs([server.url("/hub")], [f"{BASE}all.atom"], "publisher-test", delays=(0, 0))
    assert server.count() == attempts and ping.attempts == attempts
    assert ping.error is not None and ping.error.startswith(f"HTTP {status}")


@pytest.fixture
def quiet_urllib3():
    """urllib3 as the CLI sets it up: it warns of each retry it makes, the publisher logs the outcome."""
    logger = logging.getLogger("urllib3")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def test_a_hub_that_is_down_is_logged_and_never_fails_the_build(tmp_path, caplog, monkeypatch, quiet_urllib3):
    monkeypatch.setattr(websub, "RETRY_DELAYS", (0.0, 0.0))  # the attempts as usual, without the pauses
    down = f"http://127.0.0.1:{closed_port()}/hub"
    with LocalServer(hub(204)) as working:
        config = site(tmp_path, down, working.url("/hub"))
        report = build(config)
    assert report.ok
    failed = [ping for ping in report.pings if not ping.ok]
    assert {ping.hub for ping in failed} == {down} and len(failed) == len(announced(working))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"WebSub: {down} not told about {len(failed)} of {len(failed)} changed feeds "
                        f"({BASE}all.atom and {len(failed) - 1} more) after 3 attempts: connection refused"]
    # A hub that does not answer is tried once per round, not once per feed.
    assert sum(ping.attempts for ping in failed) == 1 + len(RETRY_DELAYS)
