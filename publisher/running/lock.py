"""One writer at a time, and one daemon per state folder, across processes: exclusive flocks on files in
the state folder.

- `build.lock`: held by every build (cron's `publisher build` and each build of the daemon) while it runs;
  a build that finds it taken waits up to lock_timeout.
- `daemon.lock`: held by `publisher run` for its whole life; a second daemon on the same state folder is
  refused at once.

The lock files live in the state folder, never in the served output folder. flock is released by the kernel
when the process dies, so a killed build or daemon never leaves a stale lock behind. Who holds a lock is
asked of the kernel (/proc/locks), so that a message never names a process that has exited.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from types import TracebackType

from publisher.errors import PublisherError
from publisher.wording import duration

logger = logging.getLogger(__name__)

LOCK_NAME = "build.lock"
DAEMON_LOCK_NAME = "daemon.lock"
POLL_SECONDS = 0.1
PROC_LOCKS = Path("/proc/locks")


class LockTimeout(PublisherError):
    """Another build held the lock for longer than we were willing to wait."""


class DaemonRunning(PublisherError):
    """Another `publisher run` holds the daemon lock of this state folder."""


class BuildLock:
    def __init__(self, state: Path, timeout: float) -> None:
        self.path = state / LOCK_NAME
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> BuildLock:
        fd = _open(self.path)
        deadline = time.monotonic() + self.timeout
        waited = False
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                os.close(fd)
                pid = holder(self.path)
                raise LockTimeout(f"{self.path}: another build is running{f' (pid {pid})' if pid else ''}; "
                                  f"gave up after {duration(self.timeout)}")
            if not waited:
                logger.info("another build is running; waiting up to %s for %s", duration(self.timeout),
                            self.path)
                waited = True
            time.sleep(POLL_SECONDS)
        _write_pid(fd)
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._fd is not None:
            _release(self._fd)
            self._fd = None


class DaemonLock:
    """Held by `publisher run` for its whole life. Taking it changes nothing in the state folder when another
    daemon holds it: the second one raises DaemonRunning at once."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.path = state / DAEMON_LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> DaemonLock:
        fd = _open(self.path)
        for _ in range(10):  # a holder seen leaving between our try and our question: try again
            if _try_lock(fd):
                _write_pid(fd)
                self._fd = fd
                return self
            pid = holder(self.path)
            if pid is not None:
                os.close(fd)
                raise DaemonRunning(f"another publisher run (pid {pid}) is using {self.state}")
            time.sleep(POLL_SECONDS)
        os.close(fd)
        raise DaemonRunning(f"another publisher run is using {self.state}")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._fd is not None:
            _release(self._fd)
            self._fd = None


def daemon_pid(state: Path) -> int | None:
    """The pid of the `publisher run` holding the daemon lock of `state`, or None when no daemon runs."""
    return holder(state / DAEMON_LOCK_NAME)


def holder(path: Path) -> int | None:
    """The pid of the live process holding an exclusive flock on `path`, or None when nobody holds it.

    The kernel's list of locks says it for certain; where there is none (not Linux), the pid the holder
    wrote into the file is believed when that process is alive."""
    try:
        stat = path.stat()
    except OSError:
        return None
    try:
        table = PROC_LOCKS.read_text(encoding="ascii")
    except OSError:
        return _pid_in(path)
    wanted = (os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino)
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2146654 0 EOF" (blocked waiters are marked "->" and skipped)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE" and fields[4].isdigit():
            try:
                major, minor, inode = fields[5].split(":")
                where = (int(major, 16), int(minor, 16), int(inode))
            except ValueError:
                continue
            if where == wanted:
                return int(fields[4])
    return None


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _write_pid(fd: int) -> None:
    """For people reading the file, and for systems without /proc/locks."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)


def _release(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, under another user
    return pid
