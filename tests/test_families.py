"""Feed families beyond the overall and topic feeds: one feed per provider, and curated feeds selected by
quality, heat, type, topic and provider. Built through the real pipeline, read back with feedparser/lxml."""

from __future__ import annotations

import json
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from publisher.build import build
from tests.conftest import SITE, make_config, run_main, write_article, write_config

ATOM = "{http://www.w3.org/2005/Atom}"
LOGO = "https://cdn.example.net/verge.png"


def provider(name: str | None, domain: str | None, logo: str | None = None) -> dict:
    data: dict = {"name": name, "domain": domain}
    if logo:
        data["images"] = [{"url": logo, "width": 64, "height": 64}]
    return {key: value for key, value in data.items() if value is not None}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    # The Verge under two spellings of its domain; one article without its logo.
    write_article(store, "v1.md", provider=provider("The Verge", "www.TheVerge.com", LOGO), quality=80, heat=50,
                  type="article", topics=["AI", "Robotics"], publishedDateTime="2024-03-01T10:00:00Z")
    write_article(store, "v2.md", provider=provider("The Verge", "theverge.com"), quality=40, heat=90,
                  type="video", topics=["AI"], publishedDateTime="2024-03-02T10:00:00Z")
    # A provider with a name and no domain: keyed by its name.
    write_article(store, "n1.md", provider=provider("Nameless Times", None), quality=70, heat=10,
                  type="conference", topics=["Health"], publishedDateTime="2024-03-03T10:00:00Z")
    # No quality, no heat, no type: only conditions it does not need can select it.
    write_article(store, "x1.md", provider=provider("Example News", "news.example.com"), quality=None,
                  heat=None, type=None, topics=["robotics"], publishedDateTime="2024-03-04T10:00:00Z")
    return store


def ids(path: Path) -> list[str]:
    parsed = feedparser.parse(path.read_bytes())
    assert not parsed.bozo, parsed.bozo_exception
    return [entry.link.rsplit("/", 1)[-1] for entry in parsed.entries]


def test_one_feed_per_provider_keyed_by_domain_with_its_logo(tmp_path, store):
    config = make_config(tmp_path, families=["all", "topics", "providers"])
    assert build(config).ok
    out = tmp_path / "out"
    assert sorted(p.relative_to(out).as_posix() for p in (out / "providers").glob("*.atom")) == [
        "providers/nameless-times.atom", "providers/news-example-com.atom", "providers/theverge-com.atom"]
    verge = out / "providers" / "theverge-com.atom"
    assert ids(verge) == ["v2", "v1"]  # newest first, both spellings of the domain
    root = etree.parse(str(verge)).getroot()
    assert root.findtext(f"{ATOM}title") == f"{SITE['title']}: The Verge"
    assert root.findtext(f"{ATOM}logo") == LOGO and root.findtext(f"{ATOM}icon") == LOGO
    assert root.find(f"{ATOM}category") is None  # a provider is not a topic
    rss = etree.parse(str(verge.with_suffix(".rss"))).getroot()
    assert rss.findtext("channel/image/url") == LOGO
    assert rss.findtext("channel/title") == f"{SITE['title']}: The Verge"
    document = json.loads(verge.with_suffix(".json").read_text(encoding="utf-8"))
    assert document["icon"] == LOGO and document["title"] == f"{SITE['title']}: The Verge"
    assert [item["url"].rsplit("/", 1)[-1] for item in document["items"]] == ["v2", "v1"]
    assert ids(out / "providers" / "nameless-times.atom") == ["n1"]
    # The provider without a logo of its own shows the site's (none here): no logo at all.
    assert etree.parse(str(out / "providers" / "nameless-times.atom")).getroot().find(f"{ATOM}logo") is None
    # The default families build no provider feeds; the files go when the family does.
    assert build(make_config(tmp_path)).ok
    assert not (out / "providers").exists()


def test_provider_feeds_are_listed_in_the_opml_under_their_family(tmp_path, store):
    assert build(make_config(tmp_path, families=["all", "providers"])).ok
    root = etree.parse(str(tmp_path / "out" / "feeds.opml")).getroot()
    groups = {o.get("text"): [c.get("xmlUrl").rsplit("/", 2)[-2:] for c in o] for o in root.find("body")
              if o.get("type") is None}
    # By name as a person reads it: Example News, Nameless Times, The Verge.
    assert groups == {"Providers": [["providers", "news-example-com.atom"], ["providers", "nameless-times.atom"],
                                    ["providers", "theverge-com.atom"]]}


@pytest.mark.parametrize("where, expected", [
    ({"min_quality": 70}, ["n1", "v1"]),
    ({"min_heat": 50}, ["v2", "v1"]),
    ({"types": ["video", "conference"]}, ["n1", "v2"]),
    ({"types": "article"}, ["v1"]),
    ({"topics": ["robotics"]}, ["x1", "v1"]),  # topics match like topic feeds do: case ignored
    ({"providers": ["theverge.com"]}, ["v2", "v1"]),
    ({"providers": ["WWW.THEVERGE.COM"]}, ["v2", "v1"]),
    ({"providers": ["Nameless Times", "news.example.com"]}, ["x1", "n1"]),  # by name, or by domain
    ({"min_quality": 60, "topics": ["AI"]}, ["v1"]),
    ({"min_quality": 30, "min_heat": 40, "types": ["article", "video"], "providers": ["The Verge"]}, ["v2", "v1"]),
    ({"min_quality": 90}, []),
])
def test_curated_feed_holds_the_articles_meeting_every_condition(tmp_path, store, where, expected):
    config = make_config(tmp_path, curated=[{"name": "picked", "title": "Picked", "where": where}])
    assert build(config).ok
    feed = tmp_path / "out" / "curated" / "picked.atom"
    if not expected:  # no article meets the conditions: no feed (like a topic without articles)
        assert not feed.exists()
        return
    assert ids(feed) == expected
    assert feedparser.parse(feed.read_bytes()).feed.title == f"{SITE['title']}: Picked"


def test_curated_max_items_defaults_to_the_top_level_one(tmp_path, store):
    config = make_config(tmp_path, max_items=3, curated=[
        {"name": "top-two", "title": "Top two", "where": {"min_quality": 0, "min_heat": 0}, "max_items": 2},
        {"name": "all-verge", "title": "Verge", "where": {"providers": ["theverge.com"]}},
        {"name": "many", "title": "Many", "where": {"topics": ["AI", "Health", "Robotics"]}}])
    assert build(config).ok
    out = tmp_path / "out" / "curated"
    assert ids(out / "top-two.atom") == ["n1", "v2"]
    assert ids(out / "all-verge.atom") == ["v2", "v1"]
    assert ids(out / "many.atom") == ["x1", "n1", "v2"]
    # A no-op rebuild rewrites nothing; a changed condition rewrites what it changes.
    assert build(config).writes.written == []
    config = make_config(tmp_path, max_items=3, curated=[
        {"name": "top-two", "title": "Top two", "where": {"min_quality": 75}, "max_items": 2}])
    report = build(config)
    assert "curated/top-two.atom" in report.writes.written
    assert ids(out / "top-two.atom") == ["v1"]
    assert not (out / "many.atom").exists()


@pytest.mark.parametrize("curated, words", [
    ([{"name": "a", "title": "A", "where": {"min_qualty": 3}}], "curated[0].where.min_qualty: unknown key"),
    ([{"name": "a", "title": "A", "where": {}}], "curated[0].where: expected a mapping with at least one of"),
    ([{"name": "a", "title": "A"}], "curated[0].where: expected a mapping"),
    ([{"name": "a", "title": "A", "where": {"min_heat": "hot"}}], "curated[0].where.min_heat: expected a number"),
    ([{"name": "a", "title": "A", "where": {"types": []}}], "curated[0].where.types: expected a non-empty list"),
    ([{"name": "a", "title": "A", "where": {"topics": [1]}}], "curated[0].where.topics: expected a non-empty list"),
    ([{"name": "a", "title": "A", "where": {"min_heat": 1}}, {"name": "a", "title": "B", "where": {"min_heat": 2}}],
     "curated[1].name: 'a' names another curated feed already"),
    ([{"name": "../x", "title": "A", "where": {"min_heat": 1}}], "curated[0].name: expected a file name"),
    ([{"name": "a", "title": "", "where": {"min_heat": 1}}], "curated[0].title: expected a non-empty title"),
    ([{"name": "a", "title": "A", "where": {"min_heat": 1}, "max_items": 0}], "curated[0].max_items: expected"),
    ([{"name": "a", "title": "A", "where": {"min_heat": 1}, "limit": 3}], "curated[0].limit: unknown key"),
    ({"name": "a"}, "curated: expected a list"),
])
def test_curated_config_errors_name_the_key(tmp_path, curated, words):
    config = write_config(tmp_path, curated=curated)
    result = run_main("build", "-c", config)
    assert result.returncode == 2
    assert f"{config}: {words}" in result.stderr, result.stderr


@pytest.mark.parametrize("families, words", [
    (["all", "authors"], "families: expected a list of feed families from all, topics, providers"),
    ("providers", "families: expected a list"),
])
def test_families_config_errors_name_the_key(tmp_path, families, words):
    config = write_config(tmp_path, families=families)
    result = run_main("build", "-c", config)
    assert result.returncode == 2 and words in result.stderr, result.stderr


def test_a_no_op_rebuild_of_provider_feeds_rewrites_nothing(tmp_path, store):
    config = make_config(tmp_path, families=["all", "topics", "providers"])
    assert build(config).ok
    verge = tmp_path / "out" / "providers" / "theverge-com.atom"
    before = verge.read_bytes()
    report = build(config)  # the last selection reused: the provider's logo comes back from the state folder
    assert report.writes.written == [] and verge.read_bytes() == before
    write_article(store, "v3.md", provider=provider("The Verge", "theverge.com"), topics=["AI"],
                  publishedDateTime="2024-03-05T10:00:00Z")
    report = build(config)
    assert "providers/theverge-com.atom" in report.writes.written
    assert ids(verge) == ["v3", "v2", "v1"]
    assert etree.parse(str(verge)).getroot().findtext(f"{ATOM}logo") == LOGO
