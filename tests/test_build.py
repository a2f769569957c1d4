"""Whole builds on hand-made stores in tmp_path, through the real CLI or the build() function."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from publisher.build import build
from tests.conftest import NS, make_config, run_cli, run_main, snapshot, write_article, write_config


@pytest.fixture
def site(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    write_article(store, "a.md", topics=["AI", "Robots"], publishedDateTime="2024-01-01T10:00:00Z")
    write_article(store, "b.md", topics=["AI"], publishedDateTime="2024-01-02T10:00:00Z")
    return tmp_path


def parse(path: Path):
    parsed = feedparser.parse(path.read_bytes())
    assert not parsed.bozo, parsed.get("bozo_exception")
    return parsed


def outputs(*feeds: str, pages: tuple[str, ...] = ()) -> list[str]:
    """The files a build with the default `formats` and `precompress` writes for these feeds (each with its
    HTML page) and site pages."""
    files = [f"{feed}{extension}" for feed in feeds for extension in (".atom", ".rss", ".json", ".html")]
    files += list(pages)
    return sorted(files + [f"{name}.gz" for name in files])


def test_build_writes_overall_and_topic_feeds(site):
    result = run_main("build", "-c", write_config(site))
    assert result.returncode == 0, result.stderr
    out = site / "out"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == outputs(
        "all", "topics/ai", "topics/robots", pages=("feeds.opml", "index.html"))
    assert [e.link for e in parse(out / "all.atom").entries] == ["https://news.example.com/b",
                                                                 "https://news.example.com/a"]
    assert [e.link for e in parse(out / "topics/robots.rss").entries] == ["https://news.example.com/a"]
    assert "2 articles read, 2 published" in result.stdout


def test_stale_topic_feed_is_removed_and_foreign_files_kept(site):
    config = make_config(site)
    build(config)
    (site / "out" / "about.html").write_text("mine")
    (site / "out" / "topics" / "notes.txt").write_text("mine too")
    write_article(site / "store", "a.md", topics=["AI"], publishedDateTime="2024-01-01T10:00:00Z")
    report = build(config)
    assert sorted(report.writes.removed) == outputs("topics/robots")
    assert not (site / "out" / "topics" / "robots.atom").exists()
    assert (site / "out" / "about.html").read_text() == "mine"
    assert (site / "out" / "topics" / "notes.txt").read_text() == "mine too"


def test_empty_topic_folder_goes_with_its_last_feed(site):
    config = make_config(site)
    build(config)
    for name in ("a.md", "b.md"):
        write_article(site / "store", name, topics=[])
    build(config)
    assert not (site / "out" / "topics").exists()
    assert parse(site / "out" / "all.atom").entries


def test_rebuild_rewrites_nothing(site):
    config = make_config(site)
    build(config)
    before = snapshot(site / "out")
    report = build(config)
    assert report.writes.written == [] and sorted(report.writes.unchanged) == outputs(
        "all", "topics/ai", "topics/robots", pages=("feeds.opml", "index.html"))
    assert snapshot(site / "out") == before


def test_changed_article_rewrites_only_its_feeds(site):
    config = make_config(site)
    build(config)
    write_article(site / "store", "b.md", topics=["AI"], title="New title",
                  publishedDateTime="2024-01-02T10:00:00Z")
    report = build(config)
    assert sorted(report.writes.written) == outputs("all", "topics/ai")  # same counts: pages unchanged


def test_unpublished_and_future_articles_are_held_back(tmp_path):
    store = tmp_path / "store"
    now = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    write_article(store, "live.md", publishedDateTime="2024-06-01T11:59:59Z")
    write_article(store, "draft.md", published=False)
    write_article(store, "soon.md", publishedDateTime="2024-06-01T12:30:00Z")
    config = make_config(tmp_path)
    report = build(config, now=now)
    links = [e.link for e in parse(tmp_path / "out" / "all.rss").entries]
    assert links == ["https://news.example.com/live"]
    assert (report.skipped["unpublished"], report.skipped["scheduled"]) == (1, 1)
    assert report.next_due == datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    build(config, now=now + timedelta(hours=1))
    assert [e.link for e in parse(tmp_path / "out" / "all.rss").entries] == [
        "https://news.example.com/soon", "https://news.example.com/live"]


def test_same_url_twice_is_one_entry_updated_last_wins(tmp_path, caplog):
    store = tmp_path / "store"
    write_article(store, "day1.md", webUrl="http://www.news.example.com/x/", title="First crawl",
                  publishedDateTime="2024-01-01T00:00:00Z")
    write_article(store, "day2.md", webUrl="https://news.example.com/x?utm_source=feed", title="Second crawl",
                  publishedDateTime="2024-01-01T00:00:00Z", updatedDateTime="2024-01-02T00:00:00Z")
    with caplog.at_level("DEBUG"):
        report = build(make_config(tmp_path))
    entries = parse(tmp_path / "out" / "all.atom").entries
    assert [e.title for e in entries] == ["Second crawl"]
    assert report.skipped["duplicate"] == 1
    assert "publishing day2.md (updated last)" in caplog.text and "day1.md" in caplog.text


def test_id_survives_rename_and_https_switch(tmp_path):
    store = tmp_path / "store"
    write_article(store, "old-name.md", webUrl="http://news.example.com/story")
    build(make_config(tmp_path))
    first = parse(tmp_path / "out" / "all.atom").entries[0].id
    (store / "old-name.md").unlink()
    write_article(store, "deeper/new-name.md", webUrl="https://news.example.com/story")
    build(make_config(tmp_path))
    assert parse(tmp_path / "out" / "all.atom").entries[0].id == first


def test_ties_broken_by_id_and_max_items(tmp_path):
    store = tmp_path / "store"
    for n in range(7):
        write_article(store, f"s{n}.md", publishedDateTime="2024-01-01T00:00:00Z")
    build(make_config(tmp_path, max_items=5))
    root = etree.parse(str(tmp_path / "out" / "all.atom"))
    ids = root.xpath("//a:entry/a:id/text()", namespaces=NS)
    assert len(ids) == 5 and ids == sorted(ids)


def test_excerpt_is_text_in_atom_and_escaped_html_in_rss(tmp_path):
    write_article(tmp_path / "store", "x.md", excerpt="V&L <b>models</b> &amp; more")
    build(make_config(tmp_path))
    atom = etree.parse(str(tmp_path / "out" / "all.atom"))
    summary = atom.xpath("//a:entry/a:summary", namespaces=NS)[0]
    assert summary.get("type") == "text" and summary.text == "V&L <b>models</b> & more"
    rss = etree.parse(str(tmp_path / "out" / "all.rss"))
    assert rss.findtext(".//item/description") == "V&amp;L &lt;b&gt;models&lt;/b&gt; &amp; more"
    assert parse(tmp_path / "out" / "all.rss").entries[0].summary == "V&amp;L &lt;b&gt;models&lt;/b&gt; &amp; more"


def test_provider_is_atom_author_and_dc_creator(tmp_path):
    write_article(tmp_path / "store", "x.md")
    build(make_config(tmp_path))
    atom = etree.parse(str(tmp_path / "out" / "all.atom"))
    assert atom.xpath("//a:entry/a:author/a:name/text()", namespaces=NS) == ["Example News"]
    assert atom.xpath("//a:entry/a:author/a:uri/text()", namespaces=NS) == ["https://news.example.com/"]
    rss = etree.parse(str(tmp_path / "out" / "all.rss"))
    assert rss.xpath("//item/dc:creator/text()", namespaces=NS) == ["Example News"]
    assert rss.xpath("//item/author") == []  # RSS <author> must be an e-mail address


def test_logo_is_the_rss_enclosure_when_there_is_no_image(tmp_path):
    write_article(tmp_path / "store", "x.md", images=None)
    write_article(tmp_path / "store", "bare.md", images=[], provider={"name": "Bare"})
    build(make_config(tmp_path))
    rss = etree.parse(str(tmp_path / "out" / "all.rss"))
    by_link = {item.findtext("link"): item for item in rss.findall(".//item")}
    logo = by_link["https://news.example.com/x"].findall("enclosure")
    assert [(e.get("url"), e.get("type"), e.get("length")) for e in logo] == [
        ("https://assets.example.org/site/assets/logos/news.png", "image/png", "0")]
    assert by_link["https://news.example.com/bare"].findall("enclosure") == []


def test_plain_text_body_becomes_content(tmp_path):
    path = write_article(tmp_path / "store", "x.txt")  # .txt: plain text (.md would be Markdown)
    path.write_text(path.read_text() + "First <para>.\n\nSecond & last.\n")
    build(make_config(tmp_path))
    entry = parse(tmp_path / "out" / "all.atom").entries[0]
    assert entry.content[0].value == "<p>First &lt;para&gt;.</p>\n<p>Second &amp; last.</p>"


HOSTILE_TOPICS = ["../../escape", "/etc/passwd", "..", "a/b\\c", "人工智能", "Émile Zola", "C++", "C#",
                  "CON", "x" * 300, "dot.", " spaced  out ", "Ai", "AI"]


def test_hostile_topic_names_stay_inside_the_output(tmp_path):
    for n, topic in enumerate(HOSTILE_TOPICS):
        write_article(tmp_path / "store", f"t{n}.md", topics=[topic])
    result = run_main("build", "-c", write_config(tmp_path))
    assert result.returncode == 0, result.stderr
    out = (tmp_path / "out").resolve()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".atom", ".rss")]
    assert all(out in p.resolve().parents for p in written)
    names = sorted(p.name for p in (out / "topics").iterdir() if p.suffix == ".atom")
    assert all(n == n.lower() and n.replace("-", "").replace(".atom", "").isalnum() for n in names), names
    # "Ai" and "AI" are one topic; the other 12 names give 12 feeds, "C++" and "C#" apart.
    assert len(names) == len(HOSTILE_TOPICS) - 1
    assert "escape.atom" in names and "emile-zola.atom" in names and "c.atom" in names
    assert "ren-gong-zhi-neng.atom" in names  # 人工智能, transliterated
    assert any(n.startswith("topic-") for n in names) and any(n.startswith("c-") for n in names)
    assert not (tmp_path / "escape.atom").exists()
    titles = {parse(p).feed.title for p in (out / "topics").glob("*.atom")}
    assert "Test Feeds: 人工智能" in titles and "Test Feeds: C#" in titles


BAD_ARTICLES = {
    "no-title.md": ("---\npublishedDateTime: 2024-01-01T00:00:00Z\nwebUrl: https://x.example/1\n---\n", "title"),
    "map-title.md": ("---\ntitle: {a: b}\npublishedDateTime: 2024-01-01\nwebUrl: https://x.example/2\n---\n",
                     "title"),
    "list-topic.md": ("---\ntitle: T\npublishedDateTime: 2024-01-01\nwebUrl: https://x.example/3\n"
                      "topics:\n  - AI\n  - [a, b]\n---\n", "topics[1]"),
    "bad-date.md": ("---\ntitle: T\npublishedDateTime: last tuesday\nwebUrl: https://x.example/4\n---\n",
                    "publishedDateTime"),
    "ftp-link.md": ("---\ntitle: T\npublishedDateTime: 2024-01-01\nwebUrl: ftp://x.example/5\n---\n", "webUrl"),
    "broken-yaml.md": ("---\ntitle: \"unclosed\npublishedDateTime: 2024-01-01\n---\n", "front matter"),
    "no-fence.md": ("---\ntitle: T\npublishedDateTime: 2024-01-01\n", "front matter"),
    "list-front-matter.md": ("---\n- a\n- b\n---\n", "front matter"),
}


def test_each_bad_article_is_named_and_the_rest_published(tmp_path):
    store = tmp_path / "store"
    write_article(store, "good.md")
    for name, (text, _) in BAD_ARTICLES.items():
        (store / name).write_text(text, encoding="utf-8")
    (store / "latin1.md").write_bytes("---\ntitle: caf\xe9\n---\n".encode("latin-1"))
    result = run_main("build", "-c", write_config(tmp_path))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    for name, (_, field) in BAD_ARTICLES.items():
        assert [w for w in warnings if f"{name}: {field}:" in w], (name, result.stderr)
    assert any("latin1.md: not UTF-8" in w for w in warnings)
    assert len(warnings) == len(BAD_ARTICLES) + 1
    assert [e.link for e in parse(tmp_path / "out" / "all.atom").entries] == ["https://news.example.com/good"]
    strict = run_cli("build", "--strict", "-c", write_config(tmp_path))
    assert strict.returncode == 1 and "skipped" in strict.stderr


def test_non_articles_are_skipped_quietly(tmp_path):
    store = tmp_path / "store"
    write_article(store, "good.md")
    (store / "event.md").write_text("---\nname: NeurIPS\nstartDateTime: 2019-12-08T08:00:00-08:00\n---\n")
    (store / "README.md").write_text("# Just a readme\n")
    (store / "_config.yml").write_text("title: site\n")
    result = run_main("build", "-c", write_config(tmp_path))
    assert result.returncode == 0 and "WARNING" not in result.stderr
    assert "1 article read" in result.stdout and "1 other document ignored" in result.stdout


def test_include_and_exclude_patterns(tmp_path):
    store = tmp_path / "store"
    write_article(store, "news/a.md")
    write_article(store, "news/drafts/b.md")
    write_article(store, "other/c.txt")
    build(make_config(tmp_path, include=["news/**"], exclude=["**/drafts/*"]))
    assert [e.link for e in parse(tmp_path / "out" / "all.atom").entries] == ["https://news.example.com/a"]


def test_output_inside_the_store_is_not_scanned(tmp_path):
    write_article(tmp_path / "store", "a.md")
    config = make_config(tmp_path, output="store/public")
    build(config)
    (tmp_path / "store" / "public" / "trap.md").write_text("---\ntitle: x\n---\n")
    report = build(config)
    assert report.collection.invalid == 0


def test_empty_store_still_has_an_overall_feed(tmp_path):
    (tmp_path / "store").mkdir()
    build(make_config(tmp_path))
    atom = parse(tmp_path / "out" / "all.atom")
    assert atom.entries == [] and atom.feed.updated == "1970-01-01T00:00:00+00:00"
    assert parse(tmp_path / "out" / "all.rss").feed.title == "Test Feeds"
