"""`publisher run` watching the store: a real daemon subprocess, real files, real inotify events.

The schedule is set to an hour wherever the watcher must be what publishes, so that nothing but the watcher
can. Waits poll with a deadline; nothing asserts how fast anything happened (that is benchmarks/latency.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from watchfiles import Change

from publisher.config import load_config, parse_duration
from publisher.errors import ConfigError
from publisher.running.watch import ChangeFilter, Debouncer, StoreWatcher, is_temporary
from tests.conftest import article_text, cli_env, make_config, run_main, wait_for, write_article, write_config
from tests.local_http import LocalServer, Reply, local_only
from tests.test_daemon import Daemon, data, links, status

HOURLY = {"every": "1h"}
QUICK = {"debounce": "100ms", "max_delay": "1s"}  # where the debounce is not what a test is about: less waiting
pytestmark = pytest.mark.usefixtures(local_only.__name__)


def watching(folder: Path) -> bool:
    return (status(folder).get("watcher") or {}).get("state") == "watching"


def started(tmp_path: Path, daemons, *extra: str, **settings) -> Daemon:
    """A daemon on tmp_path's store whose first build is done and whose watcher is watching."""
    daemon = daemons(tmp_path, write_config(tmp_path, **{"schedule": HOURLY, **settings}), *extra)
    wait_for(lambda: status(tmp_path).get("last_result") == "ok" and builds(daemon) == 1, what="first build")
    if settings.get("watch", {}).get("enabled", True):
        wait_for(lambda: watching(tmp_path), what="watcher watching")
    return daemon


def drop(store: Path, name: str, **fields) -> Path:
    """Write an article the way a tool should: to a temporary name, then renamed into place."""
    fields.setdefault("slug", Path(name).stem)
    path = store / name
    temporary = path.with_name(f"{name}.tmp")
    temporary.write_text(article_text(**fields), encoding="utf-8")
    temporary.rename(path)
    return path


def builds(daemon: Daemon) -> int:
    return daemon.text().count(" build: ")


# The pieces, without a daemon. ----------------------------------------------------------------------------

def test_debouncer_waits_for_quiet_but_never_past_max_delay():
    debouncer = Debouncer(debounce=0.5, max_delay=5.0)
    assert debouncer.deadline() is None and not debouncer.due(100.0)
    debouncer.changed(10.0)
    assert debouncer.deadline() == 10.5 and not debouncer.due(10.4)
    debouncer.changed(10.4)  # a further change pushes the build back
    assert not debouncer.due(10.5) and debouncer.deadline() == pytest.approx(10.9)
    for moment in (10.8, 11.2, 11.6, 12.0, 12.4, 12.8, 13.2, 13.6, 14.0, 14.4, 14.8):
        debouncer.changed(moment)  # a steady stream: never quiet for 0.5s
    assert debouncer.deadline() == 15.0 and debouncer.due(15.0)
    assert debouncer.deadline() is None and not debouncer.due(15.1)  # the next change starts a new burst
    debouncer.changed(20.0)
    assert debouncer.due(20.5)


def test_the_filter_keeps_articles_and_folders_and_drops_temporaries(tmp_path):
    store = tmp_path / "store"
    (store / "2024").mkdir(parents=True)
    keep = ChangeFilter(store, (store / "out", tmp_path / "state"), (), ())
    added, deleted = Change.added, Change.deleted
    assert keep.relevant(added, str(store / "a.md"))
    assert keep.relevant(added, str(store / "2024"))  # a folder moved in: its files send no events
    assert keep.relevant(deleted, str(store / "2023"))  # gone, and looks like a folder
    for name in (".a.md.swp", "a.md~", "#a.md#", "a.md.tmp", ".hidden.md", "4913", ".git/index",
                 "out/all.atom", "a.md.part"):
        assert not keep.relevant(added, str(store / name)), name
    assert not keep.relevant(added, str(tmp_path / "elsewhere.md"))
    narrow = ChangeFilter(store, (), ("**/*.md",), ("drafts/**",))
    assert narrow.relevant(added, str(store / "2024" / "a.md"))
    assert not narrow.relevant(added, str(store / "notes.txt"))
    assert not narrow.relevant(added, str(store / "drafts" / "a.md"))
    assert narrow.relevant(deleted, str(store / "a.md"))
    assert is_temporary(".publisher-tmp") and not is_temporary("article.md")
    # What a watch build stats: the file's store-relative path; a folder (or what was one) asks for a scan.
    assert keep.changed_file(added, str(store / "2024")) is None
    assert narrow.changed_file(deleted, str(store / "2023")) is None
    assert narrow.changed_file(deleted, str(store / "2024" / "gone.md")) == "2024/gone.md"
    assert keep.changed_file(added, str(store / "a.md")) == "a.md"


def test_watch_keys_are_validated_with_their_names(tmp_path):
    config = load_config(write_config(tmp_path))
    assert (config.watch.enabled, config.watch.debounce, config.watch.max_delay) == (True, 0.5, 5.0)
    assert parse_duration("250ms") == 0.25
    tuned = load_config(write_config(tmp_path, watch={"enabled": False, "debounce": "1s", "max_delay": "1m"}))
    assert (tuned.watch.enabled, tuned.watch.debounce, tuned.watch.max_delay) == (False, 1.0, 60.0)
    for watch, key in (({"enabled": "yes"}, "watch.enabled"), ({"debounce": "soon"}, "watch.debounce"),
                       ({"max_delay": "-1s"}, "watch.max_delay"),
                       ({"debounce": "2s", "max_delay": "1s"}, "watch.max_delay"),
                       ({"max_delay": 0}, "watch.max_delay"), ({"every": "1s"}, "watch.every")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(write_config(tmp_path, watch=watch))


# A real daemon. -------------------------------------------------------------------------------------------

def test_new_edited_and_deleted_articles_are_published_without_the_schedule(tmp_path, daemons):
    store, out = tmp_path / "store", tmp_path / "out"
    write_article(store, "first.md", topics=["AI"])
    daemon = started(tmp_path, daemons, watch=QUICK)
    assert status(tmp_path)["last_trigger"] == "start"

    drop(store, "second.md", topics=["Robots"], publishedDateTime="2024-02-01T00:00:00Z")
    # The files of one build are renamed into place one after the other: wait for both.
    wait_for(lambda: links(out / "topics" / "robots.rss") == ["https://news.example.com/second"]
             and links(out / "all.rss") == ["https://news.example.com/second", "https://news.example.com/first"],
             what="new article in its topic feed and the overall feed")
    assert status(tmp_path)["last_trigger"] == "watch"

    write_article(store, "second.md", topics=["Robots"], title="Edited title",  # in place, this time
                  publishedDateTime="2024-02-01T00:00:00Z")
    wait_for(lambda: b"Edited title" in data(out / "topics" / "robots.atom"), what="edit")

    (store / "second.md").unlink()
    wait_for(lambda: not (out / "topics" / "robots.rss").exists(), what="topic feed removed")
    wait_for(lambda: links(out / "all.rss") == ["https://news.example.com/first"], what="overall feed updated")

    drop(store, "third.md", publishedDateTime="2024-03-01T00:00:00Z")
    wait_for(lambda: "https://news.example.com/third" in links(out / "all.rss"), what="third article")
    wait_for(lambda: status(tmp_path).get("state") == "idle", what="build finished")

    report = run_main("status", "-c", tmp_path / "config.yaml")
    assert report.returncode == 0, report.stdout
    assert "triggered by:  watch" in report.stdout
    assert "watcher:       watching since " in report.stdout
    assert status(tmp_path)["next_run"] is not None  # the hourly safety net is still scheduled
    assert daemon.stop() == 0
    assert status(tmp_path)["watcher"]["state"] == "stopped"


def test_a_watch_build_pings_the_hub_and_schedules_the_embargo(tmp_path, daemons):
    store, out = tmp_path / "store", tmp_path / "out"
    write_article(store, "first.md")
    with LocalServer(lambda request: Reply(204)) as hub:
        daemon = started(tmp_path, daemons, websub={"hubs": [hub.url("/hub")]}, watch=QUICK)
        pinged = hub.count()
        # Due after the watch build and the look at its status, even on a loaded CI runner.
        due = (datetime.now(UTC) + timedelta(seconds=6)).replace(microsecond=0)
        drop(store, "later.md", publishedDateTime=due.isoformat())
        drop(store, "now.md", publishedDateTime="2024-02-01T00:00:00Z")
        wait_for(lambda: "https://news.example.com/now" in links(out / "all.rss"), what="the new article")
        # The same build as a scheduled one: the hub hears of the changed feeds, the embargo is scheduled.
        wait_for(lambda: hub.count() > pinged, what="WebSub ping")
        assert "https://feeds.example.org/news/all.atom" in {
            value for request in hub.requests for value in parse_qs(request.body.decode())["hub.url"]}
        assert "https://news.example.com/later" not in links(out / "all.rss")
        wait_for(lambda: status(tmp_path).get("next_run") == due.isoformat(), what="embargo build scheduled")
        wait_for(lambda: "https://news.example.com/later" in links(out / "all.rss"), timeout=20,
                 what="the embargoed article, when due")
        assert datetime.now(UTC) >= due
        # Stopped while the hub still answers: the embargo build's pings are not retried against a closed port.
        wait_for(lambda: status(tmp_path).get("state") == "idle", what="the embargo build finished")
        assert daemon.stop() == 0


def test_a_burst_of_500_files_is_a_few_builds(tmp_path, daemons):
    store, out = tmp_path / "store", tmp_path / "out"
    write_article(store, "first.md")
    daemon = started(tmp_path, daemons, watch={"debounce": "300ms", "max_delay": "2s"})
    before = builds(daemon)
    for n in range(500):
        write_article(store / f"batch{n // 100}", f"b{n:03d}.md", publishedDateTime=f"2024-02-01T00:{n // 60:02d}:"
                      f"{n % 60:02d}Z")
    wait_for(lambda: (status(tmp_path).get("counts") or {}).get("published") == 501, timeout=60,
             what="all 500 published")
    wait_for(lambda: status(tmp_path).get("state") == "idle" and builds(daemon) > before, what="build logged")
    started_builds = builds(daemon) - before
    assert started_builds <= 10, daemon.text()
    assert links(out / "all.rss")[0] == "https://news.example.com/b499"
    assert daemon.process.poll() is None


def test_a_half_written_file_is_never_published_broken(tmp_path, daemons):
    store, out = tmp_path / "store", tmp_path / "out"
    write_article(store, "first.md")
    daemon = started(tmp_path, daemons, watch={"debounce": "200ms", "max_delay": "1s"})
    text = article_text(slug="slow", title="Slow but whole", publishedDateTime="2024-02-01T00:00:00Z")
    cut = text.index("topics:")  # inside the front matter: no closing fence yet
    with (store / "slow.md").open("w", encoding="utf-8") as stream:
        stream.write(text[:cut])
        stream.flush()
        # The watcher builds on what is there so far: the file is left out, named in a warning.
        wait_for(lambda: "slow.md: front matter: no closing '---' line" in daemon.text(),
                 what="build on the half-written file")
        wait_for(lambda: status(tmp_path).get("state") == "idle", what="build finished")
        assert links(out / "all.rss") == ["https://news.example.com/first"]
        assert status(tmp_path)["counts"]["skipped"] == {"invalid": 1}
        stream.write(text[cut:])
    wait_for(lambda: "https://news.example.com/slow" in links(out / "all.rss"), what="the whole article")
    assert b"Slow but whole" in (out / "all.atom").read_bytes()
    wait_for(lambda: status(tmp_path)["counts"]["skipped"] == {}, what="nothing left out")
    assert daemon.process.poll() is None


def test_with_watching_off_the_schedule_publishes(tmp_path, daemons):
    store, out = tmp_path / "store", tmp_path / "out"
    write_article(store, "first.md")
    daemon = started(tmp_path, daemons, schedule={"every": "2s"}, watch={"enabled": False})
    assert status(tmp_path)["watcher"]["state"] == "off"
    assert "not watching the store (watch.enabled: false)" in daemon.text()
    drop(store, "second.md", publishedDateTime="2024-02-01T00:00:00Z")
    wait_for(lambda: len(links(out / "all.rss")) == 2, what="second article, by the schedule")
    assert status(tmp_path)["last_trigger"] == "schedule"
    assert "watch" not in {line.split("triggered by:")[-1].strip() for line in
                           run_main("status", "-c", tmp_path / "config.yaml").stdout.splitlines()}


# Test hook: a daemon whose watcher thread dies (SystemExit ends a thread without a word) when it sees a
# file named kill-watcher added (or modified), and whose watcher raises when it sees fail-watcher. Its
# watchdog looks every 2s (not 5s: still slower than the 1s schedule, which must publish while the watcher
# is dead) and a failed watcher starts again after 0.2s (not 1s), so that the test does not sleep through
# the production pauses. Everything else is the real `publisher run`.
RUNNER = """
import sys, watchfiles
import publisher.running.daemon, publisher.running.watch
publisher.running.daemon.WATCHDOG_SECONDS = 2
publisher.running.watch.RESTART_FIRST = 0.2
real = watchfiles.watch

def faulty(*args, **kwargs):
    for changes in real(*args, **kwargs):
        # Added, or modified: a file created and closed may come as either, depending on how the events
        # fall into batches (a busy machine splits them otherwise).
        names = {path.rsplit("/", 1)[-1] for change, path in changes if change != watchfiles.Change.deleted}
        if "kill-watcher" in names:
            raise SystemExit
        if "fail-watcher" in names:
            raise RuntimeError("test: watcher failed")
        yield changes

watchfiles.watch = faulty
from publisher.cli import main
sys.exit(main(sys.argv[1:]))
"""


class HookedDaemon(Daemon):
    def __init__(self, folder: Path, config: Path, *extra: str) -> None:
        runner = folder / "runner.py"
        runner.write_text(RUNNER)
        self.log = folder / "daemon.log"
        self._log_file = self.log.open("w")
        self.process = subprocess.Popen([sys.executable, str(runner), "run", "-c", str(config), *extra],
                                        stdout=self._log_file, stderr=subprocess.STDOUT, env=cli_env())


def test_a_killed_or_failing_watcher_is_restarted_and_the_schedule_builds_meanwhile(tmp_path):
    store, out = tmp_path / "store", tmp_path / "out"
    write_article(store, "first.md")
    config = write_config(tmp_path, schedule={"every": "1s"})
    daemon = HookedDaemon(tmp_path, config)
    try:
        wait_for(lambda: watching(tmp_path), what="watcher watching")
        (store / "kill-watcher").write_text("")
        # The schedule keeps publishing while the watcher is dead.
        drop(store, "second.md", publishedDateTime="2024-02-01T00:00:00Z")
        wait_for(lambda: len(links(out / "all.rss")) == 2, what="second article")
        wait_for(lambda: "the store watcher thread has died; starting it again" in daemon.text(), timeout=30,
                 what="the watchdog restarting the watcher")
        wait_for(lambda: watching(tmp_path) and status(tmp_path)["watcher"]["restarts"] == 1,
                 what="watcher watching again")
        (store / "kill-watcher").unlink()

        (store / "fail-watcher").write_text("")
        wait_for(lambda: "watcher failed: test: watcher failed" in daemon.text(), what="failure logged")
        (store / "fail-watcher").unlink()
        wait_for(lambda: watching(tmp_path) and status(tmp_path)["watcher"]["restarts"] == 2,
                 what="watcher watching again")
        assert "watcher:       watching since" in run_main("status", "-c", config).stdout

        # With the schedule an hour away (and the config reloaded with SIGHUP: watching again), only the
        # restarted watcher can publish the next article.
        config.write_text(config.read_text().replace("every: 1s", "every: 1h"))
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: " build: " in daemon.text().partition("config reloaded")[2], what="the reload's build")
        drop(store, "third.md", publishedDateTime="2024-03-01T00:00:00Z")
        wait_for(lambda: len(links(out / "all.rss")) == 3, what="third article, by the watcher")
        assert status(tmp_path)["last_trigger"] == "watch"
        assert daemon.stop() == 0
    finally:
        daemon.stop()


def test_a_flood_and_a_replaced_store_are_survived(tmp_path, daemons):
    store, out = tmp_path / "store", tmp_path / "out"
    write_article(store, "first.md")
    daemon = started(tmp_path, daemons, watch={"debounce": "100ms", "max_delay": "1s"})
    # A flood: thousands of events in a few seconds, files created, rewritten and removed again.
    body = article_text(slug="flood")
    for n in range(3000):
        path = store / f"f{n % 300:03d}.md"
        path.write_text(body.replace("flood", f"flood{n % 300}"), encoding="utf-8")
        if n % 7 == 0:
            path.unlink()
    wait_for(lambda: status(tmp_path).get("state") == "idle" and len(list(store.glob("f[0-9]*.md"))) + 1
             == (status(tmp_path).get("counts") or {}).get("articles"), timeout=60, what="the flood built")
    assert daemon.process.poll() is None

    # The store folder replaced by another one: the watcher notices and watches the new one.
    replacement = tmp_path / "store.new"
    write_article(replacement, "first.md")
    os.rename(store, tmp_path / "store.old")
    os.rename(replacement, store)
    wait_for(lambda: "the store folder was removed or replaced" in daemon.text(), what="replaced store noticed")
    wait_for(lambda: links(out / "all.rss") == ["https://news.example.com/first"], what="rebuilt from the new store")
    wait_for(lambda: watching(tmp_path), what="watching the new store")
    drop(store, "after.md", publishedDateTime="2024-03-01T00:00:00Z")
    wait_for(lambda: "https://news.example.com/after" in links(out / "all.rss"), what="watching the new store")
    assert daemon.stop() == 0


def test_status_json_names_trigger_and_watcher(tmp_path, daemons):
    write_article(tmp_path / "store", "first.md")
    started(tmp_path, daemons)
    data = json.loads(run_main("status", "--json", "-c", tmp_path / "config.yaml").stdout)
    assert data["last_trigger"] == "start" and data["watcher"]["state"] == "watching"


def test_the_watcher_reports_the_changed_files_and_says_when_it_cannot(tmp_path):
    """What a watch build stats (StoreWatcher.take_changes), with a real watcher on a real folder: nothing
    is known before it watches, then exactly the files changed; a folder makes it unknown again."""
    write_article(tmp_path / "store", "news/a.md")
    asked = []
    watcher = StoreWatcher(make_config(tmp_path), lambda: asked.append(True))
    assert watcher.take_changes() is None  # before watching: taken unwatched, so a full scan follows
    watcher.start()
    try:
        assert watcher.wait_watching(10)
        assert watcher.take_changes() is None  # a take came before it watched: the next build scans all
        assert watcher.take_changes() == set()
        write_article(tmp_path / "store", "news/b.md")
        (tmp_path / "store" / "news" / "a.md").unlink()
        seen: set[str] = set()
        wait_for(lambda: seen.update(watcher.take_changes() or ()) or seen >= {"news/a.md", "news/b.md"},
                 what="the two changes")
        assert seen == {"news/a.md", "news/b.md"}
        wait_for(lambda: asked, what="a build asked for, once the debounce has passed")
        (tmp_path / "store" / "more").mkdir()
        wait_for(lambda: watcher.take_changes() is None, what="a folder making the changes unknown")
    finally:
        watcher.stop(wait=5)
