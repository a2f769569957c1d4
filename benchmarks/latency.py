"""Benchmark: how soon `publisher run` publishes an article dropped into the store (watch.py).

    python benchmarks/latency.py --size 20k     # about a minute and a half
    python benchmarks/latency.py --size 100k    # a few minutes (mostly generating and the first build)

It generates the synthetic store of bench.py in a temporary folder, starts the real `publisher run` on it
(schedule `1h`, so that only the watcher can publish in time; watch.* at their defaults; one WebSub hub: a
local HTTP server on 127.0.0.1 that records when each ping arrives), waits for its first build, then:

- drops 20 new articles one at a time, at random intervals of 1.5 to 4 s, each written to a temporary name
  and renamed into place, as a tool should, and measures for each the time from the rename to the moment
  `all.atom` on disk lists it, and to the moment the hub received the ping for `all.atom`;
- drops 5,000 articles at once (each a temporary file then a rename, as fast as this process can), and
  reports how many builds the daemon started for them and how long until the last one was in `all.atom`.

It prints median and maximum. The exit status is 1 when an article was not published within 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - the store generator is shared with the build benchmark

REPO = bench.REPO
BASE_URL = "https://feeds.example.org/"
DROPS = 20
BULK = 5000
TIMEOUT = 30.0
POLL = 0.01  # seconds between looks at all.atom


class Hub:
    """A WebSub hub on 127.0.0.1: records (monotonic time, feed URL) of every ping."""

    def __init__(self) -> None:
        self.pings: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("ascii")
                now = time.monotonic()
                with hub._lock:
                    hub.pings.extend((now, url) for url in parse_qs(body).get("hub.url", []))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hub"

    def first_after(self, moment: float, url: str) -> float | None:
        with self._lock:
            times = [at for at, pinged in self.pings if pinged == url and at >= moment]
        return min(times) if times else None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="20k", help="articles in the store: 20k, 100k or a number (default 20k)")
    parser.add_argument("--topics", type=int, default=100, help="distinct topics (default 100)")
    parser.add_argument("--bulk", type=int, default=BULK, help=f"articles in the bulk drop (default {BULK})")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="publisher-latency-"))
    try:
        return run(work, bench.parse_size(args.size), args.topics, args.bulk)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, size: int, topics: int, bulk: int) -> int:
    store, config = work / "store", work / "config.yaml"
    rng = random.Random(14)
    started = time.monotonic()
    if store.is_dir():  # a kept store: the articles an earlier run dropped would outrank this run's
        for dropped in [*(store / "_news").glob("latency-*.md"), *(store / "_news").glob("bulk-*.md")]:
            dropped.unlink()
    generated = bench.generate(store, size, topics, rng) if not store.is_dir() else bench.count_files(store)
    print(f"generated {generated} files in {time.monotonic() - started:.0f}s under {store}", file=sys.stderr)
    hub = Hub()
    config.write_text("\n".join([
        "store: store", "output: out", "state: state", "assets_base_url: https://everyday-cc.github.io/ai/",
        'exclude: ["**/*.tmp"]', "schedule:", "  every: 1h", "websub:", f"  hubs: [{hub.url}]",
        "site:", "  title: Latency", f"  base_url: {BASE_URL}", "",
    ]), encoding="utf-8")
    log = (work / "daemon.log").open("w")
    daemon = subprocess.Popen([sys.executable, "-m", "publisher", "run", "-c", str(config)], cwd=REPO,
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        started = time.monotonic()
        wait(lambda: _status(work).get("last_result") == "ok" and _watching(work), 600, "the first build")
        print(f"first build and watcher ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
        to_disk, to_hub, late = drop_one_by_one(work, hub, rng)
        bulk_builds, bulk_first, bulk_last = drop_in_bulk(work, bulk, rng)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(60)
        log.close()
        hub.close()
    print(table(size, to_disk, to_hub, bulk, bulk_builds, bulk_first, bulk_last, code))
    return 1 if late or code else 0


def drop_one_by_one(work: Path, hub: Hub, rng: random.Random) -> tuple[list[float], list[float], int]:
    store, atom = work / "store", work / "out" / "all.atom"
    first = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    to_disk: list[float] = []
    to_hub: list[float] = []
    late = 0
    for index in range(DROPS):
        time.sleep(rng.uniform(1.5, 4.0))
        url = f"https://news.example.com/latency/{index}"
        renamed = drop(store, f"latency-{index}", url, first + timedelta(minutes=index))
        on_disk = on_hub = None
        deadline = renamed + TIMEOUT
        while time.monotonic() < deadline and (on_disk is None or on_hub is None):
            if on_disk is None and url.encode() in _read(atom):
                on_disk = time.monotonic()
            if on_hub is None:
                on_hub = hub.first_after(renamed, f"{BASE_URL}all.atom")
            time.sleep(POLL)
        if on_disk is None or on_hub is None:
            late += 1
            print(f"drop {index + 1}: not published within {TIMEOUT:g}s", file=sys.stderr)
            continue
        to_disk.append(on_disk - renamed)
        to_hub.append(on_hub - renamed)
        print(f"drop {index + 1}/{DROPS}: on disk {to_disk[-1]:.3f}s, hub {to_hub[-1]:.3f}s", file=sys.stderr)
    return to_disk, to_hub, late


def drop_in_bulk(work: Path, count: int, rng: random.Random) -> tuple[int, float, float]:
    """Drop `count` articles as fast as possible. Returns builds started for them, and the seconds from the
    first rename and from the last rename until the last article was in all.atom."""
    store, atom, log = work / "store", work / "out" / "all.atom", work / "daemon.log"
    wait(lambda: _status(work).get("state") == "idle", 60, "an idle daemon")
    before = log.read_text().count(" build: ")
    published = (_status(work).get("counts") or {}).get("published", 0)
    first_date = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    started = time.monotonic()
    for index in range(count):
        drop(store, f"bulk-{index}", f"https://news.example.com/bulk/{index}", first_date + timedelta(seconds=index))
    last_rename = time.monotonic()
    last_url = f"https://news.example.com/bulk/{count - 1}".encode()
    wait(lambda: last_url in _read(atom), 300, "the last article of the bulk drop")
    done = time.monotonic()
    wait(lambda: _status(work).get("state") == "idle"
         and (_status(work).get("counts") or {}).get("published") == published + count, 300, "every bulk article")
    wait(lambda: log.read_text().count(" build: ") > before, 10, "the build's log line")
    return log.read_text().count(" build: ") - before, done - started, done - last_rename


def drop(store: Path, name: str, url: str, published: datetime) -> float:
    """Write an article to a temporary name, rename it into place; returns the moment of the rename."""
    folder = store / "_news"
    text = (f"---\ntitle: \"Dropped {name}\"\nexcerpt: \"An article dropped by the latency benchmark.\"\n"
            f"publishedDateTime: {published.isoformat().replace('+00:00', 'Z')}\nwebUrl: \"{url}\"\n"
            "type: article\nprovider:\n  name: Latency\n  domain: news.example.com\ntopics:\n  - AI\n---\n")
    temporary = folder / f"{name}.md.tmp"
    temporary.write_text(text, encoding="utf-8")
    os.rename(temporary, folder / f"{name}.md")
    return time.monotonic()


def wait(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    sys.exit(f"timed out after {timeout:g}s waiting for {what}")


def table(size: int, to_disk: list[float], to_hub: list[float], bulk: int, builds: int, first: float,
          last: float, code: int) -> str:
    def cell(values: list[float], how: str) -> str:
        if not values:
            return "-"
        return f"{(statistics.median(values) if how == 'median' else max(values)):.2f} s"
    return "\n".join([
        f"publisher run, {size:,} articles, watch.debounce 500ms, watch.max_delay 5s, schedule 1h",
        "",
        "| measure | median | max |",
        "| --- | --- | --- |",
        f"| rename -> `all.atom` on disk lists it ({len(to_disk)} of {DROPS} drops) | {cell(to_disk, 'median')} | "
        f"{cell(to_disk, 'max')} |",
        f"| rename -> the WebSub hub got the ping | {cell(to_hub, 'median')} | {cell(to_hub, 'max')} |",
        f"| bulk drop of {bulk:,} files: builds started | {builds} | |",
        f"| bulk drop: first rename -> the last file in `all.atom` | {first:.2f} s | |",
        f"| bulk drop: last rename -> the last file in `all.atom` | {last:.2f} s | |",
        f"| daemon exit status after SIGTERM | {code} | |",
    ])


def _status(work: Path) -> dict[str, object]:
    try:
        data = json.loads((work / "state" / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _watching(work: Path) -> bool:
    watcher = _status(work).get("watcher")
    return isinstance(watcher, dict) and watcher.get("state") == "watching"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


if __name__ == "__main__":
    sys.exit(main())
