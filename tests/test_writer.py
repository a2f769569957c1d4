"""Writing: atomic replacement, no rewrite of equal bytes, manifest ownership, failures keep the old file."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from publisher import cli
from publisher.errors import BuildInterrupted, WriteError
from publisher.stages.writer import TEMP_SUFFIX, inside, manifest_path, read_manifest, write_outputs
from publisher.wording import by_cause
from tests.conftest import run_cli, run_main, snapshot, write_article, write_config


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

    monkeypatch.setattr("publisher.stages.writer.os.replace", failing_in(out, errno.ENOSPC))
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


def test_stop_request_while_staging_publishes_nothing(places):
    out, manifest = places
    write_outputs(out, {"a": b"old", "b": b"old"}, manifest)
    asked = []
    with pytest.raises(BuildInterrupted):
        write_outputs(out, {"a": b"1", "b": b"2", "c": b"3"}, manifest,
                      stop_requested=lambda: len(asked.append(1) or asked) > 2)
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"] and not list(out.rglob(f"*{TEMP_SUFFIX}"))
    assert (out / "a").read_bytes() == b"old" and read_manifest(manifest, out) == {"a", "b"}


def test_a_file_that_cannot_be_staged_changes_nothing(places):
    """All or nothing: `topics` is a file, so no topic feed can be staged; the top-level file that could be
    must not change either, no folder is left behind, and the manifest stays as it was."""
    out, manifest = places
    write_outputs(out, {"all.xml": b"old", "gone.xml": b"old"}, manifest)
    (out / "topics").write_bytes(b"an operator's file")
    before = snapshot(out)
    manifest_before = manifest.read_bytes()
    files = {"all.xml": b"new", "topics/ai.xml": b"new", "topics/ml.xml": b"new", "new/deep/x.xml": b"new"}
    (out / "new").mkdir()
    (out / "new" / "deep").write_bytes(b"also a file")
    result = write_outputs(out, files, manifest)
    assert result.failed == [("new/deep/x.xml", "new/deep is a file, not a folder"),
                             ("topics/ai.xml", "topics is a file, not a folder"),
                             ("topics/ml.xml", "topics is a file, not a folder")]
    assert result.written == [] and result.removed == []
    assert snapshot(out) == {**before, "new/deep": snapshot(out)["new/deep"]}
    assert not list(out.rglob(f"*{TEMP_SUFFIX}")) and manifest.read_bytes() == manifest_before
    assert by_cause(result.failed, "not written") == [
        "1 file not written: new/deep is a file, not a folder (new/deep/x.xml)",
        "2 files not written: topics is a file, not a folder (first: topics/ai.xml)"]


def test_a_file_that_cannot_be_made_durable_changes_nothing(places, monkeypatch):
    """Staged files are fsynced together, after they are all written: an fsync that fails (an I/O error, a
    disk that filled up after all) is a staging failure, and nothing served changes."""
    out, manifest = places
    write_outputs(out, {"all.xml": b"old", "topics/ai.xml": b"old"}, manifest)
    before = snapshot(out)
    real = os.fsync
    synced = []

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        synced.append(name)
        if ".ai.xml." in name:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd)
    monkeypatch.setattr("publisher.stages.writer.os.fsync", fsync)
    result = write_outputs(out, {"all.xml": b"new", "topics/ai.xml": b"new", "topics/ml.xml": b"new"}, manifest)
    assert result.failed == [("topics/ai.xml", os.strerror(errno.EIO))] and result.written == []
    assert sum(TEMP_SUFFIX in name for name in synced) == 3  # every staged file, not only up to the failure
    assert snapshot(out) == before and not list(out.rglob(f"*{TEMP_SUFFIX}"))


def test_new_folders_made_for_a_failed_build_are_removed(places):
    out, manifest = places
    write_outputs(out, {"a.xml": b"old"}, manifest)
    (out / "b").write_bytes(b"a file in the way")
    result = write_outputs(out, {"a.xml": b"new", "fresh/x.xml": b"new", "b/y.xml": b"new"}, manifest)
    assert [path for path, _ in result.failed] == ["b/y.xml"]
    assert sorted(p.name for p in out.iterdir()) == ["a.xml", "b"] and (out / "a.xml").read_bytes() == b"old"


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
    monkeypatch.setattr("publisher.stages.writer.os.replace", failing_in(tmp_path / "out", errno.EACCES))
    assert cli.main(["build", "-q", "-c", str(config)]) == cli.EXIT_WRITE
    err = capsys.readouterr().err
    assert re.fullmatch(r"Error: \d+ files not written: Permission denied \(first: \S+\)\n", err), err
    assert b"Changed" not in (tmp_path / "out" / "all.atom").read_bytes()


@pytest.fixture
def small_disk(tmp_path: Path):
    """An output folder that cannot take a new build: a 2 MiB tmpfs, filled up by `fill`, when the tests run
    as root (CI does); else a folder made read-only. Yields (folder, fill, unfill)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = False
    if os.geteuid() == 0:  # root ignores file modes: only a really full file system will do
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=755", "tmpfs", str(folder)],
                               capture_output=True, text=True)
        if mount.returncode != 0:
            pytest.fail(f"cannot mount a small tmpfs for the full-disk test: {mount.stderr.strip()}")
        mounted = True
    filler = folder / "filler"

    def fill() -> None:
        if not mounted:
            for path in [folder, *folder.rglob("*")]:
                if path.is_dir():
                    path.chmod(0o555)
            return
        with filler.open("wb", buffering=0) as stream:
            try:
                while True:
                    stream.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC

    def unfill() -> None:
        if mounted:
            filler.unlink()
        else:
            for path in [folder, *folder.rglob("*")]:
                if path.is_dir():
                    path.chmod(0o755)

    try:
        yield folder, fill, unfill
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
        else:
            unfill()


def test_a_full_disk_changes_no_served_byte_and_says_so_in_one_line(tmp_path, small_disk):
    folder, fill, unfill = small_disk
    store = tmp_path / "store"
    for n in range(30):
        write_article(store, f"a{n:02d}.md", title=f"Story {n}", topics=[f"Topic {n % 10}", "AI"],
                      publishedDateTime=f"2024-01-{1 + n % 28:02d}T00:00:00Z")
    config = write_config(tmp_path, output=str(folder))
    assert run_main("build", "-q", "-c", config).returncode == 0
    before = snapshot(folder)
    fill()
    for n in range(30):  # every feed changes
        write_article(store, f"a{n:02d}.md", title=f"Changed story {n}", topics=[f"Topic {n % 10}", "AI"],
                      publishedDateTime=f"2024-01-{1 + n % 28:02d}T00:00:00Z")

    result = run_cli("build", "-c", config)
    assert result.returncode == 4 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert re.fullmatch(r"Error: \d+ files not written: [^()]+ \(first: \S+\)", line), line
    served = {path: value for path, value in snapshot(folder).items() if path != "filler"}
    assert served == before  # every byte and every modification time

    status = run_main("status", "--json", "-c", config)
    data = json.loads(status.stdout)
    assert status.returncode == 1 and data["last_result"] == "failed"
    assert data["last_error"] == line.removeprefix("Error: ") and len(data["failures"]) == int(line.split()[1])
    text = run_main("status", "-c", config).stdout
    assert [row for row in text.splitlines() if row.startswith("error:")] == [f"error:         {data['last_error']}"]

    unfill()  # room again: the next build finishes the job
    again = run_main("build", "-q", "-c", config)
    assert again.returncode == 0 and again.stdout == again.stderr == ""
    assert b"Changed story 29" in (folder / "all.atom").read_bytes()
    assert not list(folder.rglob(f"*{TEMP_SUFFIX}"))


def test_only_a_build_that_finds_the_staging_note_walks_the_output_for_temporaries(places):
    """The note is written (durably) before the first temporary and removed once the files are in place, so
    a killed writer leaves it behind; a no-op rebuild then need not walk 40,000 files looking for debris."""
    out, manifest = places
    write_outputs(out, {"all.atom": b"1"}, manifest)
    staging = manifest.with_name(f"{manifest.name}.staging")
    seen: list[bool] = []
    write_outputs(out, {"all.atom": b"2"}, manifest, stop_requested=lambda: seen.append(staging.exists()) or False)
    assert seen == [True] and not staging.exists()
    stray = out / f".all.atom.x1y2{TEMP_SUFFIX}"
    stray.write_bytes(b"<feed")
    write_outputs(out, {"all.atom": b"2"}, manifest)
    assert stray.exists()  # no note: not looked for
    staging.touch()  # what a killed build leaves
    write_outputs(out, {"all.atom": b"2"}, manifest)
    assert not stray.exists() and not staging.exists()
