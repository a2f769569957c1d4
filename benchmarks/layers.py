"""What each skip-work layer saves: rebuilds timed with one layer switched off at a time.

    python benchmarks/bench.py --size 100k --runs 1 --keep /tmp/b100k   # makes the store, once
    python benchmarks/layers.py /tmp/b100k                              # then this

In this process, on the benchmark's store (a folder made by `bench.py --keep`): for each layer, a build
that brings the state up to date, then `--runs` times a no-op rebuild, a rebuild after one new file and a
rebuild without the last selection (as when a scheduled article falls due: every feed selected again),
with that layer switched off by replacing the function that consults it. The scan index and the byte
compare are not switched off: without the index every rebuild is a cold build, and without the byte
compare a rebuild would write every file. Prints the medians as a Markdown table.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import bench  # beside this file

from publisher.build import build
from publisher.caches import fingerprints, scan_cache
from publisher.config import load_config


@contextmanager
def replaced(owner: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


LAYERS: dict[str, Callable[[], AbstractContextManager[Any]]] = {
    "none (as shipped)": nullcontext,
    "last selection (`scan/*.feeds`): select from scratch":
        lambda: replaced(scan_cache.ScanCache, "last_selection", lambda self, settings, moment: None),
    "record table (`scan/*.records`): read a feed's entries from their files":
        lambda: replaced(scan_cache.Records, "get", lambda self, wanted: {}),
    "feed fingerprints: render every feed (the byte compare still writes nothing)":
        lambda: replaced(fingerprints, "_recorded", lambda *args: {}),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, help="a folder made by bench.py --keep (store/, config.yaml)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    config = load_config(args.work / "config.yaml")
    rng, serial = random.Random(9), int(time.time())
    rows = []
    selection = scan_cache.cache_prefix(config.state, config.store).with_suffix(".feeds")
    for layer, switched_off in LAYERS.items():
        noop, one, again = [], [], []
        with switched_off():
            build(config)
            for _ in range(args.runs):
                noop.append(timed(lambda: build(config)))
                serial += 1
                (args.work / "store" / "_news" / f"layers-{serial}.md").write_text(
                    bench.article(rng, serial, 100), encoding="utf-8")
                one.append(timed(lambda: build(config)))
                # As when a scheduled article falls due or max_items changes: the selection made again.
                selection.unlink(missing_ok=True)
                again.append(timed(lambda: build(config)))
        rows.append(f"| {layer} | {statistics.median(noop):.3f} s | {statistics.median(one):.3f} s | "
                    f"{statistics.median(again):.3f} s |")
        print(rows[-1], file=sys.stderr)
    print("| layer switched off | no-op rebuild | rebuild after one new file | rebuild that selects again |\n"
          "| --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


def timed(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
