"""Configuration: one table of defaults, then the YAML file, then command-line overrides, then one
validation pass. Relative paths resolve against the folder of the config file (command-line paths against
the current directory, as a shell user expects)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import yaml

from publisher.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "store": "seeds",
    "output": "feeds",
    "state": ".publisher",
    "include": [],
    "exclude": [],
    "assets_base_url": None,
    "max_items": 50,
    "site": {
        "title": "Publisher feeds",
        "description": None,
        "base_url": "http://localhost:8000/",
        "home": None,
        "language": "en",
        "author": None,
        "icon": None,
        "logo": None,
    },
}


@dataclass(frozen=True)
class Author:
    name: str
    email: str | None = None
    uri: str | None = None


@dataclass(frozen=True)
class SiteConfig:
    title: str
    description: str
    base_url: str  # public URL of the output folder, always ending in "/"
    home: str
    language: str | None
    author: Author | None
    icon: str | None
    logo: str | None


@dataclass(frozen=True)
class Config:
    source: Path | None
    store: Path
    output: Path
    state: Path
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    assets_base_url: str | None
    max_items: int
    site: SiteConfig


def load_config(path: Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read `path`, apply `overrides` (already-resolved values from the command line) and validate."""
    raw = _read_yaml(path)
    merged = _merge(DEFAULTS, raw, str(path), prefix="")
    for key, value in (overrides or {}).items():
        if value is not None:
            merged[key] = value
    return _validate(merged, path)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def _merge(defaults: Mapping[str, Any], given: Mapping[str, Any], file: str, prefix: str) -> dict[str, Any]:
    """Overlay `given` on `defaults`, refusing keys the defaults do not know (typos must not pass)."""
    merged = dict(defaults)
    for key, value in given.items():
        name = f"{prefix}{key}"
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise ConfigError(f"{file}: {name}: unknown key (known keys here: {known})")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{file}: {name}: expected a mapping, got {_describe(value)}")
            merged[key] = _merge(defaults[key], value, file, prefix=f"{name}.")
        else:
            merged[key] = value
    return merged


def _validate(values: dict[str, Any], path: Path) -> Config:
    file = str(path)
    base = path.parent

    def check(key: str, test: Callable[[Any], bool], expected: str) -> Any:
        value = _lookup(values, key)
        if not test(value):
            raise ConfigError(f"{file}: {key}: expected {expected}, got {_describe(value)}")
        return value

    def folder(key: str) -> Path:
        value = check(key, lambda v: isinstance(v, (str, Path)) and str(v).strip() != "", "a folder path")
        return (base / Path(value).expanduser()).resolve()

    def optional_text(key: str) -> str | None:
        return check(key, lambda v: v is None or isinstance(v, str), "text")

    def optional_url(key: str) -> str | None:
        value = check(key, lambda v: v is None or _is_http_url(v), "an absolute http(s) URL")
        return value

    def patterns(key: str) -> tuple[str, ...]:
        value = check(key, lambda v: isinstance(v, list) and all(isinstance(p, str) and p for p in v),
                      "a list of glob patterns")
        return tuple(value)

    store, output, state = folder("store"), folder("output"), folder("state")
    if output == store:
        raise ConfigError(f"{file}: output: must not be the store folder itself ({store})")
    if _is_within(state, output):
        raise ConfigError(f"{file}: state: must not be inside the output folder {output}; "
                          "it holds locks and caches that a web server must not serve")
    if _is_within(output, state):
        raise ConfigError(f"{file}: output: must not be inside the state folder {state}")
    max_items = check("max_items", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
                      "a whole number above 0")

    base_url = check("site.base_url", _is_http_url, "the absolute http(s) URL where the output folder is served")
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    title = check("site.title", lambda v: isinstance(v, str) and v.strip() != "", "a non-empty title")
    site = SiteConfig(
        title=title,
        description=optional_text("site.description") or title,
        base_url=base_url,
        home=optional_url("site.home") or base_url,
        language=optional_text("site.language"),
        author=_author(values["site"]["author"], file),
        icon=optional_url("site.icon"),
        logo=optional_url("site.logo"),
    )
    return Config(
        source=path,
        store=store,
        output=output,
        state=state,
        include=patterns("include"),
        exclude=patterns("exclude"),
        assets_base_url=optional_url("assets_base_url"),
        max_items=max_items,
        site=site,
    )


def _author(value: Any, file: str) -> Author | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        return Author(name=value.strip())
    if isinstance(value, dict):
        unknown = set(value) - {"name", "email", "uri"}
        if unknown:
            raise ConfigError(f"{file}: site.author.{sorted(unknown)[0]}: unknown key (known keys here: "
                              "email, name, uri)")
        name, email, uri = value.get("name"), value.get("email"), value.get("uri")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{file}: site.author.name: expected a name, got {_describe(name)}")
        if email is not None and not (isinstance(email, str) and "@" in email):
            raise ConfigError(f"{file}: site.author.email: expected an e-mail address, got {_describe(email)}")
        if uri is not None and not _is_http_url(uri):
            raise ConfigError(f"{file}: site.author.uri: expected an absolute http(s) URL, got {_describe(uri)}")
        return Author(name=name.strip(), email=email, uri=uri)
    raise ConfigError(f"{file}: site.author: expected a name or a mapping with name, email, uri; "
                      f"got {_describe(value)}")


def _lookup(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__}"
    return repr(value)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
