"""Enclosure probing against real HTTP servers on 127.0.0.1 (threaded, port 0, real bytes, counted
requests): sizes and types in every format, the ranged-GET fallback, the cache, the budget, timeouts and
every way a server can fail."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from publisher.build import build
from publisher.caches.enclosures import CACHE_NAME, ProbeRecord, load_cache
from publisher.config import Config, EnclosureConfig
from publisher.stages.articles import Article, Image, Provider
from publisher.stages.probe import (
    MAX_REDIRECTS,
    RETRY_AFTER,
    Answer,
    apply_sizes,
    plan_probes,
    probe_urls,
    record,
    retry_after,
)
from publisher.stages.selection import Feed, FeedSpec
from tests.conftest import NS, make_config, run_cli, run_main, snapshot, write_article
from tests.local_http import LocalServer, Reply, Request, closed_port, local_only, png, wait_for

pytestmark = pytest.mark.usefixtures(local_only.__name__)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
DAY = 86400.0
PHOTO = png(3000)
LOGO = png(500)


def image_host(files: dict[str, tuple[bytes, str]], head: int | None = None, head_length: bool = True,
               ranges: bool = True) -> Callable[[Request], Reply]:
    """A server of `files` (path -> bytes, Content-Type). `head`: the status that refuses HEAD;
    `head_length`: whether HEAD says the length; `ranges`: whether GET honours `Range: bytes=0-0`."""
    def respond(request: Request) -> Reply:
        if request.path not in files:
            return Reply(404, [("Content-Type", "text/html")], b"<h1>Not found</h1>")
        body, kind = files[request.path]
        if request.method == "HEAD":
            if head:
                return Reply(head, [("Allow", "GET")])
            if not head_length:
                return Reply(200, [("Content-Type", kind)], send_length=False)
            return Reply(200, [("Content-Type", kind), ("Content-Length", str(len(body)))])
        if ranges and request.headers.get("range") == "bytes=0-0":
            return Reply(206, [("Content-Type", kind), ("Content-Range", f"bytes 0-0/{len(body)}")], body[:1])
        return Reply(200, [("Content-Type", kind)], body)
    return respond


def store(tmp_path: Path, server: LocalServer, articles: dict[str, list[str]], logo: str | None = None,
          **enclosures: object) -> Config:
    """Articles named by `articles` (name -> image paths on `server`), one day apart, each with the provider
    logo `logo`; a config with probing on."""
    for day, (name, paths) in enumerate(articles.items(), start=1):
        provider = {"name": "Local News", "domain": "news.example.com",
                    **({"images": [{"url": server.url(logo)}]} if logo else {})}
        write_article(tmp_path / "store", f"{name}.md", publishedDateTime=f"2024-01-{day:02d}T10:00:00Z",
                      images=[{"url": server.url(path), "width": 640, "height": 480} for path in paths],
                      provider=provider, topics=["AI"])
    settings = {"probe": True, "timeout": "2s", **enclosures}
    return make_config(tmp_path, enclosures=settings, assets_base_url=server.url("/"))


def rss_enclosures(out: Path) -> dict[str, tuple[str, str]]:
    """url -> (length, type) of every RSS <enclosure> in all.rss."""
    root = etree.parse(str(out / "all.rss"))
    return {e.get("url"): (e.get("length"), e.get("type")) for e in root.iterfind(".//item/enclosure")}


def test_head_sizes_and_types_reach_every_format(tmp_path):
    files = {"/img/photo.jpg": (PHOTO, "image/png"), "/img/cdn-photo": (PHOTO, "image/png"),
             "/logos/news.png": (LOGO, "image/png; charset=binary")}
    with LocalServer(image_host(files)) as server:
        config = store(tmp_path, server, {"a": ["/img/photo.jpg"], "b": ["/img/cdn-photo"]}, logo="/logos/news.png")
        report = build(config, now=NOW)
    assert report.ok and report.probes.probed == 3 and report.probes.failed == 0
    assert server.count("HEAD") == 3 and server.count("GET") == 0
    assert all(r.headers["user-agent"] == "publisher/0.1.0 (+https://example.org/)" for r in server.requests)
    out = tmp_path / "out"
    photo, cdn, logo = (server.url(p) for p in ("/img/photo.jpg", "/img/cdn-photo", "/logos/news.png"))
    expected = {photo: (str(len(PHOTO)), "image/png"), cdn: (str(len(PHOTO)), "image/png"),
                logo: (str(len(LOGO)), "image/png")}

    atom = etree.parse(str(out / "all.atom"))
    links = {link.get("href"): (link.get("length"), link.get("type"))
             for link in atom.iterfind(".//a:entry/a:link[@rel='enclosure']", NS)}
    assert links == expected
    assert rss_enclosures(out) == {photo: expected[photo], cdn: expected[cdn]}
    rss = etree.parse(str(out / "all.rss"))
    media = {m.get("url"): (m.get("fileSize"), m.get("type")) for m in rss.iterfind(".//item/media:content", NS)}
    assert media == expected
    document = json.loads((out / "all.json").read_bytes())
    attachments = {a["url"]: (str(a["size_in_bytes"]), a["mime_type"])
                   for item in document["items"] for a in item["attachments"]}
    assert attachments == expected
    for name in ("all.atom", "all.rss"):
        assert not feedparser.parse((out / name).read_bytes()).bozo


@pytest.mark.parametrize("behaviour", [
    pytest.param({"head": 405}, id="HEAD-405"),
    pytest.param({"head": 501}, id="HEAD-501"),
    pytest.param({"head": 403}, id="HEAD-403"),
    pytest.param({"head_length": False}, id="HEAD-without-length"),
])
def test_refused_head_is_answered_by_a_ranged_get(tmp_path, behaviour):
    with LocalServer(image_host({"/img/a.jpg": (PHOTO, "image/jpeg")}, **behaviour)) as server:
        config = store(tmp_path, server, {"a": ["/img/a.jpg"]})
        report = build(config, now=NOW)
    assert report.probes.failed == 0
    assert [(r.method, r.headers.get("range")) for r in server.requests] == [("HEAD", None), ("GET", "bytes=0-0")]
    assert all(r.headers["accept-encoding"] == "identity" for r in server.requests)
    assert rss_enclosures(tmp_path / "out") == {server.url("/img/a.jpg"): (str(len(PHOTO)), "image/jpeg")}


def test_a_server_that_ignores_the_range_is_not_downloaded(tmp_path):
    big = png(32 * 1024 * 1024)
    with LocalServer(image_host({"/img/big.png": (big, "image/png")}, head=405, ranges=False)) as server:
        config = store(tmp_path, server, {"a": ["/img/big.png"]})
        build(config, now=NOW)
        assert wait_for(lambda: len(server.sent_bytes) == 1)
    assert rss_enclosures(tmp_path / "out") == {server.url("/img/big.png"): (str(len(big)), "image/png")}
    assert server.sent_bytes[0] < len(big)  # the client hung up instead of reading the body


def test_warm_cache_makes_no_requests_across_processes(tmp_path):
    files = {"/img/a.jpg": (PHOTO, "image/jpeg"), "/logos/news.png": (LOGO, "image/png")}
    with LocalServer(image_host(files)) as server:
        config = store(tmp_path, server, {"a": ["/img/a.jpg"]}, logo="/logos/news.png")
        build(config)
        assert server.count() == 2
        before = snapshot(tmp_path / "out")
        result = run_cli("build", "-c", config.source)  # a new process: only the cache file remembers
        assert result.returncode == 0, result.stderr
        assert server.count() == 2
    assert snapshot(tmp_path / "out") == before
    assert "enclosures: 0 probed, 0 failed" in result.stdout
    cache = json.loads((tmp_path / "state" / CACHE_NAME).read_text())
    assert cache["entries"][server.url("/img/a.jpg")]["length"] == len(PHOTO)
    assert not any(CACHE_NAME in path for path in before)  # the cache is never in the served folder


def test_probing_is_off_by_default(tmp_path):
    with LocalServer(image_host({"/img/a.jpg": (PHOTO, "image/jpeg")})) as server:
        config = store(tmp_path, server, {"a": ["/img/a.jpg"]})
        config = make_config(tmp_path, assets_base_url=server.url("/"))
        report = build(config, now=NOW)
    assert server.count() == 0 and report.probes is None
    assert rss_enclosures(tmp_path / "out") == {server.url("/img/a.jpg"): ("0", "image/jpeg")}
    assert not (tmp_path / "state" / CACHE_NAME).exists()


def test_slow_server_is_abandoned_at_the_timeout(tmp_path, caplog):
    def respond(request: Request) -> Reply:
        return Reply(200, [("Content-Type", "image/jpeg"), ("Content-Length", "1000")], delay=60)

    with LocalServer(respond) as slow:
        config = store(tmp_path, slow, {"a": ["/img/a.jpg", "/img/b.jpg", "/img/c.jpg"]},
                       timeout="0.3s", per_host=1)
        report = build(config, now=NOW)
    assert report.ok and report.probes.failed == 3
    assert slow.count() == 1  # a host that did not answer is not asked again in the same build
    assert set(rss_enclosures(tmp_path / "out").values()) == {("0", "image/jpeg")}
    assert f"enclosure {slow.url('/img/a.jpg')}: no answer within the timeout" in caplog.text
    assert "2 more enclosures on 127.0.0.1" in caplog.text


def _status(code: int) -> Callable[[Request], Reply]:
    return lambda request: Reply(code, [("Content-Type", "text/html")], b"<h1>error</h1>")


def _redirect_loop(request: Request) -> Reply:
    return Reply(302, [("Location", "/img/a.jpg")])


def _redirect_to_file(request: Request) -> Reply:
    return Reply(301, [("Location", "file:///etc/passwd")])


def _garbage_headers(request: Request) -> Reply:
    return Reply(200, [("Content-Type", "%%% not a type"), ("Content-Length", "banana"),
                       ("Content-Range", "bytes nonsense")], send_length=False)


def _garbage_status_line(request: Request) -> Reply:
    return Reply(raw=b"HELLO THERE\r\n\x00\x01\x02\r\n\r\n")


def _soft_404(request: Request) -> Reply:
    return Reply(200, [("Content-Type", "text/html; charset=utf-8")], b"<h1>Sorry, no such image</h1>")


@pytest.mark.parametrize("respond, reason, most_requests", [
    pytest.param(_status(404), "HTTP 404 Not Found", 1, id="404"),
    pytest.param(_status(500), "HTTP 500 Internal Server Error", 1, id="500"),
    pytest.param(_redirect_loop, f"more than {MAX_REDIRECTS} redirects", MAX_REDIRECTS + 1, id="redirect-loop"),
    pytest.param(_redirect_to_file, "not http(s): file:///etc/passwd", 1, id="redirect-to-file"),
    pytest.param(_garbage_headers, "no usable Content-Length or Content-Range", 2, id="garbage-headers"),
    pytest.param(_garbage_status_line, "connection failed", 1, id="garbage-status-line"),
    pytest.param(_soft_404, "serves text/html, not an image", 2, id="html-page"),
])
def test_failures_leave_length_zero_and_a_warning(tmp_path, caplog, respond, reason, most_requests):
    with LocalServer(respond) as server:
        config = store(tmp_path, server, {"a": ["/img/a.jpg"]})
        report = build(config, now=NOW)
    assert report.ok and report.probes.probed == 1 and report.probes.failed == 1
    assert server.count() <= most_requests
    assert rss_enclosures(tmp_path / "out") == {server.url("/img/a.jpg"): ("0", "image/jpeg")}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(server.url("/img/a.jpg") in w and reason in w for w in warnings), warnings
    assert "enclosures: 1 probed, 1 failed" in report.summary()


def test_connection_refused_leaves_length_zero_and_a_warning(tmp_path, caplog):
    port = closed_port()
    url = f"http://127.0.0.1:{port}/img/a.jpg"
    write_article(tmp_path / "store", "a.md", images=[url], provider=None)
    config = make_config(tmp_path, enclosures={"probe": True, "timeout": "2s"})
    report = build(config, now=NOW)
    assert report.ok and report.probes.failed == 1
    assert rss_enclosures(tmp_path / "out") == {url: ("0", "image/jpeg")}
    assert f"enclosure {url}: connection refused" in caplog.text


def test_cli_build_exits_0_when_every_probe_fails(tmp_path):
    with LocalServer(_status(500)) as server:
        config = store(tmp_path, server, {"a": ["/img/a.jpg"], "b": ["/img/b.jpg"]})
        result = run_main("build", "-c", config.source)
    assert result.returncode == 0, result.stderr
    assert "enclosures: 2 probed, 2 failed" in result.stdout
    assert "HTTP 500" in result.stderr


def test_budget_caps_the_requests_of_one_build(tmp_path):
    files = {f"/img/{n}.png": (png(n * 10), "image/png") for n in range(1, 7)}
    with LocalServer(image_host(files)) as server:
        config = store(tmp_path, server, {f"a{n}": [f"/img/{n}.png"] for n in range(1, 7)}, max_probes=2)
        first = build(config, now=NOW)
        assert server.count() == 2 and first.probes.deferred == 4
        # The newest articles' images go first: readers see them first.
        assert {r.path for r in server.requests} == {"/img/6.png", "/img/5.png"}
        second = build(config, now=NOW)
        assert server.count() == 4 and second.probes.probed == 2 and second.probes.deferred == 2
        assert "2 deferred" in second.summary()
        build(config, now=NOW)
        build(config, now=NOW)
        assert server.count() == 6
    lengths = {url: length for url, (length, _) in rss_enclosures(tmp_path / "out").items()}
    assert lengths == {server.url(path): str(len(body)) for path, (body, _) in files.items()}


def test_zero_budget_makes_no_requests(tmp_path):
    with LocalServer(image_host({"/img/a.png": (PHOTO, "image/png")})) as server:
        config = store(tmp_path, server, {"a": ["/img/a.png"]}, max_probes=0)
        report = build(config, now=NOW)
    assert server.count() == 0 and report.probes.deferred == 1


def test_concurrency_is_bounded_per_host_and_in_all(tmp_path):
    servers: list[LocalServer] = []
    most_in_all = 0

    def respond(request: Request) -> Reply:
        nonlocal most_in_all
        in_all = sum(s.in_flight for s in servers)
        most_in_all = max(most_in_all, in_all)
        # Hold each request until more are in flight than the limits allow, or a moment has passed.
        wait_for(lambda: sum(s.in_flight for s in servers) > 4, deadline=0.2)
        return Reply(200, [("Content-Type", "image/png"), ("Content-Length", "1234")])

    with LocalServer(respond) as busy, LocalServer(respond) as quiet, LocalServer(respond) as other:
        servers.extend([busy, quiet, other])
        urls = ([busy.url(f"/img/{n}.png") for n in range(8)] + [quiet.url("/img/q.png")]
                + [other.url(f"/img/{n}.png") for n in range(3)])
        settings = EnclosureConfig(probe=True, max_age=DAY, max_probes=100, timeout=5, workers=4, per_host=2)
        answers = probe_urls(urls, settings, "publisher-test")
    assert len(answers) == 12 and all(answer.length == 1234 for answer in answers.values())
    assert [server.count() for server in servers] == [8, 1, 3]
    assert busy.most_in_flight == 2 and other.most_in_flight <= 2
    assert 2 < most_in_all <= 4  # the pool works in parallel, within enclosures.workers


def test_failed_probe_is_retried_with_growing_back_off(tmp_path):
    healthy = False

    def respond(request: Request) -> Reply:
        if healthy:
            return Reply(200, [("Content-Type", "image/png"), ("Content-Length", "777")])
        return Reply(503, [("Retry-After", "120")])

    with LocalServer(respond) as server:
        config = store(tmp_path, server, {"a": ["/img/a.png"]})
        timeline = [(0, 1), (RETRY_AFTER - 60, 1), (RETRY_AFTER, 2), (RETRY_AFTER * 2.5, 2),
                    (RETRY_AFTER * 3, 3)]
        for offset, requests_so_far in timeline:
            build(config, now=NOW + timedelta(seconds=offset))
            assert server.count() == requests_so_far, offset
        healthy = True
        build(config, now=NOW + timedelta(seconds=RETRY_AFTER * 7))
        assert server.count() == 4
    assert rss_enclosures(tmp_path / "out") == {server.url("/img/a.png"): ("777", "image/png")}


def test_a_short_retry_after_is_waited_for_within_the_build(tmp_path):
    answers = iter([Reply(503, [("Retry-After", "0")]), Reply(429, [("Retry-After", "0")]),
                    Reply(200, [("Content-Type", "image/png"), ("Content-Length", "777")])])
    with LocalServer(lambda request: next(answers)) as server:
        config = store(tmp_path, server, {"a": ["/img/a.png"]})
        report = build(config, now=NOW)
    assert server.count() == 3 and report.probes.failed == 0
    assert rss_enclosures(tmp_path / "out") == {server.url("/img/a.png"): ("777", "image/png")}


def test_redirects_are_followed_to_the_image(tmp_path):
    files = {"/img/b.png": (PHOTO, "image/png")}
    serve = image_host(files)

    def respond(request: Request) -> Reply:
        return Reply(301, [("Location", "/img/b.png")]) if request.path == "/img/a.png" else serve(request)

    with LocalServer(respond) as server:
        config = store(tmp_path, server, {"a": ["/img/a.png"]})
        build(config, now=NOW)
    assert [r.path for r in server.requests] == ["/img/a.png", "/img/b.png"]
    assert rss_enclosures(tmp_path / "out") == {server.url("/img/a.png"): (str(len(PHOTO)), "image/png")}


def test_success_is_rechecked_after_max_age_and_a_failed_recheck_keeps_the_size(tmp_path):
    status = 200

    def respond(request: Request) -> Reply:
        if status == 200:
            return Reply(200, [("Content-Type", "image/png"), ("Content-Length", "4321")])
        return _status(status)(request)

    with LocalServer(respond) as server:
        config = store(tmp_path, server, {"a": ["/img/a.png"]}, max_age="2d")
        build(config, now=NOW)
        build(config, now=NOW + timedelta(days=2) - timedelta(seconds=1))
        assert server.count() == 1
        status = 500
        report = build(config, now=NOW + timedelta(days=2))
        assert server.count() == 2 and report.probes.failed == 1
    # A flapping server must not flip the feeds' bytes: the size learned before stays.
    assert rss_enclosures(tmp_path / "out") == {server.url("/img/a.png"): ("4321", "image/png")}


# --- plain functions -------------------------------------------------------------------------------------

SETTINGS = EnclosureConfig(probe=True, max_age=7 * DAY, max_probes=3, timeout=1, workers=2, per_host=1)


def test_plan_takes_new_urls_first_then_the_longest_unchecked():
    cache = {"https://x/old": ProbeRecord(10, None, checked=0.0),
             "https://x/older": ProbeRecord(10, None, checked=-5.0),
             "https://x/fresh": ProbeRecord(10, None, checked=7 * DAY)}
    plan = plan_probes(["https://x/old", "https://x/fresh", "https://x/new", "https://x/older", "https://x/new2"],
                       cache, now=7 * DAY + 1, settings=SETTINGS)
    assert plan.due == ("https://x/new", "https://x/new2", "https://x/older")
    assert plan.deferred == 1


def test_back_off_doubles_and_is_capped_by_max_age():
    assert [retry_after(n, 7 * DAY) for n in range(5)] == [7 * DAY, RETRY_AFTER, 2 * RETRY_AFTER,
                                                           4 * RETRY_AFTER, 8 * RETRY_AFTER]
    assert retry_after(500, 7 * DAY) == 7 * DAY


def test_record_counts_failures_and_a_success_resets_them():
    url = "https://x/a.png"
    after_failures = record(record({}, {url: Answer(error="HTTP 500")}, 1.0), {url: Answer(error="HTTP 500")}, 2.0)
    assert after_failures[url] == ProbeRecord(None, None, checked=2.0, failures=2, error="HTTP 500")
    recovered = record(after_failures, {url: Answer(length=5, mime_type="image/png")}, 3.0)
    assert recovered[url] == ProbeRecord(5, "image/png", checked=3.0)


def test_apply_sizes_keeps_the_inferred_type_when_none_was_learned():
    photo = Image("https://x/photo.jpg", mime_type="image/jpeg")
    logo = Image("https://x/logo", mime_type="application/octet-stream")
    unknown = Image("https://x/unknown.gif", mime_type="image/gif")
    article = Article(source="a.md", id="urn:x", url="https://x/a", title="A", summary=None, content=None,
                      published=NOW, updated=NOW, provider=Provider("P", None, logo), topics=(),
                      images=(photo, unknown))
    feeds = [Feed(FeedSpec("all", "all", "All", None), (article,), 1)]
    sizes = {photo.url: ProbeRecord(100, None, 0.0), logo.url: ProbeRecord(50, "image/svg+xml", 0.0)}
    (resized,) = apply_sizes(feeds, sizes)
    assert resized.entries[0].enclosures == (Image(photo.url, mime_type="image/jpeg", length=100), unknown,
                                              Image(logo.url, mime_type="image/svg+xml", length=50))


@pytest.mark.parametrize("content", ["{not json", '{"version": 99, "entries": {}}', "[]"])
def test_an_unreadable_cache_starts_over(tmp_path, caplog, content):
    path = tmp_path / CACHE_NAME
    path.write_text(content)
    assert load_cache(path) == {}
    assert "starting a new one" in caplog.text


def test_malformed_records_are_dropped(tmp_path):
    path = tmp_path / CACHE_NAME
    path.write_text(json.dumps({"version": 1, "entries": {
        "https://x/good": {"length": 5, "type": "image/png", "checked": 1.0, "failures": 0, "error": None},
        "https://x/bad-length": {"length": "5", "type": None, "checked": 1.0},
        "https://x/bad-type": {"length": 5, "type": "<script>", "checked": 1.0},
        "https://x/bad-checked": {"length": 5, "type": None, "checked": "yesterday"}}}))
    assert load_cache(path) == {"https://x/good": ProbeRecord(5, "image/png", 1.0)}


def test_the_user_agent_names_the_home_page(tmp_path):
    with LocalServer(image_host({"/img/a.png": (PHOTO, "image/png")})) as server:
        write_article(tmp_path / "store", "a.md", images=[server.url("/img/a.png")], provider=None)
        site = {"title": "T", "base_url": "https://feeds.example.org/", "home": "https://news.example.net/about"}
        config = make_config(tmp_path, site=site, enclosures={"probe": True})
        build(config, now=NOW)
    assert server.requests[0].headers["user-agent"] == "publisher/0.1.0 (+https://news.example.net/about)"

