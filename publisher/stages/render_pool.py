"""Rendering on every core: the feeds of a build are rendered by this process and forked copies of it (as
are other jobs of plain data in, plain data out: the stat of the 40,000 archive documents, targets.py).

Rendering is pure computation on data the build already holds (feedgen, lxml, json, gzip), a second or more
for a cold build of a big store, on one core. Threads would not help (the GIL), and feedgen switches the
process-wide locale while it formats RSS dates, so only processes can render side by side. A forked child
already holds every feed in memory: it is told nothing, renders its share of the jobs and hands the bytes
back through a temporary file; this process renders its own share meanwhile. Results are put together in
job order, so the output never depends on how many processes rendered it.

Forking a process that runs other threads is unsafe (a child could wait forever on a lock one of them
held), so a process with more than one thread (the daemon) renders everything itself; so does a build with
few jobs, where a fork costs more than it saves.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from publisher.stages.reading import available_cores

logger = logging.getLogger(__name__)

T = TypeVar("T")  # what a job gives: any picklable value (rendered files, and what rendering them found)

# Fewest jobs worth a fork: a fork and the hand-back cost a few milliseconds; a feed's job takes about ten.
PARALLEL_FROM = 24


def run_jobs(jobs: Sequence[Callable[[], T]], workers: int | None = None) -> list[T]:
    """What each job gives, in job order. A job's exception is raised here, as if it had run here."""
    workers = min(workers or available_cores(), len(jobs))
    if workers <= 1 or len(jobs) < PARALLEL_FROM or not _may_fork():
        return _run_each(jobs, range(len(jobs)))
    # Job i goes to process i % workers: neighbouring jobs (a family's feeds) cost about the same.
    shares = [range(first, len(jobs), workers) for first in range(workers)]
    # While children share this process's pages, no collector pass (this process's, or a child's, which
    # inherits the frozen state) may write into every object it has (the scan index of a big store): each
    # page written would be copied, in memory twice.
    gc.freeze()
    try:
        children = [_fork(jobs, share) for share in shares[1:]]
        results: dict[int, T] = dict(zip(shares[0], _run_each(jobs, shares[0]), strict=True))
        for share, child in zip(shares[1:], children, strict=True):
            results.update(_collect(jobs, share, child))
    finally:
        gc.unfreeze()
    return [results[index] for index in range(len(jobs))]


def _may_fork() -> bool:
    return hasattr(os, "fork") and threading.active_count() == 1


def _run_each(jobs: Sequence[Callable[[], T]], share: range) -> list[T]:
    return [jobs[index]() for index in share]


def _fork(jobs: Sequence[Callable[[], T]], share: range) -> tuple[int, int] | None:
    """Start a child rendering `share` into a temporary file: (its pid, the file's descriptor), or None
    when no child could be started (this process then renders that share too)."""
    try:
        fd, name = tempfile.mkstemp(prefix="publisher-render-")
        os.unlink(name)  # only the two processes' descriptors keep it
    except OSError as exc:
        logger.debug("no temporary file for a rendering process (%s); rendering here", exc)
        return None
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(fd)
        logger.debug("cannot fork a rendering process (%s); rendering here", exc)
        return None
    if pid == 0:  # the child: no clean-up of the parent's state, no exit handlers, just the work
        status = 1
        try:
            with os.fdopen(fd, "wb") as stream:  # each job's result as soon as it is there: none is held
                for index in share:
                    pickle.dump(jobs[index](), stream, protocol=pickle.HIGHEST_PROTOCOL)
            status = 0
        finally:
            os._exit(status)
    return pid, fd


def _collect(jobs: Sequence[Callable[[], T]], share: range, child: tuple[int, int] | None) -> dict[int, T]:
    """The child's results for `share`; should it have failed, this process renders the share itself."""
    if child is not None:
        pid, fd = child
        _, status = os.waitpid(pid, 0)
        try:
            if status == 0:
                with os.fdopen(fd, "rb", closefd=False) as stream:
                    stream.seek(0)
                    return {index: pickle.load(stream) for index in share}
            logger.debug("a rendering process failed (status %s); rendering its share here", status)
        finally:
            os.close(fd)
    return dict(zip(share, _run_each(jobs, share), strict=True))
