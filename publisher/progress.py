"""Progress of a long scan: a bar on a terminal, a periodic log line otherwise, nothing for short scans.

Nothing is shown during the first DELAY seconds, so that everyday incremental builds stay silent. Then, when
standard error is a terminal, a bar is redrawn in place there; otherwise (cron, the daemon, a log file) an
INFO line says how far the scan is every EVERY seconds. Both follow the log level: `-q` (WARNING) hides them.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

logger = logging.getLogger(__name__)

DELAY = 2.0  # seconds before anything is shown
EVERY = 10.0  # seconds between progress lines when not on a terminal
REDRAW = 0.2  # seconds between redraws of the bar
WIDTH = 30  # characters of the bar


class Progress:
    def __init__(self, total: int, unit: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.unit = unit
        self.done = 0
        self.started = time.monotonic()
        self.shown_at: float | None = None  # when the bar or line was last shown
        self.stream = stream if stream is not None else sys.stderr
        self.drawn = False
        self.drawn_at = 0  # the count the bar shows

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.started < DELAY or not logger.isEnabledFor(logging.INFO):
            return
        if self._on_terminal():
            if self.shown_at is None or now - self.shown_at >= REDRAW or self.done >= self.total:
                self.stream.write(f"\r{self.bar(now)}")
                self.stream.flush()
                self.drawn, self.drawn_at = True, self.done
                self.shown_at = now
        elif self.shown_at is None or now - self.shown_at >= EVERY:
            logger.info("%s", self.line(now))
            self.shown_at = now

    def close(self) -> None:
        if self.drawn:  # leave the bar at its final count, and the cursor on the next line
            self.stream.write(("" if self.drawn_at == self.done else f"\r{self.bar(time.monotonic())}") + "\n")
            self.stream.flush()
            self.drawn = False

    def line(self, now: float) -> str:
        percent = 100 * self.done // self.total if self.total else 100
        return f"{self.done:,} of {self.total:,} {self.unit} ({percent}%), {now - self.started:.0f}s"

    def bar(self, now: float) -> str:
        filled = WIDTH * self.done // self.total if self.total else WIDTH
        return f"[{'#' * filled}{'.' * (WIDTH - filled)}] {self.line(now)}"

    def _on_terminal(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):  # a closed or unusual stream
            return False
