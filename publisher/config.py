"""Configuration: one table of defaults, then the YAML file, then command-line overrides, then one
validation pass. Relative paths resolve against the folder of the config file (command-line paths against
the current directory, as a shell user expects)."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from publisher.errors import ConfigError
from publisher.running.schedule import cron_trigger, interval_seconds
from publisher.stages.s3 import S3Location, is_s3_url, parse_location
from publisher.stages.xmltext import is_xml_text
from publisher.wording import DURATION_UNITS

logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "store": "seeds",
    "output": "feeds",
    "state": ".publisher",
    "include": [],
    "exclude": [],
    "assets_base_url": None,
    "max_items": 50,
    "max_bytes": "512KiB",
    "content": "full",
    "formats": ["atom", "rss", "json"],
    "families": ["all", "topics"],
    "curated": [],
    "archives": False,
    "precompress": True,
    "lock_timeout": "60s",
    "schedule": {
        "every": "15m",
        "cron": None,
        "timezone": "UTC",
        "misfire_grace": "5m",
    },
    "watch": {
        "enabled": True,
        "debounce": "500ms",
        "max_delay": "5s",
    },
    "websub": {
        "hubs": [],
    },
    "enclosures": {
        "probe": False,
        "max_age": "7d",
        "max_probes": 200,
        "timeout": "10s",
        "workers": 4,
        "per_host": 2,
    },
    "s3": {
        "endpoint_url": None,
        "region": None,
        "profile": None,
        "cache_control": None,  # derived from the schedule
        "max_deletes": 256,
        "workers": 8,
        "lease": True,
    },
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
class ScheduleConfig:
    every: float | None  # seconds between builds; None when `cron` is set
    cron: str | None  # a crontab line (five fields, weekday names or cron's Sunday = 0 numbering)
    timezone: str
    misfire_grace: float  # seconds


@dataclass(frozen=True)
class WatchConfig:
    """`publisher run` watching the store (watch.py): a build starts once `debounce` seconds passed without
    a further change, or at the latest `max_delay` seconds after the first one."""

    enabled: bool
    debounce: float  # seconds
    max_delay: float  # seconds


@dataclass(frozen=True)
class WebSubConfig:
    hubs: tuple[str, ...]


@dataclass(frozen=True)
class EnclosureConfig:
    probe: bool
    max_age: float  # seconds a successful probe stays fresh
    max_probes: int  # new probes per build
    timeout: float  # seconds, connect and read
    workers: int
    per_host: int


@dataclass(frozen=True)
class S3Config:
    """How to reach S3-compatible storage for `s3://` locations (credentials: boto3's standard chain)."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    cache_control: str = "public, max-age=900, stale-while-revalidate=86400"
    max_deletes: int = 256
    workers: int = 8
    lease: bool = True


FORMAT_NAMES = ("atom", "rss", "json")
CONTENT_MODES = ("full", "summary")
# Served copies may be this much older than the build that replaced them while a cache revalidates them.
STALE_WHILE_REVALIDATE = 86400


FAMILY_NAMES = ("all", "topics", "providers")
CURATED_KEYS = ("name", "title", "where", "max_items")
WHERE_KEYS = ("min_quality", "min_heat", "types", "topics", "providers")


@dataclass(frozen=True)
class CuratedFeed:
    name: str  # the file name under curated/
    title: str
    where: tuple[tuple[str, Any], ...]  # (condition, value) in WHERE_KEYS order; lists as tuples
    max_items: int | None  # None: the top-level max_items


@dataclass(frozen=True)
class Config:
    source: Path | None
    store: Path  # the folder read; for a store in a bucket, its local mirror in the state folder
    output: Path | S3Location
    state: Path
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    assets_base_url: str | None
    max_items: int
    site: SiteConfig
    formats: tuple[str, ...] = ("atom", "rss", "json")
    families: tuple[str, ...] = ("all", "topics")
    curated: tuple[CuratedFeed, ...] = ()
    max_bytes: int = 512 * 1024  # every feed file, uncompressed, stays at or under this many bytes
    content: str = "full"  # "full": article bodies are published; "summary": excerpts only
    archives: bool = False
    precompress: bool = True
    lock_timeout: float = 60.0
    schedule: ScheduleConfig = ScheduleConfig(every=900.0, cron=None, timezone="UTC", misfire_grace=300.0)
    websub: WebSubConfig = WebSubConfig(hubs=())
    watch: WatchConfig = WatchConfig(enabled=True, debounce=0.5, max_delay=5.0)
    enclosures: EnclosureConfig = EnclosureConfig(probe=False, max_age=7 * 86400.0, max_probes=200,
                                                  timeout=10.0, workers=4, per_host=2)
    s3: S3Config = S3Config()
    store_bucket: S3Location | None = None  # `store: s3://...`: the bucket mirrored into `store`


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
        value: str | None = check(key, lambda v: v is None or is_xml_text(v), "text without control characters")
        return value

    def optional_url(key: str) -> str | None:
        value: str | None = check(key, lambda v: v is None or _is_http_url(v), "an absolute http(s) URL")
        return value

    def patterns(key: str) -> tuple[str, ...]:
        value = check(key, lambda v: isinstance(v, list) and all(isinstance(p, str) and p for p in v),
                      "a list of glob patterns")
        return tuple(value)

    def location(key: str) -> S3Location | None:
        value = _lookup(values, key)
        if not is_s3_url(value):
            return None
        parsed = parse_location(value)
        if parsed is None:
            raise ConfigError(f"{file}: {key}: expected s3://bucket/prefix/ with a valid bucket name and a "
                              f"prefix without empty, '.' or '..' parts, got {_describe(value)}")
        return parsed

    state = folder("state")
    store_bucket = location("store")
    store = mirror_folder(state, store_bucket) if store_bucket is not None else folder("store")
    output: Path | S3Location
    output_bucket = location("output")
    output = output_bucket if output_bucket is not None else folder("output")
    if isinstance(output, Path):
        if output == store:
            raise ConfigError(f"{file}: output: must not be the store folder itself ({store})")
        if _is_within(state, output):
            raise ConfigError(f"{file}: state: must not be inside the output folder {output}; "
                              "it holds locks and caches that a web server must not serve")
        if _is_within(output, state):
            raise ConfigError(f"{file}: output: must not be inside the state folder {state}")
    elif store_bucket is not None and store_bucket.bucket == output.bucket and (
            store_bucket.prefix.startswith(output.prefix) or output.prefix.startswith(store_bucket.prefix)):
        raise ConfigError(f"{file}: output: {output} must not overlap the store {store_bucket}")
    max_items = check("max_items", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
                      "a whole number above 0")

    max_bytes = check("max_bytes", lambda v: (parse_size(v) or 0) >= MIN_BYTES,
                      "a size of at least 1KiB, like 512KiB, 2MiB or a number of bytes")

    def duration(key: str) -> float:
        seconds = parse_duration(check(key, lambda v: parse_duration(v) is not None,
                                       "a duration like 30s, 15m, 2h or 7d"))
        assert seconds is not None  # check() refused what parse_duration() cannot read
        return seconds

    def flag(key: str) -> bool:
        value: bool = check(key, lambda v: isinstance(v, bool), "true or false")
        return value

    def count(key: str) -> int:
        value: int = check(key, lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
                           "a whole number above 0")
        return value

    formats = _formats(values["formats"], file)
    families = check("families", lambda v: isinstance(v, list) and all(f in FAMILY_NAMES for f in v),
                     f"a list of feed families from {', '.join(FAMILY_NAMES)}")
    schedule = _schedule(values["schedule"], file, duration)
    watch = _watch(duration, flag, file)
    if store_bucket is not None:  # a bucket sends no change events: its mirror changes only while building
        watch = WatchConfig(enabled=False, debounce=watch.debounce, max_delay=watch.max_delay)
    hubs = _hubs(values["websub"]["hubs"], file)
    enclosures = EnclosureConfig(
        probe=flag("enclosures.probe"),
        max_age=duration("enclosures.max_age"),
        max_probes=check("enclosures.max_probes",
                         lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                         "a whole number (0 or more)"),
        timeout=duration("enclosures.timeout"),
        workers=count("enclosures.workers"),
        per_host=count("enclosures.per_host"),
    )

    s3 = _s3(values, check, count, flag, optional_text, schedule)
    base_url = check("site.base_url", _is_http_url, "the absolute http(s) URL where the output folder is served")
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    title = check("site.title", lambda v: is_xml_text(v) and v.strip() != "",
                  "a non-empty title without control characters")
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
        formats=tuple(dict.fromkeys(formats)),
        families=tuple(dict.fromkeys(families)),
        curated=_curated(values["curated"], file),
        max_bytes=parse_size(max_bytes) or 0,
        content=check("content", lambda v: v in CONTENT_MODES, "full or summary"),
        archives=flag("archives"),
        precompress=flag("precompress"),
        lock_timeout=duration("lock_timeout"),
        schedule=schedule,
        websub=WebSubConfig(hubs=tuple(hubs)),
        watch=watch,
        enclosures=enclosures,
        s3=s3,
        store_bucket=store_bucket,
    )


# The units are wording.DURATION_UNITS, the ones messages use and the documentation lists (a test checks);
# the longest first, so that "ms" is not read as minutes.
_UNIT_SECONDS: dict[str | None, float] = {None: 1, **dict(DURATION_UNITS)}
_UNITS = "|".join(sorted((unit for unit, _ in DURATION_UNITS), key=len, reverse=True))
_DURATION = re.compile(rf"^\s*(\d+(?:\.\d+)?)\s*({_UNITS})?\s*$")


def parse_duration(value: Any) -> float | None:
    """Seconds from "500ms", "30s", "15m", "2h", "7d" or a plain number of seconds; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _DURATION.match(value)
    if not match:
        return None
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _formats(value: Any, file: str) -> list[str]:
    """The formats, each one named when it is not known."""
    known = ", ".join(FORMAT_NAMES)
    if not isinstance(value, list):
        raise ConfigError(f"{file}: formats: expected a list of formats from {known}, got {_describe(value)}")
    if not value:
        raise ConfigError(f"{file}: formats: empty (give at least one of {known})")
    for name in value:
        if name not in FORMAT_NAMES:
            raise ConfigError(f"{file}: formats: unknown format {name!r} (known: {known})")
    return value


def _hubs(value: Any, file: str) -> list[str]:
    """The WebSub hubs, each one named by its index when it is not an http(s) URL."""
    if not isinstance(value, list):
        raise ConfigError(f"{file}: websub.hubs: expected a list of http(s) hub URLs, got {_describe(value)}")
    for index, hub in enumerate(value):
        if not _is_http_url(hub):
            raise ConfigError(f"{file}: websub.hubs[{index}]: {hub!r} is not an http(s) URL")
    return value


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(KiB|MiB)?\s*$")
_UNIT_BYTES = {None: 1, "KiB": 1024, "MiB": 1024 * 1024}
# Below this not even an empty feed fits: a budget that small is a typo (512 for 512KiB).
MIN_BYTES = 1024


def parse_size(value: Any) -> int | None:
    """Bytes from a whole number of bytes or a number with KiB or MiB ("512KiB", "1.5MiB"); None when it is
    not one. Fractions of a byte are dropped."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _SIZE.match(value)
    if not match or (match.group(2) is None and "." in match.group(1)):
        return None
    return int(float(match.group(1)) * _UNIT_BYTES[match.group(2)])


def _schedule(raw: dict[str, Any], file: str, duration: Callable[[str], float]) -> ScheduleConfig:
    every, cron = raw.get("every"), raw.get("cron")
    if cron is not None:
        if not isinstance(cron, str) or len(cron.split()) != 5:
            raise ConfigError(f"{file}: schedule.cron: expected a crontab line with five fields like "
                              f"'*/15 * * * *', got {_describe(cron)}")
        try:
            cron_trigger(cron, "UTC")
        except ValueError as exc:
            raise ConfigError(f"{file}: schedule.cron: {exc} in {cron!r}") from None
        every_seconds = None
    elif every is None:
        raise ConfigError(f"{file}: schedule: expected `every` (like 15m) or `cron` (like '*/15 * * * *')")
    else:
        every_seconds = duration("schedule.every")
        if every_seconds <= 0:
            raise ConfigError(f"{file}: schedule.every: expected a duration above 0, got {_describe(every)}")
    timezone_name = raw.get("timezone")
    try:
        ZoneInfo(timezone_name) if isinstance(timezone_name, str) else None
    except (ZoneInfoNotFoundError, ValueError):
        timezone_name = None
    if not isinstance(timezone_name, str):
        raise ConfigError(f"{file}: schedule.timezone: expected a time zone name like UTC or Europe/Paris, "
                          f"got {_describe(raw.get('timezone'))}")
    return ScheduleConfig(every=every_seconds, cron=cron, timezone=timezone_name,
                          misfire_grace=duration("schedule.misfire_grace"))


def _watch(duration: Callable[[str], float], flag: Callable[[str], bool], file: str) -> WatchConfig:
    debounce, max_delay = duration("watch.debounce"), duration("watch.max_delay")
    if max_delay <= 0 or max_delay < debounce:
        raise ConfigError(f"{file}: watch.max_delay: expected a duration above 0 and not below watch.debounce "
                          f"({debounce:g}s), got {max_delay:g}s")
    return WatchConfig(enabled=flag("watch.enabled"), debounce=debounce, max_delay=max_delay)


def _s3(values: dict[str, Any], check: Callable[..., Any], count: Callable[[str], int],
        flag: Callable[[str], bool], optional_text: Callable[[str], str | None],
        schedule: ScheduleConfig) -> S3Config:
    def one_line(value: Any) -> bool:
        return value is None or (isinstance(value, str) and value.strip() != "" and value.isprintable())

    def header(key: str) -> str | None:
        value: str | None = check(key, one_line, "an HTTP header value on one line")
        return value

    def name(key: str) -> str | None:
        value: str | None = check(key, one_line, "a name")
        return value

    cache_control = header("s3.cache_control")
    return S3Config(
        endpoint_url=check("s3.endpoint_url", lambda v: v is None or _is_http_url(v), "an absolute http(s) URL"),
        region=name("s3.region"),
        profile=name("s3.profile"),
        cache_control=cache_control if cache_control is not None else default_cache_control(schedule),
        max_deletes=check("s3.max_deletes", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                          "a whole number (0 or more)"),
        workers=count("s3.workers"),
        lease=flag("s3.lease"),
    )


def default_cache_control(schedule: ScheduleConfig) -> str:
    """What deploy/nginx.conf sends: a reader may keep a copy for one build interval, and a cache may serve
    it while it revalidates for a day after that."""
    return f"public, max-age={round(interval_seconds(schedule))}, stale-while-revalidate={STALE_WHILE_REVALIDATE}"


def mirror_folder(state: Path, bucket: S3Location) -> Path:
    """Where the objects of a store bucket are mirrored (one folder per bucket and prefix)."""
    digest = hashlib.sha256(str(bucket).encode("utf-8")).hexdigest()[:16]
    return state / "s3-store" / digest


def _curated(value: Any, file: str) -> tuple[CuratedFeed, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{file}: curated: expected a list of feeds (name, title, where), got {_describe(value)}")
    feeds: list[CuratedFeed] = []
    for index, item in enumerate(value):
        key = f"curated[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{file}: {key}: expected a mapping with name, title, where, got {_describe(item)}")
        _known_keys(item, CURATED_KEYS, key, file)
        name, title, max_items = item.get("name"), item.get("title"), item.get("max_items")
        if not (isinstance(name, str) and re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", name) and len(name) <= 80):
            raise ConfigError(f"{file}: {key}.name: expected a file name of lower-case letters, digits and "
                              f"single hyphens, like top-stories, got {_describe(name)}")
        if any(feed.name == name for feed in feeds):
            raise ConfigError(f"{file}: {key}.name: {name!r} names another curated feed already")
        if not (isinstance(title, str) and is_xml_text(title) and title.strip()):
            raise ConfigError(f"{file}: {key}.title: expected a non-empty title without control characters, "
                              f"got {_describe(title)}")
        if max_items is not None and not (isinstance(max_items, int) and not isinstance(max_items, bool)
                                          and max_items > 0):
            raise ConfigError(f"{file}: {key}.max_items: expected a whole number above 0, got "
                              f"{_describe(max_items)}")
        feeds.append(CuratedFeed(name, title.strip(), _where(item.get("where"), f"{key}.where", file), max_items))
    return tuple(feeds)


def _where(value: Any, key: str, file: str) -> tuple[tuple[str, Any], ...]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{file}: {key}: expected a mapping with at least one of {', '.join(WHERE_KEYS)}, "
                          f"got {_describe(value)}")
    _known_keys(value, WHERE_KEYS, key, file)
    conditions: list[tuple[str, Any]] = []
    for name in WHERE_KEYS:
        if name not in value:
            continue
        given = value[name]
        if name.startswith("min_"):
            if isinstance(given, bool) or not isinstance(given, (int, float)):
                raise ConfigError(f"{file}: {key}.{name}: expected a number, got {_describe(given)}")
        elif isinstance(given, str):
            given = [given]
        elif not (isinstance(given, list) and given
                  and all(isinstance(item, str) and item.strip() for item in given)):
            raise ConfigError(f"{file}: {key}.{name}: expected a non-empty list of names, got {_describe(given)}")
        conditions.append((name, tuple(given) if isinstance(given, list) else given))
    return tuple(conditions)


def _known_keys(value: Mapping[str, Any], known: tuple[str, ...], key: str, file: str) -> None:
    unknown = sorted(str(name) for name in value if name not in known)
    if unknown:
        raise ConfigError(f"{file}: {key}.{unknown[0]}: unknown key (known keys here: {', '.join(sorted(known))})")


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
