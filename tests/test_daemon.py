"""`publisher run` as a real subprocess that gets real signals, and `publisher build` under the lock.

Everything is checked by reading the output folder and the status file; waits poll with a deadline.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lxml import etree

from publisher.config import load_config
from publisher.running.status import Status, assess
from publisher.stages.writer import TEMP_SUFFIX
from tests.conftest import cli_env, run_cli, run_main, snapshot, wait_for, write_article, write_config

FEED_SUFFIXES = (".atom", ".rss", ".json")


class Daemon:
    def __init__(self, folder: Path, config: Path, *extra: str) -> None:
        self.log = folder / "daemon.log"
        self._log_file = self.log.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "publisher", "run", "-c", str(config), *extra],
                                        stdout=self._log_file, stderr=subprocess.STDOUT, env=cli_env())

    def text(self) -> str:
        return self.log.read_text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self._log_file.close()


def links(path: Path) -> list[str]:
    if not path.exists():
        return []
    return etree.parse(str(path)).xpath("//item/link/text()")


def data(path: Path) -> bytes:
    """A file's bytes, or none while it is not there yet (the files of one build are renamed into place one
    after the other: a topic's .rss may be there before its .atom)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def status(folder: Path) -> dict:
    try:
        return json.loads((folder / "state" / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def well_formed(out: Path) -> list[Path]:
    feeds = [p for p in out.rglob("*") if p.suffix in (".atom", ".rss")]
    for path in feeds:
        etree.parse(str(path))  # raises on a truncated or half-written file
    for path in out.rglob("*.json"):
        json.loads(path.read_bytes())
    return feeds


def temporaries(out: Path) -> list[Path]:
    return list(out.rglob(f"*{TEMP_SUFFIX}"))


def big_store(store: Path, count: int = 1000, topics: int = 100, title: str = "Story") -> None:
    for n in range(count):
        write_article(store, f"a{n:05d}.md", title=f"{title} {n}", topics=[f"Topic {n % topics}", "AI"],
                      publishedDateTime=f"2024-01-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:00Z")


def test_new_edited_and_deleted_articles_follow_the_store(tmp_path, daemons):
    store = tmp_path / "store"
    write_article(store, "first.md", topics=["AI"])
    daemon = daemons(tmp_path, write_config(tmp_path, schedule={"every": "1s"}))
    out = tmp_path / "out"
    wait_for(lambda: links(out / "all.rss") == ["https://news.example.com/first"], what="first build")

    write_article(store, "second.md", topics=["Robots"], publishedDateTime="2024-02-01T00:00:00Z")
    # The files of one build are renamed into place one after the other: wait for both.
    wait_for(lambda: links(out / "topics" / "robots.rss") == ["https://news.example.com/second"]
             and links(out / "all.rss") == ["https://news.example.com/second", "https://news.example.com/first"],
             what="new article in its topic feed and the overall feed")

    write_article(store, "second.md", topics=["Robots"], title="Edited title",
                  publishedDateTime="2024-02-01T00:00:00Z")
    wait_for(lambda: b"Edited title" in data(out / "topics" / "robots.atom"), what="edit")

    (store / "second.md").unlink()
    wait_for(lambda: not (out / "topics" / "robots.rss").exists(), what="topic feed removed")
    # As above, one file after the other: the overall feed and the topic's other files follow.
    wait_for(lambda: links(out / "all.rss") == ["https://news.example.com/first"]
             and not (out / "topics" / "robots.atom").exists(), what="overall feed updated, topic gone")
    assert daemon.stop() == 0


def test_embargoed_article_appears_when_due_and_not_before(tmp_path, daemons):
    store = tmp_path / "store"
    write_article(store, "now.md")
    # Due well after the daemon's start and first build, even on a loaded machine (CI runs two tests per
    # core beside this one: 4 s were once not enough): until then, every look at the feed finds it absent.
    due = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)
    write_article(store, "later.md", publishedDateTime=due.isoformat())
    # An hourly schedule: only the embargo build can publish it in time.
    daemons(tmp_path, write_config(tmp_path, schedule={"every": "1h"}))
    out = tmp_path / "out"
    wait_for(lambda: links(out / "all.rss"), what="first build")
    wait_for(lambda: status(tmp_path).get("next_run") == due.isoformat(), what="embargo build scheduled")
    looked = 0
    while datetime.now(UTC) < due - timedelta(milliseconds=300):
        assert links(out / "all.rss") == ["https://news.example.com/now"]
        looked += 1
        time.sleep(0.2)
    assert looked, "the first build came too late to look at the feed before the article was due"
    wait_for(lambda: "https://news.example.com/later" in links(out / "all.rss"), timeout=20,
             what="embargoed article")
    assert datetime.now(UTC) >= due


def test_sigterm_during_a_build_exits_0_leaving_whole_files(tmp_path, daemons):
    big_store(tmp_path / "store")
    daemon = daemons(tmp_path, write_config(tmp_path, schedule={"every": "1h"}))
    out = tmp_path / "out"
    wait_for(lambda: out.exists() and any(out.rglob("*.atom")), what="first file written")
    daemon.signal(signal.SIGTERM)
    assert daemon.process.wait(10) == 0
    assert temporaries(out) == []
    assert well_formed(out)
    assert "stopping after the current file" in daemon.text()
    assert status(tmp_path)["state"] == "stopped"


def test_sighup_with_a_broken_config_keeps_the_old_one(tmp_path, daemons):
    write_article(tmp_path / "store", "first.md")
    config = write_config(tmp_path, schedule={"every": "1s"})
    good = config.read_text()
    daemon = daemons(tmp_path, config)
    out = tmp_path / "out"
    wait_for(lambda: links(out / "all.rss"), what="first build")
    config.write_text("site: [this is not a mapping\n")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "config not reloaded, the old one stays in force" in daemon.text(), what="reload error")
    write_article(tmp_path / "store", "second.md", publishedDateTime="2024-02-01T00:00:00Z")
    wait_for(lambda: len(links(out / "all.rss")) == 2, what="build on the old config")
    assert daemon.process.poll() is None

    config.write_text(good.replace("title: Test Feeds", "title: Renamed Feeds"))
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: b"<title>Renamed Feeds</title>" in (out / "all.rss").read_bytes(), what="new config")
    assert daemon.stop() == 0


def test_failed_build_is_followed_by_a_good_one(tmp_path, daemons):
    store = tmp_path / "store"
    write_article(store, "first.md")
    daemon = daemons(tmp_path, write_config(tmp_path, schedule={"every": "1s"}))
    out = tmp_path / "out"
    wait_for(lambda: links(out / "all.rss"), what="first build")
    before = (out / "all.rss").read_bytes()
    store.rename(tmp_path / "away")
    wait_for(lambda: status(tmp_path).get("last_result") == "failed", what="failed build")
    assert "store folder not found" in status(tmp_path)["last_error"]
    wait_for(lambda: "build failed, the served feeds stay as they were" in daemon.text(), what="failure logged")
    assert (out / "all.rss").read_bytes() == before
    unhealthy = run_main("status", "-c", tmp_path / "config.yaml")
    assert unhealthy.returncode == 1 and "last build failed" in unhealthy.stdout

    (tmp_path / "away").rename(store)
    write_article(store, "second.md", publishedDateTime="2024-02-01T00:00:00Z")
    wait_for(lambda: status(tmp_path).get("last_result") == "ok" and len(links(out / "all.rss")) == 2,
             what="recovery")
    healthy = run_main("status", "-c", tmp_path / "config.yaml")
    assert healthy.returncode == 0
    assert "status:        ok" in healthy.stdout and "mode:          daemon" in healthy.stdout
    assert daemon.process.poll() is None


def test_json_logs_one_line_per_build(tmp_path, daemons):
    write_article(tmp_path / "store", "first.md")
    daemon = daemons(tmp_path, write_config(tmp_path, schedule={"every": "1s"}), "--log-format", "json")
    wait_for(lambda: daemon.text().count('"build: ') >= 2, what="two builds")
    daemon.stop()
    lines = [json.loads(line) for line in daemon.text().splitlines()]
    builds = [line for line in lines if line["message"].startswith("build: ")]
    assert builds[0]["level"] == "INFO" and "1 article read" in builds[0]["message"]
    assert "0 files written" in builds[1]["message"]


def test_a_tick_logs_one_line_and_quiet_ticks_log_nothing(tmp_path, daemons):
    write_article(tmp_path / "store", "first.md")
    config = write_config(tmp_path, schedule={"every": "1s"})
    daemon = daemons(tmp_path, config)
    wait_for(lambda: daemon.text().count(" build: ") >= 1, what="first build")
    write_article(tmp_path / "store", "second.md", publishedDateTime="2024-02-01T00:00:00Z")
    wait_for(lambda: daemon.text().count(" build: ") >= 3, what="three builds")
    assert daemon.stop() == 0
    lines = daemon.text().splitlines()
    assert "every 1s" in lines[0] and "daemon started" in lines[0]
    assert all(" build: " in line for line in lines[1:-2]), lines
    assert "SIGTERM received" in lines[-2] and "daemon stopped" in lines[-1]

    quiet = daemons(tmp_path, config, "-q")
    wait_for(lambda: status(tmp_path).get("pid") == quiet.process.pid and status(tmp_path).get("counts"),
             what="a build of the quiet daemon")
    write_article(tmp_path / "store", "third.md", publishedDateTime="2024-03-01T00:00:00Z")
    wait_for(lambda: b"third" in (tmp_path / "out" / "all.atom").read_bytes(), what="a quiet build")
    assert quiet.stop() == 0 and quiet.text() == ""


def test_a_second_daemon_on_the_same_state_folder_is_refused(tmp_path, daemons):
    write_article(tmp_path / "store", "a.md")
    config = write_config(tmp_path, schedule={"every": "1h"}, watch={"enabled": False})  # a quiet daemon
    first = daemons(tmp_path, config)
    wait_for(lambda: status(tmp_path).get("last_result") == "ok" and status(tmp_path).get("next_run"),
             what="first build, next run recorded")
    before = {**snapshot(tmp_path / "state"), **snapshot(tmp_path / "out")}

    second = subprocess.run([sys.executable, "-m", "publisher", "run", "-c", str(config)], env=cli_env(),
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 75 and second.stdout == ""
    assert second.stderr == f"Error: another publisher run (pid {first.process.pid}) is using {tmp_path / 'state'}\n"
    assert {**snapshot(tmp_path / "state"), **snapshot(tmp_path / "out")} == before  # changed nothing
    assert first.process.poll() is None

    report = run_main("status", "-c", config)
    assert report.returncode == 0 and f"daemon:        running, pid {first.process.pid}" in report.stdout
    assert json.loads(run_main("status", "--json", "-c", config).stdout)["daemon_pid"] == first.process.pid
    beside = run_cli("build", "-q", "-c", config)  # a cron build beside the daemon still just takes turns
    assert beside.returncode == 0 and beside.stdout == beside.stderr == ""

    assert first.stop() == 0  # once it is gone, nobody is named, and a new daemon may start
    stopped = run_main("status", "-c", config)
    assert "daemon:        not running" in stopped.stdout and str(first.process.pid) not in stopped.stdout
    replacement = daemons(tmp_path, config)
    wait_for(lambda: status(tmp_path).get("pid") == replacement.process.pid, what="a new daemon")
    assert replacement.stop() == 0


def test_invalid_config_at_start_exits_2(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("schedule:\n  every: sometimes\n")
    result = subprocess.run([sys.executable, "-m", "publisher", "run", "-c", str(config)], env=cli_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "schedule.every" in result.stderr


def hold_lock(state: Path) -> int:
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / "build.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_build_gives_up_on_a_held_lock_with_its_own_exit_code(tmp_path):
    write_article(tmp_path / "store", "a.md")
    fd = hold_lock(tmp_path / "state")
    try:
        result = run_cli("build", "-c", write_config(tmp_path, lock_timeout="0.5s"))
    finally:
        os.close(fd)
    assert result.returncode == 75 and "another build is running" in result.stderr
    assert not (tmp_path / "out").exists()


def test_build_waits_for_the_lock_then_writes(tmp_path):
    write_article(tmp_path / "store", "a.md")
    fd = hold_lock(tmp_path / "state")
    build = subprocess.Popen([sys.executable, "-m", "publisher", "build", "-c",
                              str(write_config(tmp_path, lock_timeout="30s"))],
                             env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The build says it waits (INFO, on stderr) before it ever writes: read up to that line.
        waiting = ""
        while "waiting up to 30s" not in waiting and build.poll() is None:
            waiting = build.stderr.readline()
        assert "waiting up to 30s" in waiting and build.poll() is None and not (tmp_path / "out").exists()
    finally:
        os.close(fd)
    out, err = build.communicate(timeout=30)
    assert build.returncode == 0
    assert (tmp_path / "out" / "all.atom").exists()


def test_two_builds_started_together_never_write_at_once(tmp_path):
    big_store(tmp_path / "store", count=600)
    config = write_config(tmp_path, lock_timeout="0s")
    builds = [subprocess.Popen([sys.executable, "-m", "publisher", "build", "-q", "-c", str(config)],
                               env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    results = [(b.communicate(timeout=60)[1], b.returncode)[::-1] for b in builds]
    assert sorted(code for code, _ in results) == [0, 75], results
    assert "another build is running" in next(err for code, err in results if code == 75)
    assert temporaries(tmp_path / "out") == [] and well_formed(tmp_path / "out")


def folder_changed(folder: Path, before: int | None, process: subprocess.Popen) -> float | None:
    """Poll until an entry of `folder` is created, removed or renamed (its mtime moves from `before`): the
    moment, by time.monotonic(), the build began writing its files; None if it ended first."""
    while process.poll() is None:
        try:
            if folder.stat().st_mtime_ns != before:
                return time.monotonic()
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    return None


def mtime_ns(folder: Path) -> int | None:
    return folder.stat().st_mtime_ns if folder.exists() else None


def test_sigkill_at_random_moments_leaves_old_or_new_bytes(tmp_path):
    """Kill builds mid-write again and again: every feed is always exactly its old or its new bytes."""
    # 70 articles in 70 topics: over 200 feed files, each rewritten by every build, so that a kill lands
    # among the writes; small enough that the kills take seconds, not minutes.
    big_store(tmp_path / "store_a", count=70, topics=70, title="Old")
    big_store(tmp_path / "store_b", count=70, topics=70, title="New")
    configs = {}
    for name in ("a", "b"):  # two configs, one output: the same feeds, old titles or new ones
        (tmp_path / name).mkdir()
        configs[name] = write_config(tmp_path / name, store=str(tmp_path / f"store_{name}"),
                                     output=str(tmp_path / "out"), state=str(tmp_path / "state"))
    out, topics = tmp_path / "out", tmp_path / "out" / "topics"
    expected = {}
    for name, config in configs.items():
        before = mtime_ns(topics)
        build = subprocess.Popen([sys.executable, "-m", "publisher", "build", "-q", "-c", str(config)],
                                 env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        writing = folder_changed(topics, before, build)
        assert build.wait(60) == 0, build.stderr.read()
        # From the first file staged to the end: the last build rewrites every feed, as each run below does.
        window = time.monotonic() - writing
        build.stderr.close()
        expected[name] = {path: data for path, (data, _) in snapshot(out).items()}
    assert set(expected["a"]) == set(expected["b"]) and len(expected["a"]) > 200
    differing = [p for p in expected["a"] if expected["a"][p] != expected["b"][p]]
    assert len(differing) > 200

    seed = random.randrange(1 << 30)
    chance = random.Random(seed)
    leftovers = 0
    for attempt in range(4):
        config = configs["a" if attempt % 2 == 0 else "b"]  # every run rewrites every feed
        before = mtime_ns(topics)
        build = subprocess.Popen([sys.executable, "-m", "publisher", "build", "-q", "-c", str(config)],
                                 env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Each kill lands while the build writes (not while the interpreter starts, which tests nothing).
        if folder_changed(topics, before, build) is not None:
            time.sleep(chance.uniform(0, window))
        build.kill()
        build.wait(30)
        leftovers += len(temporaries(out))
        current = {path: data for path, (data, _) in snapshot(out).items()
                   if not path.endswith(TEMP_SUFFIX) and Path(path).suffix in FEED_SUFFIXES}
        for path, data in current.items():
            assert data in (expected["a"].get(path), expected["b"].get(path)), (seed, attempt, path)
        well_formed(out)
    final = run_main("build", "-q", "-c", configs["b"])
    assert final.returncode == 0, final.stderr
    assert temporaries(out) == []
    assert {p: d for p, (d, _) in snapshot(out).items()} == expected["b"]
    print(f"seed {seed}, writing took {window:.2f}s, temporary files left by kills: {leftovers}")


def test_status_without_any_build_and_after_a_cron_build(tmp_path):
    write_article(tmp_path / "store", "a.md")
    config = write_config(tmp_path)
    none_yet = run_cli("status", "-c", config)
    assert none_yet.returncode == 1 and "no status yet" in none_yet.stderr
    as_json = run_cli("status", "--json", "-c", config)  # monitoring always gets one JSON object
    assert as_json.returncode == 1 and json.loads(as_json.stdout) == {"healthy": False, "verdict": "no build yet"}
    assert run_cli("build", "-q", "-c", config).returncode == 0
    report = run_cli("status", "--json", "-c", config)
    data = json.loads(report.stdout)
    assert report.returncode == 0 and data["healthy"] and data["mode"] == "build"
    assert data["counts"]["published"] == 1 and data["last_result"] == "ok"


def test_status_flags_a_daemon_that_died(tmp_path, daemons):
    write_article(tmp_path / "store", "a.md")
    config = write_config(tmp_path, schedule={"every": "1h"})
    daemon = daemons(tmp_path, config)
    wait_for(lambda: status(tmp_path).get("last_result") == "ok", what="first build")
    assert run_main("status", "-c", config).returncode == 0
    daemon.process.kill()
    daemon.process.wait(10)
    dead = run_main("status", "-c", config)
    assert dead.returncode == 1 and "is gone without a clean stop" in dead.stdout
    assert run_cli("build", "-q", "-c", config).returncode == 0  # cron takes over the status file
    assert run_main("status", "-c", config).returncode == 0


def test_an_interrupted_build_is_not_a_failure(tmp_path):
    config = load_config(write_config(tmp_path))
    healthy, verdict = assess(Status(last_result="interrupted", last_success="2024-01-01T00:00:00+00:00"), config,
                              daemon=None)
    assert healthy and "interrupted" in verdict
