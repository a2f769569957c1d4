"""Incremental scans: the scan cache, parallel reading, the reused selection, libyaml, progress.

The rule that matters: a build that takes records from the cache writes exactly the bytes that a build
reading every file writes.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import mmap
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from publisher import progress
from publisher.build import build, check_store
from publisher.caches import scan_cache, statefiles
from publisher.config import Config
from publisher.stages import catalog, reading, store
from publisher.stages.articles import read_article
from publisher.stages.selection import as_datetime
from tests.conftest import REPO, cli_env, make_config, require_corpus, snapshot, write_article

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FILES = 18  # in the `site` fixture's store


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cache_files(config: Config) -> dict[str, Path]:
    base = scan_cache.cache_prefix(config.state, config.store)
    return {suffix: base.with_name(f"{base.name}.{suffix}")
            for suffix in ("index", "records", "feeds", "folders", "journal")}


def settled(path: Path, seconds: int = 10) -> Path:
    """Date a file back, as if written well before the scan that follows, so that the scan can judge it by
    its stat (see store.RACY_NS)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - seconds * 10**9))
    return path


def age(folder: Path, seconds: int = 10) -> None:
    """Date every file of `folder` back (settled())."""
    for path in folder.rglob("*"):
        if path.is_file():
            settled(path, seconds)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A small store: articles with topics, a duplicate URL, an unpublished, a scheduled and a broken one."""
    store_folder = tmp_path / "store"
    for index in range(12):
        write_article(store_folder, f"news/a{index:02d}.md", topics=["AI", f"Topic {index % 3}"],
                      publishedDateTime=f"2024-01-{index + 1:02d}T10:00:00Z")
    write_article(store_folder, "news/dup.md", webUrl="https://news.example.com/a03?utm_source=x",
                  publishedDateTime="2024-01-04T10:00:00Z", updatedDateTime="2024-02-01T00:00:00Z")
    write_article(store_folder, "news/draft.md", published=False)
    write_article(store_folder, "news/later.md", publishedDateTime="2030-01-01T00:00:00Z")
    write_article(store_folder, "news/broken.md", publishedDateTime="someday")
    (store_folder / "README.md").write_text("not front matter\n")
    (store_folder / "events").mkdir()
    (store_folder / "events/e.md").write_text("---\nname: An event\n---\n")
    age(store_folder)
    return tmp_path


def cold_build(site: Path, output: str) -> dict[str, bytes]:
    """A build with no cache at all, into its own output and state folders."""
    config = make_config(site, output=output, state=f"{output}-state")
    build(config, now=NOW)
    return tree(site / output)


@pytest.mark.parametrize("store_while_reading", [False, True])
def test_cached_rebuild_writes_the_bytes_of_a_cold_build(site, monkeypatch, store_while_reading):
    """Also when a big read (a cold build) puts each record into the record table as it is read, holding
    none: every feed's entries then come back from that table."""
    if store_while_reading:
        monkeypatch.setattr(catalog, "STORE_WHILE_READING", 1)
    config = make_config(site)
    first = build(config, now=NOW)
    assert first.collection.read == FILES
    expected = tree(site / "out")
    assert len(scan_cache.ScanCache(config, store.Listing(), True).records.get(
        {"news/a01.md": _listed(config, "news/a01.md")})) == 1
    for removed in ([], ["feeds"], ["feeds", "records"]):  # reused selection; cached records; neither
        shutil.rmtree(site / "out")
        for suffix in removed:
            cache_files(config)[suffix].unlink()
        again = build(config, now=NOW)
        assert again.collection.read == 0
        assert tree(site / "out") == expected, removed
    monkeypatch.setattr(catalog, "STORE_WHILE_READING", 2000)
    assert cold_build(site, "cold") == expected


def test_a_cold_build_keeps_in_the_record_table_the_records_its_feeds_use(site, monkeypatch):
    """A big read spills its records (scan_cache.Spill); saving puts into the table those the feeds asked
    for, no others. A later selection that needs another reads its file again, with a cold build's bytes."""
    monkeypatch.setattr(catalog, "STORE_WHILE_READING", 1)
    config = make_config(site, max_items=2)
    report = build(config, now=NOW)
    listing = store.scan(config.store)
    every = {path: listing.stat(row) for row, path in enumerate(listing.paths)}
    stored = scan_cache.ScanCache(config, store.Listing(), True).records.get(every)
    used = {source for feed in report.feeds for source in feed.sources}
    assert set(stored) == used and 0 < len(used) < report.collection.files - 3
    wider = make_config(site, max_items=50)
    again = build(wider, now=NOW)
    assert again.collection.read == 0 and len({s for feed in again.feeds for s in feed.sources}) > len(used)
    assert tree(site / "out") == cold_build(site, "cold")


def _listed(config: Config, path: str) -> tuple[int, int, int]:
    listing = store.scan(config.store)
    return listing.stat(listing.paths.index(path))


def test_corpus_cached_rebuild_is_byte_identical(tmp_path):
    corpus = require_corpus()
    shutil.copytree(corpus, tmp_path / "store")
    age(tmp_path / "store")
    config = make_config(tmp_path, assets_base_url="https://everyday-cc.github.io/ai/")
    build(config, now=NOW)
    expected = tree(tmp_path / "out")
    cache_files(config)["feeds"].unlink()
    shutil.rmtree(tmp_path / "out")
    assert build(config, now=NOW).collection.read == 0
    assert tree(tmp_path / "out") == expected


def test_touched_but_unchanged_file_is_read_again_and_rewrites_nothing(site):
    config = make_config(site)
    build(config, now=NOW)
    before = snapshot(site / "out")
    path = site / "store" / "news" / "a05.md"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    report = build(config, now=NOW)
    assert report.collection.read == 1
    assert report.writes.written == [] and snapshot(site / "out") == before


def test_changed_file_is_read_again(site):
    config = make_config(site)
    build(config, now=NOW)
    write_article(site / "store", "news/a05.md", title="A new title", topics=["AI", "Topic 2"],
                  publishedDateTime="2024-01-06T10:00:00Z")
    report = build(config, now=NOW)
    assert report.collection.read == 1
    assert b"A new title" in (site / "out" / "all.atom").read_bytes()
    assert tree(site / "out") == cold_build(site, "cold")


def test_deleted_file_drops_out(site):
    config = make_config(site)
    build(config, now=NOW)
    assert b"news.example.com/a07" in (site / "out" / "topics" / "topic-1.atom").read_bytes()
    (site / "store" / "news" / "a07.md").unlink()
    report = build(config, now=NOW)
    assert report.collection.read == 0 and len(report.collection.articles) == 14
    assert b"news.example.com/a07" not in (site / "out" / "topics" / "topic-1.atom").read_bytes()
    assert "news/a07.md" not in scan_cache.ScanCache(config, store.Listing(), True).index().paths
    assert tree(site / "out") == cold_build(site, "cold")


def test_a_file_written_in_the_same_clock_tick_as_the_scan_is_checked_again(site):
    """Same size, same mtime, same inode, new bytes: possible when a file changes within one tick of the
    file system's clock. A file that recent is never judged by its stat alone."""
    config = make_config(site)
    path = site / "store" / "news" / "a05.md"
    write_article(site / "store", "news/a05.md", title="Title AAAA")
    build(config, now=NOW)
    stat = path.stat()
    write_article(site / "store", "news/a05.md", title="Title BBBB")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_ino) == (stat.st_size, stat.st_ino)
    report = build(config, now=NOW)
    assert report.collection.read == 1
    assert b"Title BBBB" in (site / "out" / "all.atom").read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "flipped inside"])
def test_corrupt_cache_is_discarded_with_one_line(site, caplog, damage):
    config = make_config(site)
    build(config, now=NOW)
    expected = tree(site / "out")
    index = cache_files(config)["index"]
    data = index.read_bytes()
    index.write_bytes({"garbage": b"\x00\x01 not a cache", "truncated": data[: len(data) // 2],
                       "flipped": data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:],
                       "flipped inside": data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0x01])
                       + data[len(data) // 2 + 1:]}[damage])
    # A touched file makes the build look past the cache's header, into its damaged rows.
    path = site / "store" / "news" / "a05.md"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    shutil.rmtree(site / "out")
    with caplog.at_level(logging.INFO, logger="publisher"):
        report = build(config, now=NOW)
    damaged = [r for r in caplog.records if "scan cache" in r.getMessage()]
    assert len(damaged) == 1 and "damaged" in damaged[0].getMessage() and damaged[0].levelname == "WARNING"
    assert report.collection.read == FILES
    assert tree(site / "out") == expected


def test_corrupt_record_cache_and_selection_are_rebuilt(site, caplog):
    config = make_config(site)
    build(config, now=NOW)
    expected = tree(site / "out")
    files = cache_files(config)
    for suffix in ("records", "feeds"):
        files[suffix].write_bytes(b"this is not what it should be" * 100)
    for leftover in files["records"].parent.glob("*-wal"):
        leftover.unlink()
    shutil.rmtree(site / "out")
    with caplog.at_level(logging.INFO, logger="publisher"):
        build(config, now=NOW)
    assert tree(site / "out") == expected
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("record cache is damaged" in m for m in messages)
    assert any("last selection is damaged" in m for m in messages)


def test_cache_of_another_version_or_parsing_config_is_discarded(site, caplog):
    config = make_config(site)
    build(config, now=NOW)
    index = cache_files(config)["index"]
    header, _, payload = index.read_bytes().partition(b"\n")[2].partition(b"\n")
    ours = f'"format": {statefiles.BINARY_FORMAT}'.encode()
    index.write_bytes(statefiles.MAGIC + header.replace(ours, b'"format": 99') + b"\n" + payload)
    with caplog.at_level(logging.DEBUG, logger="publisher"):
        assert build(config, now=NOW).collection.read == FILES
    assert sum("another publisher version or configuration" in r.getMessage() for r in caplog.records) == 1

    moved = make_config(site, assets_base_url="https://cdn.example.net/assets/")
    assert scan_cache.cache_key(moved) != scan_cache.cache_key(config)
    report = build(moved, now=NOW)
    assert report.collection.read == FILES
    assert b"https://cdn.example.net/assets/assets/logos/news.png" in (site / "out" / "all.atom").read_bytes()


def test_parallel_and_single_process_scans_are_identical(site):
    for index in range(40):
        write_article(site / "store", f"more/b{index:02d}.md", topics=["Robots"],
                      publishedDateTime=f"2023-03-{index % 28 + 1:02d}T0{index % 10}:00:00Z")
    config = make_config(site)
    serial = catalog.collect(config, save=False, workers=1)
    parallel = catalog.collect(config, save=False, workers=2, parallel_from=0)
    assert serial.read == parallel.read == FILES + 40
    for name in ("files", "not_articles", "invalid", "problems"):
        assert getattr(serial, name) == getattr(parallel, name), name
    assert list(serial.articles) == list(parallel.articles)
    sources = [summary.source for summary in serial.articles]
    assert sources == sorted(sources)
    assert serial.cache.articles(sources) == parallel.cache.articles(sources)


def test_parallel_cold_build_writes_the_bytes_of_a_serial_one(site, monkeypatch):
    serial = cold_build(site, "serial")
    monkeypatch.setattr(reading, "PARALLEL_FROM", 0)
    assert cold_build(site, "parallel") == serial


def test_encoded_articles_decode_to_equal_articles(tmp_path):
    corpus = require_corpus()
    config = make_config(tmp_path, store=str(corpus), assets_base_url="https://everyday-cc.github.io/ai/")
    found = catalog.collect(config, save=False)
    assert len(found.articles) > 100
    for summary in found.articles:
        record = reading.read_record(corpus, summary.source, config.assets_base_url)
        article = reading.decode(record.encoded)
        assert article == read_article(store.read(corpus, summary.source), config.assets_base_url)[0]
        assert (summary.id, as_datetime(summary.published), as_datetime(summary.updated), summary.topics) == (
            article.id, article.published, article.updated, article.topics)



def test_selection_is_reused_until_a_scheduled_article_falls_due(site):
    config = make_config(site)
    build(config, now=NOW)
    memo = cache_files(config)["feeds"]
    stamp = memo.stat().st_mtime_ns
    again = build(config, now=NOW)
    assert memo.stat().st_mtime_ns == stamp  # reused, not written again
    assert again.skipped["scheduled"] == 1 and again.next_due == datetime(2030, 1, 1, tzinfo=UTC)
    later = build(config, now=datetime(2030, 6, 1, tzinfo=UTC))
    assert memo.stat().st_mtime_ns != stamp
    assert later.skipped["scheduled"] == 0
    assert b"news.example.com/later" in (site / "out" / "all.atom").read_bytes()


def test_check_uses_the_cache_but_writes_nothing(site):
    config = make_config(site)
    build(config, now=NOW)
    before = snapshot(site / "state")
    write_article(site / "store", "news/new.md", publishedDateTime="not a date")
    found = check_store(config)
    assert found.read == 1 and found.invalid == 2
    assert snapshot(site / "state") == before


def test_date_that_does_not_exist_is_a_broken_article_not_a_crash(tmp_path, caplog):
    write_article(tmp_path / "store", "good.md")
    (tmp_path / "store" / "bad.md").write_text("---\ntitle: Bad\npublishedDateTime: 2020-02-30\n"
                                               "webUrl: https://news.example.com/bad\n---\n")
    report = build(make_config(tmp_path), now=NOW)
    assert report.skipped["invalid"] == 1 and report.published == 1
    assert "bad.md: front matter: YAML does not parse: day is out of range for month" in caplog.text


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_in_the_store_is_skipped_not_read(tmp_path):
    write_article(tmp_path / "store", "good.md")
    os.mkfifo(tmp_path / "store" / "pipe.md")
    assert build(make_config(tmp_path), now=NOW).published == 1  # reading the pipe would block forever


FRONT_MATTER_EDGE_CASES = [
    "a: !!int abc", "a: !!timestamp 2020-13-45", "? [a]\n: 1", "a: &x {b: *x}", "<<: {a: 1}\nb: 2",
    "a: !!binary aGVsbG8=", "a: !!set {x, y}", "a: 2020-02-30", "a: !custom 1", "a: !!python/object:os.system x",
    "a: &y [1, *y]", "x: &a {k: 1}\ny: *a", "? !!binary aGk=\n: 1", "a: !!omap [{x: 1}]", "a: !!pairs [{x: 1}]",
    "a: 0x1f\nb: 1_000\nc: 1:30\nd: .inf\ne: ~\nf: yes\ng: 2001-12-14t21:59:43.10-05:00", "= : 1",
    "a: !!str 12", "a: !!map {b: 1}", "- 1\n- 2", "", "just text", "[1, {a: b}]", "{? [1]: 2}",
    "a: !!null ''", "a: !!bool yes", "a: b\na: c", "'': empty key", "1: one\n1.5: x\n2001-01-01: d",
]


def loaded(loader: type, text: str) -> tuple[str, ...]:
    try:
        return ("value", repr(yaml.load(text, Loader=loader)))
    except Exception as exc:  # noqa: BLE001 -- the point is to compare whatever happens
        return ("error", type(exc).__name__, str(exc))


def test_front_matter_loader_is_libyaml_and_agrees_with_csafeloader():
    corpus = require_corpus()
    assert yaml.__with_libyaml__ and issubclass(store.yaml_loader(), yaml.CSafeLoader)
    from frontmatter import default_handlers
    assert default_handlers.SafeLoader is yaml.CSafeLoader  # what python-frontmatter itself would use
    texts = list(FRONT_MATTER_EDGE_CASES)
    for path in sorted(corpus.rglob("*")) + sorted((REPO / "seeds").rglob("*")):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            texts.append(text.split("\n---", 1)[0].removeprefix("---\n"))
    for text in texts:
        assert loaded(store.yaml_loader(), text) == loaded(yaml.CSafeLoader, text), text[:80]


def test_missing_libyaml_is_said_once_at_warning_level(tmp_path):
    write_article(tmp_path / "store", "a.md")
    config = make_config(tmp_path)
    script = ("import sys; sys.modules['yaml._yaml'] = None\n"  # as if PyYAML were built without libyaml
              "import logging; logging.basicConfig(level=logging.INFO)\n"
              "from pathlib import Path; from publisher.build import build\n"
              "from publisher.config import load_config\n"
              f"config = load_config(Path({str(config.source)!r}))\n"
              "first = build(config); second = build(config)\n"
              "print(first.published, second.published)\n")
    done = subprocess.run([sys.executable, "-c", script], env=cli_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1"]
    warnings = [line for line in done.stderr.splitlines() if "without libyaml" in line]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING:publisher.stages.store:")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def started_long_ago(bar: progress.Progress) -> progress.Progress:
    bar.started -= progress.DELAY + 1  # as if the scan had been going for a while
    return bar


def test_progress_bar_on_a_terminal(caplog):
    stream = Terminal()
    with caplog.at_level(logging.INFO, logger="publisher"):
        bar = started_long_ago(progress.Progress(200, "files read", stream))
        bar.advance(50)
        bar.close()
    assert "\r[#######.......................] 50 of 200 files read (25%)" in stream.getvalue()
    assert stream.getvalue().endswith("\n") and not caplog.records


def test_progress_line_when_not_on_a_terminal(caplog):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="publisher"):
        bar = started_long_ago(progress.Progress(200, "files read", stream))
        bar.advance(50)
        bar.advance(50)  # within EVERY seconds of the last line: not repeated
        bar.close()
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["50 of 200 files read (25%)"]
    assert stream.getvalue() == ""


@pytest.mark.parametrize("stream", [Terminal(), io.StringIO()])
def test_progress_is_quiet_at_warning_level_and_for_short_scans(caplog, stream):
    with caplog.at_level(logging.WARNING, logger="publisher"):
        started_long_ago(progress.Progress(10, "files read", stream)).advance(5)
    with caplog.at_level(logging.INFO, logger="publisher"):
        progress.Progress(10, "files read", stream).advance(5)  # under DELAY seconds
    assert stream.getvalue() == "" and not caplog.records


def selection_of(config: Config, now: datetime) -> tuple[tuple, list]:
    """What select() gives, in comparable form."""
    live, feeds = catalog.select(catalog.collect(config), config, now)
    counts = (len(live.articles), live.unpublished, live.scheduled, live.duplicates, live.next_due,
              [entry.source for entry in live.held])
    return counts, feeds


def test_updated_selection_equals_selecting_from_scratch(tmp_path, caplog):
    """Random batches of changes (new, changed, deleted, unpublished, scheduled, duplicate, renamed topic
    files) against a small max_items, so that feeds fill up and some updates cannot be done in place: the
    selection kept from the last build, updated, must always be the one a build from scratch makes."""
    rng = random.Random(6)
    store_folder = tmp_path / "store"
    topics = ["AI", "Robots", "robots", "Vision", "Chips", "Ethics"]
    config = make_config(tmp_path, max_items=3)
    names: list[str] = []
    clock = time.time_ns() - 10**12  # files dated well before the scans (see store.RACY_NS)

    def write(name: str) -> None:
        url = f"https://news.example.com/{rng.randrange(40) if rng.random() < 0.1 else name}"
        date = f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T10:00:00Z" if rng.random() > 0.05 \
            else "2027-01-01T00:00:00Z"
        write_article(store_folder, name, webUrl=url, topics=rng.sample(topics, rng.randint(0, 3)),
                      publishedDateTime=date, published=rng.random() > 0.15)

    for index in range(40):
        names.append(f"a{index:03d}.md")
        write(names[-1])
    updated = 0
    for batch in range(25):
        for _ in range(rng.randint(1, 4)):
            action = rng.random()
            if action < 0.4 or not names:
                names.append(f"b{batch:02d}-{rng.randrange(10**6)}.md")
                write(names[-1])
            elif action < 0.8:
                write(rng.choice(names))
            else:
                (store_folder / names.pop(rng.randrange(len(names)))).unlink()
        clock += 10**10
        for path in store_folder.iterdir():
            os.utime(path, ns=(clock, clock))
        now = NOW if batch < 20 else datetime(2027, 6, 1, tzinfo=UTC)  # the scheduled fall due
        with caplog.at_level(logging.DEBUG, logger="publisher.stages.catalog"):
            caplog.clear()
            got = selection_of(config, now)
        updated += any("selection updated" in record.getMessage() for record in caplog.records)
        shutil.rmtree(tmp_path / "fresh-state", ignore_errors=True)
        scratch = make_config(tmp_path, max_items=3, state="fresh-state")
        assert got == selection_of(scratch, now), batch
    assert updated >= 5  # the update in place was tried and taken, not only the selection from scratch


def test_reading_leaves_no_reference_cycles(tmp_path):
    """Reading workers run without the cyclic garbage collector: reading must not make garbage cycles,
    or a cold build of a big store would keep every document it parsed in memory."""
    corpus = require_corpus()
    paths = [p.relative_to(corpus).as_posix() for p in sorted(corpus.rglob("*")) if p.is_file()]
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        records = reading.read_chunk(str(corpus), paths, "https://example.org/")
        assert sum(record.kind == reading.ARTICLE for record in records) > 100
        del records
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()


def index_of(rows: dict[str, tuple[int, int, int]]) -> scan_cache.Index:
    index = scan_cache.Index()
    for path in sorted(rows):
        index.paths.append(path)
        index.stats.extend(rows[path])
        for name, column in index.columns.items():
            column.append(0 if name in scan_cache.INTEGER_COLUMNS else None)
    return index


def listing_of(rows: dict[str, tuple[int, int, int]]) -> store.Listing:
    listing = store.Listing()
    for path in sorted(rows):
        listing.paths.append(path)
        listing.stats.extend(rows[path])
    return listing


@pytest.mark.parametrize("seed", range(20))
def test_index_changes_find_exactly_the_new_changed_and_deleted_files(seed):
    rng = random.Random(seed)
    before = {f"f{n:03d}.md": (rng.randrange(10**4), rng.randrange(10**6), n) for n in range(rng.randrange(60))}
    after = dict(before)
    expected_unread, expected_deleted = set(), set()
    for _ in range(rng.randrange(8)):
        path = f"f{rng.randrange(80):03d}.md"
        action = rng.random()
        if action < 0.3 and path in after:  # deleted
            del after[path]
        elif action < 0.7:  # new, or changed
            after[path] = (rng.randrange(10**4), rng.randrange(10**6), rng.randrange(100))
        else:
            continue
    for path, stat in after.items():
        if before.get(path) != stat:
            expected_unread.add(path)
    expected_deleted = set(before) - set(after)
    listing = listing_of(after)
    changes = index_of(before).changes(listing.paths, listing.stats, trusted_before=10**6)
    assert {listing.paths[row] for row in changes.unread} == expected_unread
    assert set(changes.deleted) == expected_deleted
    for new, old, length in changes.runs:  # runs pair rows of the same path
        assert listing.paths[new:new + length] == index_of(before).paths[old:old + length]


def test_index_changes_read_files_too_recent_to_judge():
    rows = {"a.md": (1, 100, 1), "b.md": (1, 5_000, 2), "c.md": (1, 200, 3)}
    listing = listing_of(rows)
    changes = index_of(rows).changes(listing.paths, listing.stats, trusted_before=1_000)
    assert [listing.paths[row] for row in changes.unread] == ["b.md"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_listing_is_the_same_stat_in_one_process_or_two(tmp_path, monkeypatch):
    store_folder = tmp_path / "store"
    for name in ["a.md", "a/x.md", "a-b.md", "a/b/c.md", "b.md", "Z.md", "é.md", "skip/s.md", "a.txt"]:
        write_article(store_folder, name)
    (store_folder / "dangling.md").symlink_to(store_folder / "nowhere.md")
    (store_folder / "linked").symlink_to(store_folder / "a", target_is_directory=True)
    os.mkfifo(store_folder / "pipe.md")
    arguments = (store_folder, ("**/*.md",), ("skip/*",), (tmp_path / "out",))
    monkeypatch.setattr(store, "PARALLEL_STAT_FROM", 10**9)
    one = store.scan(*arguments)
    monkeypatch.setattr(store, "PARALLEL_STAT_FROM", 1)
    if not store._two_processes(len(one)):
        pytest.skip("one core, or other threads running: the listing is made in one process")
    two = store.scan(*arguments)
    assert one.paths == two.paths == sorted(one.paths) == [
        "Z.md", "a-b.md", "a.md", "a/b/c.md", "a/x.md", "b.md", "dangling.md", "é.md"]
    assert one.stats == two.stats
    assert one.stat(one.paths.index("dangling.md")) == (store.UNKNOWN,) * 3


def test_reading_from_a_thread_starts_workers_that_do_not_fork(site):
    """The daemon builds from a thread: its workers are spawned, not forked, and read the same."""
    config = make_config(site)
    serial = catalog.collect(config, save=False, workers=1)
    found: list[object] = []

    def daemon_build() -> None:
        found.append(reading._start_method().get_start_method())
        found.append(catalog.collect(config, save=False, workers=2, parallel_from=0))
    thread = threading.Thread(target=daemon_build)
    thread.start()
    thread.join(timeout=120)
    method, parallel = found
    assert method == "spawn"
    assert list(parallel.articles) == list(serial.articles) and parallel.problems == serial.problems


def test_a_rescan_of_the_changed_paths_gives_what_a_full_scan_gives(tmp_path):
    """The daemon stats only the paths the watcher reported (store.rescan): the listing must be exactly the
    full scan's, and a change it cannot judge from the paths alone must ask for a full scan."""
    store_folder = tmp_path / "store"
    for name in ["a.md", "a/x.md", "a/y.md", "b.md", "skip/s.md", "c.txt"]:
        write_article(store_folder, name)
    arguments = ((store_folder, ("**/*.md",), ("skip/*",), (tmp_path / "out",)))
    before = store.scan(*arguments)
    write_article(store_folder, "a/x.md", title="Edited, longer than before")
    write_article(store_folder, "a/new.md")
    (store_folder / "b.md").unlink()
    write_article(store_folder, "skip/t.md")  # excluded: never listed
    write_article(store_folder, "d.txt")  # not included
    os.mkfifo(store_folder / "a/pipe.md")  # not a regular file: never listed
    (store_folder / "a/dangling.md").symlink_to(store_folder / "nowhere.md")  # listed, its stat unknown
    changed = ["a/x.md", "a/new.md", "b.md", "skip/t.md", "d.txt", "a/pipe.md", "a/dangling.md", "gone.md"]
    rescanned = store.rescan(store_folder, before, changed, *arguments[1:])
    full = store.scan(*arguments)
    assert rescanned is not None
    assert (rescanned.paths, rescanned.stats) == (full.paths, full.stats)
    assert "a/new.md" in full.paths and "b.md" not in full.paths
    assert before.paths == ["a.md", "a/x.md", "a/y.md", "b.md"]  # the earlier listing is left as it was
    (store_folder / "new").mkdir()
    write_article(store_folder, "new/z.md")
    (store_folder / "linked").symlink_to(store_folder / "a", target_is_directory=True)
    for unjudgeable in (["new"], ["linked/x.md"], ["a/../b.md"], ["/etc/passwd"]):
        assert store.rescan(store_folder, full, unjudgeable, *arguments[1:]) is None, unjudgeable


def test_a_scan_lists_again_only_the_folders_whose_stat_changed(tmp_path, monkeypatch):
    """A folder with the stat an earlier scan saw is not listed again; one with an entry added, removed or
    renamed is; the listing is exactly a full scan's."""
    monkeypatch.setattr(store, "RACY_NS", 0)  # folders made a moment ago count as settled
    store_folder = tmp_path / "store"
    for name in ["a.md", "a/x.md", "a/y.md", "a/b/c.md", "b/z.md", "skip/s.md", "c.txt"]:
        write_article(store_folder, name)
    arguments = (store_folder, ("**/*.md",), ("skip/*",), (tmp_path / "out",))
    listed: list[str] = []
    entries = store._entries

    def listing(fd: int, prefix: str, *rest: tuple[str, ...]) -> tuple[list[str], int]:
        listed.append(prefix)
        return entries(fd, prefix, *rest)
    monkeypatch.setattr(store, "_entries", listing)
    first = store.scan(*arguments)
    assert sorted(listed) == ["", "a/", "a/b/", "b/", "skip/"]
    time.sleep(0.05)  # past a tick of the file system's clock: a change from now on moves a folder's ctime
    listed.clear()
    again = store.scan(*arguments, known=first.folders)
    assert listed == [] and not again.folders_changed
    assert (again.paths, again.stats) == (first.paths, first.stats)
    write_article(store_folder, "a/x.md", title="Edited in place, longer than before")  # its stat tells
    write_article(store_folder, "a/b/new.md")
    (store_folder / "b/z.md").rename(store_folder / "b/w.md")
    (store_folder / "a/y.md").unlink()
    write_article(store_folder, "d/e.md")
    listed.clear()
    changed = store.scan(*arguments, known=again.folders)
    assert sorted(listed) == ["", "a/", "a/b/", "b/", "d/"] and changed.folders_changed
    full = store.scan(*arguments)
    assert (changed.paths, changed.stats) == (full.paths, full.stats)
    assert changed.paths == ["a.md", "a/b/c.md", "a/b/new.md", "a/x.md", "b/w.md", "d/e.md"]
    assert changed.stat(3) != first.stat(first.paths.index("a/x.md"))
    time.sleep(0.05)
    shutil.rmtree(store_folder / "b")
    (store_folder / "b").symlink_to(store_folder / "a", target_is_directory=True)  # a link: not entered
    relinked = store.scan(*arguments, known=changed.folders)
    assert relinked.paths == store.scan(*arguments).paths == ["a.md", "a/b/c.md", "a/b/new.md", "a/x.md", "d/e.md"]


def test_a_folder_changed_just_before_a_scan_is_listed_again_by_the_next(tmp_path, monkeypatch):
    """Within RACY_NS of a change, a folder's ctime could stay as it is through one more change in the same
    clock tick: such a folder is not kept for the next scan; once settled, it is."""
    monkeypatch.setattr(store, "RACY_NS", 300_000_000)
    write_article(tmp_path / "store", "a/x.md")
    assert store.scan(tmp_path / "store").folders == {}
    time.sleep(0.35)
    assert set(store.scan(tmp_path / "store").folders) == {"", "a/"}


def test_builds_that_take_folders_from_the_last_scan_see_every_change(site, monkeypatch, caplog):
    """The folders file the last build saved: not rewritten by a no-op build; a build after changes lists
    the changed folders again and writes the bytes of a cold build; a damaged file is said once."""
    monkeypatch.setattr(store, "RACY_NS", 0)
    config = make_config(site)
    build(config, now=NOW)
    folders = cache_files(config)["folders"]
    saved = folders.stat()
    assert set(scan_cache.last_folders(config)) == {"", "events/", "news/"}
    time.sleep(0.05)
    assert build(config, now=NOW).collection.read == 0
    assert (folders.stat().st_ino, folders.stat().st_mtime_ns) == (saved.st_ino, saved.st_mtime_ns)
    write_article(site / "store", "news/new.md", title="Seen in a listed folder",
                  publishedDateTime="2024-03-01T10:00:00Z")
    (site / "store" / "news" / "a02.md").unlink()
    report = build(config, now=NOW)
    assert report.collection.read == 1
    assert b"Seen in a listed folder" in (site / "out" / "all.atom").read_bytes()
    assert tree(site / "out") == cold_build(site, "cold")
    time.sleep(0.05)
    folders.write_bytes(folders.read_bytes()[:-9] + b"garbage!\n")
    write_article(site / "store", "news/newer.md", title="Seen after a damaged folders file",
                  publishedDateTime="2024-03-02T10:00:00Z")
    with caplog.at_level(logging.INFO, logger="publisher"):
        build(config, now=NOW)
    damaged = [r.getMessage() for r in caplog.records if "folder listing" in r.getMessage()]
    assert len(damaged) == 1 and "damaged" in damaged[0]
    assert b"Seen after a damaged folders file" in (site / "out" / "all.atom").read_bytes()


def filled_index(rows: dict[str, int]) -> scan_cache.Index:
    """An index whose every column says which path and which version of it a row is."""
    index = scan_cache.Index()
    for path in sorted(rows):
        version = rows[path]
        index.paths.append(path)
        index.stats.extend((version, len(path), version * 7))
        for name, column in index.columns.items():
            integer = name in scan_cache.INTEGER_COLUMNS
            column.append(version * 1000 + len(path) if integer else f"{name}:{path}:{version}")
        if version % 3 == 0:
            index.problems[path] = (("field", f"problem of {path} {version}"),)
    return index


@pytest.mark.parametrize("seed", range(30))
def test_an_index_patched_with_a_journal_equals_the_index_made_whole(seed):
    rng = random.Random(seed)
    before = {f"f{n:03d}.md": 1 for n in range(rng.randrange(40)) if rng.random() < 0.8}
    after = dict(before)
    for _ in range(rng.randrange(10)):
        path = f"f{rng.randrange(50):03d}.md"
        if rng.random() < 0.3:
            after.pop(path, None)
        else:
            after[path] = rng.randrange(2, 9)
    changed = {path for path in set(before) | set(after) if before.get(path) != after.get(path)}
    whole = filled_index(after)
    journal = whole.rows_of(changed)
    assert journal.paths == sorted(changed & set(after))
    patched = filled_index(before).patched(sorted(changed - set(after)), journal)
    assert (patched.paths, patched.stats, patched.columns, patched.problems) == (
        whole.paths, whole.stats, whole.columns, whole.problems)
    assert list(patched.problems) == sorted(patched.problems)


def test_a_few_changes_go_into_the_journal_and_many_into_the_index(site, monkeypatch):
    """The index is written by a build that changes many rows; one that changes a few writes the journal
    of the rows changed since, which the next build reads with the index: every build's bytes are those
    of a cold build."""
    monkeypatch.setattr(scan_cache, "JOURNAL_MIN_ROWS", 3)
    config = make_config(site)
    build(config, now=NOW)
    files = cache_files(config)
    written = files["index"].stat()
    assert not files["journal"].exists()
    settled(write_article(site / "store", "news/new.md", title="Journalled",
                          publishedDateTime="2024-03-01T10:00:00Z"))
    report = build(config, now=NOW)
    assert report.collection.read == 1 and files["journal"].exists()
    assert (files["index"].stat().st_ino, files["index"].stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    (site / "store" / "news" / "a02.md").unlink()
    settled(write_article(site / "store", "news/a05.md", title="Edited, and journalled", topics=["AI", "Topic 2"],
                          publishedDateTime="2024-01-06T10:00:00Z"))
    report = build(config, now=NOW)
    assert report.collection.read == 1
    assert files["index"].stat().st_mtime_ns == written.st_mtime_ns
    assert tree(site / "out") == cold_build(site, "cold-1")
    shutil.rmtree(site / "out")
    assert build(config, now=NOW).collection.read == 0  # the index and the journal know every file
    assert tree(site / "out") == cold_build(site, "cold-2")
    settled(write_article(site / "store", "news/a06.md", title="One change too many for the journal",
                          publishedDateTime="2024-01-07T10:00:00Z"))
    assert build(config, now=NOW).collection.read == 1
    assert files["index"].stat().st_mtime_ns != written.st_mtime_ns and not files["journal"].exists()
    assert tree(site / "out") == cold_build(site, "cold-3")


@pytest.mark.parametrize("damage", ["damaged", "of another index"])
def test_a_journal_that_cannot_be_trusted_costs_reading(site, caplog, damage):
    config = make_config(site)
    build(config, now=NOW)
    settled(write_article(site / "store", "news/new.md", title="Journalled",
                          publishedDateTime="2024-03-01T10:00:00Z"))
    build(config, now=NOW)
    journal = cache_files(config)["journal"]
    if damage == "damaged":
        data = journal.read_bytes()
        journal.write_bytes(data[:-40] + bytes([data[-40] ^ 0x01]) + data[-39:])
    else:  # left beside an index written since (a build killed between writing the index and removing it)
        header = json.loads(journal.read_bytes().split(b"\n")[1])
        journal.write_bytes(journal.read_bytes().replace(header["base"].encode(), b"0" * len(header["base"])))
    touched = site / "store" / "news" / "a05.md"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    with caplog.at_level(logging.INFO, logger="publisher"):
        report = build(config, now=NOW)
    said = [r for r in caplog.records if "journal" in r.getMessage() or "scan cache" in r.getMessage()]
    if damage == "damaged":
        assert len(said) == 1 and said[0].levelname == "WARNING" and report.collection.read == FILES + 1
    else:  # its rows are not taken: the new file is read again, as the index does not know it
        assert said == [] and report.collection.read == 2
    assert tree(site / "out") == cold_build(site, "cold")


def test_the_daemons_memory_reads_the_reported_paths_and_builds_the_same_bytes(site):
    """With a BuildMemory (the daemon's), a build stats only what the watcher reported: a file changed
    without a report waits for the next full scan; the bytes are those of a build from scratch."""
    config = make_config(site)
    memory = catalog.BuildMemory()
    memory.changed(None)
    build(config, now=NOW, memory=memory)
    write_article(site / "store", "news/a05.md", title="Reported edit", topics=["AI", "Topic 2"],
                  publishedDateTime="2024-01-06T10:00:00Z")
    write_article(site / "store", "news/new.md", title="Reported new", publishedDateTime="2024-03-01T10:00:00Z")
    write_article(site / "store", "news/a07.md", title="Unreported edit", publishedDateTime="2024-01-08T10:00:00Z")
    (site / "store" / "news" / "a02.md").unlink()
    memory.changed(["news/a05.md", "news/new.md", "news/a02.md"])
    report = build(config, now=NOW, memory=memory)
    atom = (site / "out" / "all.atom").read_text(encoding="utf-8")
    assert report.collection.read == 2
    assert "Reported edit" in atom and "Reported new" in atom and "Unreported edit" not in atom
    memory.changed(None)  # what the schedule's builds do: a full scan
    report = build(config, now=NOW, memory=memory)
    assert "Unreported edit" in (site / "out" / "all.atom").read_text(encoding="utf-8")
    assert tree(site / "out") == cold_build(site, "cold")


def test_a_state_file_replaced_by_another_process_is_read_again(tmp_path):
    memory = statefiles.Memory()
    path = tmp_path / "state.bin"
    assert statefiles.write_binary(path, "key", {"n": 1}, {"rows": [1]}, memory)
    remembered = statefiles.open_binary(path, "key", "test state", memory)
    assert remembered is not None and remembered.payload() == {"rows": [1]}
    statefiles.write_binary(path, "key", {"n": 2}, {"rows": [2, 2]})  # another process: no memory
    again = statefiles.open_binary(path, "key", "test state", memory)
    assert again is not None and again.header["n"] == 2 and again.payload() == {"rows": [2, 2]}
    assert statefiles.open_binary(path, "other key", "test state", memory) is None


def test_a_no_op_rebuild_decodes_only_the_newest_entry_of_each_feed(site, monkeypatch):
    """A rebuild that renders no feed makes no Article it does not look at: the index page wants the newest
    entry of each feed, nothing else does."""
    config = make_config(site)
    first = build(config, now=NOW)
    decoded: list[bytes] = []
    real = reading.decode
    monkeypatch.setattr(reading, "decode", lambda encoded: decoded.append(encoded) or real(encoded))
    again = build(config, now=NOW)
    assert again.writes.written == [] and len(again.feeds) == len(first.feeds)
    assert 0 < len(decoded) <= len(again.feeds)


def test_rows_read_become_index_columns_in_order_sharing_what_repeats():
    corpus = require_corpus()
    paths = sorted(str(p.relative_to(corpus)) for p in corpus.rglob("*.md"))[:40]
    records = reading.read_chunk(str(corpus), paths, "https://everyday-cc.github.io/ai/")
    read, stored = scan_cache.ReadRows(), scan_cache.ReadRows()
    for start in range(0, len(paths), 7):  # in batches, as the workers hand them back
        read.add(paths[start:start + 7], records[start:start + 7])
        stored.add(paths[start:start + 7], records[start:start + 7], stored=True)
    for name, attribute in scan_cache.RECORD_FIELDS.items():
        values = [getattr(record, attribute) for record in records]
        if name in scan_cache.INTEGER_COLUMNS:  # held as arrays, 0 where a file is no article
            values = [0 if value is None else value for value in values]
        assert list(read.columns[name]) == values, name
    assert read.problems == {path: r.problems for path, r in zip(paths, records, strict=True) if r.problems}
    assert read.fresh == {path: r.encoded for path, r in zip(paths, records, strict=True) if r.encoded}
    assert stored.fresh == {} and stored.columns == read.columns
    facets = [record.facets for record in records]
    assert read.columns["providers"] == [f and f[:3] for f in facets]
    assert read.columns["quality"] == [f and f[3] for f in facets]
    assert read.columns["heat"] == [f and f[4] for f in facets]
    assert read.columns["types"] == [f and f[5] for f in facets]
    first: dict = {}
    for provider, topics, kind in zip(read.columns["providers"], read.columns["topics"], read.columns["types"],
                                      strict=True):  # one object per distinct value
        for value in (provider, topics, kind):
            assert first.setdefault(value, value) is value
    providers = [p for p in read.columns["providers"] if p and p[0]]
    assert len(providers) > len(set(providers))  # some repeat


def write_direct(path: Path) -> bytes:
    """Write 4 KB of front matter to `path` with O_DIRECT, bypassing the page cache (skips the test where a
    file system refuses it); returns the bytes."""
    page = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT wants
    page.write(b"---\ntitle: x\n---\n".ljust(4096, b" "))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
    except OSError as exc:  # tmpfs and a few others refuse O_DIRECT
        pytest.skip(f"O_DIRECT not supported here: {exc}")
    try:
        os.write(fd, page)
    finally:
        os.close(fd)
    return page[:]


def drop_from_page_cache(path: Path) -> None:
    """Write back and drop the pages of `path` the kernel keeps (under load it may buffer an O_DIRECT write;
    a dirty page is not dropped)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_page_cache_check_tells_a_cached_file_from_one_not_cached(tmp_path):
    """reading._prefetch asks the kernel to read ahead only when the files are not in the page cache. A file
    written with O_DIRECT bypasses the page cache (a page the kernel keeps all the same, under load, is
    dropped with fadvise): not cached until something reads it."""
    path = tmp_path / "a.md"
    data = write_direct(path)
    cached = tmp_path / "b.md"
    cached.write_bytes(data)
    fd = os.open(cached, os.O_RDONLY)
    try:  # asked of a.md, the question would start reading it: ask it of a cached file
        os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
    except OSError as exc:  # this file system cannot tell: prefetching then always happens
        pytest.skip(f"RWF_NOWAIT not supported here: {exc}")
    finally:
        os.close(fd)
    for _ in range(5):  # the kernel may still cache a page written with O_DIRECT: then drop it, ask again
        if not reading._in_page_cache(str(path)):
            break
        drop_from_page_cache(path)
    else:
        pytest.fail("a.md never left the page cache: the check cannot tell cached from not")
    assert path.read_bytes().startswith(b"---")
    assert reading._in_page_cache(str(path))
    assert not reading._in_page_cache(str(tmp_path / "missing.md"))



def test_a_batch_is_read_ahead_when_any_of_its_sampled_files_is_not_in_the_page_cache(tmp_path):
    """Not only the first file of a batch is asked about: one evicted file further on gets the batch read
    ahead; a batch all in the page cache is not. The evicted file is written with O_DIRECT (asking whether
    a file is cached starts reading it, so nothing asks before _prefetch does); a page the kernel keeps
    all the same is dropped with fadvise, and the question asked again."""
    names = [f"f{n:03d}.md" for n in range(64)]
    for name in names:
        (tmp_path / name).write_text("---\ntitle: x\n---\n")
        (tmp_path / name).read_bytes()
    fd = os.open(tmp_path / names[0], os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
    except OSError as exc:
        pytest.skip(f"RWF_NOWAIT not supported here: {exc}")
    finally:
        os.close(fd)
    assert not reading._prefetch(str(tmp_path), names)
    assert len(names) > reading.PREFETCH_SAMPLE and 2 % (len(names) // reading.PREFETCH_SAMPLE) == 0
    evicted = tmp_path / names[2]
    evicted.unlink()
    write_direct(evicted)
    for _ in range(5):
        if reading._prefetch(str(tmp_path), names):
            break
        drop_from_page_cache(evicted)
    else:
        pytest.fail("the batch was never read ahead, with a file of it out of the page cache")


def test_paths_added_and_deleted_are_found_as_sets_find_them():
    rng = random.Random(3)
    universe = sorted({f"news/{rng.randrange(10**6):07d}.md" for _ in range(6000)})
    for changes in (0, 1, 2, 5, 40, 3000, len(universe)):
        old = sorted(rng.sample(universe, 5000))
        new = set(old)
        for path in rng.sample(universe, changes):  # add what is missing, delete what is there
            new.symmetric_difference_update({path})
        new_list = sorted(new)
        added, deleted = scan_cache._added_and_deleted(new_list, old)
        assert [new_list[row] for row in added] == sorted(new - set(old)), changes
        assert [old[row] for row in deleted] == sorted(set(old) - new), changes
    assert scan_cache._added_and_deleted([], ["a"]) == ([], [0])
    assert scan_cache._added_and_deleted(["a", "b"], []) == ([0, 1], [])
