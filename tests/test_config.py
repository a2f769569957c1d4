"""Configuration: defaults, the file, overrides, and errors that name the key and the file."""

from __future__ import annotations

import pytest

from publisher.config import DEFAULTS, load_config
from publisher.errors import ConfigError
from tests.conftest import REPO, write_config


def test_repository_config_loads_and_resolves_against_its_folder():
    config = load_config(REPO / "config.yaml")
    assert config.store == REPO / "seeds" and config.output == REPO / "feeds"
    assert config.state == REPO / ".publisher"
    assert config.site.base_url.endswith("/") and config.max_items == 50


def test_empty_file_gives_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("")
    config = load_config(tmp_path / "c.yaml")
    assert config.store == tmp_path / "seeds" and config.max_items == DEFAULTS["max_items"]
    assert config.site.home == config.site.base_url and config.site.description == config.site.title


def test_paths_are_relative_to_the_config_file_not_the_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "etc"
    sub.mkdir()
    path = write_config(sub, store="../articles")
    monkeypatch.chdir("/")
    assert load_config(path).store == tmp_path / "articles"


def test_overrides_win(tmp_path):
    config = load_config(write_config(tmp_path), {"output": tmp_path / "elsewhere", "store": None})
    assert config.output == tmp_path / "elsewhere" and config.store == tmp_path / "store"


@pytest.mark.parametrize("text, words", [
    ("stor: seeds\n", "stor: unknown key"),
    ("site:\n  titel: x\n", "site.titel: unknown key"),
    ("max_items: many\n", "max_items: expected a whole number above 0, got 'many'"),
    ("max_items: 0\n", "max_items: expected a whole number above 0"),
    ("max_items: true\n", "max_items: expected a whole number"),
    ("site: [a]\n", "site: expected a mapping"),
    ("site:\n  base_url: feeds.example.org\n", "site.base_url: expected the absolute http(s) URL"),
    ("include: '*.md'\n", "include: expected a list of glob patterns"),
    ("assets_base_url: /assets\n", "assets_base_url: expected an absolute http(s) URL"),
    ("site:\n  author: {name: A, mail: x}\n", "site.author.mail: unknown key"),
    ("site:\n  author: {name: A, email: nope}\n", "site.author.email: expected an e-mail address"),
    ("state: feeds/state\n", "state: must not be inside the output folder"),
    ("output: seeds\n", "output: must not be the store folder"),
    ("- a\n", "expected a mapping of settings"),
    ('site:\n  title: "Bell\\a"\n', "site.title: expected a non-empty title without control characters"),
    ('site:\n  description: "x\\x1b[31m"\n', "site.description: expected text without control characters"),
    ("a: [\n", "not valid YAML"),
])
def test_invalid_config_names_the_key_and_file(tmp_path, text, words):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: ") and words in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config.yaml: config file not found"):
        load_config(tmp_path / "config.yaml")


def test_author_as_name_or_mapping(tmp_path):
    assert load_config(write_config(tmp_path, site={"author": "Ann"})).site.author.name == "Ann"
    author = load_config(write_config(tmp_path, site={"author": {"name": "Ann", "email": "a@x.org"}})).site.author
    assert (author.name, author.email, author.uri) == ("Ann", "a@x.org", None)


def test_base_url_gets_a_trailing_slash(tmp_path):
    config = load_config(write_config(tmp_path, site={"base_url": "https://x.example/feeds"}))
    assert config.site.base_url == "https://x.example/feeds/"


@pytest.mark.parametrize("text, words", [
    ("formats: [atom, rdf]\n", "formats: unknown format 'rdf' (known: atom, rss, json)"),
    ("formats: []\n", "formats: empty"),
    ("formats: atom\n", "formats: expected a list of formats from atom, rss, json, got 'atom'"),
    ("precompress: yes please\n", "precompress: expected true or false"),
    ("lock_timeout: soon\n", "lock_timeout: expected a duration like 30s"),
    ("schedule:\n  every: often\n", "schedule.every: expected a duration like 30s, 15m, 2h or 7d, got 'often'"),
    ("schedule:\n  every: 0s\n", "schedule.every: expected a duration above 0"),
    ("schedule:\n  cron: '* * *'\n", "schedule.cron: expected a crontab line with five fields"),
    ("schedule:\n  every: null\n", "schedule: expected `every`"),
    ("schedule:\n  timezone: Mars/Olympus\n", "schedule.timezone: expected a time zone name"),
    ("websub:\n  hubs: [hub.example.org]\n", "websub.hubs[0]: 'hub.example.org' is not an http(s) URL"),
    ("websub:\n  hubs: ['https://hub.example.org/', 'ftp://x']\n", "websub.hubs[1]: 'ftp://x' is not an http(s) URL"),
    ("websub:\n  hubs: https://hub.example.org/\n", "websub.hubs: expected a list of http(s) hub URLs"),
    ("enclosures:\n  workers: 0\n", "enclosures.workers: expected a whole number above 0"),
    ("enclosures:\n  max_probes: -1\n", "enclosures.max_probes: expected a whole number (0 or more)"),
    ("enclosures:\n  probe: 1\n", "enclosures.probe: expected true or false"),
    ("schedule:\n  cron: '0 9 * * 8'\n", "schedule.cron: day of week: 8 is not 0-7"),
])
def test_invalid_operational_settings(tmp_path, text, words):
    test_invalid_config_names_the_key_and_file(tmp_path, text, words)


@pytest.mark.parametrize("text, every", [("2h", 7200.0), ("90", 90.0), ("1.5m", 90.0), ("1s", 1.0)])
def test_durations(tmp_path, text, every):
    assert load_config(write_config(tmp_path, schedule={"every": text})).schedule.every == every


def test_cron_wins_over_every(tmp_path):
    schedule = load_config(write_config(tmp_path, schedule={"cron": "*/5 * * * 1-5"})).schedule
    assert (schedule.every, schedule.cron) == (None, "*/5 * * * 1-5")
