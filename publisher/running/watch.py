"""Watching the store, so that `publisher run` publishes an article within a second of it landing.

The store folder is watched recursively with watchfiles (the kernel's inotify on Linux). Changes to files
the build would read (the `include`/`exclude` patterns), or to folders, count; changes below the output
and state folders, to dotfiles and in dot-folders, and to editor and tool temporaries (`name~`, `*.swp`,
`*.tmp`, `#name#`, ...) do not. A burst of changes is one build: the build is asked for once
`watch.debounce` has passed without a further change, or at the latest `watch.max_delay` after the first
one (the Debouncer). The daemon runs the build on its one worker thread, so builds never overlap.

Events can be missed (a network file system, an overflowed inotify queue, a watcher that failed): the
daemon's schedule keeps building whatever happens here. A watcher that fails is logged, and started again
after a pause that grows with each failure in a row; a build is asked for when it is back, since changes
may have gone unseen meanwhile. The same happens when the store folder itself is removed or replaced.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import watchfiles

from publisher.caches.statefiles import TEMP_SUFFIX
from publisher.config import Config
from publisher.running.status import timestamp, update_status
from publisher.stages.store import selected

logger = logging.getLogger(__name__)

# watchfiles hands over a batch of events once none came for STEP_MS, or every BATCH_MS during a steady
# stream; the Debouncer makes builds of the batches. CHECK_MS: how often a quiet watcher checks that the
# store folder is still the one it watches, and whether it is asked to stop.
STEP_MS = 50
BATCH_MS = 200
CHECK_MS = 250
RESTART_FIRST = 1.0  # seconds before the first new start of a failed watcher; doubles on each failure in a row
RESTART_MAX = 60.0

# Names that editors and tools write beside a file while saving it, or leave behind: never an article.
TEMPORARY_SUFFIXES = ("~", ".swp", ".swo", ".swx", ".tmp", ".temp", ".part", ".partial", ".crdownload",
                      ".kate-swp", ".bak", TEMP_SUFFIX)
TEMPORARY_NAMES = frozenset({"4913"})  # vim's probe for a writable folder


def is_temporary(name: str) -> bool:
    """Whether a file name is a dotfile or an editor's or tool's temporary."""
    return (name.startswith(".") or (name.startswith("#") and name.endswith("#"))
            or name.endswith(TEMPORARY_SUFFIXES) or name in TEMPORARY_NAMES)


class ChangeFilter:
    """Which changes below the store can change what a build reads."""

    def __init__(self, store: Path, skip: Iterable[Path], include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
        self.store = os.path.realpath(store)
        self.skip = tuple(os.path.realpath(folder) for folder in skip)
        self.include = include
        self.exclude = exclude

    def changed_file(self, change: watchfiles.Change, path: str) -> str | None:
        """The store-relative ("/"-separated) path of a relevant change to a file; None for a folder, or a
        path gone that may have been one (its files changed without events of their own)."""
        if os.path.isdir(path) or (change == watchfiles.Change.deleted
                                   and not selected(self._posix(path), self.include, self.exclude)):
            return None
        return self._posix(path)

    def _posix(self, path: str) -> str:
        return "/".join(os.path.relpath(path, self.store).split(os.sep))

    def relevant(self, change: watchfiles.Change, path: str) -> bool:
        if any(path == folder or path.startswith(folder + os.sep) for folder in self.skip):
            return False
        relative = os.path.relpath(path, self.store)
        if relative == "." or relative.startswith(".." + os.sep) or relative == "..":
            return False
        parts = relative.split(os.sep)
        if any(part.startswith(".") for part in parts[:-1]) or is_temporary(parts[-1]):
            return False
        if os.path.isdir(path):
            # A folder moved in or out brings or takes files that send no events of their own.
            return True
        posix = "/".join(parts)
        if selected(posix, self.include, self.exclude):
            return True
        # Gone, and not a file the patterns select: a folder taken away, when it looks like one.
        return change == watchfiles.Change.deleted and "." not in parts[-1]


class Debouncer:
    """When a burst of changes calls for a build: `debounce` seconds after the last change, or `max_delay`
    seconds after the first one, whichever comes first. Times are time.monotonic() seconds."""

    def __init__(self, debounce: float, max_delay: float) -> None:
        self.debounce = debounce
        self.max_delay = max_delay
        self.first: float | None = None
        self.last: float | None = None

    def changed(self, now: float) -> None:
        if self.first is None:
            self.first = now
        self.last = now

    def deadline(self) -> float | None:
        if self.first is None or self.last is None:
            return None
        return min(self.last + self.debounce, self.first + self.max_delay)

    def due(self, now: float) -> bool:
        """Whether a build is due now; if so, the next change starts a new burst."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return False
        self.first = self.last = None
        return True


class WatchLost(Exception):
    """The watched store folder was removed or replaced: watching must start again."""


@dataclass(frozen=True)
class _Target:
    store: Path
    filter: ChangeFilter
    debounce: float
    max_delay: float
    state: Path


def _target(config: Config) -> _Target:
    skipped = tuple(folder for folder in (config.output, config.state) if isinstance(folder, Path))  # not a bucket
    return _Target(config.store, ChangeFilter(config.store, skipped, config.include,
                                              config.exclude), config.watch.debounce, config.watch.max_delay,
                   config.state)


class StoreWatcher:
    """Two threads: one watches the store, the other asks for a build (`on_change`) when the Debouncer says
    so. Their state goes into the status file (`watcher`) for `publisher status`."""

    def __init__(self, config: Config, on_change: Callable[[], None]) -> None:
        self._config = config
        self._on_change = on_change
        self._stop = threading.Event()
        self._rewatch = threading.Event()  # the config changed: watch again with the new one
        self._condition = threading.Condition()  # guards the debouncer; wakes the debounce thread
        self._debouncer = Debouncer(config.watch.debounce, config.watch.max_delay)
        self._threads: list[threading.Thread] = []
        self._restarts = 0
        self._recovering = False  # the last watch failed or its thread died: say so when watching again
        self._changes_lock = threading.Lock()
        self._changes: set[str] | None = None  # files changed since take_changes(); None: not known
        self._watching = threading.Event()  # set once events are being received
        self._taken_unwatched = False  # changes were taken before that: some may have gone unseen

    def start(self) -> None:
        if not self._config.watch.enabled:
            self._report("off")  # the daemon's start line says so
            return
        if self._threads:
            return
        self._stop.clear()
        self._threads = [threading.Thread(target=self._watch_loop, name="publisher-watch", daemon=True),
                         threading.Thread(target=self._debounce_loop, name="publisher-debounce", daemon=True)]
        for thread in self._threads:
            thread.start()

    def stop(self, wait: float = 0.0) -> None:
        """Stop watching; wait up to `wait` seconds for the threads to end (they are daemon threads)."""
        self._stop.set()
        with self._condition:
            self._condition.notify_all()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if wait:
            self._threads = []

    def reconfigure(self, config: Config) -> None:
        """Take a reloaded config: watch what it says (or stop watching, or start)."""
        self._config = config
        with self._condition:
            self._debouncer.debounce, self._debouncer.max_delay = config.watch.debounce, config.watch.max_delay
            self._condition.notify_all()
        if not config.watch.enabled:
            if self._threads:
                self.stop(wait=CHECK_MS / 1000 + 1)
            self._report("off")
            return
        if self._threads and not all(thread.is_alive() for thread in self._threads):
            self.stop(wait=CHECK_MS / 1000 + 1)
        if self._threads:
            self._rewatch.set()
        else:
            self.start()

    def take_changes(self) -> set[str] | None:
        """The files changed since the last call (store-relative paths), as the events said; None when they
        cannot tell (a folder changed, events may have been missed, the watcher was not watching)."""
        with self._changes_lock:
            changes, self._changes = self._changes, set()
            if not self._watching.is_set():
                self._taken_unwatched = True
        return changes

    def wait_watching(self, timeout: float) -> bool:
        """Wait until events are being received (at most `timeout` seconds): a build that starts after
        that misses no change. Whether it is so."""
        return self._watching.wait(timeout) if self._config.watch.enabled else False

    def _note(self, paths: list[str | None]) -> None:
        with self._changes_lock:
            if self._changes is not None and None not in paths:
                self._changes.update(path for path in paths if path is not None)
            else:
                self._changes = None

    def _started_watching(self, catch_up: bool) -> None:
        """Events are being received from now on. What changed before, no event says: the next build scans
        the whole store, unless every build so far started after this (the daemon's first build waits for
        it) and nothing could have been missed."""
        with self._changes_lock:
            if catch_up or self._taken_unwatched:
                self._changes = None
            self._taken_unwatched = False
            self._watching.set()

    def ensure_running(self) -> None:
        """Start the threads again if one has ended though nobody stopped it (a bug, or a killed thread)."""
        if self._stop.is_set() or not self._config.watch.enabled or not self._threads:
            return
        if all(thread.is_alive() for thread in self._threads):
            return
        logger.error("the store watcher thread has died; starting it again (the schedule kept building)")
        self.stop(wait=CHECK_MS / 1000 + 1)
        self._restarts += 1
        self._recovering = True
        self.start()

    # The watching thread. ---------------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        failures = 0
        first = not self._recovering  # started again by ensure_running(): catch up, as after a failure
        while not self._stop.is_set():
            self._rewatch.clear()  # before reading the config: a reload from now on is seen
            target = _target(self._config)
            try:
                self._watch(target, catch_up=not first)
                failures = 0
            except Exception as exc:  # whatever it is, the schedule goes on and the watcher starts again
                failures += 1
                self._restarts += 1
                self._recovering = True
                delay = min(RESTART_MAX, RESTART_FIRST * 2 ** (failures - 1))
                logger.error("watcher failed: %s%s; the schedule keeps building; watching again in %gs",
                             _describe(exc), _hint(exc), delay)
                self._report("restarting", error=_describe(exc))
                if self._wait(delay):
                    break
            first = False

    def _watch(self, target: _Target, catch_up: bool) -> None:
        """Watch until stopped or reconfigured. `catch_up`: ask for a build once watching, for the changes
        made while nothing watched (after a failure, or while watching again after a reload)."""
        try:
            self._watch_until_stopped(target, catch_up)
        finally:
            self._watching.clear()  # changes taken from now on may miss some: see _started_watching

    def _watch_until_stopped(self, target: _Target, catch_up: bool) -> None:
        identity = _identity(target.store)
        stop_event = _Either(self._stop, self._rewatch)
        changes_seen = False
        for changes in watchfiles.watch(target.store, watch_filter=None, debounce=BATCH_MS, step=STEP_MS,
                                        stop_event=stop_event, rust_timeout=CHECK_MS, yield_on_timeout=True,
                                        raise_interrupt=False, ignore_permission_denied=True):
            if not changes_seen:
                changes_seen = True
                self._started_watching(catch_up)
                if self._recovering:
                    logger.warning("watching %s for changes again", target.store)
                    self._recovering = False
                else:  # the daemon's start and reload lines say it watches
                    logger.debug("watching %s for changes", target.store)
                self._report("watching")
                if catch_up:
                    self._ask_for_build()
            relevant = [(change, path) for change, path in changes if target.filter.relevant(change, path)]
            if relevant:
                self._note([target.filter.changed_file(change, path) for change, path in relevant])
                logger.debug("%d changes in the store (%d events), first %s", len(relevant), len(changes),
                             relevant[0][1])
                self._ask_for_build()
            if _identity(target.store) != identity:
                raise WatchLost(f"{target.store}: the store folder was removed or replaced")

    def _ask_for_build(self) -> None:
        with self._condition:
            self._debouncer.changed(time.monotonic())
            self._condition.notify_all()

    def _wait(self, seconds: float) -> bool:
        """Sleep, waking early when stopped or reconfigured. Whether to stop."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and not self._rewatch.is_set() and time.monotonic() < deadline:
            self._stop.wait(min(0.2, max(0.0, deadline - time.monotonic())))
        return self._stop.is_set()

    # The debounce thread. ---------------------------------------------------------------------------------

    def _debounce_loop(self) -> None:
        while True:
            with self._condition:
                while not self._stop.is_set():
                    deadline = self._debouncer.deadline()
                    now = time.monotonic()
                    if self._debouncer.due(now):
                        break
                    self._condition.wait(None if deadline is None else deadline - now)
                if self._stop.is_set():
                    return
            try:
                self._on_change()
            except Exception:  # a bug: the next burst tries again, the schedule builds meanwhile
                logger.exception("could not ask for a build after changes in the store")

    def stopped(self) -> dict[str, Any]:
        """The watcher's status once the daemon has stopped it."""
        return {"state": "stopped", "since": timestamp(), "restarts": self._restarts, "error": None}

    def _report(self, state: str, error: str | None = None) -> None:
        update_status(self._config.state, watcher={"state": state, "since": timestamp(),
                                                   "restarts": self._restarts, "error": error})


class _Either:
    """A stop event for watchfiles (anything with is_set()) that is set when either event is."""

    def __init__(self, *events: threading.Event) -> None:
        self._events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self._events)


def _identity(folder: Path) -> tuple[int, int]:
    """The device and inode of `folder`. Raises OSError when it is gone."""
    stat = os.stat(folder)
    return stat.st_dev, stat.st_ino


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return f"{exc}" or type(exc).__name__


def _hint(exc: Exception) -> str:
    if "watch limit" in str(exc).lower() or (isinstance(exc, OSError) and exc.errno == 28):  # ENOSPC
        return " (raise fs.inotify.max_user_watches, see docs/operations.md)"
    return ""
