"""The status file: what the last build did and when the next one runs, for `publisher status` and for
monitoring to tell a healthy daemon from a stuck one. It lives in the state folder (never served)."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from publisher.caches.statefiles import read_state_json, write_atomic
from publisher.wording import by_cause

if TYPE_CHECKING:
    from publisher.config import Config

logger = logging.getLogger(__name__)

STATUS_NAME = "status.json"
# The daemon's build and its store watcher both update the status file, from two threads: each update
# (read, change, write) must see the other's, or one would undo the other.
_UPDATING = threading.Lock()


@dataclass
class Status:
    pid: int | None = None
    mode: str = "build"  # "build" (one run, from cron) or "daemon"
    state: str = "idle"  # idle | building | stopped
    last_started: str | None = None
    last_finished: str | None = None
    last_result: str | None = None  # ok | failed | interrupted (a stop was requested: not a failure)
    last_error: str | None = None  # one line per cause, joined with "; "
    failures: list[dict[str, str]] = field(default_factory=list)  # every file not written: {path, cause}
    counts: dict[str, Any] = field(default_factory=dict)
    next_run: str | None = None
    last_success: str | None = None
    skipped_ticks: int = 0  # scheduled builds skipped because the one before was still running
    # What started the last build: start, schedule, watch, embargo or reload (the daemon), None (a command).
    last_trigger: str | None = None
    # The daemon's store watcher: state (watching | restarting | off | stopped), since, restarts, error.
    watcher: dict[str, Any] | None = None


def status_path(state: Path) -> Path:
    return state / STATUS_NAME


def read_status(state: Path) -> Status | None:
    data = read_state_json(status_path(state), "status file", "taken as no status")
    if not isinstance(data, dict):
        return None
    known = {name: data[name] for name in Status.__dataclass_fields__ if name in data}
    return Status(**known)


def save_status(state: Path, status: Status) -> None:
    """Write the status atomically. A status that cannot be written is logged, never fails a build."""
    try:
        write_atomic(status_path(state), (json.dumps(asdict(status), indent=1, sort_keys=True) + "\n").encode())
    except OSError as exc:
        logger.error("%s: cannot write status: %s", status_path(state), exc.strerror or exc)


def update_status(folder: Path, **changes: Any) -> Status:
    """Change some fields of the status file in the state `folder`."""
    with _UPDATING:
        status = read_status(folder) or Status()
        for key, value in changes.items():
            setattr(status, key, value)
        save_status(folder, status)
    return status


def timestamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")


def assess(status: Status, config: Config, daemon: int | None,
           now: datetime | None = None) -> tuple[bool, str]:
    """Is the publisher healthy? A verdict a person (or a monitoring check) can act on. `daemon`: the pid
    holding the daemon lock of the state folder (lock.daemon_pid), None when no daemon runs."""
    now = now or datetime.now(UTC)
    if daemon is None and status.mode == "daemon":
        if status.state == "stopped":
            return False, "daemon stopped"
        return False, f"daemon not running: pid {status.pid} is gone without a clean stop"
    if daemon is not None and status.next_run and status.state != "building":
        overdue = (now - datetime.fromisoformat(status.next_run)).total_seconds()
        if overdue > config.schedule.misfire_grace + 60:
            return False, f"stuck: the next build was due at {status.next_run}"
    if status.last_result is None:
        return status.state == "building", ("first build running" if status.state == "building"
                                            else "no build has finished yet")
    if status.last_result == "interrupted":
        return True, "ok (the last build was interrupted by a requested stop)"
    if status.last_result != "ok":
        return False, f"last build failed: {status.last_error}"
    return True, "ok"


def format_status(status: Status, verdict: str, daemon: int | None) -> str:
    counts = status.counts or {}
    skipped = ", ".join(f"{k} {v}" for k, v in (counts.get("skipped") or {}).items()) or "none"
    lines = [
        f"status:        {verdict}",
        f"mode:          {status.mode}{f' ({status.state})' if status.mode == 'daemon' else ''}",
        f"daemon:        {f'running, pid {daemon}' if daemon is not None else 'not running'}",
        f"last build:    {status.last_started or '-'} -> {status.last_finished or '-'}: {status.last_result or '-'}",
        f"triggered by:  {status.last_trigger or ('-' if status.mode == 'daemon' else 'command')}",
        f"last success:  {status.last_success or '-'}",
        f"next run:      {status.next_run or '-'}",
    ]
    if status.mode == "daemon":
        lines.append(f"watcher:       {watcher_line(status.watcher)}")
    if counts:
        lines.append(f"articles:      {counts.get('articles')} read, {counts.get('published')} published, "
                     f"skipped: {skipped}")
        lines.append(f"files:         {counts.get('written')} written, {counts.get('unchanged')} unchanged, "
                     f"{counts.get('removed')} removed, {counts.get('failed')} failed "
                     f"({counts.get('feeds')} feeds, {counts.get('seconds')}s)")
    if status.skipped_ticks:
        lines.append(f"skipped runs:  {status.skipped_ticks} (a build was still running when the next was due)")
    causes = by_cause(((f["path"], f["cause"]) for f in status.failures), "not written")
    for cause in causes or ([status.last_error] if status.last_error else []):
        lines.append(f"error:         {cause}")
    return "\n".join(lines)


def watcher_line(watcher: dict[str, Any] | None) -> str:
    """The store watcher's state, as `publisher status` shows it."""
    if not watcher:
        return "-"
    line = f"{watcher.get('state', '-')} since {watcher.get('since') or '-'}"
    if watcher.get("restarts"):
        line += f", {watcher['restarts']} restarts"
    if watcher.get("error"):
        line += f" (last error: {watcher['error']})"
    return line
