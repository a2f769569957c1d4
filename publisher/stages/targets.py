"""Publishing targets: where a build puts its files. The build renders the same files for every target and
hands them over; the target decides how they get there, chosen in one place (open_target) from `output`.

- FolderTarget: a local folder served by a web server (writer.py: atomic renames, a manifest of owned files).
- BucketTarget (bucket.py): `s3://bucket/prefix/` on S3-compatible storage, behind a CDN, with a lease that
  keeps a second publisher off the prefix.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from publisher.config import Config
from publisher.stages import render_pool
from publisher.stages.render_pool import run_jobs
from publisher.stages.s3 import S3Location
from publisher.stages.writer import WriteResult, manifest_path, write_outputs

Stamps = dict[str, list[Any]]
STAMPS_IN_PARTS_FROM = 2000  # files to stat (a no-op build with archives checks 40,000)


class Target(Protocol):
    """What the build needs of a destination."""

    identity: str  # names the destination in state files: its folder path or its s3:// URL
    gzip_copies: bool  # whether the precompressed `.gz` copies (precompress) are published there
    noun: str  # "files" or "objects", for messages

    def hold(self, on_lost: Callable[[], None] = ...) -> AbstractContextManager[None]:
        """The destination is this process's to write while this is held; `on_lost` is called (on another
        thread) if another publisher takes it over meanwhile."""
        ...

    def refresh(self) -> None:
        """A new build starts: forget what was learnt of the destination during the last one."""
        ...

    def stamps(self, names: Iterable[str]) -> Stamps | None:
        """What tells that each of `names` is still as published (None when one is missing): a feed whose
        files have the stamps recorded after its last publication need not be rendered again."""
        ...

    def publish(self, files: Mapping[str, bytes], keep: Iterable[str],
                stop_requested: Callable[[], bool]) -> WriteResult:
        """Make the destination hold `files` and `keep` among what the publisher owns there."""
        ...

    def label(self, name: str) -> str:
        """Where `name` is, for messages."""
        ...


class FolderTarget:
    def __init__(self, config: Config, folder: Path) -> None:
        self.folder = folder
        self.identity = str(folder)
        self.gzip_copies = config.precompress
        self.noun = "files"
        self.manifest = manifest_path(config.state, folder)

    @contextmanager
    def hold(self, on_lost: Callable[[], None] = lambda: None) -> Iterator[None]:
        yield  # the build lock in the state folder is all a folder needs

    def refresh(self) -> None:
        pass  # nothing is remembered between builds

    def stamps(self, names: Iterable[str]) -> Stamps | None:
        """Size and mtime of each file; None when one is missing. Many (the 40,000 documents of the
        archives) on every core, through the rendering pool: the stat calls are most of a no-op rebuild."""
        names = list(names)
        if len(names) < STAMPS_IN_PARTS_FROM:
            return self._stamps(names)
        size = -(-len(names) // render_pool.PARALLEL_FROM)  # enough parts for the pool to fork
        parts = run_jobs([functools.partial(self._stamps, names[start:start + size])
                          for start in range(0, len(names), size)])
        found: Stamps = {}
        for part in parts:
            if part is None:
                return None
            found.update(part)
        return found

    def _stamps(self, names: list[str]) -> Stamps | None:
        """Each name looked up in its open folder (fstatat), not along the whole path again: plain strings,
        since a Path per name costs more than its stat (40,000 archive documents)."""
        found = {}
        folders: dict[str, list[str]] = {}
        for name in names:
            folders.setdefault(os.path.dirname(name), []).append(name)
        for folder, inside_it in folders.items():
            try:
                fd = os.open(os.path.join(self.folder, folder), os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                return None
            try:
                for name in inside_it:
                    stat = os.stat(os.path.basename(name), dir_fd=fd)
                    found[name] = [stat.st_size, stat.st_mtime_ns]
            except OSError:
                return None
            finally:
                os.close(fd)
        return found

    def publish(self, files: Mapping[str, bytes], keep: Iterable[str],
                stop_requested: Callable[[], bool]) -> WriteResult:
        return write_outputs(self.folder, files, self.manifest, stop_requested, keep=keep)

    def label(self, name: str) -> str:
        return str(self.folder / name)


def open_target(config: Config) -> Target:
    """The target of `output`: a bucket for an s3:// URL, else the local folder."""
    if isinstance(config.output, S3Location):
        from publisher.stages.bucket import BucketTarget  # boto3 is needed only here

        return BucketTarget(config, config.output)
    return FolderTarget(config, config.output)
