"""Feed selection: decide which articles are live and which feeds exist, and what each feed lists.

Feed families (the overall feed, one feed per topic) are rows of one table driving one mechanism: a family
says which labels an article belongs to, where the feed's files go and how it is titled.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable

from publisher.articles import Article

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    name: str
    path: str  # output path without extension; "{slug}" stands for the label's slug
    title: str  # "{site}" is the site title, "{label}" the label
    labels: Callable[[Article], Iterable[str]]


FAMILIES: tuple[Family, ...] = (
    Family(name="all", path="all", title="{site}", labels=lambda article: ("",)),
    Family(name="topics", path="topics/{slug}", title="{site}: {label}", labels=lambda article: article.topics),
)


@dataclass(frozen=True)
class FeedSpec:
    family: str
    path: str  # relative to the output folder, without extension: "all", "topics/ai-in-healthcare"
    title: str
    label: str | None  # the topic name for a topic feed


@dataclass(frozen=True)
class Feed:
    spec: FeedSpec
    entries: tuple[Article, ...]  # newest first, at most max_items
    total: int  # how many live articles belong to the feed, before max_items

    @property
    def updated(self) -> datetime | None:
        """The newest entry date in the feed: never the build time, so an unchanged feed keeps its bytes."""
        return max((entry.updated for entry in self.entries), default=None)


@dataclass(frozen=True)
class Live:
    """The articles that go into feeds now, and what was held back."""

    articles: tuple[Article, ...]
    unpublished: int
    scheduled: int
    duplicates: int
    next_due: datetime | None  # when the earliest scheduled article falls due


def live_articles(articles: Iterable[Article], now: datetime) -> Live:
    """Collapse duplicate URLs (the one updated last wins), then drop unpublished and future articles."""
    by_url: dict[str, list[Article]] = defaultdict(list)
    for article in articles:
        by_url[article.canonical_url].append(article)
    kept: list[Article] = []
    unpublished = scheduled = duplicates = 0
    next_due: datetime | None = None
    for url, group in by_url.items():
        winner = max(group, key=lambda a: (a.updated, a.source))
        if len(group) > 1:
            duplicates += len(group) - 1
            losers = ", ".join(sorted(a.source for a in group if a is not winner))
            logger.info("%s and %s have the same URL %s; publishing %s (updated last)",
                        winner.source, losers, url, winner.source)
        if not winner.is_published:
            unpublished += 1
            logger.debug("%s: not published (published: false)", winner.source)
        elif winner.published > now:
            scheduled += 1
            next_due = min(next_due or winner.published, winner.published)
            logger.debug("%s: held back until %s", winner.source, winner.published.isoformat())
        else:
            kept.append(winner)
    kept.sort(key=lambda a: a.source)
    return Live(tuple(kept), unpublished, scheduled, duplicates, next_due)


def select_feeds(articles: Iterable[Article], site_title: str, max_items: int,
                 families: tuple[Family, ...] = FAMILIES) -> list[Feed]:
    """Every feed of every family with its newest `max_items` entries, ordered by output path."""
    articles = list(articles)
    feeds: list[Feed] = []
    for family in families:
        members: dict[str, list[Article]] = defaultdict(list)
        spellings: dict[str, Counter[str]] = defaultdict(Counter)
        for article in articles:
            for label in family.labels(article):
                key = topic_key(label)
                members[key].append(article)
                spellings[key][label] += 1
        names = {key: _display_name(counts) for key, counts in spellings.items()}
        slugs = assign_slugs(names)
        for key, group in members.items():
            label = names[key]
            spec = FeedSpec(
                family=family.name,
                path=family.path.format(slug=slugs[key]),
                title=family.title.format(site=site_title, label=label),
                label=label or None,
            )
            entries = heapq.nsmallest(max_items, group, key=entry_order)
            feeds.append(Feed(spec=spec, entries=tuple(entries), total=len(group)))
    if not any(feed.spec.family == families[0].name for feed in feeds):
        # The overall feed always exists, even empty: subscribers must never get a 404 for it.
        first = families[0]
        feeds.append(Feed(FeedSpec(first.name, first.path.format(slug=""), first.title.format(
            site=site_title, label=""), None), (), 0))
    return sorted(feeds, key=lambda feed: feed.spec.path)


def entry_order(article: Article) -> tuple[float, str]:
    """Newest first by published date, ties broken by id."""
    return (-article.published.timestamp(), article.id)


def topic_key(name: str) -> str:
    """Topics differing only in case or spacing ("Machine Learning", "machine  learning") are one topic."""
    return " ".join(name.casefold().split())


def _display_name(spellings: Counter[str]) -> str:
    return min(spellings, key=lambda spelling: (-spellings[spelling], spelling))


def slugify(name: str) -> str:
    """A safe file name: lower-case ASCII letters, digits and "-", accents folded. A name with nothing
    left (Chinese, emoji) gets a stable slug derived from a hash of the name."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")[:80].rstrip("-")
    return slug or f"topic-{_short_hash(name)}"


def assign_slugs(names: dict[str, str]) -> dict[str, str]:
    """Slug per topic key. Distinct topics whose names fold to one slug ("C++" and "C#" both give "c"): the
    key that sorts first keeps the plain slug, each other one gets "-" and a hash of its key appended."""
    by_slug: dict[str, list[str]] = defaultdict(list)
    for key, name in names.items():
        by_slug[slugify(name) if name else ""].append(key)
    slugs: dict[str, str] = {}
    for slug, keys in by_slug.items():
        first, *others = sorted(keys)
        slugs[first] = slug
        for key in others:
            slugs[key] = f"{slug}-{_short_hash(key)}"
    return slugs


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
