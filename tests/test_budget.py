"""The byte budget: every feed file stays within `max_bytes`, keeping its newest entries."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from publisher.build import build
from publisher.config import load_config
from publisher.errors import ConfigError
from publisher.stages import catalog
from publisher.stages.render import FORMATS, render, render_within
from publisher.stages.selection import Feed
from tests.conftest import NS, article_text, make_config, run_main, write_config

EXTENSIONS = (".atom", ".rss", ".json")


def write_story(store: Path, day: int, body_bytes: int, **fields: object) -> None:
    """An article of 2024-01-<day> whose plain-text body is about `body_bytes` long."""
    path = store / f"story-{day:02d}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    words = ("word " * (body_bytes // 5)).strip()
    path.write_text(article_text(slug=f"story-{day:02d}", publishedDateTime=f"2024-01-{day:02d}T10:00:00Z",
                                 **fields) + words + "\n", encoding="utf-8")


def entry_links(path: Path) -> list[str]:
    parsed = feedparser.parse(path.read_bytes())
    assert not parsed.bozo, (path, parsed.get("bozo_exception"))
    return [entry.link for entry in parsed.entries]


@pytest.mark.parametrize("value, size", [("512KiB", 512 * 1024), ("2MiB", 2 * 1024 * 1024), (4096, 4096),
                                         ("4096", 4096), ("1.5 MiB", 1536 * 1024), (" 8KiB ", 8192)])
def test_max_bytes_takes_bytes_kib_or_mib(tmp_path, value, size):
    assert load_config(write_config(tmp_path, max_bytes=value)).max_bytes == size


def test_max_bytes_defaults_to_512_kib(tmp_path):
    (tmp_path / "config.yaml").write_text("")
    assert load_config(tmp_path / "config.yaml").max_bytes == 512 * 1024


@pytest.mark.parametrize("value", ["12KB", "lots", -1, 0, 100, True, "1.5", [1], "5 GiB"])
def test_invalid_max_bytes_names_the_key(tmp_path, value):
    path = write_config(tmp_path, max_bytes=value)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: max_bytes: expected a size of at least 1KiB")


@pytest.fixture
def big_store(tmp_path: Path) -> Path:
    """Twelve articles with bodies of 3 to 14 KB: about 100 KB per feed file in all."""
    for day in range(1, 13):
        write_story(tmp_path / "store", day, 2000 + 1000 * day, topics=["AI", "Robots"] if day % 2 else ["AI"])
    return tmp_path


def test_every_file_fits_and_keeps_its_newest_entries(big_store):
    config = make_config(big_store, max_bytes="24KiB")
    report = build(config)
    out = big_store / "out"
    newest_first = [f"https://news.example.com/story-{day:02d}" for day in range(12, 0, -1)]
    for feed in ("all", "topics/ai", "topics/robots"):
        for extension in EXTENSIONS:
            path = out / f"{feed}{extension}"
            assert path.stat().st_size <= 24 * 1024, path
            links = (entry_links(path) if extension != ".json"
                     else [item["url"] for item in json.loads(path.read_bytes())["items"]])
            expected = [link for link in newest_first
                        if feed != "topics/robots" or int(link[-2:]) % 2]
            assert links and links == expected[:len(links)], path  # a prefix of the newest first
    assert set(report.trimmed) >= {f"all{extension}" for extension in EXTENSIONS}
    assert report.trimmed_feeds == 3
    assert "; 3 feeds trimmed to max_bytes" in report.summary()


def test_the_next_entry_would_not_have_fitted(big_store):
    """Entries are kept while they fit: one more, and the file would be over the budget."""
    config = make_config(big_store, max_bytes="30KiB")
    report = build(config)
    collection = catalog.collect(config, save=False)
    _, feeds = catalog.select(collection, config, datetime.now(UTC))
    overall = next(feed for feed in feeds if feed.spec.path == "all")
    for name in config.formats:
        fmt = FORMATS[name]
        fitted = render_within(overall, fmt, config.site, (), config.max_bytes)
        assert fitted.data == (big_store / "out" / f"all{fmt.extension}").read_bytes()
        one_more = Feed(overall.spec, overall.entries[:fitted.kept + 1], overall.total)
        assert len(fitted.data) <= config.max_bytes < len(render(one_more, fmt, config.site))
        assert report.trimmed[f"all{fmt.extension}"].kept == fitted.kept < 12


def test_newest_entry_too_big_is_kept_without_its_content(tmp_path):
    store = tmp_path / "store"
    write_story(store, 2, 16_000)  # the newest: within max_bytes alone, over it in a feed file
    write_story(store, 1, 1_000)
    config = make_config(tmp_path, max_bytes="16KiB")
    report = build(config)
    for extension in EXTENSIONS:
        path = tmp_path / "out" / f"all{extension}"
        assert path.stat().st_size <= 16 * 1024, path
        assert report.trimmed[f"all{extension}"].without_content
    atom = feedparser.parse((tmp_path / "out" / "all.atom").read_bytes())
    assert [entry.link for entry in atom.entries] == ["https://news.example.com/story-02"]
    assert "content" not in atom.entries[0] and atom.entries[0].summary == "Excerpt of story-02."
    rss = etree.parse(str(tmp_path / "out" / "all.rss"))
    assert rss.find(".//item/content:encoded", NS) is None
    assert rss.findtext(".//item/description") == "Excerpt of story-02."
    json_item = json.loads((tmp_path / "out" / "all.json").read_bytes())["items"][0]
    assert "content_html" not in json_item and json_item["content_text"] == "Excerpt of story-02."


def test_max_items_applies_first(big_store):
    report = build(make_config(big_store, max_bytes="1MiB", max_items=3))
    assert not report.trimmed and "trimmed" not in report.summary()
    assert len(entry_links(big_store / "out" / "all.atom")) == 3


def test_summary_counts_trimmed_feeds_and_verbose_names_them(big_store):
    config = write_config(big_store, max_bytes="24KiB")
    first = run_main("build", "-c", config)
    assert first.returncode == 0, first.stderr
    assert "3 feeds trimmed to max_bytes" in first.stdout
    assert "trimmed to max_bytes" not in first.stderr  # naming the files is for -v
    # A build that renders nothing again still counts them, and -v names every trimmed file.
    second = run_main("build", "-v", "-c", config)
    assert second.returncode == 0, second.stderr
    assert " 0 files written," in second.stdout and "3 feeds trimmed to max_bytes" in second.stdout
    named = {line.split(": ")[1] for line in second.stderr.splitlines() if "trimmed to max_bytes" in line}
    assert {"all.atom", "all.rss", "all.json", "topics/ai.atom"} <= named


def test_a_feed_within_budget_is_not_touched(big_store):
    """The budget changes nothing for a feed that fits: same bytes as plain rendering."""
    config = make_config(big_store, max_bytes="2MiB")
    report = build(config)
    assert not report.trimmed
    assert len(entry_links(big_store / "out" / "all.atom")) == 12
