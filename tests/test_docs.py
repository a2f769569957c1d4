"""The README documents every command, flag and configuration key."""

from __future__ import annotations

import argparse

from publisher.cli import _parser
from publisher.config import DEFAULTS
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
CONFIG = (REPO / "config.yaml").read_text(encoding="utf-8")


def config_keys(table: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in table.items():
        keys += config_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return keys


def commands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_config_key_is_in_the_readme_and_config_yaml():
    for key in config_keys(DEFAULTS):
        assert f"`{key}`" in README, key
        assert f"{key.rsplit('.', 1)[-1]}:" in CONFIG, key


def test_every_command_and_flag_is_in_the_readme():
    for name, parser in commands().items():
        assert f"publisher {name}" in README, name
        assert parser.description, name
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert flag in README, (name, flag)
