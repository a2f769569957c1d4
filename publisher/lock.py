"""One writer at a time, across processes: an exclusive flock on a file in the state folder.

The lock file lives in the state folder, never in the served output folder. flock is released by the kernel
when the process dies, so a killed build never leaves a stale lock behind.
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
POLL_SECONDS = 0.1


class LockTimeout(PublisherError):
    """Another build held the lock for longer than we were willing to wait."""


class BuildLock:
    def __init__(self, state: Path, timeout: float) -> None:
        self.path = state / LOCK_NAME
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> BuildLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout(f"{self.path}: another build is running (held by pid "
                                      f"{_holder(self.path)}); gave up after {duration(self.timeout)}") from None
                if not waited:
                    logger.info("another build is running; waiting up to %s for %s", duration(self.timeout),
                                self.path)
                    waited = True
                time.sleep(POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip() or "unknown"
    except (OSError, UnicodeDecodeError):
        return "unknown"
