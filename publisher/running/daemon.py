"""The daemon behind `publisher run`: build at start, then on the configured schedule, with APScheduler 3.x.

- A BlockingScheduler owns the main thread; builds run on its one worker thread (feedgen's date formatting
  switches the process-wide locale, so two builds must never render at once), with max_instances=1,
  coalesce=True and a misfire grace time, so a slow build never stacks up runs.
- When the store holds articles dated in the future, a one-off build is scheduled for the moment the
  earliest one falls due.
- SIGTERM and SIGINT stop it: a build still staging its files publishes nothing (one already renaming
  them finishes), then the process exits 0. SIGHUP reloads the config file; an invalid new config is
  reported and the old one stays in force.
- A failing build is logged with its cause and retried at the next run; the served feeds stay as they were.
- Unless `watch.enabled` is false, the store is watched (watch.py): a burst of changes asks for one build,
  run on the same worker; changes during a build queue exactly one more. The schedule goes on as the safety
  net for missed events, and a watcher whose thread died is started again by a watchdog job.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from publisher.config import Config, load_config
from publisher.errors import BuildInterrupted, ConfigError, PublisherError
from publisher.running.jobs import locked_build
from publisher.running.lock import DaemonLock, LockTimeout
from publisher.running.schedule import trigger
from publisher.running.status import timestamp, update_status
from publisher.running.watch import StoreWatcher
from publisher.stages.catalog import BuildMemory
from publisher.stages.targets import open_target
from publisher.wording import duration

logger = logging.getLogger(__name__)

BUILD_JOB = "build"
EMBARGO_JOB = "embargo"
RELOAD_JOB = "reload"
WATCH_JOB = "watch"
WATCHDOG_JOB = "watchdog"
WATCHDOG_SECONDS = 5
_NOT_A_BUILD_TIME = (RELOAD_JOB, WATCH_JOB, WATCHDOG_JOB)  # not what `next run` means to an operator
SCHEDULER_LOGGER = "apscheduler.scheduler"


class _NoSkipWarning(logging.Filter):
    """Drops APScheduler's WARNING for a tick skipped while the build before is still running: with
    max_instances=1 that is the design working, not trouble. The daemon logs it at DEBUG and counts it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in str(record.msg)


class Daemon:
    def __init__(self, config_path: Path, config: Config, overrides: Mapping[str, Any] | None = None) -> None:
        self._config_path = config_path
        self._overrides = dict(overrides or {})
        self._config = config
        self._target = open_target(config)  # held for the daemon's whole life (a bucket's lease)
        self._lease_lost = False
        self._stop = threading.Event()
        self._building = threading.Lock()
        self._skipped_ticks = 0
        self._skip_filter = _NoSkipWarning()
        self._started = False  # whether the first build (cause "start") has run
        self._watch_queued = threading.Lock()  # held from a watch build being asked for until it starts
        self._watcher = StoreWatcher(config, self._queue_watch_build)
        self._memory = BuildMemory()  # what one build leaves the next: the store's listing, the state files
        self._scheduler = BlockingScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"max_instances": 1, "coalesce": True,
                          "misfire_grace_time": int(config.schedule.misfire_grace) or 1},
            timezone=config.schedule.timezone,
        )
        self._scheduler.add_listener(self._on_skipped_tick, EVENT_JOB_MAX_INSTANCES)

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; returns the exit status: 0, or 75 when another publisher took the
        bucket's lease over. Raises LeaseHeld when another publisher holds it at start."""
        with self._target.hold(on_lost=self._on_lease_lost):
            self._run()
        return 75 if self._lease_lost else 0

    def _on_lease_lost(self) -> None:
        logger.error("another publisher took over the output's lease: stopping")
        self._lease_lost = True
        self._stop.set()
        self._shutdown()

    def _run(self) -> None:
        config = self._config
        # The schedule's job makes the first build, at once: its cause is "start" (see _build).
        self._scheduler.add_job(self._build, trigger(config.schedule), id=BUILD_JOB, args=["schedule"],
                                next_run_time=datetime.now(self._scheduler.timezone))
        self._scheduler.add_job(self._watcher.ensure_running, IntervalTrigger(seconds=WATCHDOG_SECONDS),
                                id=WATCHDOG_JOB)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        update_status(config.state, mode="daemon", pid=os.getpid(), state="idle", skipped_ticks=0)
        logger.info("publisher daemon started (pid %d), %s", os.getpid(), _describe(config))
        logging.getLogger(SCHEDULER_LOGGER).addFilter(self._skip_filter)
        self._watcher.start()
        # The first build waits (a moment) for the watcher to receive events, so that it misses no change
        # and the builds the watcher asks for afterwards need stat only what it reports.
        self._watcher.wait_watching(2.0)
        try:
            try:
                self._scheduler.start()  # returns once a stop signal has shut the scheduler down
            except JobLookupError:
                # A stop emptied the job store while the scheduler's loop was removing a one-off job it had
                # just started: the stop is what counts.
                if not self._stop.is_set():
                    raise
            self._watcher.stop(wait=2.0)
            with self._building:  # wait for the build in progress to finish its current file
                pass
        finally:
            logging.getLogger(SCHEDULER_LOGGER).removeFilter(self._skip_filter)
        update_status(self._config.state, state="stopped", next_run=None, skipped_ticks=self._skipped_ticks,
                      watcher=self._watcher.stopped())
        logger.info("publisher daemon stopped")

    # Signal handlers run on the main thread, inside the scheduler's own loop: they only hand the work to a
    # short-lived thread, so the scheduler's locks are never re-entered from a handler.
    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        logger.info("%s received: stopping after the current file", signal.Signals(signum).name)
        self._stop.set()
        self._watcher.stop()
        threading.Thread(target=self._shutdown, name="publisher-stop", daemon=True).start()

    def _on_skipped_tick(self, event: JobSubmissionEvent) -> None:
        if event.job_id != BUILD_JOB:  # the watchdog waiting behind a long build is no skipped build
            return
        self._skipped_ticks += 1  # recorded in the status file after the build in progress
        logger.debug("scheduled build skipped: the one before is still running (%d skipped so far)",
                     self._skipped_ticks)

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=self._queue_reload, name="publisher-reload", daemon=True).start()

    def _shutdown(self) -> None:
        # Not started yet, or already stopped: run() sees the stop flag either way.
        with contextlib.suppress(SchedulerNotRunningError):
            self._scheduler.shutdown(wait=False)

    def _queue_reload(self) -> None:
        # On the worker thread, so that a reload never happens in the middle of a build.
        try:
            self._scheduler.add_job(self._reload, id=RELOAD_JOB, replace_existing=True)
        except SchedulerNotRunningError:
            logger.info("SIGHUP ignored: the daemon is stopping")

    def _reload(self) -> None:
        logger.info("SIGHUP received: reloading %s", self._config_path)
        try:
            config = load_config(self._config_path, self._overrides)
        except ConfigError as exc:
            logger.error("config not reloaded, the old one stays in force: %s", exc)
            return
        if (config.output, config.s3) != (self._config.output, self._config.s3) and not (
                isinstance(config.output, Path) and isinstance(self._config.output, Path)):
            logger.error("config not reloaded, the old one stays in force: `output` or `s3` changed for a "
                         "bucket; restart the daemon to move its lease")
            return
        self._config = config
        self._memory = BuildMemory()  # another store, state folder or patterns: start from the files
        self._scheduler.modify_job(BUILD_JOB, misfire_grace_time=int(config.schedule.misfire_grace) or 1)
        self._scheduler.reschedule_job(BUILD_JOB, trigger=trigger(config.schedule))
        self._watcher.reconfigure(config)
        logger.info("config reloaded: %s", _describe(config))
        self._build("reload")

    def _queue_watch_build(self) -> None:
        """Ask for a build after changes in the store (from the watcher's thread). One waiting build is
        enough: it reads every change made before it starts."""
        if not self._watch_queued.acquire(blocking=False):
            return
        try:
            # Two instances: the one running may be a watch build, and this one waits for the worker.
            self._scheduler.add_job(self._watch_build, DateTrigger(), id=WATCH_JOB, replace_existing=True,
                                    max_instances=2, misfire_grace_time=None)
        except SchedulerNotRunningError:
            self._watch_queued.release()

    def _watch_build(self) -> None:
        self._watch_queued.release()  # from now on a change is not seen by this build: it queues another
        self._build("watch")

    def _build(self, cause: str = "schedule") -> None:
        if self._stop.is_set():
            self._shutdown()
            return
        with self._building:
            config = self._config
            if not self._started:
                cause, self._started = "start", True
            # A build the watcher asked for stats only the paths it reported; any other scans the whole
            # store (the schedule is the safety net for events the watcher missed).
            changed = self._watcher.take_changes()
            self._memory.changed(changed if cause == "watch" else None)
            try:
                with _collector_between_builds():
                    report = locked_build(config, stop_requested=self._stop.is_set, trigger=cause,
                                          target=self._target, memory=self._memory)
            except BuildInterrupted as exc:
                logger.info("build interrupted: %s", exc)
                return
            except LockTimeout as exc:
                logger.warning("build skipped: %s", exc)
                return
            except PublisherError as exc:
                logger.error("build failed, the served feeds stay as they were; retrying at the next run: %s",
                             exc)
                return
            except Exception:  # a bug must not kill the daemon: log it whole, retry at the next run
                logger.exception("build failed, the served feeds stay as they were; retrying at the next run")
                return
            finally:
                self._record_next_run()
            for line in report.failures():
                logger.error("build failed, the served feeds stay as they were: %s", line)
            if report.ok:
                logger.info("build: %s", report.summary())
            if report.next_due is not None and not self._stop.is_set():
                self._schedule_embargo(report.next_due)

    def _schedule_embargo(self, due: datetime) -> None:
        logger.debug("next embargoed article falls due at %s; build scheduled then", due.isoformat())
        try:
            self._scheduler.add_job(self._build, DateTrigger(run_date=due), id=EMBARGO_JOB, args=["embargo"],
                                    replace_existing=True, misfire_grace_time=None)
        except SchedulerNotRunningError:
            return
        self._record_next_run()

    def _record_next_run(self) -> None:
        times = [job.next_run_time for job in self._scheduler.get_jobs() if job.next_run_time is not None
                 and job.id not in _NOT_A_BUILD_TIME]
        update_status(self._config.state, next_run=timestamp(min(times)) if times else None,
                      skipped_ticks=self._skipped_ticks)


@contextlib.contextmanager
def _collector_between_builds() -> Iterator[None]:
    """After a build, collect its garbage and freeze what is left (gc.freeze): the daemon keeps hundreds of
    thousands of objects from one build to the next (its BuildMemory), and a pass of the cyclic collector
    over all of them in the middle of the next build would cost a tenth of a second or more of the time
    from a change to its feed. Frozen, they are left out of the passes; they are still freed when no longer
    referenced, and each pass after a build looks at everything again, so no cycle is kept for good."""
    try:
        yield
    finally:
        gc.unfreeze()  # a full pass now and then: what the last builds froze may have become garbage since
        gc.collect()
        gc.freeze()


def _describe(config: Config) -> str:
    schedule = config.schedule
    when = f"cron {schedule.cron!r}" if schedule.cron else f"every {duration(schedule.every or 0)}"
    watch = config.watch
    watching = (f"watching the store (debounce {duration(watch.debounce)}, max delay {duration(watch.max_delay)})"
                if watch.enabled else "not watching the store (watch.enabled: false)")
    return f"store {config.store}, output {config.output}, {when} ({schedule.timezone}), {watching}"


def run_daemon(config_path: Path, config: Config, overrides: Mapping[str, Any] | None = None) -> int:
    """Run the daemon while holding the daemon lock of the state folder; raises DaemonRunning (touching
    nothing) when another `publisher run` holds it."""
    with DaemonLock(config.state):
        return Daemon(config_path, config, overrides).run()
