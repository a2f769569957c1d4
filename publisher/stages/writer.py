"""Writing: put rendered files into the served output folder so that readers always see one whole build.

Publishing is all or nothing. Every changed file is first *staged*: written under a temporary name in its
final folder, flushed and fsynced. Only when every one of them is staged are they renamed over the old
files (`os.replace` is atomic on POSIX, and a rename in one folder cannot run out of space), then the
folders are fsynced. If any file cannot be staged (full disk, permission denied, a path that is a file),
every temporary is removed and no served file changes. Unchanged bytes are never rewritten.

A manifest in the state folder lists the files the publisher owns there, so that a feed that disappears is
removed and no other file is touched. It changes only after the renames.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from publisher.caches.statefiles import FILE_MODE, TEMP_SUFFIX, fsync_folder, read_state_json, write_atomic
from publisher.errors import BuildInterrupted, WriteError
from publisher.stages.precompress import SUFFIX as GZIP_SUFFIX
from publisher.wording import by_cause, plural

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
SYNC_THREADS = 16  # fsyncs under way at once while staging


@dataclass
class WriteResult:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, cause); when any, nothing changed

    @property
    def ok(self) -> bool:
        return not self.failed

    def describe(self) -> str:
        """The counts, for the summary line."""
        return (f"{plural(len(self.written), 'file')} written, {len(self.unchanged)} unchanged, "
                f"{len(self.removed)} removed")

    def failure_lines(self) -> list[str]:
        """One line per cause of the files that could not be written (empty when every file was)."""
        return by_cause(self.failed, "not written")


@dataclass
class _Staged:
    """Files written under temporary names beside their targets, waiting to be renamed into place."""

    files: dict[str, Path] = field(default_factory=dict)  # relative path -> its temporary file
    folders: list[Path] = field(default_factory=list)  # folders made for them, deepest last
    failed: list[tuple[str, str]] = field(default_factory=list)


def write_outputs(output: Path, files: Mapping[str, bytes], manifest: Path,
                  stop_requested: Callable[[], bool] = lambda: False,
                  keep: Iterable[str] = ()) -> WriteResult:
    """Make `output` hold exactly `files` (relative POSIX path -> bytes) among the files the publisher owns,
    plus the files named in `keep`: files of the publisher's that are known to be as they should be (a feed
    that did not change), left untouched and reported unchanged.

    All or nothing: when a file cannot be staged, the result lists it under `failed` with its cause and
    nothing in `output` nor the manifest has changed. `stop_requested` is asked between staged files: a stop
    before every file is staged discards them all and raises BuildInterrupted.
    """
    output.mkdir(parents=True, exist_ok=True)
    staging = manifest.with_name(f"{manifest.name}.staging")
    if staging.exists() or not manifest.exists():  # a build that staged files did not finish: look for them
        remove_temporaries(output)
    owned = read_manifest(manifest, output)
    kept = set(keep) - set(files)
    result = WriteResult(unchanged=sorted(kept))
    changed: dict[str, bytes] = {}
    for relative in sorted(files):
        if _same_bytes(inside(output, relative), files[relative]):
            result.unchanged.append(relative)
        else:
            changed[relative] = files[relative]
    result.unchanged.sort()
    if changed:
        _mark(staging)
    staged = _stage(output, changed, stop_requested)
    if staged.failed:
        _discard(staged)
        result.failed = staged.failed
        return result
    result.written = _publish(output, staged)
    result.failed = staged.failed
    for relative in sorted(set(files) - set(changed)):  # a copy left by an older version, say, takes its
        _match_original_mtime(output, relative)         # file's time
    present = set(files) | kept
    for relative in sorted(owned - present):
        if _remove(output, relative):
            result.removed.append(relative)
        else:
            present.add(relative)
    if present != owned:  # a build that changes nothing does not even write the manifest out again
        save_manifest(manifest, output, present)
    staging.unlink(missing_ok=True)
    return result


def _mark(staging: Path) -> None:
    """Note, durably, that temporaries are about to be written into the output folder: only a build that
    finds this note (its writer was killed) walks the whole output folder for them, which costs as much as
    the rest of a no-op rebuild with 40,000 archive documents."""
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
        staging.touch()
    except OSError as exc:  # as for the manifest beside it: the state folder must be writable
        raise WriteError(f"{staging}: cannot write: {exc.strerror or exc}") from None
    fsync_folder(staging.parent)


def _stage(output: Path, changed: Mapping[str, bytes], stop_requested: Callable[[], bool]) -> _Staged:
    """Write every changed file durably under a temporary name in its final folder. Goes on after a failure,
    so that every cause is found in one build (the caller discards what was staged)."""
    staged = _Staged()
    for relative, data in changed.items():
        if stop_requested():
            _discard(staged)
            raise BuildInterrupted(f"stop requested while staging; {plural(len(changed), 'file')} not "
                                   "published, the served files are as they were")
        target = inside(output, relative)
        try:
            staged.folders += _make_folders(output, target.parent)
            staged.files[relative] = _write_temporary(target, data, _original_mtime(output, relative, staged))
        except OSError as exc:
            cause = _cause(output, target, exc)
            logger.debug("%s: cannot be staged: %s", target, cause)
            staged.failed.append((relative, cause))
    _sync(staged)
    return staged


def _sync(staged: _Staged) -> None:
    """Make every staged file durable. Each fsync waits for the disk; side by side, in threads (a wait
    releases the GIL), hundreds of them take a fraction of the time they take one after the other: one at a
    time they were about a fifth of a cold build. A file that cannot be synced (the disk full after all, an
    I/O error) is a staging failure like any other."""
    items = list(staged.files.items())
    with ThreadPoolExecutor(max_workers=min(SYNC_THREADS, len(items) or 1)) as pool:
        for failure in pool.map(_fsync_file, items):
            if failure is not None:
                logger.debug("%s: cannot be staged: %s", failure[0], failure[1])
                staged.failed.append(failure)


def _fsync_file(item: tuple[str, Path]) -> tuple[str, str] | None:
    """fsync a staged file; (its path, the cause) when that fails."""
    relative, temporary = item
    try:
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return relative, exc.strerror or str(exc)
    return None


def _publish(output: Path, staged: _Staged) -> list[str]:
    """Rename every staged file over its target, deepest folders first (the topic feeds before the index
    that links to them), then make the renames durable."""
    written = []
    for relative in sorted(staged.files, key=lambda name: (-name.count("/"), name)):
        target = inside(output, relative)
        try:
            os.replace(staged.files[relative], target)
        except OSError as exc:  # not expected once staged (same folder, no new space); told, never hidden
            staged.failed.append((relative, _cause(output, target, exc)))
            staged.files[relative].unlink(missing_ok=True)
            continue
        logger.debug("wrote %s", target)
        written.append(relative)
    for folder in sorted({inside(output, relative).parent for relative in written}):
        fsync_folder(folder)
    return sorted(written)


def _discard(staged: _Staged) -> None:
    """Remove every temporary, and the folders made for them when they are empty again."""
    for temporary in staged.files.values():
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    staged.files.clear()
    for folder in reversed(staged.folders):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: a folder something else put a file in stays


def _make_folders(output: Path, folder: Path) -> list[Path]:
    """Make `folder` and any missing parent up to `output`; the ones made, outermost first."""
    missing = []
    while folder != output and not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir()
    return list(reversed(missing))


def _write_temporary(target: Path, data: bytes, mtime_ns: int | None = None) -> Path:
    """`data` in a new temporary file beside `target`, with the modification time `mtime_ns` when given; its
    path. Not yet durable: _sync() fsyncs every staged file at once."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, FILE_MODE)
        if mtime_ns is not None:
            os.utime(temporary, ns=(mtime_ns, mtime_ns))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    return temporary


def _cause(output: Path, target: Path, exc: OSError) -> str:
    """Why a file cannot be staged, said plainly: a folder in its path that is a file is named."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        for folder in [target.parent, *target.parent.parents]:
            if folder == output:
                break
            if folder.exists() and not folder.is_dir():
                return f"{folder.relative_to(output).as_posix()} is a file, not a folder"
    return exc.strerror or str(exc)


def inside(output: Path, relative: str) -> Path:
    """The path of `relative` in `output`; refuses anything that would land outside it."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise WriteError(f"refusing to write {relative!r}: not a plain path inside {output}")
    return output.joinpath(*parts)


def _original_mtime(output: Path, relative: str, staged: _Staged) -> int | None:
    """For a gzip copy (`all.atom.gz`): the modification time of its file (`all.atom`, which sorts, and so is
    staged, first), which the copy takes. A server then sees at once whether a copy belongs to its file
    (`publisher serve` checks; nginx's gzip_static does not, but the two never differ), and a URL never
    answers with two bodies of different ages. None for a file that is not a copy, or whose file is gone."""
    if not relative.endswith(GZIP_SUFFIX):
        return None
    original = relative.removesuffix(GZIP_SUFFIX)
    try:
        where = staged.files[original] if original in staged.files else inside(output, original)
        return where.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _match_original_mtime(output: Path, relative: str) -> None:
    mtime_ns = _original_mtime(output, relative, _Staged())
    target = inside(output, relative)
    with contextlib.suppress(OSError):
        if mtime_ns is not None and target.stat().st_mtime_ns != mtime_ns:
            os.utime(target, ns=(mtime_ns, mtime_ns))


def remove_temporaries(output: Path) -> list[Path]:
    """Delete temporary files that a killed build left behind (only ours: they carry TEMP_SUFFIX)."""
    removed = []
    found = [Path(folder, name) for folder, _, names in os.walk(output) for name in names if name.endswith(TEMP_SUFFIX)]
    for path in sorted(found):
        try:
            path.unlink()
            removed.append(path)
            logger.debug("removed %s, left by an interrupted build", path)
        except FileNotFoundError:
            pass
    if removed:
        logger.info("removed %s left by an interrupted build", plural(len(removed), "temporary file"))
    return removed


def manifest_path(state: Path, output: Path) -> Path:
    """One manifest per output folder, so that --output elsewhere never removes files of another."""
    digest = hashlib.sha256(str(output.resolve()).encode("utf-8")).hexdigest()[:16]
    return state / "manifests" / f"{digest}.json"


def read_manifest(path: Path, output: Path) -> set[str]:
    data = read_state_json(path, "manifest", "files it listed will not be removed")
    if data is None:
        return set()
    if not (isinstance(data, dict) and data.get("version") == MANIFEST_VERSION
            and isinstance(data.get("files"), list) and data.get("output") == str(output)):
        logger.warning("%s: manifest of another version or folder; starting a new one", path)
        return set()
    return {f for f in data["files"] if isinstance(f, str)}


def save_manifest(path: Path, output: Path, files: set[str]) -> None:
    data = {"version": MANIFEST_VERSION, "output": str(output), "files": sorted(files)}
    text = (json.dumps(data, indent=1) + "\n").encode("utf-8")
    try:
        if _same_bytes(path, text):  # a build that changes nothing does not even touch the manifest
            return
        write_atomic(path, text)
    except OSError as exc:
        raise WriteError(f"{path}: cannot write the manifest: {exc.strerror or exc}") from None


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:  # missing, or in the way (a folder that is a file): writing it will say why
        return False


def _remove(output: Path, relative: str) -> bool:
    target = inside(output, relative)
    try:
        target.unlink()
    except FileNotFoundError:
        return True
    except OSError as exc:
        logger.error("%s: cannot remove: %s", target, exc.strerror or exc)
        return False
    logger.debug("removed %s", target)
    folder = target.parent
    while folder != output and output in folder.parents:
        try:
            folder.rmdir()  # only succeeds when empty: a folder with other files stays
        except OSError:
            break
        folder = folder.parent
    return True


