"""How numbers read in messages for people: counts with the right singular or plural, durations in the
units the config file uses, and many failures of one cause told in one line."""

from __future__ import annotations

from collections.abc import Iterable

# The units a duration is written in, largest first (config.parse_duration accepts exactly these).
DURATION_UNITS: tuple[tuple[str, float], ...] = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1), ("ms", 0.001))


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`1 file`, `2 files`, `0 files`; `plural_form` for irregular words (`1 entry`, `2 entries`)."""
    return f"{count} {singular if count == 1 else plural_form or singular + 's'}"


def duration(seconds: float) -> str:
    """A duration as a config file would say it: 900 -> `15m`, 90 -> `90s`, 7200 -> `2h`, 0.5 -> `500ms`,
    1.5 -> `1.5s`."""
    for unit, size in DURATION_UNITS:
        count = seconds / size
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"


def by_cause(failures: Iterable[tuple[str, str]], verb: str, noun: str = "file") -> list[str]:
    """One line per distinct cause, in order of first appearance, from (path, cause) pairs:
    `46 files not written: No space left on device (first: topics/ai.rss)`."""
    grouped: dict[str, list[str]] = {}
    for path, cause in failures:
        grouped.setdefault(cause, []).append(path)
    return [f"{plural(len(paths), noun)} {verb}: {cause} ({'first: ' if len(paths) > 1 else ''}{paths[0]})"
            for cause, paths in grouped.items()]
