"""Command line: a thin layer over the library. Each command checks its arguments, calls one library
function, and turns the library's exceptions into a one-line `Error: ...` and a non-zero exit.

Each command imports what it runs when it runs (the build and its rendering stages, feedgen and lxml, the
daemon's scheduler, the preview server): `status`, `--help` or a refused config start in a fraction of the
time, and every command pays only for its own modules."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from publisher import __version__
from publisher.config import Config, load_config
from publisher.errors import ConfigError, PublisherError, ServeError, StoreError
from publisher.logs import JsonFormatter
from publisher.stages.s3 import is_s3_url
from publisher.wording import plural

logger = logging.getLogger("publisher")

EXIT_OK = 0
EXIT_PROBLEMS = 1  # build --strict: an article was skipped; check: problems found
EXIT_CONFIG = 2  # invalid config or command line
EXIT_STORE = 3  # the store cannot be read
EXIT_WRITE = 4  # an output file could not be written (the previous one stays)
EXIT_LOCKED = 75  # another build held the lock past lock_timeout, another daemon runs on the state folder,
#                   or another publisher holds the bucket's lease (EX_TEMPFAIL: try again later)

# `publisher serve`'s address, as publisher.serve has it (tests/test_cli.py checks that they agree): importing
# that module for its defaults would load the rendering stages into every command's start.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet, args.log_format)
    try:
        config = _config(args)
        return int(args.command(args, config))
    except PublisherError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return _exit_code(exc)


def _exit_code(exc: PublisherError) -> int:
    # The S3 output's exceptions are looked up only where one of its modules is loaded: nothing else raises
    # them, and importing them here would load boto3's callers (and the build) into every command.
    bucket, lease = sys.modules.get("publisher.stages.bucket"), sys.modules.get("publisher.stages.lease")
    if isinstance(exc, ConfigError) or (bucket is not None and isinstance(exc, bucket.DeletionLimit)):
        return EXIT_CONFIG
    if lease is not None and isinstance(exc, lease.LeaseHeld):
        return EXIT_LOCKED
    if isinstance(exc, StoreError):
        return EXIT_STORE
    return EXIT_WRITE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="publisher", description="Build Atom and RSS feeds from a folder "
                                     "of front-matter article files.")
    parser.add_argument("--version", action="version", version=f"publisher {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", type=Path, default=Path("config.yaml"),
                        help="configuration file (default: config.yaml)")
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", help="also log every file and article (DEBUG)")
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="print nothing when all is well: only warnings and errors")
    common.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="log lines as text (default) or as JSON objects, for log shippers")
    commands = parser.add_subparsers(dest="name", required=True, metavar="COMMAND")

    build_cmd = commands.add_parser("build", parents=[common], help="build the feeds once",
                                    description="Build every feed from the store into the output folder.")
    build_cmd.add_argument("--store", type=_location, help="article folder or s3:// URL (overrides `store`)")
    build_cmd.add_argument("--output", type=_location, help="output folder or s3:// URL (overrides `output`)")
    build_cmd.add_argument("--strict", action="store_true", help="exit 1 when any article was skipped as broken")
    build_cmd.set_defaults(command=_build)

    check_cmd = commands.add_parser("check", parents=[common], help="list every problem in the store",
                                    description="Read the whole store and list every problem; write nothing.")
    check_cmd.add_argument("--store", type=_location, help="article folder or s3:// URL (overrides `store`)")
    check_cmd.set_defaults(command=_check)

    run_cmd = commands.add_parser("run", parents=[common], help="run as a daemon, building on a schedule",
                                  description="Build at start, then on the schedule from the config, until "
                                  "SIGTERM or SIGINT; SIGHUP reloads the config.")
    run_cmd.add_argument("--store", type=_location, help="article folder or s3:// URL (overrides `store`)")
    run_cmd.add_argument("--output", type=_location, help="output folder or s3:// URL (overrides `output`)")
    run_cmd.set_defaults(command=_run)

    status_cmd = commands.add_parser("status", parents=[common], help="show the last build and the next run",
                                     description="Print the status file: last build, its result and counts, "
                                     "next run. Exit 0 when healthy, 1 otherwise.")
    status_cmd.add_argument("--json", action="store_true", help="print the status file as JSON")
    status_cmd.set_defaults(command=_status)

    serve_cmd = commands.add_parser("serve", parents=[common], help="preview the output folder over HTTP",
                                    description="Serve the output folder on a local address with the feeds' "
                                    "content types, ETag, Last-Modified and gzip, until Ctrl-C. For trying "
                                    "things out: use nginx (deploy/nginx.conf) in production.")
    serve_cmd.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST})")
    serve_cmd.add_argument("--port", type=_port, default=DEFAULT_PORT,
                           help=f"port to listen on, 0 for any free one (default: {DEFAULT_PORT})")
    serve_cmd.add_argument("--output", type=_location, help="folder to serve (overrides `output`)")
    serve_cmd.set_defaults(command=_serve)
    return parser


def _location(value: str) -> Path | str:
    """A folder (relative to the current directory) or an s3:// URL, kept as it is for the config to check."""
    return value if is_s3_url(value) else Path(value).expanduser().resolve()


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {value!r}")
    return int(value)


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, _overrides(args))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for key in ("store", "output"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value  # folders already resolved against the cwd, as a shell user expects
    return overrides


def _build(args: argparse.Namespace, config: Config) -> int:
    from publisher.running.jobs import locked_build
    from publisher.running.lock import LockTimeout

    try:
        report = locked_build(config)
    except LockTimeout as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    if not report.ok:  # nothing else to say: the one line per cause is the whole story
        for line in report.failures():
            print(f"Error: {line}", file=sys.stderr)
        return EXIT_WRITE
    if not args.quiet:
        print(f"publisher: {report.summary()}")
    if args.strict and report.skipped["invalid"]:
        print(f"Error: {plural(report.skipped['invalid'], 'article')} skipped (--strict)", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


def _check(args: argparse.Namespace, config: Config) -> int:
    from publisher.build import check_store
    from publisher.stages.mirror import store_label

    found = check_store(config)
    where = store_label(config)
    for problem in found.problems:
        print(f"{where}{problem}{' (left out)' if problem.fatal else ''}")
    files = len({problem.source for problem in found.problems})
    print(f"publisher: {plural(len(found.problems), 'problem')} in {plural(files, 'file')}; "
          f"{plural(len(found.articles) + found.invalid, 'article')}, {found.invalid} left out; "
          f"{plural(found.not_articles, 'other document')}")
    return EXIT_PROBLEMS if found.problems else EXIT_OK


def _run(args: argparse.Namespace, config: Config) -> int:
    from publisher.running.daemon import run_daemon  # the scheduler and the watcher: only the daemon needs them
    from publisher.running.lock import DaemonRunning

    try:
        return run_daemon(args.config, config, _overrides(args))
    except DaemonRunning as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_LOCKED


def _status(args: argparse.Namespace, config: Config) -> int:
    from publisher.running.lock import daemon_pid
    from publisher.running.status import assess, format_status, read_status

    status = read_status(config.state)
    if status is None:
        if args.json:  # monitoring always gets one JSON object to read
            print(json.dumps({"healthy": False, "verdict": "no build yet"}, indent=1, sort_keys=True))
        else:
            print(f"Error: no status yet in {config.state}: no build has run with this config", file=sys.stderr)
        return EXIT_PROBLEMS
    daemon = daemon_pid(config.state)
    healthy, verdict = assess(status, config, daemon)
    if args.json:
        print(json.dumps({**asdict(status), "daemon_pid": daemon, "healthy": healthy, "verdict": verdict},
                         indent=1, sort_keys=True))
    else:
        print(format_status(status, verdict, daemon))
    return EXIT_OK if healthy else EXIT_PROBLEMS


def _serve(args: argparse.Namespace, config: Config) -> int:
    from publisher.serve import serve

    def announce(url: str) -> None:
        print(f"publisher: serving {config.output} at {url} (Ctrl-C to stop)", flush=True)

    try:
        serve(config, args.host, args.port, announce)
    except ServeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def _setup_logging(verbose: bool, quiet: bool, log_format: str = "text") -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler])
    # APScheduler's own INFO lines ("Added job", "Running job") repeat what the daemon logs.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if verbose else logging.WARNING)
    # watchfiles logs each batch of file events at INFO: per-file detail, for -v only.
    logging.getLogger("watchfiles").setLevel(logging.DEBUG if verbose else logging.WARNING)
    # urllib3 warns of each retry it makes (web.Retries); the publisher logs the outcome, one line per cause.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbose else logging.ERROR)
