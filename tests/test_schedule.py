"""Schedules: crontab lines mean what cron means (Sunday = 0), not what APScheduler 3.x's from_crontab says."""

from __future__ import annotations

import configparser
from datetime import UTC, datetime

import pytest
from apscheduler.triggers.cron import CronTrigger

from publisher.config import ScheduleConfig
from publisher.running.schedule import cron_trigger, cron_weekdays, trigger
from tests.conftest import REPO

WEDNESDAY = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def next_fire(line: str, after: datetime = WEDNESDAY) -> datetime:
    return cron_trigger(line, "UTC").get_next_fire_time(None, after)


@pytest.mark.parametrize("line, weekday", [
    ("0 9 * * 0", "Sunday"), ("0 9 * * 7", "Sunday"), ("0 9 * * 1", "Monday"), ("0 9 * * 6", "Saturday"),
    ("0 9 * * sun", "Sunday"), ("0 9 * * MON", "Monday"),
])
def test_cron_weekday_numbers_are_crons(line, weekday):
    assert next_fire(line).strftime("%A") == weekday


def test_the_trap_this_avoids():
    # APScheduler 3.x alone reads "1" as Tuesday (Monday = 0): the translation above is what makes it Monday.
    raw = CronTrigger.from_crontab("0 9 * * 1", timezone="UTC").get_next_fire_time(None, WEDNESDAY)
    assert raw.strftime("%A") == "Tuesday"


@pytest.mark.parametrize("field, names", [
    ("*", "*"), ("1-5", "mon,tue,wed,thu,fri"), ("0,6", "sun,sat"), ("*/2", "sun,tue,thu,sat"),
    ("5-7", "sun,fri,sat"), ("mon-wed", "mon,tue,wed"), ("1/2", "mon,wed,fri"),
])
def test_weekday_field_translation(field, names):
    assert cron_weekdays(field) == names


@pytest.mark.parametrize("field", ["8", "5-1", "funday", "1-", "*/0"])
def test_bad_weekday_fields(field):
    with pytest.raises(ValueError):
        cron_weekdays(field)


def test_weekdays_only_skip_the_weekend():
    friday_evening = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
    assert next_fire("*/15 8-17 * * 1-5", friday_evening) == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def test_interval_and_time_zone():
    every = trigger(ScheduleConfig(every=90.0, cron=None, timezone="UTC", misfire_grace=60.0))
    assert every.interval.total_seconds() == 90
    paris = trigger(ScheduleConfig(every=None, cron="0 9 * * *", timezone="Europe/Paris", misfire_grace=60.0))
    assert paris.get_next_fire_time(None, WEDNESDAY) == datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def test_systemd_unit_runs_the_daemon_safely():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(REPO / "deploy" / "publisher.service")
    service = unit["Service"]
    assert service["Type"] == "simple" and service["Restart"] == "on-failure"
    assert service["ExecStart"].endswith("publisher run -c /srv/publisher/config.yaml")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["User"] not in ("", "root")


def test_crontab_line_is_a_build():
    lines = [line for line in (REPO / "deploy" / "crontab").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(lines) == 1
    schedule, command = " ".join(lines[0].split()[:5]), " ".join(lines[0].split()[5:])
    cron_trigger(schedule, "UTC")  # a valid crontab schedule
    assert "publisher build" in command
