"""Writing: put rendered files into the served output folder without ever exposing a half-written one.

Every file is written to a temporary file in its own folder, flushed, fsynced and renamed over the old one
(`os.replace` is atomic on POSIX), and only when its bytes differ. A manifest in the state folder lists the
files the publisher owns there, so that a feed that disappears is removed and no other file is touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from publisher.errors import WriteError
from publisher.precompress import SUFFIX as GZIP_SUFFIX
from publisher.statefiles import TEMP_SUFFIX, fsync_folder, read_state_json, write_atomic
from publisher.wording import by_cause, plural

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1


@dataclass
class WriteResult:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, cause)

    def describe(self) -> str:
        """The counts, for the summary line."""
        return (f"{plural(len(self.written), 'file')} written, {len(self.unchanged)} unchanged, "
                f"{len(self.removed)} removed")

    def failure_lines(self) -> list[str]:
        """One line per cause of the files that could not be written (empty when every file was)."""
        return by_cause(self.failed, "not written")


def write_outputs(output: Path, files: Mapping[str, bytes], manifest: Path,
                  stop_requested: Callable[[], bool] = lambda: False,
                  keep: Iterable[str] = ()) -> WriteResult:
    """Make `output` hold exactly `files` (relative POSIX path -> bytes) among the files the publisher owns,
    plus the files named in `keep`: files of the publisher's that are known to be as they should be (a feed
    that did not change), left untouched and reported unchanged.

    `stop_requested` is asked between files: a daemon told to stop finishes the file it is on, and the
    manifest still records every file that may exist.
    """
    result = WriteResult()
    output.mkdir(parents=True, exist_ok=True)
    remove_temporaries(output)
    owned = read_manifest(manifest, output)
    kept = set(keep) - set(files)
    present = set(files) | kept
    # Record what is about to exist before writing it: a crash in between must not orphan a file.
    save_manifest(manifest, output, owned | present)
    folders: set[Path] = set()  # where files were renamed into place: each folder is synced once, at the end
    for relative in sorted(present):
        if stop_requested():
            logger.info("stop requested: %d files left unwritten", len(present) - len(result.written)
                        - len(result.unchanged) - len(result.failed))
            break
        if relative in kept:
            result.unchanged.append(relative)
            continue
        target = inside(output, relative)
        try:
            mtime_ns = _original_mtime(output, relative, present)
            if _same_bytes(target, files[relative]):
                if mtime_ns is not None and target.stat().st_mtime_ns != mtime_ns:
                    os.utime(target, ns=(mtime_ns, mtime_ns))  # a copy left by an older version, say
                result.unchanged.append(relative)
                continue
            write_atomic(target, files[relative], sync_folder=False, mtime_ns=mtime_ns)
            folders.add(target.parent)
        except OSError as exc:
            cause = exc.strerror or str(exc)
            logger.debug("%s: not written, the previous version stays: %s", target, cause)
            result.failed.append((relative, cause))
            continue
        logger.debug("wrote %s", target)
        result.written.append(relative)
    else:
        for relative in sorted(owned - present):
            if _remove(output, relative):
                result.removed.append(relative)
            else:
                present.add(relative)
        save_manifest(manifest, output, present)
    for folder in sorted(folders):  # the renames above are durable from here on
        fsync_folder(folder)
    return result


def inside(output: Path, relative: str) -> Path:
    """The path of `relative` in `output`; refuses anything that would land outside it."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise WriteError(f"refusing to write {relative!r}: not a plain path inside {output}")
    return output.joinpath(*parts)


def _original_mtime(output: Path, relative: str, present: set[str]) -> int | None:
    """For a gzip copy (`all.atom.gz`) of a file also written (`all.atom`, which sorts, and so is written,
    first): that file's modification time, which the copy takes. A server then sees at once whether a copy
    belongs to its file (`publisher serve` checks; nginx's gzip_static does not, but the two never differ),
    and a URL never answers with two bodies of different ages."""
    if not relative.endswith(GZIP_SUFFIX) or relative.removesuffix(GZIP_SUFFIX) not in present:
        return None
    try:
        return inside(output, relative.removesuffix(GZIP_SUFFIX)).stat().st_mtime_ns
    except FileNotFoundError:
        return None


def remove_temporaries(output: Path) -> list[Path]:
    """Delete temporary files that a killed build left behind (only ours: they carry TEMP_SUFFIX)."""
    removed = []
    for path in sorted(output.rglob(f"*{TEMP_SUFFIX}")):
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
    except FileNotFoundError:
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


