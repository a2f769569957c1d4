"""The pages for people (index.html, a page per feed) and feeds.opml: parsed back with html5lib in strict
mode (any HTML5 parse error fails) and checked against the feeds of the same build, with hostile titles and
topic names that must come through as text. The same pages in a real browser: tests/test_browser.py."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import html5lib
import pytest
from lxml import etree

from publisher.build import build
from tests.conftest import SITE, make_config, snapshot, write_article

BASE = "https://feeds.example.org/news/"
HOSTILE_TITLE = 'Feeds <script>alert("x")</script> & \'Co\''
HOSTILE_TOPIC = '<b onclick="x()">Bold</b> & "Q"'
# HTML elements the pages may use; anything else (iframe, object, a typo) fails the test.
ALLOWED = {"html", "head", "meta", "title", "link", "style", "script", "body", "header", "main", "footer", "nav",
           "section", "article", "div", "span", "h1", "h2", "h3", "p", "a", "ul", "ol", "li", "time", "img", "code",
           "form", "label", "input", "br"}
TYPES = {".atom": "application/atom+xml", ".rss": "application/rss+xml", ".json": "application/feed+json"}
LONG_EXCERPT = "word " * 200


@pytest.fixture
def out(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    write_article(store, "a.md", topics=["Zebra", HOSTILE_TOPIC, "émile"], title="<i>Tagged</i> & title",
                  publishedDateTime="2024-01-01T10:00:00Z", excerpt=LONG_EXCERPT)
    write_article(store, "b.md", topics=["Zebra"], publishedDateTime="2024-03-04T10:00:00Z", images=None)
    write_article(store, "c.md", topics=["Apple"], publishedDateTime="2024-02-01T10:00:00Z", provider=None)
    config = make_config(tmp_path, max_items=2, site={**SITE, "base_url": BASE, "title": HOSTILE_TITLE,
                                                      "description": "About <feeds> & more"})
    report = build(config)
    assert report.ok
    return tmp_path / "out"


def parse(path: Path) -> etree._Element:
    """The page parsed by an HTML5 parser in strict mode: a parse error fails the test."""
    data = path.read_bytes()
    assert data.startswith(b"<!DOCTYPE html>\n")
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False,
                                 tree=html5lib.getTreeBuilder("lxml"))
    document = parser.parse(data, transport_encoding="utf-8")
    return document.getroot()


def local(out: Path, url: str) -> Path:
    """The file an absolute URL below the base URL stands for; fails for any other URL."""
    assert url.startswith(BASE), url
    path = out / url.removeprefix(BASE)
    assert path.is_file(), url
    return path


def linked(out: Path, page: Path, href: str) -> Path:
    """The file a relative link on `page` leads to; fails when it leaves the output folder or is missing."""
    assert not urlsplit(href).scheme and not href.startswith("/"), href
    relative = posixpath.normpath(posixpath.join(page.parent.relative_to(out).as_posix(), href))
    assert not relative.startswith(".."), href
    assert (out / relative).is_file(), href
    return out / relative


def feeds(out: Path) -> list[Path]:
    """Every feed the build wrote, as its Atom file."""
    return sorted(out.rglob("*.atom"))


def pages(out: Path) -> list[Path]:
    return sorted(out.rglob("*.html"))


def text(element: etree._Element) -> str:
    return " ".join("".join(element.itertext()).split())


def test_every_feed_has_a_page_and_every_page_is_strict_html5(out):
    assert [p.with_suffix(".atom") for p in pages(out) if p.name != "index.html"] == feeds(out)
    for page in pages(out):
        root = parse(page)
        assert root.tag == "html" and root.get("lang") == "en"
        assert [e.tag for e in root] == ["head", "body"]
        head = root.find("head")
        assert head[0].tag == "meta" and head[0].get("charset") == "utf-8"  # first, within 1024 bytes
        assert head.find("meta[@name='viewport']").get("content") == "width=device-width, initial-scale=1"
        assert len(root.findall("head/title")) == 1 and len(root.findall(".//h1")) == 1
        assert {element.tag for element in root.iter() if isinstance(element.tag, str)} <= ALLOWED, page
        ids = [element.get("id") for element in root.iter() if isinstance(element.tag, str) and element.get("id")]
        assert len(ids) == len(set(ids)), page
        for element in root.iter():
            if isinstance(element.tag, str):
                assert not any(name.startswith("on") for name in element.attrib), (page, element.tag)
        assert not root.xpath("//@href[starts-with(., 'javascript:')]")
        assert root.find("head/style") is not None and not root.xpath("//link[@rel='stylesheet']")
        assert "@media (prefers-color-scheme:dark)" in root.findtext("head/style")


def test_nothing_is_loaded_from_another_host_but_article_images(out):
    for page in pages(out):
        root = parse(page)
        style = root.findtext("head/style")
        assert "@import" not in style and "url(" not in style and "@font-face" not in style
        for script in root.iter("script"):
            assert script.get("src") is None
        assert page.name == "index.html" or not root.findall(".//script")  # the filter is the only script
        for link in root.iter("link"):
            if link.get("rel") == "icon":  # none: keeps browsers from asking for /favicon.ico
                assert link.get("href") == "data:,"
                continue
            assert link.get("rel") == "alternate", page
            linked(out, page, link.get("href"))
        for image in root.iter("img"):
            assert image.get("src").startswith(("https://img.example.com/", SITE["home"],
                                                "https://assets.example.org/")), image.get("src")


def test_links_between_pages_are_relative_and_lead_to_files(out):
    for page in pages(out):
        root = parse(page)
        for a in root.iter("a"):
            href = a.get("href")
            if urlsplit(href).scheme:  # articles and the home page
                assert href.startswith(("https://news.example.com/", SITE["home"])), href
                continue
            target = linked(out, page, href)
            if a.get("type"):
                assert TYPES.get(target.suffix, "text/x-opml") == a.get("type"), href


def test_text_from_the_store_and_config_is_escaped(out):
    root = parse(out / "index.html")
    assert root.findtext("head/title") == HOSTILE_TITLE
    assert root.findtext("body/header/h1") == HOSTILE_TITLE
    assert root.findtext("body/header/p") == "About <feeds> & more"
    assert HOSTILE_TOPIC in [a.text for a in root.iter("a")]
    for page in pages(out):
        root = parse(page)
        assert not root.xpath("//b | //i"), page
        assert len(root.findall(".//script")) == (page.name == "index.html")
    zebra = parse(out / "topics" / "zebra.html")
    assert "<i>Tagged</i> & title" in [a.text for a in zebra.iter("a")]
    hostile = next(p for p in pages(out) if parse(p).findtext(".//h1") == f"{HOSTILE_TITLE}: {HOSTILE_TOPIC}")
    assert hostile.parent.name == "topics"


def test_index_groups_feeds_by_family_with_counts_dates_and_formats(out):
    root = parse(out / "index.html")
    sections = root.findall("body/main/section")
    assert [text(s.find("h2")) for s in sections] == ["Everything (1)", "Topics (4)"]
    rows = {text(s.find("h2")): s.findall("ul/li") for s in sections}
    names = [row.find("a").text for row in rows["Topics (4)"]]
    assert names == [HOSTILE_TOPIC, "Apple", "émile", "Zebra"]  # by name, accents and case aside
    assert len(rows["Everything (1)"]) + len(rows["Topics (4)"]) == len(feeds(out))
    meta = {row.find("a").text: text(row.find("span[@class='meta']")) for row in root.iter("li")}
    assert meta["All articles"] == "3 articles, newest 2024-03-04"
    assert meta["Apple"] == "1 article, newest 2024-02-01"
    assert meta["Zebra"] == "2 articles, newest 2024-03-04"
    assert root.find(".//li/span/time").get("datetime") == "2024-03-04T10:00:00+00:00"
    for row in root.iter("li"):
        page = linked(out, out / "index.html", row.find("a").get("href"))
        assert page.suffix == ".html"
        links = row.findall("span[@class='formats']/a")
        assert [a.text for a in links] == ["Atom", "RSS", "JSON Feed"]
        assert [linked(out, out / "index.html", a.get("href")) for a in links] == [
            page.with_suffix(extension) for extension in TYPES]
        assert row.get("data-filter") == row.find("a").text.lower().replace("é", "e")
    opml = root.find("body/header/p/a[@type='text/x-opml']")
    assert linked(out, out / "index.html", opml.get("href")).name == "feeds.opml"


def test_index_filter_box_is_hidden_until_its_script_shows_it(out):
    root = parse(out / "index.html")
    form = root.find("body/main/form")
    assert form.get("hidden") is not None and form.get("id") == "filter"
    label, box = form.find("label"), form.find("input")
    assert label.get("for") == box.get("id") and box.get("type") == "search"
    script = root.find("body/script").text
    assert 'getElementById("filter")' in script and ".hidden" in script


def test_index_announces_the_overall_feed(out):
    root = parse(out / "index.html")
    links = root.findall("head/link[@rel='alternate']")
    assert [(link.get("href"), link.get("type")) for link in links] == [
        (f"all{extension}", media_type) for extension, media_type in TYPES.items()]


def test_feed_page_shows_the_feed_and_how_to_subscribe(out):
    for atom in feeds(out):
        page = atom.with_suffix(".html")
        root = parse(page)
        parsed = feedparser.parse(atom.read_bytes())
        assert root.findtext("head/title") == root.findtext(".//h1") == parsed.feed.title
        discovery = root.findall("head/link[@rel='alternate']")
        assert [(linked(out, page, link.get("href")), link.get("type")) for link in discovery] == [
            (atom.with_suffix(extension), media_type) for extension, media_type in TYPES.items()]
        assert [link.get("title") for link in discovery] == [
            f"{parsed.feed.title} ({label})" for label in ("Atom", "RSS", "JSON Feed")]
        subscribe = root.findall(".//ul[@class='subscribe']/li")
        assert [li.find("a").text for li in subscribe] == ["Atom", "RSS", "JSON Feed"]
        for li, extension in zip(subscribe, TYPES, strict=True):
            target = linked(out, page, li.find("a").get("href"))
            assert target == atom.with_suffix(extension) and li.find("a").get("type") == TYPES[extension]
            # The copy-the-URL control is the feed's own absolute URL as plain text, selectable as a whole.
            assert li.findtext("code") == f"{BASE}{target.relative_to(out).as_posix()}"
        assert li.find("code").get("class") == "url"
        assert parsed.feed.links[0].href == subscribe[0].findtext("code")
        index = root.find(".//header/p/a")
        assert linked(out, page, index.get("href")) == out / "index.html"


def test_feed_page_lists_the_feeds_entries(out):
    for atom in feeds(out):
        root = parse(atom.with_suffix(".html"))
        parsed = feedparser.parse(atom.read_bytes())
        articles = root.findall(".//ol[@class='entries']/li/article")
        assert [(a.find(".//h3/a").text, a.find(".//h3/a").get("href")) for a in articles] == [
            (entry.title, entry.link) for entry in parsed.entries]
        for article, entry in zip(articles, parsed.entries, strict=True):
            meta = text(article.find(".//p[@class='meta']"))
            assert meta.endswith(entry.published[:10])
            assert article.find(".//time").get("datetime")[:19] == entry.published[:19]
            if entry.get("author"):
                assert meta.startswith(f"{entry.author} · ")
            excerpt = article.findtext(".//div/p[2]")
            assert excerpt == entry.summary or (excerpt.endswith("…") and len(excerpt) <= 281
                                                and entry.summary.startswith(excerpt[:-1]))


def test_images_have_alt_text_sizes_and_load_lazily(out):
    page = out / "topics" / "zebra.html"
    root = parse(page)
    articles = root.findall(".//ol/li/article")
    by_title = {a.find(".//h3/a").text: a for a in articles}
    with_image = by_title["<i>Tagged</i> & title"]
    thumb = with_image.find("img[@class='thumb']")
    assert thumb.get("src") == "https://img.example.com/a.jpg"
    assert (thumb.get("width"), thumb.get("height"), thumb.get("loading")) == ("160", "120", "lazy")
    assert thumb.get("alt") == ""  # decorative: the title beside it names the article
    logo = with_image.find(".//img[@class='provider']")
    assert logo.get("src") == "https://assets.example.org/site/assets/logos/news.png"
    assert (logo.get("width"), logo.get("height"), logo.get("alt")) == ("20", "20", "")
    assert text(logo.getparent()).startswith("Example News · ")  # the name the logo stands beside
    assert by_title["Story b"].find("img[@class='thumb']") is None  # no image: no empty box
    for any_page in pages(out):
        for image in parse(any_page).iter("img"):
            assert image.get("alt") is not None and image.get("width") and image.get("height")


def test_feed_logo_when_the_site_has_one(tmp_path):
    write_article(tmp_path / "store", "a.md")
    logo = "https://example.org/logo.png"
    build(make_config(tmp_path, site={**SITE, "logo": logo}))
    for page in ("all.html", "topics/ai.html"):
        found = parse(tmp_path / "out" / page).find("body/header/img")
        assert found.get("src") == logo and found.get("alt").endswith(" logo")
    root = parse(tmp_path / "out" / "index.html")
    assert root.find(".//img") is None


def test_opml_lists_every_feed_once(out):
    root = etree.parse(str(out / "feeds.opml")).getroot()
    assert root.tag == "opml" and root.get("version") == "2.0"
    assert root.findtext("head/title") == HOSTILE_TITLE
    assert root.findtext("head/docs") == "http://opml.org/spec2.opml"
    outlines = root.findall(".//outline[@type='rss']")
    assert sorted(local(out, o.get("xmlUrl")) for o in outlines) == feeds(out)
    # The overall feed at the top, the topic feeds in a "Topics" outline (a folder in a feed reader).
    top = root.findall("body/outline")
    assert [o.get("text") for o in top] == [f"{HOSTILE_TITLE}", "Topics"]
    assert top[1].get("type") is None and top[1].findall("outline") == outlines[1:]
    for outline in outlines:
        title = feedparser.parse(local(out, outline.get("xmlUrl")).read_bytes()).feed.title
        assert outline.get("type") == "rss"
        assert outline.get("text") == outline.get("title") == title
        assert local(out, outline.get("htmlUrl")) == local(out, outline.get("xmlUrl")).with_suffix(".html")
    assert outlines[0].get("xmlUrl") == f"{BASE}all.atom"
    assert [o.get("title").removeprefix(f"{HOSTILE_TITLE}: ") for o in outlines[1:]] == [
        HOSTILE_TOPIC, "Apple", "émile", "Zebra"]


def test_empty_store_still_has_pages(tmp_path):
    (tmp_path / "store").mkdir()
    build(make_config(tmp_path))
    root = parse(tmp_path / "out" / "index.html")
    assert text(root.find("body/main/section/ul/li/span")) == "No articles yet."
    assert "No articles yet." in text(parse(tmp_path / "out" / "all.html").find("body/main"))
    assert len(etree.parse(str(tmp_path / "out" / "feeds.opml")).findall(".//outline")) == 1


def test_pages_change_only_with_what_they_show(tmp_path, out):
    config = make_config(tmp_path, max_items=2, site={**SITE, "base_url": BASE, "title": HOSTILE_TITLE,
                                                      "description": "About <feeds> & more"})
    before = snapshot(out)
    assert build(config).writes.written == []
    assert snapshot(out) == before
    write_article(tmp_path / "store", "c.md", topics=["Apple"], title="Renamed",
                  publishedDateTime="2024-02-01T10:00:00Z", provider=None)
    written = build(config).writes.written
    assert "index.html" not in written and "feeds.opml" not in written  # same feeds, counts and dates
    assert "topics/apple.html" in written and "topics/zebra.html" not in written
    assert "Renamed" in [a.text for a in parse(out / "topics" / "apple.html").iter("a")]
    write_article(tmp_path / "store", "d.md", topics=["New"], publishedDateTime="2024-02-02T10:00:00Z")
    written = build(config).writes.written
    assert {"index.html", "feeds.opml", "index.html.gz", "feeds.opml.gz", "topics/new.html",
            "topics/new.html.gz"} <= set(written)
    assert re.search(r'<a class="name" href="topics/new.html">New</a>', (out / "index.html").read_text("utf-8"))
    assert urlsplit(f"{BASE}topics/new.atom").path in {
        urlsplit(o.get("xmlUrl")).path for o in etree.parse(str(out / "feeds.opml")).findall(".//outline[@xmlUrl]")}
