"""index.html and feeds.opml: parsed back and checked against the feeds of the same build, with hostile
titles and topic names that must come through as text."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pytest
from lxml import etree

from publisher.build import build
from tests.conftest import SITE, make_config, snapshot, write_article

BASE = "https://feeds.example.org/news/"
HOSTILE_TITLE = 'Feeds <script>alert("x")</script> & \'Co\''
HOSTILE_TOPIC = '<b onclick="x()">Bold</b> & "Q"'
# HTML elements the page may use; anything else (script, iframe, a typo) fails the test.
ALLOWED = {"html", "head", "meta", "title", "link", "style", "body", "header", "main", "h1", "h2", "p", "a",
           "ul", "li", "time"}
TYPES = {".atom": "application/atom+xml", ".rss": "application/rss+xml", ".json": "application/feed+json"}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    write_article(store, "a.md", topics=["Zebra", HOSTILE_TOPIC, "émile"],
                  publishedDateTime="2024-01-01T10:00:00Z")
    write_article(store, "b.md", topics=["Zebra"], publishedDateTime="2024-03-04T10:00:00Z")
    write_article(store, "c.md", topics=["Apple"], publishedDateTime="2024-02-01T10:00:00Z")
    config = make_config(tmp_path, max_items=2, site={**SITE, "base_url": BASE, "title": HOSTILE_TITLE,
                                                      "description": "About <feeds> & more"})
    report = build(config)
    assert report.ok
    return tmp_path / "out"


def local(out: Path, url: str) -> Path:
    """The file an absolute URL below the base URL stands for; fails for any other URL."""
    assert url.startswith(BASE), url
    path = out / url.removeprefix(BASE)
    assert path.is_file(), url
    return path


def feeds(out: Path) -> list[Path]:
    """Every feed the build wrote, as its Atom file."""
    return sorted(out.rglob("*.atom"))


def parse_index(out: Path) -> etree._Element:
    text = (out / "index.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>\n")
    # Written as well-formed markup: an XML parser must read it whole (no unclosed or stray tags).
    return etree.fromstring(text.encode("utf-8"), etree.XMLParser(resolve_entities=False, no_network=True))


def test_index_is_valid_small_html5_without_script(out):
    root = parse_index(out)
    assert root.tag == "html" and root.get("lang") == "en"
    assert {element.tag for element in root.iter() if isinstance(element.tag, str)} <= ALLOWED
    head = root.find("head")
    assert head[0].tag == "meta" and head[0].get("charset") == "utf-8"  # first, within 1024 bytes
    assert head.find("meta[@name='viewport']").get("content") == "width=device-width, initial-scale=1"
    assert [e.tag for e in root] == ["head", "body"]
    assert len(root.findall("head/title")) == 1
    for element in root.iter():
        if isinstance(element.tag, str):
            assert not any(name.startswith("on") for name in element.attrib), element.tag
    assert not root.xpath("//@href[starts-with(., 'javascript:')]")


def test_index_text_is_escaped(out):
    root = parse_index(out)
    assert root.findtext("head/title") == HOSTILE_TITLE
    assert root.findtext("body/header/h1") == HOSTILE_TITLE
    assert root.findtext("body/header/p") == "About <feeds> & more"
    assert HOSTILE_TOPIC in [h2.text for h2 in root.iter("h2")]
    assert not root.xpath("//script | //b")
    raw = (out / "index.html").read_text(encoding="utf-8")
    assert "<script" not in raw and "<b " not in raw


def test_index_lists_every_feed_in_order_with_counts_dates_and_formats(out):
    root = parse_index(out)
    items = root.findall("body/main/ul/li")
    names = [item.findtext("h2") for item in items]
    assert names == ["All articles", HOSTILE_TOPIC, "Apple", "émile", "Zebra"]  # overall, then by name
    assert len(items) == len(feeds(out))
    meta = {item.findtext("h2"): "".join(item.find("p[@class='meta']").itertext()) for item in items}
    assert meta["All articles"] == "3 articles (the feed lists the newest 2), newest 2024-03-04."
    assert meta["Apple"] == "1 article, newest 2024-02-01."
    assert meta["Zebra"] == "2 articles, newest 2024-03-04."
    time = items[0].find("p/time")
    assert time.get("datetime") == "2024-03-04T10:00:00+00:00"
    for item in items:
        links = item.findall("p[@class='formats']/a")
        assert [a.text for a in links] == ["Atom", "RSS", "JSON Feed"]
        for a in links:
            target = local(out, a.get("href"))
            assert TYPES[target.suffix] == a.get("type")
    opml = root.find("body/header/p/a[@type='text/x-opml']")
    assert local(out, opml.get("href")).name == "feeds.opml"


def test_index_autodiscovers_every_feed_in_every_format(out):
    root = parse_index(out)
    links = root.findall("head/link[@rel='alternate']")
    assert len(links) == 3 * len(feeds(out))
    found = {}
    for link in links:
        target = local(out, link.get("href"))
        assert link.get("type") == TYPES[target.suffix]
        found[target] = link.get("title")
    assert set(found) == {atom.with_suffix(ext) for atom in feeds(out) for ext in TYPES}
    for atom in feeds(out):
        title = feedparser.parse(atom.read_bytes()).feed.title
        assert found[atom] == f"{title} (Atom)"
        assert found[atom.with_suffix(".json")] == f"{title} (JSON Feed)"


def test_opml_lists_every_feed_once(out):
    root = etree.parse(str(out / "feeds.opml")).getroot()
    assert root.tag == "opml" and root.get("version") == "2.0"
    assert root.findtext("head/title") == HOSTILE_TITLE
    assert root.findtext("head/docs") == "http://opml.org/spec2.opml"
    outlines = root.findall("body/outline")
    assert sorted(local(out, o.get("xmlUrl")) for o in outlines) == feeds(out)
    for outline in outlines:
        title = feedparser.parse(local(out, outline.get("xmlUrl")).read_bytes()).feed.title
        assert outline.get("type") == "rss"
        assert outline.get("text") == outline.get("title") == title
        assert outline.get("htmlUrl") == SITE["home"]
    assert outlines[0].get("xmlUrl") == f"{BASE}all.atom"
    assert [o.get("title").removeprefix(f"{HOSTILE_TITLE}: ") for o in outlines[1:]] == [
        HOSTILE_TOPIC, "Apple", "émile", "Zebra"]


def test_empty_store_still_has_pages(tmp_path):
    (tmp_path / "store").mkdir()
    build(make_config(tmp_path))
    root = parse_index(tmp_path / "out")
    assert "".join(root.find("body/main/ul/li/p").itertext()) == "No articles yet."
    assert len(etree.parse(str(tmp_path / "out" / "feeds.opml")).findall("body/outline")) == 1


def test_pages_change_only_with_what_they_show(tmp_path, out):
    config = make_config(tmp_path, max_items=2, site={**SITE, "base_url": BASE, "title": HOSTILE_TITLE,
                                                      "description": "About <feeds> & more"})
    before = snapshot(out)
    assert build(config).writes.written == []
    assert snapshot(out) == before
    write_article(tmp_path / "store", "c.md", topics=["Apple"], title="Renamed",
                  publishedDateTime="2024-02-01T10:00:00Z")
    written = build(config).writes.written
    assert "index.html" not in written and "feeds.opml" not in written  # same feeds, counts and dates
    write_article(tmp_path / "store", "d.md", topics=["New"], publishedDateTime="2024-02-02T10:00:00Z")
    written = build(config).writes.written
    assert {"index.html", "feeds.opml", "index.html.gz", "feeds.opml.gz"} <= set(written)
    assert re.search(r"<h2>New</h2>", (out / "index.html").read_text(encoding="utf-8"))
    assert urlsplit(f"{BASE}topics/new.atom").path in {
        urlsplit(o.get("xmlUrl")).path for o in etree.parse(str(out / "feeds.opml")).findall("body/outline")}
