"""RFC 5005 archives: every feed's whole history in monthly archive documents, walked from the subscription
feed through its prev-archive links and checked with feedparser and lxml against the store's articles."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pytest
from lxml import etree

from publisher.build import build
from tests.conftest import SITE, make_config, require_corpus, snapshot, write_article

ATOM = "{http://www.w3.org/2005/Atom}"
FH = "{http://purl.org/syndication/history/1.0}"
BASE = SITE["base_url"]


def local(out: Path, url: str) -> Path:
    """The file an absolute URL below the base URL stands for; fails for any other URL or a missing file."""
    assert url.startswith(BASE), url
    path = out / urlsplit(url).path.removeprefix(urlsplit(BASE).path)
    assert path.is_file(), url
    return path


def links(document: Path) -> dict[str, str]:
    """rel -> href of a document's feed-level links (Atom links; atom:link in an RSS channel)."""
    root = etree.parse(str(document)).getroot()
    found = root.findall(f"{ATOM}link") if root.tag == f"{ATOM}feed" else root.findall(f"channel/{ATOM}link")
    rels = [link.get("rel") for link in found]
    assert len(rels) == len(set(rels)), rels  # one link per relation
    return {link.get("rel"): link.get("href") for link in found}


def is_archive(document: Path) -> bool:
    root = etree.parse(str(document)).getroot()
    head = root if root.tag == f"{ATOM}feed" else root.find("channel")
    return head.find(f"{FH}archive") is not None


def walk(out: Path, feed: Path) -> list[Path]:
    """The archive documents of `feed`, from its prev-archive link to the oldest, checking every link."""
    chain: list[Path] = []
    url = links(feed).get("prev-archive")
    next_url = f"{BASE}{feed.relative_to(out).as_posix()}"
    while url:
        document = local(out, url)
        assert document not in chain, "the chain loops"
        parsed = feedparser.parse(document.read_bytes())
        assert not parsed.bozo, (document, parsed.bozo_exception)
        assert is_archive(document)
        found = links(document)
        assert found["current"] == f"{BASE}{feed.relative_to(out).as_posix()}"
        local(out, found["current"])
        if chain:  # the first archive has no next-archive when it is the newest: the feed is its next
            assert found.get("next-archive") == next_url
        else:
            assert "next-archive" not in found
        chain.append(document)
        next_url, url = url, found.get("prev-archive")
    assert not is_archive(feed)
    return chain


def entry_ids(document: Path) -> list[str]:
    return [entry.id for entry in feedparser.parse(document.read_bytes()).entries]


def published(document: Path) -> list[tuple[int, ...]]:
    """The entries' published dates (UTC), as (year, month, day, hour, minute, second)."""
    return [tuple(entry.published_parsed[:6]) for entry in feedparser.parse(document.read_bytes()).entries]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    dates = ["2023-11-30T23:59:59Z", "2023-12-01T00:00:00Z", "2023-12-15T08:00:00Z", "2024-02-29T12:00:00Z",
             "2024-02-01T00:00:00Z", "2024-05-05T05:05:05Z"]
    for number, date in enumerate(dates):
        write_article(store, f"a{number}.md", publishedDateTime=date,
                      topics=["AI"] if number % 2 else ["AI", "Robots"])
    write_article(store, "draft.md", publishedDateTime="2024-02-02T00:00:00Z", published=False)
    write_article(store, "future.md", publishedDateTime="2999-01-01T00:00:00Z")
    return store


def test_chain_holds_every_published_article_once_by_month(tmp_path, store):
    config = make_config(tmp_path, archives=True, max_items=2)
    assert build(config).ok
    out = tmp_path / "out"
    feeds = sorted(p for p in out.rglob("*.atom") if not p.relative_to(out).as_posix().startswith("archive/"))
    assert [p.relative_to(out).as_posix() for p in feeds] == ["all.atom", "topics/ai.atom", "topics/robots.atom"]
    for ext in (".atom", ".rss"):
        for atom in feeds:
            feed = atom.with_suffix(ext)
            chain = walk(out, feed)
            archived = [entry for document in chain for entry in entry_ids(document)]
            assert len(archived) == len(set(archived))  # every article once in the chain
            # Months without articles (2024-01, 2024-03, 2024-04) are skipped; newest month first.
            months = [document.name.split(".")[0] for document in chain]
            assert months == sorted(months, reverse=True) and "2024-01" not in months
            for document in chain:
                dates = published(document)
                assert dates == sorted(dates, reverse=True)  # newest first
                month = document.name.split(".")[0]
                assert all(date[:2] == tuple(map(int, month.split("-"))) for date in dates)
            # The feed lists its newest max_items; feed and archives together hold every published article.
            assert set(entry_ids(feed)) <= set(archived)
            expected = {"all": 6, "topics/ai": 6, "topics/robots": 3}[atom.relative_to(out).with_suffix("").as_posix()]
            assert len(archived) == expected
    all_chain = walk(out, out / "all.atom")
    assert [p.relative_to(out).as_posix() for p in all_chain] == [
        "archive/all/2024-05.atom", "archive/all/2024-02.atom", "archive/all/2023-12.atom", "archive/all/2023-11.atom"]
    assert [len(entry_ids(p)) for p in all_chain] == [1, 2, 2, 1]  # 23:59:59 on Nov 30 UTC is November
    # No JSON archives, no gzip copies of archives; the JSON Feed has no archive link.
    assert not list((out / "archive").rglob("*.json")) and not list((out / "archive").rglob("*.gz"))
    assert "archive" not in (out / "all.json").read_text(encoding="utf-8")


def test_archives_are_not_listed_on_the_index_or_the_opml(tmp_path, store):
    assert build(make_config(tmp_path, archives=True)).ok
    out = tmp_path / "out"
    assert "archive/" not in (out / "index.html").read_text(encoding="utf-8")
    assert "archive/" not in (out / "feeds.opml").read_text(encoding="utf-8")


def test_a_new_article_in_an_old_month_rewrites_only_that_months_archives(tmp_path, store):
    config = make_config(tmp_path, archives=True, max_items=2)
    assert build(config).ok
    out = tmp_path / "out"
    before = snapshot(out)
    report = build(config)
    assert report.writes.written == [] and snapshot(out) == before  # a no-op rewrites nothing
    write_article(store, "late.md", publishedDateTime="2023-12-20T00:00:00Z", topics=["Robots"])
    report = build(config)
    after = snapshot(out)
    archives = {name for name in after if name.startswith("archive/")}
    changed = {name for name in archives if before.get(name) != after[name]}
    assert changed == {"archive/all/2023-12.atom", "archive/all/2023-12.rss",
                       "archive/topics/robots/2023-12.atom", "archive/topics/robots/2023-12.rss"}
    for name in archives - changed:  # bytes and modification time alone
        assert after[name] == before[name], name
    assert {name for name in report.writes.written if name.startswith("archive/")} == changed
    assert "https://news.example.com/late" in [entry.link for entry in feedparser.parse(
        (out / "archive/all/2023-12.atom").read_bytes()).entries]


def test_months_that_disappear_are_removed_and_links_follow(tmp_path, store):
    config = make_config(tmp_path, archives=True)
    assert build(config).ok
    out = tmp_path / "out"
    (store / "a5.md").unlink()  # the only article of 2024-05
    assert build(config).ok
    assert not (out / "archive/all/2024-05.atom").exists()
    assert links(out / "all.atom")["prev-archive"] == f"{BASE}archive/all/2024-02.atom"
    assert "next-archive" not in links(out / "archive/all/2024-02.atom")
    walk(out, out / "all.atom")
    assert build(make_config(tmp_path, archives=False)).ok  # archives off: every archive file goes
    assert not (out / "archive").exists()
    assert "prev-archive" not in links(out / "all.atom")


def test_a_touched_or_deleted_archive_is_written_again(tmp_path, store):
    config = make_config(tmp_path, archives=True)
    assert build(config).ok
    out = tmp_path / "out"
    target = out / "archive/all/2023-12.atom"
    good = target.read_bytes()
    target.unlink()
    assert "archive/all/2023-12.atom" in build(config).writes.written and target.read_bytes() == good
    target.write_bytes(b"spoiled")
    os.utime(target, ns=(1, 1))
    assert "archive/all/2023-12.atom" in build(config).writes.written and target.read_bytes() == good


def test_provider_and_curated_feeds_have_archives_too(tmp_path, store):
    config = make_config(tmp_path, archives=True, families=["all", "providers"],
                         curated=[{"name": "robots", "title": "Robots", "where": {"topics": ["Robots"]}}])
    assert build(config).ok
    out = tmp_path / "out"
    assert len(walk(out, out / "providers/news-example-com.rss")) == 4
    chain = walk(out, out / "curated/robots.atom")
    assert sum(len(entry_ids(p)) for p in chain) == 3


def test_corpus_chains_parse_and_hold_every_article(tmp_path):
    corpus = require_corpus()
    config = make_config(tmp_path, store=str(corpus), archives=True, max_items=5,
                         assets_base_url="https://everyday-cc.github.io/ai/")
    report = build(config)
    assert report.ok
    out = tmp_path / "out"
    overall = [entry for document in walk(out, out / "all.atom") for entry in entry_ids(document)]
    assert len(overall) == len(set(overall)) == report.published
    for feed in sorted((out / "topics").glob("*.atom"))[:20]:
        walk(out, feed)


def test_a_month_over_max_bytes_is_split_into_chained_parts(tmp_path):
    store = tmp_path / "store"
    for day in range(1, 13):
        write_article(store, f"feb{day:02d}.md", publishedDateTime=f"2024-02-{day:02d}T10:00:00Z",
                      excerpt=f"Story of day {day}. " + "Long excerpt text. " * 25)
    write_article(store, "jan.md", publishedDateTime="2024-01-15T10:00:00Z")
    config = make_config(tmp_path, archives=True, max_items=2, max_bytes="6KiB")
    assert build(config).ok
    out = tmp_path / "out"
    for ext in (".atom", ".rss"):
        chain = walk(out, out / f"all{ext}")
        names = [document.relative_to(out).as_posix() for document in chain]
        assert names[:2] == [f"archive/all/2024-02{ext}", f"archive/all/2024-02.2{ext}"]
        assert names[-1] == f"archive/all/2024-01{ext}" and len(names) > 3  # February in three parts or more
        assert all(document.stat().st_size <= 6 * 1024 for document in chain)
        archived = [entry for document in chain for entry in entry_ids(document)]
        assert len(archived) == len(set(archived)) == 13  # every article once, across the parts
        dates = [date for document in chain for date in published(document)]
        assert dates == sorted(dates, reverse=True)  # the parts run from the newest articles to the oldest
