"""Benchmark: how `publisher build` scales with the size of the store.

    python benchmarks/bench.py                 # 10,000 articles, 3 runs (about half a minute)
    python benchmarks/bench.py --size 100k     # 100,000 articles, 100 topics (about two minutes)

It generates a synthetic store shaped like the real corpus (../shared/corpus: file sizes, 2020s files with
`related` lists, images, provider logos in their three forms, unpublished and non-article files, 2013-2023
dates, one topic on every article and a long tail of others) in a temporary folder, then times the real
command, `publisher build -q`, each in a fresh process, several times, and prints the median of: cold build
(no scan cache, no output), no-op rebuild, rebuild after one new file, rebuild after 1% of the files
changed, the peak resident memory of a cold build, and the files the no-op rebuild rewrote (must be 0; the
exit status is 1 otherwise). It needs nothing beyond the publisher's own dependencies, and runs from the
checkout (`python3 benchmarks/bench.py` in a fresh clone, with the packages installed, or
`.venv/bin/python benchmarks/bench.py` after `make feeds`).

Two times per scenario: "build", the build itself as the daemon (`publisher run`) does it in a running
process, and "command", the whole `publisher build` command from a shell, Python's start-up and imports
included. With --drop-caches (root only) the kernel's page cache is emptied before each cold build, so that
it reads the store from disk.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The build runs in a child that reports how long the build took in it, and its own and its workers' peak
# resident memory. The command is the CLI's own main(), as `publisher build` runs it.
CHILD = """
import json, resource, sys, time
from publisher.cli import main
import publisher.running.jobs  # what a running daemon has loaded already: the build and its stages
started = time.perf_counter()
code = main(["build", "-q", "-c", sys.argv[1]])
seconds = time.perf_counter() - started
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": code, "build": seconds, "own_kib": own, "worker_kib": workers}), file=sys.stderr)
"""

WORDS = [
    "model", "data", "learning", "neural", "network", "intelligence", "machine", "vision", "language", "robot",
    "health", "market", "startup", "research", "cloud", "chip", "compute", "training", "inference", "agent",
    "safety", "policy", "privacy", "face", "recognition", "autonomous", "vehicle", "drug", "discovery", "finance",
    "fraud", "retail", "search", "voice", "assistant", "translation", "image", "video", "generative", "open",
    "source", "benchmark", "dataset", "deployment", "edge", "sensor",
]
PROVIDERS = [(f"Provider {n}", f"provider{n}.example.com") for n in range(95)]
TOPICS = ["AI"] + [f"Topic {n:02d}" for n in range(1, 100)]  # "AI" is on every article, as in the corpus


@dataclass
class Result:
    build: float  # the build, in the process
    command: float  # the whole command
    own_kib: int
    worker_kib: int
    rewritten: int
    tree_kib: int = 0  # peak Pss of the command's processes together (TreeMemory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="10k", help="articles in the store: 10k, 100k or a number (default 10k)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each scenario; the median is shown")
    parser.add_argument("--topics", type=int, default=100, help="distinct topics (default 100)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--drop-caches", action="store_true",
                        help="empty the page cache before each cold build (root only)")
    parser.add_argument("--s3", action="store_true",
                        help="store and output in buckets of a local S3 endpoint (moto's server on 127.0.0.1; "
                        "needs the test extra): cold, no-op and one new object")
    parser.add_argument("--families", default="all,topics",
                        help="config `families`, comma-separated (default all,topics; all,topics,providers adds "
                        "one feed per provider)")
    parser.add_argument("--archives", action="store_true", help="config `archives: true` (RFC 5005 monthly archives)")
    args = parser.parse_args()
    size = parse_size(args.size)
    feeds = [f"families: [{args.families}]", f"archives: {'true' if args.archives else 'false'}"]
    work = args.keep or Path(tempfile.mkdtemp(prefix="publisher-bench-"))
    try:
        if args.s3:
            return run_s3(work, size, args.runs, args.topics, feeds)
        return run(work, size, args.runs, args.topics, args.drop_caches, feeds)
    finally:
        shutil.rmtree(work / TRASH, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


# What a cold build's predecessor left (its output, its state) is moved here, and deleted once all runs are
# done. Deleted at once, its thousand files would make the next build's files slower to create: on ext4
# without a journal (this machine's), a new inode skips every inode deleted in the last 30 seconds, and
# writing a cold build's 800 files took 0.05 s after a pause and 0.4 s right after deleting as many. A
# first deployment deletes nothing first.
TRASH = ".bench-trash"


def set_aside(*folders: Path) -> None:
    """Move `folders` (those that exist) into the trash folder beside them, out of the builds' way."""
    for folder in folders:
        if folder.exists():
            trash = folder.parent / TRASH / str(time.time_ns())
            trash.mkdir(parents=True)
            folder.rename(trash / folder.name)


def parse_size(text: str) -> int:
    text = text.strip().lower()
    return int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)


def run(work: Path, size: int, runs: int, topics: int, drop_caches: bool, feeds: list[str]) -> int:
    store, config = work / "store", work / "config.yaml"
    rng = random.Random(6)
    started = time.monotonic()
    generated = generate(store, size, topics, rng) if not store.is_dir() else count_files(store)
    config.write_text(config_text(feeds), encoding="utf-8")
    print(f"generated {generated} files ({du(store) / 2**20:.0f} MiB) in {time.monotonic() - started:.0f}s "
          f"under {store}", file=sys.stderr)
    # A file modified within a second of a scan is read again by the next one (store.RACY_NS): let the
    # generator's last files age past that, or the first no-op rebuild would read them again.
    time.sleep(1.1)
    rows: dict[str, list[Result]] = {name: [] for name in ("cold", "noop", "one", "percent")}
    serial = size
    for index in range(runs):
        set_aside(work / "state", work / "out")
        if drop_caches:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        rows["cold"].append(timed(config, work / "out", sample_memory=True))
        rows["noop"].append(timed(config, work / "out"))
        serial += 1
        (store / "_news" / f"new-{serial}.md").write_text(article(rng, serial, topics), encoding="utf-8")
        rows["one"].append(timed(config, work / "out"))
        change_some(store, rng, max(1, size // 100))
        rows["percent"].append(timed(config, work / "out"))
        progress = ", ".join(f"{name} {results[-1].build:.2f}s/{results[-1].command:.2f}s"
                             for name, results in rows.items())
        print(f"run {index + 1}/{runs}: {progress}", file=sys.stderr)
    print(table(size, topics, runs, rows, drop_caches, feeds))
    return 0 if all(result.rewritten == 0 for result in rows["noop"]) else 1


def run_s3(work: Path, size: int, runs: int, topics: int, feeds: list[str]) -> int:
    """The same store, uploaded to a bucket of a local S3 endpoint, built into another bucket: what a build
    costs when every file and every object goes through the S3 protocol (HTTP on loopback, so without the
    latency of a real service: a real one adds its round trips, which `s3.workers` overlaps)."""
    from local_s3 import LocalS3  # beside this script; moto only for this mode

    store, config = work / "store", work / "config.yaml"
    rng = random.Random(6)
    generated = generate(store, size, topics, rng) if not store.is_dir() else count_files(store)
    with LocalS3() as s3:
        started = time.monotonic()
        s3.upload_folder(store, "bench-store", "articles/")
        print(f"generated {generated} files and uploaded them in {time.monotonic() - started:.0f}s",
              file=sys.stderr)
        config.write_text(config_text(feeds).replace("store: store", "store: s3://bench-store/articles/").replace(
            "output: out", "output: s3://bench-feeds/site/") + f"s3:\n  endpoint_url: {s3.url}\n", encoding="utf-8")
        os.environ.update(s3.environment())
        rows: dict[str, list[Result]] = {name: [] for name in ("cold", "noop", "one")}
        requests: dict[str, list[int]] = {name: [] for name in rows}
        serial = size
        for index in range(runs):
            shutil.rmtree(work / "state", ignore_errors=True)
            s3.empty("bench-feeds")
            for name in rows:
                if name == "one":
                    serial += 1
                    s3.put("bench-store", f"articles/_news/new-{serial}.md", article(rng, serial, topics).encode())
                mark = s3.mark()
                rows[name].append(timed(config, work / "no-local-output"))
                requests[name].append(s3.writes_since(mark, "bench-feeds", "site/"))
            progress = ", ".join(f"{name} {results[-1].build:.2f}s/{results[-1].command:.2f}s"
                                 for name, results in rows.items())
            print(f"run {index + 1}/{runs}: {progress}", file=sys.stderr)
    print(s3_table(size, topics, runs, rows, requests))
    return 0 if all(count == 0 for count in requests["noop"]) else 1


def s3_table(size: int, topics: int, runs: int, rows: dict[str, list[Result]], requests: dict[str, list[int]]
             ) -> str:
    def median(name: str, what: str) -> str:
        return f"{statistics.median(getattr(result, what) for result in rows[name]):.2f} s"

    def writes(name: str) -> str:
        return f"{statistics.median(requests[name]):.0f}"

    return "\n".join([
        f"publisher build, store and output in buckets of a local S3 endpoint, {size:,} articles, {topics} topics: "
        f"median of {runs} runs",
        "",
        "| scenario | build | command | PUT/DELETE requests to the feeds bucket |",
        "| --- | --- | --- | --- |",
        f"| cold build (no state, empty feeds bucket) | {median('cold', 'build')} | {median('cold', 'command')} | "
        f"{writes('cold')} |",
        f"| no-op rebuild | {median('noop', 'build')} | {median('noop', 'command')} | {writes('noop')} |",
        f"| rebuild after one new object | {median('one', 'build')} | {median('one', 'command')} | "
        f"{writes('one')} |",
        "",
        "The lease's own requests are not counted. build: the build in a running process; command: "
        "`publisher build` from a shell.",
    ])


def timed(config: Path, output: Path, sample_memory: bool = False) -> Result:
    """One `publisher build -q` in a fresh process; with `sample_memory`, the peak Pss of its processes
    (TreeMemory), sampled only when asked: reading smaps_rollup every 20 ms costs a build of a fraction of
    a second some of its time (the kernel walks the page tables of each process it reads)."""
    before = files_state(output)
    started = time.perf_counter()
    with subprocess.Popen([sys.executable, "-c", CHILD, str(config)], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}) as child:
        sampler = TreeMemory(child.pid)
        if sample_memory:
            sampler.start()
        stdout, stderr = child.communicate()
    seconds = time.perf_counter() - started
    if sample_memory:
        sampler.stop()
    usage = json.loads(stderr.strip().splitlines()[-1]) if stderr.strip() else {}
    if child.returncode or usage.get("code"):
        sys.exit(f"build failed ({child.returncode}):\n{stdout}\n{stderr}")
    after = files_state(output)
    rewritten = sum(1 for path, stamp in after.items() if path in before and before[path] != stamp)
    return Result(usage["build"], seconds, usage["own_kib"], usage["worker_kib"], rewritten, sampler.peak_kib)


class TreeMemory(threading.Thread):
    """The peak, over a command's run, of the memory of all its processes together: the sum of their
    proportional set sizes (Pss: a page shared by n processes counts 1/n in each; forked workers share
    most of their pages with the build process, so adding up their resident sizes would count them many
    times). Sampled every 20 ms from /proc (Linux); 0 where it cannot be read."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.02):
            self.peak_kib = max(self.peak_kib, sum(_pss_kib(pid) for pid in _tree(self.pid)))

    def stop(self) -> None:
        self._done.set()
        self.join()


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (/proc/<pid>/task/<tid>/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in glob.glob(f"/proc/{current}/task/*/children"):
            with contextlib.suppress(OSError):  # gone meanwhile
                todo += [int(child) for child in Path(task).read_text().split()]
    return found


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):  # gone meanwhile, or not Linux
        pass
    return 0


def files_state(folder: Path) -> dict[str, tuple[int, int]]:
    if not folder.is_dir():
        return {}
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_ino) for p in folder.rglob("*") if p.is_file()}


def table(size: int, topics: int, runs: int, rows: dict[str, list[Result]], drop_caches: bool,
          feeds: list[str]) -> str:
    def median(name: str, what: str) -> str:
        return f"{statistics.median(getattr(result, what) for result in rows[name]):.2f} s"
    cold = rows["cold"]
    own = max(result.own_kib for result in cold) / 1024
    worker = max(result.worker_kib for result in cold) / 1024
    cache = "page cache emptied before each cold build" if drop_caches else "page cache as the runs left it"
    lines = [
        f"publisher build, {size:,} articles, {topics} topics ({', '.join(feeds)}): median of {runs} runs "
        f"({cache})",
        "",
        "| scenario | build | command |",
        "| --- | --- | --- |",
        f"| cold build (no cache, empty output) | {median('cold', 'build')} | {median('cold', 'command')} |",
        f"| no-op rebuild | {median('noop', 'build')} | {median('noop', 'command')} |",
        f"| rebuild after one new file | {median('one', 'build')} | {median('one', 'command')} |",
        f"| rebuild after 1% of files changed ({max(1, size // 100):,}) | {median('percent', 'build')} | "
        f"{median('percent', 'command')} |",
        f"| peak memory of a cold build: the build process | {own:.0f} MiB | |",
        f"| peak memory of a cold build: the largest child (a reading worker, {reading_workers()} at most, or the "
        f"forked renderer, which shares most of its pages with the build process) | "
        f"{worker:.0f} MiB | |",
        f"| peak memory of a cold build: all processes together (sum of Pss, sampled every 20 ms) | "
        f"{max(result.tree_kib for result in cold) / 1024:.0f} MiB | |",
        f"| files rewritten by the no-op rebuild | {max(result.rewritten for result in rows['noop'])} | |",
        "",
        "build: the build in a running process (as `publisher run` does it); command: `publisher build` "
        "from a shell, Python's start-up included.",
    ]
    return "\n".join(lines)


def reading_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def config_text(feeds: list[str]) -> str:
    """The benchmark's config.yaml; `feeds`: the --families and --archives settings, as config lines."""
    return "\n".join([
        "store: store", "output: out", "state: state", "assets_base_url: https://everyday-cc.github.io/ai/",
        "max_items: 50", *feeds, "site:", "  title: Bench", "  base_url: https://feeds.example.org/", "",
    ])


def generate(store: Path, size: int, topics: int, rng: random.Random) -> int:
    """`size` articles plus the non-article documents a real store holds (about 1 in 20 files)."""
    (store / "_news").mkdir(parents=True)
    (store / "_archive" / "_news").mkdir(parents=True)
    (store / "_events").mkdir()
    (store / "_data" / "topics").mkdir(parents=True)
    for serial in range(size):
        text = article(rng, serial, topics)
        year = int(text.split("publishedDateTime: ", 1)[1][:4])
        folder = store / ("_news" if year >= 2020 else "_archive/_news")
        (folder / f"{year}-{serial:07d}-{slug(rng)}.md").write_text(text, encoding="utf-8")
    others = size // 20
    for serial in range(others):
        if serial % 2:
            (store / "_events" / f"event-{serial}.md").write_text(event(rng, serial), encoding="utf-8")
        else:
            (store / "_data" / "topics" / f"topic-{serial}.yaml").write_text(
                f"---\nname: Topic {serial}\nslug: topic-{serial}\n---\n", encoding="utf-8")
    (store / "README.md").write_text("# The store\n\nNot front matter.\n", encoding="utf-8")
    return size + others + 1


def slug(rng: random.Random) -> str:
    return "-".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize()


def quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def article(rng: random.Random, serial: int, topics: int) -> str:
    year = rng.choice(range(2013, 2024))
    date = f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    clock = "00:00:00" if rng.random() < 0.4 else f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
    name, domain = rng.choice(PROVIDERS)
    url = f"https://www.{domain}/{year}/{serial}/{slug(rng)}/"
    # "AI" on every article, then a long tail: a few topics are common, most are rare.
    extra = {TOPICS[min(topics - 1, int(rng.paretovariate(0.8)))] for _ in range(rng.randint(0, 3))}
    lines = [
        "---", "category: news", f"title: {quoted(sentence(rng, rng.randint(5, 14)))}",
        f"excerpt: {quoted(sentence(rng, rng.randint(20, 45)) + ' ...')}",
        f"publishedDateTime: {date}T{clock}Z",
    ]
    if year >= 2021:
        lines.append(f"originalUrl: {quoted(url + '?utm_source=feed')}")
    lines += [f"webUrl: {quoted(url)}", "type: article"]
    if year < 2021:
        lines += [f"quality: {rng.randint(0, 150)}", f"heat: {rng.choice([-1, rng.randint(0, 150)])}",
                  f"published: {'false' if rng.random() < 0.43 else 'true'}"]
    lines += ["", "provider:", f"  name: {name}", f"  domain: {domain}"]
    logo = rng.random()
    if logo < 0.15:
        lines += ["  images:", f"    - url: /assets/images/organizations/{domain}-50x50.jpg", "      width: 50",
                  "      height: 50"]
    elif logo < 0.35:
        lines += ["  images:", f"    - url: \"https://everyday-cc.github.io/ai/assets/images/organizations/"
                  f"{domain}-50x50.jpg\"", "      width: 50", "      height: 50"]
    lines += ["", "topics:"] + [f"  - {topic}" for topic in ["AI", *sorted(extra - {"AI"})]]
    if rng.random() < 0.8:
        lines += ["", "images:"]
        for index in range(rng.choice([1, 1, 1, 2])):
            image = f"https://img.{domain}/{year}/{serial}-{index}.jpg"
            if rng.random() < 0.05:
                lines.append(f"  - {image}")
            else:
                lines += [f"  - url: \"{image}?w=1024&h=683\"", f"    width: {rng.randint(300, 2000)}",
                          f"    height: {rng.randint(200, 1200)}"]
    if year >= 2020 and rng.random() < 0.6:
        lines += ["", "related:"]
        for _ in range(rng.randint(1, 8)):
            lines += [f"  - title: {quoted(sentence(rng, 8))}", f"    excerpt: {quoted(sentence(rng, 30))}",
                      f"    publishedDateTime: {date}T08:36:00Z", f"    webUrl: \"https://{domain}/{slug(rng)}\"",
                      "    type: article", "    provider:", f"      name: {name}", f"      domain: {domain}",
                      f"    quality: {rng.randint(0, 100)}"]
    blob = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                   for _ in range(rng.choice([344, 428, 512])))
    lines += ["", f"secured: \"{blob}==;Qz8zoMxKzPIhaNaot5CsvA==\"", "---", ""]
    return "\n".join(lines)


def event(rng: random.Random, serial: int) -> str:
    return (f"---\ncategory: events\nname: {quoted(sentence(rng, 5))}\nstartDateTime: 2023-03-0{serial % 9 + 1}"
            f"T09:00:00-08:00\nendDateTime: 2023-03-0{serial % 9 + 1}T17:00:00-08:00\ntopics:\n  - AI\n---\n")


def change_some(store: Path, rng: random.Random, count: int) -> None:
    """Rewrite `count` articles with a new title (their size changes, so does their mtime)."""
    news = sorted((store / "_news").iterdir()) + sorted((store / "_archive" / "_news").iterdir())
    for path in rng.sample(news, count):
        text = path.read_text(encoding="utf-8")
        head, _, rest = text.partition("\ntitle: ")
        title, _, tail = rest.partition("\n")
        path.write_text(f"{head}\ntitle: {quoted(sentence(rng, rng.randint(5, 14)))}\n{tail}", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
