"""Feed fingerprints: a feed is rendered again only when its entries, the settings or its files changed."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from publisher.build import build
from publisher.caches.fingerprints import known_feeds
from publisher.stages import render_pool, targets
from publisher.stages.catalog import collect, select, stamp_tokens
from publisher.stages.render import FORMATS
from publisher.stages.writer import read_manifest, write_outputs
from tests.conftest import make_config, snapshot, write_article

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    for index in range(9):
        write_article(tmp_path / "store", f"a{index}.md", topics=["AI", f"Topic {index % 3}"],
                      publishedDateTime=f"2024-01-0{index + 1}T10:00:00Z")
    return tmp_path


def unchanged_feeds(config) -> set[str]:
    """What the next build would skip."""
    collection = collect(config, save=False)
    live, feeds = select(collection, config, NOW)
    return known_feeds(config, feeds, [FORMATS[name] for name in config.formats],
                       tokens=stamp_tokens(collection, feeds)).unchanged


ALL_FEEDS = {"all", "topics/ai", "topics/topic-0", "topics/topic-1", "topics/topic-2"}


def test_nothing_is_rendered_again_when_nothing_changed(site):
    config = make_config(site)
    assert unchanged_feeds(config) == set()
    build(config, now=NOW)
    before = snapshot(site / "out")
    assert unchanged_feeds(config) == ALL_FEEDS
    report = build(config, now=NOW)
    assert report.writes.written == [] and len(report.writes.unchanged) == len(before)
    assert snapshot(site / "out") == before
    assert read_manifest(next((site / "state" / "manifests").iterdir()), config.output) == set(before)


def test_a_changed_article_renders_only_its_feeds(site):
    config = make_config(site)
    build(config, now=NOW)
    write_article(site / "store", "a4.md", title="Changed", topics=["AI", "Topic 1"],
                  publishedDateTime="2024-01-05T10:00:00Z")
    assert unchanged_feeds(config) == {"topics/topic-0", "topics/topic-2"}
    report = build(config, now=NOW)
    assert sorted({name.split(".")[0] for name in report.writes.written}) == ["all", "topics/ai", "topics/topic-1"]


@pytest.mark.parametrize("damage", ["delete", "edit", "touch"])
def test_a_feed_file_someone_changed_is_rendered_and_restored(site, damage):
    config = make_config(site)
    build(config, now=NOW)
    target = site / "out" / "topics" / "topic-1.rss"
    good = target.read_bytes()
    if damage == "delete":
        target.unlink()
    elif damage == "edit":
        target.write_bytes(good.replace(b"<rss", b"<rss data-edited='1'"))
    else:
        os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert "topics/topic-1" not in unchanged_feeds(config)
    report = build(config, now=NOW)
    assert target.read_bytes() == good
    assert report.writes.written == ([] if damage == "touch" else ["topics/topic-1.rss"])
    assert unchanged_feeds(config) == ALL_FEEDS


def test_a_rendering_setting_renders_every_feed_again(site):
    build(make_config(site), now=NOW)
    retitled = make_config(site, site={"title": "Other title", "base_url": "https://feeds.example.org/news/"})
    assert unchanged_feeds(retitled) == set()
    build(retitled, now=NOW)
    assert b"Other title" in (site / "out" / "topics" / "topic-2.atom").read_bytes()
    hubs = make_config(site, site={"title": "Other title", "base_url": "https://feeds.example.org/news/"},
                       websub={"hubs": ["https://hub.example.org/"]})
    assert unchanged_feeds(hubs) == set()


def test_kept_files_stay_owned_and_in_place(tmp_path):
    out, manifest = tmp_path / "out", tmp_path / "state" / "manifest.json"
    write_outputs(out, {"a.xml": b"1", "b.xml": b"2", "c.xml": b"3"}, manifest)
    stamp = (out / "b.xml").stat().st_mtime_ns
    result = write_outputs(out, {"a.xml": b"1"}, manifest, keep={"b.xml"})
    assert result.unchanged == ["a.xml", "b.xml"] and result.removed == ["c.xml"]
    assert (out / "b.xml").stat().st_mtime_ns == stamp
    assert read_manifest(manifest, out) == {"a.xml", "b.xml"}


@pytest.mark.parametrize(("in_parts_from", "fork"), [(1, True), (1, False), (10**6, False)])
def test_stamps_of_many_files_in_parts_are_the_same(site, monkeypatch, in_parts_from, fork):
    """In one part, or in parts shared with a forked child, or in parts all done here: the same stamps,
    and None for one missing file."""
    monkeypatch.setattr(targets, "STAMPS_IN_PARTS_FROM", in_parts_from)
    monkeypatch.setattr(render_pool, "_may_fork", lambda: fork)
    config = make_config(site)
    build(config, now=NOW)
    target = targets.open_target(config)
    names = sorted(snapshot(site / "out"))
    found = target.stamps(names)
    assert found is not None and sorted(found) == names
    assert all(found[name] == [(site / "out" / name).stat().st_size, (site / "out" / name).stat().st_mtime_ns]
               for name in names)
    (site / "out" / names[-1]).unlink()
    assert target.stamps(names) is None
