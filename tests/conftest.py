"""Shared test helpers: real files in tmp_path, the real CLI, the real corpus."""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from publisher.config import Config, load_config
from tests.s3_server import s3_server  # noqa: F401 - the fixture of a real S3 endpoint (tests/test_s3.py)

# Bytecode caches on for the test process, even where PYTHONDONTWRITEBYTECODE is set: pytest then keeps the
# test modules it rewrites for their asserts, instead of rewriting all of them again in every run and in
# every xdist worker (seconds of CPU each). The CLI subprocesses get the same (cli_env).
sys.dont_write_bytecode = False



def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): two xdist workers per core. Most tests spend most of their time
    waiting on other processes (daemons on their schedule and debounce, builds, servers, a browser) and
    little on the CPU: with one worker per core, a core idles while its worker waits."""
    return 2 * len(os.sched_getaffinity(0))


REPO = Path(__file__).resolve().parents[1]
# A copy of ../shared/corpus kept in the repository (tests/corpus/README.md), so a clone anywhere runs every test.
CORPUS = Path(os.environ.get("PUBLISHER_CORPUS", REPO / "tests" / "corpus"))
ATOM = "http://www.w3.org/2005/Atom"
MEDIA = "http://search.yahoo.com/mrss/"
NS = {"a": ATOM, "media": MEDIA, "dc": "http://purl.org/dc/elements/1.1/",
      "atom": ATOM, "content": "http://purl.org/rss/1.0/modules/content/"}

# libyaml's emitter where PyYAML has it (a fifth of the pure-Python one's time: the suite writes thousands of
# articles); the same safe subset of YAML.
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

SITE = {
    "title": "Test Feeds",
    "description": "Feeds for tests.",
    "base_url": "https://feeds.example.org/news/",
    "home": "https://example.org/",
    "language": "en",
}


def require_corpus() -> Path:
    """The shared corpus; CI sets PUBLISHER_REQUIRE_CORPUS so that a missing corpus fails instead of skips."""
    if not CORPUS.is_dir():
        message = f"corpus not found at {CORPUS} (set PUBLISHER_CORPUS)"
        if os.environ.get("PUBLISHER_REQUIRE_CORPUS"):
            pytest.fail(message)
        pytest.skip(message)
    return CORPUS


@pytest.fixture(scope="session")
def corpus_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The whole corpus built twice through the CLI, once per test run: the output, both runs' results, and
    snapshots of the output after each. Tests only read it, so the xdist workers share one: the first to ask
    builds it, under a lock in the folder that holds the run's workers' temporary folders; the others load
    what it recorded."""
    corpus = require_corpus()
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    folder, record = shared / "corpus", shared / "corpus.pickle"
    with (shared / "corpus.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if record.exists():
            return dict(pickle.loads(record.read_bytes()))
        shutil.rmtree(folder, ignore_errors=True)  # what a worker whose build failed left
        folder.mkdir()
        config = write_config(folder, store=str(corpus), max_items=1000,
                              assets_base_url="https://everyday-cc.github.io/ai/")
        first = run_cli("build", "-c", config)
        assert first.returncode == 0, first.stderr
        out = folder / "out"
        before = snapshot(out)
        second = run_cli("build", "-c", config)
        built = {"folder": folder, "config": config, "out": out, "first": first, "second": second,
                 "before": before, "after": snapshot(out)}
        record.write_bytes(pickle.dumps(built))
        return built


def write_config(folder: Path, **settings: Any) -> Path:
    """A config.yaml in `folder` with test defaults; keyword arguments replace top-level keys."""
    data: dict[str, Any] = {"store": "store", "output": "out", "state": "state",
                            "assets_base_url": "https://assets.example.org/site/", "site": dict(SITE)}
    data.update(settings)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def make_config(folder: Path, **settings: Any) -> Config:
    return load_config(write_config(folder, **settings))


def article_text(**fields: Any) -> str:
    """Front matter for one article: sensible defaults, overridden (or removed, with None) by `fields`."""
    slug = fields.pop("slug", "story")
    data: dict[str, Any] = {
        "title": f"Story {slug}",
        "excerpt": f"Excerpt of {slug}.",
        "publishedDateTime": "2024-01-02T03:04:05Z",
        "webUrl": f"https://news.example.com/{slug}",
        "type": "article",
        "provider": {"name": "Example News", "domain": "news.example.com",
                     "images": [{"url": "/assets/logos/news.png", "width": 50, "height": 50}]},
        "topics": ["AI"],
        "images": [{"url": f"https://img.example.com/{slug}.jpg", "width": 800, "height": 600}],
        "secured": "SECRET-BLOB==",
    }
    for key, value in fields.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return "---\n" + yaml.dump(data, Dumper=DUMPER, sort_keys=False, allow_unicode=True) + "---\n"


def write_article(store: Path, name: str, **fields: Any) -> Path:
    path = store / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fields.setdefault("slug", Path(name).stem)
    path.write_text(article_text(**fields), encoding="utf-8")
    return path


def cli_env() -> dict[str, str]:
    """The environment for a CLI subprocess: this checkout's package first, whatever the cwd. Without
    PYTHONDONTWRITEBYTECODE (set on some machines): the first subprocess caches the package's bytecode in its
    __pycache__ folders (ignored by git; Python writes them atomically), instead of every one of the hundreds
    the suite starts compiling it again, a tenth of a second of CPU each."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "publisher", *map(str, args)], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=120)


def run_main(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`publisher.cli.main(args)` in this process, its stdout and stderr (log lines included) and exit code
    given as run_cli() gives a subprocess's: for tests of what a command does (the files, the bucket, the lines
    it prints), without the half a second of interpreter start and imports a subprocess pays (a second with
    boto3). What the process itself does (its start, signals, kills, two processes at once, the daemon) is
    tested with run_cli() and real subprocesses.

    As in a new process: logging is set up by main() alone (the root logger's handlers are set aside meanwhile),
    and no S3 client is kept from an earlier call (a new one reads the credentials from the environment)."""
    from publisher import cli
    from publisher.stages import s3

    argv = [str(arg) for arg in args]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    loggers = {name: logging.getLogger(name).level for name in ("apscheduler", "watchfiles", "urllib3")}
    stdout, stderr = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    s3.client.cache_clear()
    root.handlers.clear()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse's usage errors and --help
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    finally:
        os.chdir(previous)
        s3.client.cache_clear()
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in loggers.items():
            logging.getLogger(name).setLevel(old)
    return subprocess.CompletedProcess(["publisher", *argv], code, stdout.getvalue(), stderr.getvalue())


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below `folder` with its bytes and modification time (ns)."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def daemons():
    """Starts `publisher run` subprocesses (tests.test_daemon.Daemon): daemons(folder, config, *flags); each
    one still running at the end of the test is stopped."""
    from tests.test_daemon import Daemon

    started: list[Daemon] = []

    def start(folder: Path, config: Path, *extra: str) -> Daemon:
        daemon = Daemon(folder, config, *extra)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `condition` until it gives something true, and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

