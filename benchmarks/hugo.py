"""Side by side with Hugo: a cold `publisher build` against a cold `hugo` build of the same store.

    python benchmarks/hugo.py                  # 20,000 articles, 5 runs of each, alternating
    python benchmarks/hugo.py --size 5k --runs 3

It generates the benchmark's own synthetic store (bench.py), then an equivalent Hugo site: every article file
copied as it is into `content/news/` (Hugo reads the same YAML front matter; `publishedDateTime` is mapped
to Hugo's date), `topics` as Hugo's taxonomy, RSS for the home page and for every taxonomy term, limited to
`max_items` entries, no HTML layouts (so Hugo writes nothing but its feeds: the cheapest Hugo build there
is). The publisher writes what it writes by default: Atom, RSS and JSON Feed for every feed, gzip copies,
the pages, index and OPML.

Runs alternate (publisher, hugo, publisher, ...), each a fresh process from a cold start: no state folder,
no output, no Hugo cache. It prints the medians of wall time, CPU time (user + system of the whole process
tree) and peak resident memory (the largest process of the tree), and the ratios. It needs Debian's Hugo
(`apt-get install hugo`); without it, it says so and exits 0 having measured nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the benchmark's own store generator)

REPO = Path(__file__).resolve().parents[1]

HUGO_CONFIG = """\
baseURL = "https://feeds.example.org/"
title = "Bench"
# Feeds only: the home feed and one per taxonomy term, as the publisher's overall and topic feeds.
disableKinds = ["section", "taxonomy", "404", "sitemap", "robotsTXT"]
ignoreErrors = ["error-disable-taxonomy"]
rssLimit = {max_items}
[taxonomies]
topic = "topics"
[outputs]
home = ["RSS"]
term = ["RSS"]
[frontmatter]
date = ["publishedDateTime", ":default"]
publishDate = ["publishedDateTime", ":default"]
"""


@dataclass
class Run:
    wall: float
    cpu: float
    peak_mib: float


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="20k", help="articles in the store (default 20k)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each, alternating; medians are shown")
    parser.add_argument("--topics", type=int, default=100, help="distinct topics (default 100)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    hugo = shutil.which("hugo")
    if hugo is None:
        print("hugo not found: install it (Debian: apt-get install hugo) to compare; nothing measured")
        return 0
    work = args.keep or Path(tempfile.mkdtemp(prefix="publisher-hugo-"))
    try:
        return compare(work, hugo, bench.parse_size(args.size), args.runs, args.topics)
    finally:
        shutil.rmtree(work / bench.TRASH, ignore_errors=True)
        shutil.rmtree(work / "hugo" / bench.TRASH, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def compare(work: Path, hugo: str, size: int, runs: int, topics: int) -> int:
    store, config, site = work / "store", work / "config.yaml", work / "hugo"
    if not store.is_dir():
        bench.generate(store, size, topics, random.Random(6))
    config.write_text(bench.config_text([]), encoding="utf-8")  # the default families and formats
    hugo_site(store, site, max_items=50)
    print(f"{size:,} articles under {store}; Hugo site under {site}", file=sys.stderr)
    publisher_cmd = [sys.executable, "-m", "publisher", "build", "-q", "-c", str(config)]
    hugo_cmd = [hugo, "--quiet", "--source", str(site), "--cacheDir", str(work / "hugo-cache")]
    results: dict[str, list[Run]] = {"publisher": [], "hugo": []}
    for index in range(runs):
        for name, command, clean in (("publisher", publisher_cmd, (work / "state", work / "out")),
                                     ("hugo", hugo_cmd, (site / "public", work / "hugo-cache",
                                                         site / "resources"))):
            bench.set_aside(*clean)  # both tools build as on a first deployment (see bench.TRASH)
            results[name].append(measure(command))
            last = results[name][-1]
            print(f"run {index + 1}/{runs} {name}: {last.wall:.2f} s wall, {last.cpu:.2f} s CPU, "
                  f"{last.peak_mib:.0f} MiB", file=sys.stderr)
    print(table(size, topics, runs, results))
    return 0


def hugo_site(store: Path, site: Path, max_items: int) -> None:
    """The Hugo twin of the store: its article files, as they are, as Hugo content."""
    content = site / "content" / "news"
    if content.is_dir():
        return
    content.mkdir(parents=True)
    for folder in (store / "_news", store / "_archive" / "_news"):
        for path in folder.iterdir():
            shutil.copyfile(path, content / path.name)
    (site / "config.toml").write_text(HUGO_CONFIG.format(max_items=max_items), encoding="utf-8")


def measure(command: list[str]) -> Run:
    """Wall time, CPU time and peak memory of one command, run in a child that reports its own children's
    usage: a fresh accounting for every run."""
    probe = ("import json, resource, subprocess, sys, time\n"
             "started = time.perf_counter()\n"
             "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
             "wall = time.perf_counter() - started\n"
             "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
             "print(json.dumps([code, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss]))\n")
    done = subprocess.run([sys.executable, "-c", probe, *command], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    code, wall, cpu, peak_kib = json.loads(done.stdout.strip().splitlines()[-1])
    if code:
        sys.exit(f"{command[0]} failed ({code}):\n{done.stderr}")
    return Run(wall, cpu, peak_kib / 1024)


def table(size: int, topics: int, runs: int, results: dict[str, list[Run]]) -> str:
    def med(name: str, what: str) -> float:
        return statistics.median(getattr(run, what) for run in results[name])
    rows = [
        f"Cold builds, {size:,} articles, {topics} topics: median of {runs} alternating runs",
        "",
        "| | wall | CPU | peak memory |",
        "|---|---|---|---|",
        f"| publisher (Atom + RSS + JSON Feed, gzip copies, pages, index, OPML) | {med('publisher', 'wall'):.2f} s "
        f"| {med('publisher', 'cpu'):.2f} s | {med('publisher', 'peak_mib'):.0f} MiB |",
        f"| Hugo {hugo_version()} (RSS only: home + one per taxonomy term) | {med('hugo', 'wall'):.2f} s "
        f"| {med('hugo', 'cpu'):.2f} s | {med('hugo', 'peak_mib'):.0f} MiB |",
        f"| ratio publisher / Hugo | {med('publisher', 'wall') / med('hugo', 'wall'):.2f} "
        f"| {med('publisher', 'cpu') / med('hugo', 'cpu'):.2f} "
        f"| {med('publisher', 'peak_mib') / med('hugo', 'peak_mib'):.2f} |",
    ]
    return "\n".join(rows)


def hugo_version() -> str:
    try:
        words = subprocess.run(["hugo", "version"], capture_output=True, text=True).stdout.split()
    except OSError:
        return "?"
    return words[1].split("+")[0].lstrip("v") if len(words) > 1 else "?"


if __name__ == "__main__":
    sys.exit(main())
