"""Build feeds from the whole real corpus through the CLI and check them field by field."""

from __future__ import annotations

import json
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import lxml.html
import pytest
import yaml
from lxml import etree

from tests.conftest import ATOM, MEDIA, NS, SITE, require_corpus, run_main, write_config


def _front_matter(path: Path) -> dict | None:
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return None
    data = yaml.safe_load(text.split("---", 2)[1])
    return data if isinstance(data, dict) else None


@pytest.fixture(scope="module")
def corpus_articles() -> list[tuple[Path, dict]]:
    found = []
    for path in sorted(require_corpus().rglob("*")):
        if path.is_file() and path.suffix in (".md", ".txt", ".html"):  # newsletters are .html
            meta = _front_matter(path)
            if meta and "publishedDateTime" in meta and "title" in meta:
                found.append((path, meta))
    return found


def feed_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.suffix in (".atom", ".rss"))


def test_every_feed_parses_without_bozo(corpus_build):
    files = feed_files(corpus_build["out"])
    assert any(p.name == "all.atom" for p in files) and any(p.name == "all.rss" for p in files)
    assert len([p for p in files if p.parent.name == "topics"]) >= 20
    for path in files:
        parsed = feedparser.parse(path.read_bytes())
        assert not parsed.bozo, f"{path}: {parsed.get('bozo_exception')}"
        assert parsed.version in ("atom10", "rss20"), path


def test_all_feed_holds_every_live_article_and_nothing_else(corpus_build, corpus_articles):
    live = {meta.get("webUrl") or meta.get("originalUrl") for _, meta in corpus_articles
            if meta.get("published", True) is not False}
    hidden = {meta["webUrl"] for _, meta in corpus_articles if meta.get("published") is False} - live
    assert len(hidden) > 40  # the corpus has many unpublished articles: the check below means something
    atom = feedparser.parse((corpus_build["out"] / "all.atom").read_bytes())
    links = {e.link for e in atom.entries}
    assert len(atom.entries) == len(links) == len(live)
    assert not links & hidden
    for feed in feed_files(corpus_build["out"]):
        text = feed.read_text(encoding="utf-8")
        for url in hidden:
            assert url.replace("&", "&amp;") not in text, (feed, url)


def test_ids_are_stable_uuids_unique_per_feed(corpus_build):
    for path in feed_files(corpus_build["out"]):
        parsed = feedparser.parse(path.read_bytes())
        ids = [e.id for e in parsed.entries]
        assert len(ids) == len(set(ids)), path
        assert all(i.startswith("urn:uuid:") for i in ids), path


def test_rss_guid_is_not_a_permalink(corpus_build):
    root = etree.parse(str(corpus_build["out"] / "all.rss"))
    guids = root.findall(".//item/guid")
    assert guids and all(g.get("isPermaLink") == "false" for g in guids)


def test_every_url_in_every_feed_is_absolute_http(corpus_build):
    for path in feed_files(corpus_build["out"]):
        root = etree.parse(str(path))
        urls = [v for el in root.iter() for k, v in el.attrib.items() if k in ("href", "url", "uri")]
        urls += [el.text for el in root.iter() if el.tag in ("link", f"{{{ATOM}}}uri", "url") and el.text]
        assert urls
        for url in urls:
            parts = urlsplit(url)
            assert parts.scheme in ("http", "https") and parts.netloc, (path, url)
            assert " " not in url, (path, url)


def test_self_links_are_absolute_and_point_at_the_file(corpus_build):
    out = corpus_build["out"]
    for path in feed_files(out):
        root = etree.parse(str(path))
        selfs = root.xpath("//*[local-name()='link' and @rel='self']")
        assert len(selfs) == 1, path
        assert selfs[0].get("href") == SITE["base_url"] + path.relative_to(out).as_posix()
        hubless_home = root.xpath("/a:feed/a:link[@rel='alternate']/@href | /rss/channel/link/text()",
                                  namespaces=NS)
        assert hubless_home == [SITE["home"]], path


def test_feed_dates_are_the_newest_entry_date(corpus_build):
    for path in feed_files(corpus_build["out"]):
        root = etree.parse(str(path))
        if path.suffix == ".atom":
            feed_updated = datetime.fromisoformat(root.findtext(f"{{{ATOM}}}updated"))
            entries = [datetime.fromisoformat(t) for t in root.xpath("//a:entry/a:updated/text()", namespaces=NS)]
            assert feed_updated == max(entries), path
        else:
            build_date = parsedate_to_datetime(root.findtext("channel/lastBuildDate"))
            pub_date = parsedate_to_datetime(root.findtext("channel/pubDate"))
            items = [parsedate_to_datetime(t) for t in root.xpath("//item/pubDate/text()")]
            assert build_date == pub_date == max(items), path


def test_dates_are_whole_seconds_utc(corpus_build):
    root = etree.parse(str(corpus_build["out"] / "all.atom"))
    stamps = root.xpath("//a:updated/text() | //a:published/text()", namespaces=NS)
    assert stamps and all(s.endswith("+00:00") and "." not in s for s in stamps)


def test_entries_newest_first(corpus_build):
    parsed = feedparser.parse((corpus_build["out"] / "all.atom").read_bytes())
    published = [e.published_parsed for e in parsed.entries]
    assert published == sorted(published, reverse=True)


def test_categories_and_topic_feeds_match_the_articles(corpus_build, corpus_articles):
    out = corpus_build["out"]
    atom = feedparser.parse((out / "topics" / "ai-in-healthcare.atom").read_bytes())
    assert atom.feed.title == f"{SITE['title']}: AI in Healthcare"
    assert atom.entries
    for entry in atom.entries:
        assert "AI in Healthcare" in [t.term for t in entry.tags]
    expected = {(m.get("webUrl") or m.get("originalUrl")) for _, m in corpus_articles
                if "AI in Healthcare" in (m.get("topics") or []) and m.get("published", True) is not False}
    assert {e.link for e in atom.entries} == expected


def test_atom_enclosures_carry_rel_type_and_length(corpus_build):
    root = etree.parse(str(corpus_build["out"] / "all.atom"))
    enclosures = root.xpath("//a:entry/a:link[@rel='enclosure']", namespaces=NS)
    assert len(enclosures) > 50
    for link in enclosures:
        assert link.get("type") and link.get("length") is not None and link.get("href").startswith("http")
    # Site-relative provider logos come out resolved below the site's base path.
    assert root.xpath("//a:link[@rel='enclosure' and starts-with(@href, "
                      "'https://everyday-cc.github.io/ai/assets/images/organizations/')]", namespaces=NS)


def test_atom_enclosure_per_image_and_logo(corpus_build):
    root = etree.parse(str(corpus_build["out"] / "all.atom"))
    # 2021-03-05 deepfakes story: one image and one provider logo.
    entry = root.xpath("//a:entry[a:link[not(@rel) and contains(@href, 'study-warns-deepfakes')]]",
                       namespaces=NS)[0]
    hrefs = entry.xpath("a:link[@rel='enclosure']/@href", namespaces=NS)
    assert hrefs == [
        "https://venturebeat.com/wp-content/uploads/2020/10/grobman-Elon_Musk_Tesla_DeepFake.jpg?w=1200&strip=all",
        "https://everyday-cc.github.io/ai/assets/images/organizations/venturebeat.com-50x50.jpg",
    ]


def test_rss_has_exactly_one_enclosure_per_item_with_media(corpus_build):
    root = etree.parse(str(corpus_build["out"] / "all.rss"))
    items = root.findall(".//item")
    with_media = 0
    for item in items:
        contents = item.findall(f"{{{MEDIA}}}content")
        enclosures = item.findall("enclosure")
        assert len(enclosures) == (1 if contents else 0)
        if contents:
            with_media += 1
            assert enclosures[0].get("url") == contents[0].get("url")
            assert enclosures[0].get("length") == "0" and enclosures[0].get("type")
            assert all(c.get("medium") == "image" for c in contents)
            assert len(item.findall(f"{{{MEDIA}}}thumbnail")) == 1
    assert with_media > 40 and with_media < len(items)  # some corpus articles have neither image nor logo
    assert not root.xpath("//media:group", namespaces=NS)


def test_never_publishes_secured_or_amp_fields(corpus_build):
    for path in feed_files(corpus_build["out"]):
        text = path.read_text(encoding="utf-8")
        assert "cdn.ampproject.org" not in text and "secured" not in text, path
        assert "OY+BN0RQ300kzFYBNxfEOo7gLU" not in text


def test_rebuild_is_byte_identical_and_rewrites_nothing(corpus_build):
    assert corpus_build["second"].returncode == 0
    assert corpus_build["after"] == corpus_build["before"]  # bytes and mtimes
    assert " 0 files written," in corpus_build["second"].stdout


def test_broken_corpus_documents_are_named(corpus_build):
    stderr = corpus_build["first"].stderr
    assert "_learning/courses/coursera-ai-for-everyone.md: publishedDateTime: missing" in stderr
    assert "_events/" not in stderr  # events are not articles: skipped quietly


def test_every_corpus_feed_file_is_within_the_default_max_bytes(corpus_build):
    files = [p for p in corpus_build["out"].rglob("*") if p.suffix in (".atom", ".rss", ".json")]
    assert len(files) >= 45
    assert all(path.stat().st_size <= 512 * 1024 for path in files), files


def test_corpus_feeds_cut_to_a_small_budget_still_parse(tmp_path):
    """64 KiB is less than the overall feed: every file is cut to size and still a valid feed."""
    config = write_config(tmp_path, store=str(require_corpus()), max_items=1000, max_bytes="64KiB",
                          assets_base_url="https://everyday-cc.github.io/ai/")
    result = run_main("build", "-c", config)
    assert result.returncode == 0, result.stderr
    assert "feeds trimmed to max_bytes" in result.stdout
    for path in sorted((tmp_path / "out").rglob("*")):
        if path.suffix in (".atom", ".rss", ".json"):
            assert path.stat().st_size <= 64 * 1024, path
        if path.suffix in (".atom", ".rss"):
            parsed = feedparser.parse(path.read_bytes())
            assert not parsed.bozo and parsed.entries, (path, parsed.get("bozo_exception"))


def test_content_html_in_every_corpus_feed_is_safe_with_absolute_urls(corpus_build):
    """The newsletters' bodies: sanitized HTML in Atom content, RSS content:encoded and JSON content_html."""
    out = corpus_build["out"]
    bodies: list[str] = []
    for path in feed_files(out):
        root = etree.parse(str(path))
        bodies += [el.text for el in root.iter(f"{{{ATOM}}}content", f"{{{NS['content']}}}encoded") if el.text]
    for path in out.rglob("*.json"):
        if path.name != "feeds.json":
            bodies += [item["content_html"] for item in json.loads(path.read_bytes()).get("items", [])
                       if "content_html" in item]
    assert len(bodies) >= 6  # two newsletters in Atom, RSS and JSON of the overall feed at least
    for body in bodies:
        fragment = lxml.html.fragment_fromstring(body, create_parent="div")
        assert "News of the day" in fragment.text_content()
        for element in fragment.iter():
            assert isinstance(element.tag, str) and element.tag not in ("script", "style", "head", "title")
            for name, value in element.attrib.items():
                assert not name.startswith("on") and name != "style"
                if name in ("href", "src"):
                    parts = urlsplit(value)
                    assert (parts.scheme in ("http", "https") and parts.netloc) or parts.scheme == "mailto", value
        assert "{%" not in body and "{can-spam}" not in body and "[if mso]" not in body
