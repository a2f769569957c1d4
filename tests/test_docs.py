"""The documentation (README.md and docs/*.md) covers every command, flag and configuration key."""

from __future__ import annotations

import argparse

from publisher.cli import _parser
from publisher.config import DEFAULTS
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
