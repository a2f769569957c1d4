"""Writing: atomic replacement, no rewrite of equal bytes, manifest ownership, failures keep the old file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from publisher import cli
from publisher.errors import WriteError
from publisher.writer import TEMP_SUFFIX, inside, manifest_path, read_manifest, write_outputs
from tests.conftest import write_article, write_config


def failing_in(folder: Path, code: int):
    """os.replace that fails with `code` for targets inside `folder` (the manifest elsewhere still works)."""
    real = os.replace

    def replace(src, dst):
        if folder in Path(dst).parents:
            raise OSError(code, os.strerror(code))
        return real(src, dst)
    return replace


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "out", tmp_path / "state" / "manifest.json"


def test_writes_then_leaves_equal_bytes_alone(places):
    out, manifest = places
    first = write_outputs(out, {"a.xml": b"1", "sub/b.xml": b"2"}, manifest)
    assert first.written == ["a.xml", "sub/b.xml"]
    mtime = (out / "a.xml").stat().st_mtime_ns
    second = write_outputs(out, {"a.xml": b"1", "sub/b.xml": b"3"}, manifest)
    assert (second.written, second.unchanged) == (["sub/b.xml"], ["a.xml"])
    assert (out / "a.xml").stat().st_mtime_ns == mtime and (out / "sub/b.xml").read_bytes() == b"3"
    assert oct((out / "a.xml").stat().st_mode & 0o777) == "0o644"


def test_only_owned_files_are_removed(places):
    out, manifest = places
    write_outputs(out, {"a.xml": b"1", "b.xml": b"2"}, manifest)
    (out / "c.xml").write_bytes(b"operator's")
    result = write_outputs(out, {"a.xml": b"1"}, manifest)
    assert result.removed == ["b.xml"] and (out / "c.xml").exists()
    assert read_manifest(manifest, out) == {"a.xml"}


def test_failed_write_keeps_the_previous_file_and_names_it(places, monkeypatch):
    out, manifest = places
    write_outputs(out, {"a.xml": b"old", "b.xml": b"old"}, manifest)

    monkeypatch.setattr("publisher.writer.os.replace", failing_in(out, errno.ENOSPC))
    result = write_outputs(out, {"a.xml": b"new", "b.xml": b"new"}, manifest)
    assert result.failed == [("a.xml", "No space left on device"), ("b.xml", "No space left on device")]
    assert (out / "a.xml").read_bytes() == b"old"
    assert not list(out.rglob(f"*{TEMP_SUFFIX}"))


def test_leftover_temporaries_are_cleaned(places):
    out, manifest = places
    (out / "topics").mkdir(parents=True)
    stray = out / "topics" / f".ai.atom.x1y2{TEMP_SUFFIX}"
    stray.write_bytes(b"<feed")
    foreign = out / "topics" / ".hidden-by-operator"
    foreign.write_bytes(b"keep")
    write_outputs(out, {"all.atom": b"x"}, manifest)
    assert not stray.exists() and foreign.exists()


def test_corrupt_manifest_is_reported_not_trusted(places, caplog):
    out, manifest = places
    write_outputs(out, {"a.xml": b"1"}, manifest)
    manifest.write_text("{not json")
    result = write_outputs(out, {}, manifest)
    assert result.removed == [] and (out / "a.xml").exists() and "manifest unreadable" in caplog.text
    assert read_manifest(manifest, out) == set()


def test_stop_request_finishes_the_current_file_only(places):
    out, manifest = places
    asked = []
    result = write_outputs(out, {"a": b"1", "b": b"2", "c": b"3"}, manifest,
                           stop_requested=lambda: len(asked.append(1) or asked) > 2)
    assert result.written == ["a", "b"] and not (out / "c").exists()
    assert read_manifest(manifest, out) == {"a", "b", "c"}  # may exist: never orphaned


@pytest.mark.parametrize("relative", ["../x", "/etc/passwd", "a/../../x", "", "..", "a/.."])
def test_paths_outside_the_output_are_refused(tmp_path, relative):
    with pytest.raises(WriteError):
        inside(tmp_path, relative)


def test_manifest_per_output_folder(tmp_path):
    assert manifest_path(tmp_path, tmp_path / "a") != manifest_path(tmp_path, tmp_path / "b")


def test_cli_reports_a_failed_write_with_its_own_exit_code(tmp_path, monkeypatch, capsys):
    write_article(tmp_path / "store", "a.md")
    config = write_config(tmp_path)
    assert cli.main(["build", "-q", "-c", str(config)]) == 0

    write_article(tmp_path / "store", "a.md", title="Changed")
    monkeypatch.setattr("publisher.writer.os.replace", failing_in(tmp_path / "out", errno.EACCES))
    assert cli.main(["build", "-q", "-c", str(config)]) == cli.EXIT_WRITE
    err = capsys.readouterr().err
    assert err == "Error: 16 files not written: Permission denied (first: all.atom)\n"  # 2 feeds x 4 files, and copies
    assert b"Changed" not in (tmp_path / "out" / "all.atom").read_bytes()
