"""Command line: a thin layer over the library. Each command checks its arguments, calls one library
function, and turns the library's exceptions into a one-line `Error: ...` and a non-zero exit."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from publisher import __version__
from publisher.build import build, collect
from publisher.config import Config, load_config
from publisher.errors import ConfigError, PublisherError, StoreError

logger = logging.getLogger("publisher")

EXIT_OK = 0
EXIT_PROBLEMS = 1  # build --strict: an article was skipped; check: problems found
EXIT_CONFIG = 2  # invalid config or command line
EXIT_STORE = 3  # the store cannot be read
EXIT_WRITE = 4  # an output file could not be written (the previous one stays)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        config = _config(args)
        return int(args.command(args, config))
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_STORE
    except PublisherError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_WRITE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="publisher", description="Build Atom and RSS feeds from a folder "
                                     "of front-matter article files.")
    parser.add_argument("--version", action="version", version=f"publisher {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", type=Path, default=Path("config.yaml"),
                        help="configuration file (default: config.yaml)")
    common.add_argument("-v", "--verbose", action="store_true", help="log per-article detail")
    common.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    commands = parser.add_subparsers(dest="name", required=True, metavar="COMMAND")

    build_cmd = commands.add_parser("build", parents=[common], help="build the feeds once",
                                    description="Build every feed from the store into the output folder.")
    build_cmd.add_argument("--store", type=Path, help="article folder (overrides `store`)")
    build_cmd.add_argument("--output", type=Path, help="output folder (overrides `output`)")
    build_cmd.add_argument("--strict", action="store_true", help="exit 1 when any article was skipped as broken")
    build_cmd.set_defaults(command=_build)

    check_cmd = commands.add_parser("check", parents=[common], help="list every problem in the store",
                                    description="Read the whole store and list every problem; write nothing.")
    check_cmd.add_argument("--store", type=Path, help="article folder (overrides `store`)")
    check_cmd.set_defaults(command=_check)
    return parser


def _config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    for key in ("store", "output"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value.expanduser().resolve()  # command-line paths are relative to the cwd
    return load_config(args.config, overrides)


def _build(args: argparse.Namespace, config: Config) -> int:
    report = build(config)
    print(f"publisher: {report.summary()}")
    if not report.ok:
        for path, cause in report.writes.failed:
            print(f"Error: {config.output / path}: not written: {cause}", file=sys.stderr)
        return EXIT_WRITE
    if args.strict and report.skipped["invalid"]:
        print(f"Error: {report.skipped['invalid']} articles skipped (--strict)", file=sys.stderr)
        return EXIT_PROBLEMS
    return EXIT_OK


def _check(args: argparse.Namespace, config: Config) -> int:
    found = collect(config)
    for problem in found.problems:
        print(f"{problem}{' (left out)' if problem.fatal else ''}")
    print(f"publisher: {len(found.articles) + found.invalid} articles, {found.invalid} left out, "
          f"{len(found.problems)} problems, {found.not_articles} other documents")
    return EXIT_PROBLEMS if found.problems else EXIT_OK


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S", stream=sys.stderr)
