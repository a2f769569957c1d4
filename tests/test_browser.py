"""The pages in a real browser (tests/browser.py: Debian's chromium, headless, through Selenium), loaded
from a real server on 127.0.0.1, nginx with deploy/nginx.conf and `publisher serve` in turn. The articles'
images and provider logos come from a second local server, so that every request the page causes is seen:
the browser's own performance log and both servers' logs must show no request for another host and nothing
missing. Screenshots at 360 and 1280 px wide are left in the test's temporary folder."""

from __future__ import annotations

import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import feedparser
import pytest
from lxml import etree

from tests.browser import chromium, full_page_screenshot, requested_urls, set_viewport
from tests.conftest import SITE, run_cli, wait_for, write_article, write_config
from tests.test_serving import start_nginx, start_serve, stop

DEADLINE = 20.0  # seconds the page gets to load what a test waits for
TOPICS = {"AI": 7, "Robots": 3, "Émile Zola": 1, "Quantum Computing": 2}  # topic -> articles with it


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A small solid-colour PNG (RFC 2083): the images the articles point to."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@dataclass
class ImageServer:
    """Article images and logos on 127.0.0.1, with a log of every request."""

    url: str
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self) -> list[str]:
        with self.lock:
            return list(self.requests)


@pytest.fixture
def images() -> Iterator[ImageServer]:
    picture = png(64, 48, (70, 110, 160))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with served.lock:
                served.requests.append(self.path)
            if not self.path.endswith(".png"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(picture)))
            self.end_headers()
            self.wfile.write(picture)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served = ImageServer(f"http://127.0.0.1:{server.server_address[1]}/")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served
    server.shutdown()
    server.server_close()


@pytest.fixture
def site(tmp_path: Path, images: ImageServer) -> Path:
    """A store whose images and logos are on the local image server, built with the CLI."""
    store = tmp_path / "store"
    number = 0
    for topic, count in TOPICS.items():
        for _ in range(count):
            number += 1
            topics = [topic] if topic == "AI" else ["AI", topic] if number % 2 else [topic]
            write_article(store, f"a{number:02d}.md", topics=topics, title=f"{topic} story {number}",
                          publishedDateTime=f"2024-02-{number:02d}T10:00:00Z",
                          images=[{"url": f"{images.url}img/{number}.png", "width": 800, "height": 600}],
                          provider={"name": f"Provider {number % 3}", "domain": "news.example.com",
                                    "images": [{"url": "/logos/provider.png", "width": 50, "height": 50}]})
    write_config(tmp_path, assets_base_url=images.url, site={**SITE, "base_url": "https://feeds.example.org/"})
    result = run_cli("build", "-c", tmp_path / "config.yaml")
    assert result.returncode == 0, result.stderr
    return tmp_path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module (it takes a second or two to start): each test opens about:blank first and
    reads the requests made since, and its servers are on ports of their own, so nothing is cached across."""
    with chromium() as driver:
        yield driver


@dataclass
class Site:
    name: str
    url: str
    log: Callable[[], list[tuple[str, int]]]  # (path, status) of every request the server answered


def nginx_log(path: Path) -> Callable[[], list[tuple[str, int]]]:
    def read() -> list[tuple[str, int]]:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        return [(m.group(1), int(m.group(2))) for m in re.finditer(r'"[A-Z]+ (\S+) HTTP/[\d.]+" (\d{3})', text)]
    return read


@pytest.fixture(params=["nginx", "publisher serve"])
def server(request: pytest.FixtureRequest, site: Path) -> Iterator[Site]:
    if request.param == "nginx":
        process, port = start_nginx(site / "nginx", site / "out", "http://127.0.0.1:9/hub")
        log = nginx_log(site / "nginx" / "access.log")
    else:
        process, port = start_serve(site)
        log = nginx_log(site / "serve.log")  # the same request line and status, from SimpleHTTPRequestHandler
    yield Site(request.param, f"http://127.0.0.1:{port}/", log)
    stop(process)


def expected_names(out: Path) -> list[str]:
    """Every feed's name as the index shows it, in the OPML's (the index's) order."""
    outlines = etree.parse(str(out / "feeds.opml")).findall("body//outline[@xmlUrl]")  # in family groups
    return ["All articles" if o.get("xmlUrl").endswith("/all.atom") else o.get("title").removeprefix(
        f"{SITE['title']}: ") for o in outlines]


# The contrast ratio (WCAG 2) of each element's text on the first opaque background behind it.
CONTRAST = """
const luminance = (colour) => {
  const [r, g, b] = colour.match(/[\\d.]+/g).slice(0, 3).map(Number).map((v) => {
    v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const background = (element) => {
  for (let e = element; e; e = e.parentElement) {
    const colour = getComputedStyle(e).backgroundColor;
    if (!/rgba\\(.*, 0\\)$/.test(colour) && colour !== "transparent") return colour;
  }
  return getComputedStyle(document.documentElement).backgroundColor;
};
return [...document.querySelectorAll(arguments[0])].filter((e) => e.offsetParent !== null).map((e) => {
  const a = luminance(getComputedStyle(e).color), b = luminance(background(e));
  return [e.tagName + "." + e.className, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
});
"""
TEXT = "h1, h2, h3 a, p, .meta, .muted, .formats a, a.name, code.url, label, footer a"


def check_contrast(driver: Any) -> None:
    for scheme in ("light", "dark"):
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                               {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
        ratios = driver.execute_script(CONTRAST, TEXT)
        assert ratios, scheme
        low = [(name, round(ratio, 2)) for name, ratio in ratios if ratio < 4.5]
        assert not low, f"{scheme}: contrast below 4.5:1: {low[:5]}"
    dark = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                           {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
    assert driver.execute_script("return getComputedStyle(document.body).backgroundColor") != dark


def check_fits(driver: Any, width: int) -> None:
    """Nothing wider than the viewport: no sideways scrolling on a phone."""
    set_viewport(driver, width)
    assert driver.execute_script("return document.documentElement.scrollWidth") <= width


def test_index_and_topic_page_in_a_real_browser(browser, site, server, images, tmp_path):
    from selenium.webdriver.common.by import By

    out = site / "out"
    driver = browser
    driver.get("about:blank")
    requested_urls(driver)  # what the browser did before this test (its new tab page, the test before)
    driver.get(server.url)
    assert driver.title == SITE["title"]
    rows = driver.find_elements(By.CSS_SELECTOR, "li[data-filter]")
    assert [row.find_element(By.CSS_SELECTOR, "a.name").text for row in rows] == expected_names(out)
    assert [s.find_element(By.TAG_NAME, "h2").text for s in driver.find_elements(By.CSS_SELECTOR,
            "section.family")] == ["Everything (1)", f"Topics ({len(TOPICS)})"]
    box = driver.find_element(By.ID, "filter-text")
    assert box.is_displayed()  # the script showed the filter
    box.send_keys("zola")
    visible = [row.find_element(By.CSS_SELECTOR, "a.name").text for row in rows if row.is_displayed()]
    assert visible == ["Émile Zola"]
    assert not driver.find_element(By.ID, "family-all").is_displayed()  # a family with no row left
    box.clear()
    box.send_keys("QUANTUM comp")
    assert [r.find_element(By.CSS_SELECTOR, "a.name").text for r in rows if r.is_displayed()] == [
        "Quantum Computing"]
    box.clear()
    box.send_keys("emile")  # accents aside
    assert [r.find_element(By.CSS_SELECTOR, "a.name").text for r in rows if r.is_displayed()] == ["Émile Zola"]
    box.clear()
    box.send_keys("x")
    box.send_keys("\b")
    assert all(row.is_displayed() for row in rows)
    check_contrast(driver)
    check_fits(driver, 360)
    for width in (360, 1280):
        assert full_page_screenshot(driver, tmp_path / f"index-{width}.png", width).stat().st_size > 0

    set_viewport(driver, 1280)
    driver.find_element(By.LINK_TEXT, "AI").click()  # a relative link, on whatever host and port
    wait_for(lambda: driver.current_url == f"{server.url}topics/ai.html", DEADLINE, "the topic page")
    parsed = feedparser.parse((out / "topics" / "ai.atom").read_bytes())
    assert driver.title == parsed.feed.title
    titles = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "ol.entries h3 a")]
    assert titles == [entry.title for entry in parsed.entries] and len(titles) == TOPICS["AI"] + 3
    links = driver.find_elements(By.CSS_SELECTOR, "ul.subscribe a")
    assert [a.get_attribute("href") for a in links] == [
        f"{server.url}topics/ai{extension}" for extension in (".atom", ".rss", ".json")]
    assert [c.text for c in driver.find_elements(By.CSS_SELECTOR, "code.url")] == [
        f"https://feeds.example.org/topics/ai{extension}" for extension in (".atom", ".rss", ".json")]
    # The first thumbnail is in view: it loads (lazily), in the box its markup gives it.
    first = driver.find_element(By.CSS_SELECTOR, "img.thumb")
    wait_for(lambda: driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", first),
             DEADLINE, "the first thumbnail")
    assert (first.size["width"], first.size["height"]) == (160, 120)
    check_contrast(driver)
    check_fits(driver, 360)
    for width in (360, 1280):
        assert full_page_screenshot(driver, tmp_path / f"topic-{width}.png", width).stat().st_size > 0
    set_viewport(driver, 1280)
    asked = requested_urls(driver)

    # Every request the browser made went to one of the two local servers.
    web = [url for url in asked if urlsplit(url).scheme in ("http", "https", "ws", "wss")]
    assert web and all(urlsplit(url).netloc in (urlsplit(server.url).netloc, urlsplit(images.url).netloc)
                       for url in web), [u for u in web if "127.0.0.1" not in u]
    # chrome:// is the browser's own new tab page, built in; the pages ask for nothing but http.
    assert not [url for url in asked if urlsplit(url).scheme not in ("http", "data", "chrome")], asked
    # Both servers saw those requests and had an answer for each: nothing missing, not even a favicon.
    answered = wait_for(server.log, DEADLINE, f"{server.name}'s request log")
    assert ("/", 200) in answered and ("/topics/ai.html", 200) in answered
    assert all(status in (200, 304) for _, status in server.log()), server.log()
    pictures = images.paths()
    assert "/img/1.png" in pictures or any(p.startswith("/img/") for p in pictures)
    assert "/logos/provider.png" in pictures
    assert all(p.startswith(("/img/", "/logos/")) for p in pictures)
