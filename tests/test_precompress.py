"""The `.gz` copies beside every output file: what they hold, that they are deterministic, and that they follow
their file (written with it, removed with it, gone when `precompress` is switched off)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from publisher.build import build
from publisher.stages.precompress import compress, gzip_copies
from tests.conftest import make_config, snapshot, write_article


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write_article(tmp_path / "store", "a.md", topics=["AI", "Robots"])
    return tmp_path


def test_every_file_has_a_gzip_copy_holding_its_bytes(site):
    build(make_config(site))
    files = [p for p in (site / "out").rglob("*") if p.is_file() and p.suffix != ".gz"]
    assert {p.name for p in files} >= {"all.atom", "all.rss", "all.json", "index.html", "feeds.opml"}
    copies = sorted(p for p in (site / "out").rglob("*.gz"))
    assert copies == sorted(p.with_name(f"{p.name}.gz") for p in files)
    for path in files:
        assert gzip.decompress(path.with_name(f"{path.name}.gz").read_bytes()) == path.read_bytes()


def test_gzip_header_carries_no_time_and_no_name():
    data = compress(b"<feed/>" * 100)
    # RFC 1952 2.3: ID1 ID2 CM FLG MTIME(4) XFL OS; FNAME is flag bit 3
    assert data[:3] == b"\x1f\x8b\x08" and not data[3] & 0x08 and data[4:8] == b"\0\0\0\0"
    assert compress(b"<feed/>" * 100) == data


def test_copies_are_made_only_of_files_not_of_copies():
    assert gzip_copies({"a.atom": b"x", "a.atom.gz": b"y"}) == {"a.atom.gz": compress(b"x")}


def test_no_op_rebuild_rewrites_no_copy(site):
    config = make_config(site)
    build(config)
    before = snapshot(site / "out")
    assert build(config).writes.written == []
    assert snapshot(site / "out") == before


def test_copies_go_with_their_feed_and_with_the_switch(site):
    build(make_config(site))
    write_article(site / "store", "a.md", topics=["AI"])
    removed = build(make_config(site)).writes.removed
    assert sorted(removed) == ["topics/robots.atom", "topics/robots.atom.gz", "topics/robots.html",
                               "topics/robots.html.gz", "topics/robots.json", "topics/robots.json.gz",
                               "topics/robots.rss", "topics/robots.rss.gz"]
    report = build(make_config(site, precompress=False))
    assert report.writes.written == [] and all(name.endswith(".gz") for name in report.writes.removed)
    assert not list((site / "out").rglob("*.gz")) and (site / "out" / "all.atom").is_file()
