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
from typing import Callable, Iterable, Protocol, Sequence

from publisher.articles import Article

logger = logging.getLogger(__name__)


class Entry(Protocol):
    """What selection reads of an article: an Article, or the catalog's small summary of one."""

    @property
    def source(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def published(self) -> datetime: ...
    @property
    def updated(self) -> datetime: ...
    @property
    def is_published(self) -> bool: ...
    @property
    def topics(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Family:
    name: str
    path: str  # output path without extension; "{slug}" stands for the label's slug
    title: str  # "{site}" is the site title, "{label}" the label
    labels: Callable[[Entry], Iterable[str]]


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

    articles: Sequence[Entry]  # in source order
    unpublished: int
    scheduled: int
    duplicates: int
    next_due: datetime | None  # when the earliest scheduled article falls due


def live_articles(articles: Iterable[Entry], now: datetime) -> Live:
    """Collapse duplicate URLs (the one updated last wins), then drop unpublished and future articles.

    Articles with the same canonical URL have the same entry id (it is derived from that URL), so the id
    is what duplicates are found by: the catalog's summaries do not carry the URL."""
    winners: dict[str, Entry] = {}
    groups: dict[str, list[Entry]] = {}  # only the ids that more than one file has
    for article in articles:
        held = winners.get(article.id)
        if held is None:
            winners[article.id] = article
            continue
        groups.setdefault(article.id, [held]).append(article)
        if (article.updated, article.source) > (held.updated, held.source):
            winners[article.id] = article
    duplicates = 0
    for entry_id, group in groups.items():
        winner = winners[entry_id]
        duplicates += len(group) - 1
        losers = ", ".join(sorted(a.source for a in group if a is not winner))
        logger.info("%s and %s have the same URL (entry %s); publishing %s (updated last)",
                    winner.source, losers, entry_id, winner.source)
    kept: list[Entry] = []
    unpublished = scheduled = 0
    next_due: datetime | None = None
    for winner in winners.values():
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


def select_feeds(articles: Iterable[Entry], site_title: str, max_items: int,
                 families: tuple[Family, ...] = FAMILIES) -> list[Feed]:
    """Every feed of every family with its newest `max_items` entries, ordered by output path.

    One pass over the articles, newest first, where each feed keeps its first `max_items`: a feed holds
    max_items entries however many articles it has. The entries are the objects given (the build selects
    on the catalog's small summaries, then resolves them into full Articles)."""
    ordered = sorted(articles, key=entry_order)
    feeds: list[Feed] = []
    for family in families:
        counts: dict[str, int] = {}  # label -> articles, for totals and the most common spelling
        kept: dict[str, list[Entry]] = {}  # label -> its newest articles, at most max_items
        for article in ordered:
            for label in family.labels(article):
                counts[label] = counts.get(label, 0) + 1
                newest = kept.get(label)
                if newest is None:
                    kept[label] = [article]
                elif len(newest) < max_items:
                    newest.append(article)
        spellings: dict[str, Counter[str]] = defaultdict(Counter)
        for label, count in counts.items():
            spellings[topic_key(label)][label] = count
        names = {key: _display_name(labels) for key, labels in spellings.items()}
        slugs = assign_slugs(names)
        for key, labels in spellings.items():
            label = names[key]
            spec = FeedSpec(
                family=family.name,
                path=family.path.format(slug=slugs[key]),
                title=family.title.format(site=site_title, label=label),
                label=label or None,
            )
            # Spellings of one topic ("AI", "ai") each kept their newest: merge them, newest first.
            entries = heapq.nsmallest(max_items, (a for spelling in labels for a in kept[spelling]),
                                      key=entry_order) if len(labels) > 1 else kept[label]
            feeds.append(Feed(spec=spec, entries=tuple(entries), total=sum(labels.values())))
    if not any(feed.spec.family == families[0].name for feed in feeds):
        # The overall feed always exists, even empty: subscribers must never get a 404 for it.
        first = families[0]
        feeds.append(Feed(FeedSpec(first.name, first.path.format(slug=""), first.title.format(
            site=site_title, label=""), None), (), 0))
    return sorted(feeds, key=lambda feed: feed.spec.path)


def entry_order(article: Entry) -> tuple[float, str]:
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
