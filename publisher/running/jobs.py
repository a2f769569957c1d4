"""A build as a job, the way `publisher build` (cron) and `publisher run` (the daemon) both run it: under the
cross-process build lock, with its start, end, result and counts recorded in the status file."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from publisher.build import BuildReport, build
from publisher.config import Config
from publisher.errors import BuildInterrupted
from publisher.running.lock import BuildLock, daemon_pid
from publisher.running.status import timestamp, update_status
from publisher.stages.catalog import BuildMemory
from publisher.stages.targets import Target, open_target

logger = logging.getLogger(__name__)


def locked_build(config: Config, now: datetime | None = None,
                 stop_requested: Callable[[], bool] = lambda: False, trigger: str | None = None,
                 target: Target | None = None, memory: BuildMemory | None = None) -> BuildReport:
    """Build while holding the lock, and the output target for the build unless the caller holds `target`
    (the daemon holds its own for its whole life). Raises LockTimeout when another build keeps the lock
    past lock_timeout, LeaseHeld when another publisher holds the bucket's lease.
    `trigger`: what started it (the daemon's start, schedule, watch, embargo or reload), for the status.
    `memory`: the daemon's, kept from one build to the next (catalog.BuildMemory)."""
    with BuildLock(config.state, config.lock_timeout):
        # A build beside a live daemon (or by it) reports into the daemon's status; otherwise it takes over
        # the status file, so a daemon replaced by cron does not leave "daemon stopped" behind forever.
        takeover = {} if daemon_pid(config.state) is not None else {"mode": "build", "pid": None,
                                                                   "next_run": None, "watcher": None}
        update_status(config.state, state="building", last_started=timestamp(), last_trigger=trigger, **takeover)
        try:
            if target is not None:
                report = build(config, now=now, stop_requested=stop_requested, target=target, memory=memory)
            else:
                own = open_target(config)
                with own.hold():
                    report = build(config, now=now, stop_requested=stop_requested, target=own, memory=memory)
        except BuildInterrupted:
            # A stop the operator asked for is not a failure: nothing was published, nothing is wrong.
            update_status(config.state, state="idle", last_finished=timestamp(), last_result="interrupted",
                          last_error=None, failures=[])
            raise
        except Exception as exc:
            # Recorded for `publisher status`, then passed on: the caller decides what a failure means.
            update_status(config.state, state="idle", last_finished=timestamp(), last_result="failed",
                          last_error=f"{type(exc).__name__}: {exc}", failures=[])
            raise
        finished = timestamp()
        update_status(config.state, state="idle", last_finished=finished,
                      last_result="ok" if report.ok else "failed",
                      last_error="; ".join(report.failures()) or None,
                      failures=[{"path": path, "cause": cause} for path, cause in report.writes.failed],
                      counts=report_counts(report), **({"last_success": finished} if report.ok else {}))
    return report


def report_counts(report: BuildReport) -> dict[str, Any]:
    writes = report.writes
    return {
        "articles": len(report.collection.articles) + report.collection.invalid,
        "published": report.published,
        "skipped": {reason: count for reason, count in sorted(report.skipped.items()) if count},
        "feeds": len(report.feeds),
        "written": len(writes.written),
        "unchanged": len(writes.unchanged),
        "removed": len(writes.removed),
        "failed": len(writes.failed),
        "trimmed": report.trimmed_feeds,
        "seconds": round(report.seconds, 3),
    }
