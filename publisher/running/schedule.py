"""When the daemon builds: APScheduler 3.x triggers from the `schedule` config.

APScheduler 3.x numbers weekdays from Monday = 0 in `CronTrigger.from_crontab` (upstream issues #286, #455,
#1102; fixed only in 4.x), while cron numbers them from Sunday = 0 (and 7). The day-of-week field is
translated to weekday names before it reaches APScheduler, so a crontab line means what cron means.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger
    from apscheduler.triggers.cron import CronTrigger

    from publisher.config import ScheduleConfig

# Index = cron's weekday number (0 = Sunday, 7 = Sunday again).
CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NAMES = {name: number for number, name in enumerate(CRON_DAYS[:7])}
_TERM = re.compile(r"^(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?$")


# APScheduler is imported where a trigger is made: `publisher build` needs none, and its import is a good
# part of the command's start-up.


def trigger(schedule: ScheduleConfig) -> BaseTrigger:
    from apscheduler.triggers.interval import IntervalTrigger

    if schedule.cron is not None:
        return cron_trigger(schedule.cron, schedule.timezone)
    assert schedule.every is not None
    return IntervalTrigger(seconds=schedule.every, timezone=schedule.timezone)


def interval_seconds(schedule: ScheduleConfig) -> float:
    """Seconds between two builds: `every`, or for a crontab line the shortest gap between its next few
    runs (what a reader polling in between can miss at most)."""
    if schedule.cron is None:
        assert schedule.every is not None
        return schedule.every
    cron = cron_trigger(schedule.cron, schedule.timezone)
    times: list[datetime] = []
    moment = datetime(2030, 1, 1, tzinfo=UTC)  # a fixed start: the same config gives the same value
    for _ in range(8):
        moment = cron.get_next_fire_time(times[-1] if times else None, moment)
        if moment is None:
            break
        times.append(moment)
        moment = moment + timedelta(seconds=1)
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    return min(gaps) if gaps else 900.0


def cron_trigger(line: str, timezone: str) -> CronTrigger:
    """A CronTrigger for a five-field crontab line, with cron's weekday numbering. Raises ValueError."""
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(f"expected five fields, got {len(fields)}")
    fields[4] = cron_weekdays(fields[4])
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(" ".join(fields), timezone=timezone)


def cron_weekdays(field: str) -> str:
    """Cron's day-of-week field as a list of weekday names: "1-5" -> "mon,tue,wed,thu,fri", "0,6" ->
    "sun,sat", "*/2" -> "sun,tue,thu,sat". Names pass through ("mon-fri")."""
    if field == "*":
        return field
    days: set[int] = set()
    for term in field.lower().split(","):
        match = _TERM.match(term)
        if not match:
            raise ValueError(f"day of week: cannot read {term!r}")
        span, step = match.group("range"), int(match.group("step") or 1)
        if step < 1:
            raise ValueError(f"day of week: step must be above 0 in {term!r}")
        if span == "*":
            first, last = 0, 6
        else:
            first_text, _, last_text = span.partition("-")
            first = _day(first_text)
            last = _day(last_text) if last_text else (6 if match.group("step") else first)
            if last < first:
                raise ValueError(f"day of week: range {term!r} runs backwards")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(CRON_DAYS[day] for day in sorted(days))


def _day(text: str) -> int:
    if text.isdigit():
        number = int(text)
        if not 0 <= number <= 7:
            raise ValueError(f"day of week: {number} is not 0-7")
        return number
    if text[:3] in _NAMES:
        return _NAMES[text[:3]]
    raise ValueError(f"day of week: unknown day {text!r}")
