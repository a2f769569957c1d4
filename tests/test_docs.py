"""The documentation (README.md and docs/*.md) covers every command, flag and configuration key."""

from __future__ import annotations

import argparse
import re

from publisher.cli import _parser
from publisher.config import DEFAULTS, parse_duration
from publisher.wording import DURATION_UNITS
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DOCS = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)
CONFIG = (REPO / "config.yaml").read_text(encoding="utf-8")


def config_keys(table: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in table.items():
        keys += config_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return keys


def commands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_config_key_is_in_the_docs_and_config_yaml():
    for key in config_keys(DEFAULTS):
        assert f"`{key}`" in DOCS, key
        assert f"{key.rsplit('.', 1)[-1]}:" in CONFIG, key


def test_every_command_and_flag_is_in_the_docs():
    for name, parser in commands().items():
        assert f"publisher {name}" in DOCS, name
        assert parser.description, name
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert flag in DOCS, (name, flag)


def test_the_readme_is_short_and_links_every_docs_page():
    assert len(README.splitlines()) <= 200
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in README, page.name


def test_the_duration_units_documented_are_exactly_the_ones_accepted():
    sentence = re.search(r"Durations are a number with a unit: (.*?)\(", DOCS, re.S)
    assert sentence, "docs/configuration.md explains durations"
    documented = set(re.findall(r"`\d+([a-z]+)`", sentence.group(1)))
    assert documented == {unit for unit, _ in DURATION_UNITS}
    for unit, seconds in DURATION_UNITS:
        assert parse_duration(f"2{unit}") == 2 * seconds
    assert parse_duration("2w") is None and parse_duration("2 minutes") is None
