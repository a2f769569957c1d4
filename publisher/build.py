"""The build: the whole pipeline in one pass, config -> store scan -> article model -> feed selection ->
rendering -> writing. Each stage is a plain function of plain data; this module only calls them in turn
and counts what happened."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from publisher import store
from publisher.articles import Article, Problem, read_article
from publisher.config import Config
from publisher.errors import ArticleError
from publisher.render import FORMATS, render
from publisher.selection import Feed, live_articles, select_feeds
from publisher.writer import WriteResult, manifest_path, write_outputs

logger = logging.getLogger(__name__)


@dataclass
class Collection:
    """What the store holds: its articles (published or not) and every problem found reading it."""

    files: int = 0
    articles: list[Article] = field(default_factory=list)
    not_articles: int = 0
    invalid: int = 0
    problems: list[Problem] = field(default_factory=list)


@dataclass
class BuildReport:
    collection: Collection
    feeds: list[Feed]
    skipped: Counter[str]
    writes: WriteResult
    next_due: datetime | None
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.writes.failed

    @property
    def published(self) -> int:
        return len(self.collection.articles) - sum(self.skipped[k] for k in ("unpublished", "scheduled", "duplicate"))

    def summary(self) -> str:
        c, w = self.collection, self.writes
        reasons = ", ".join(f"{name} {count}" for name, count in sorted(self.skipped.items()) if count)
        line = (f"{len(c.articles) + c.invalid} articles read, {self.published} published, "
                f"{sum(self.skipped.values())} skipped{f' ({reasons})' if reasons else ''}, "
                f"{c.not_articles} other documents ignored; {len(self.feeds)} feeds: "
                f"{len(w.written)} files written, {len(w.unchanged)} unchanged, {len(w.removed)} removed")
        if w.failed:
            line += f", {len(w.failed)} FAILED"
        return f"{line}; {self.seconds:.2f}s"


def collect(config: Config) -> Collection:
    """Scan the store and read every candidate file. Raises StoreError when the store cannot be read."""
    found = Collection()
    paths = store.scan(config.store, config.include, config.exclude, skip=(config.output, config.state))
    for relative in paths:
        try:
            document = store.read(config.store, relative)
        except ArticleError as exc:
            found.invalid += 1
            found.problems.append(Problem(exc.source, exc.field, exc.reason, fatal=True))
            continue
        if document is None:
            logger.debug("%s: no front matter, not part of the store's data", relative)
            continue
        found.files += 1
        article, problems = read_article(document, config.assets_base_url)
        found.problems.extend(problems)
        if article is not None:
            found.articles.append(article)
        elif problems:
            found.invalid += 1
        else:
            found.not_articles += 1
            logger.debug("%s: not an article (no title, no publishedDateTime)", relative)
    return found


def build(config: Config, now: datetime | None = None,
          stop_requested: Callable[[], bool] = lambda: False) -> BuildReport:
    """Build every feed from the store and bring the output folder up to date."""
    started = time.monotonic()
    now = now or datetime.now(timezone.utc)
    collection = collect(config)
    for problem in collection.problems:
        logger.warning("%s%s", problem, "; left out of every feed" if problem.fatal else "")
    live = live_articles(collection.articles, now)
    feeds = select_feeds(live.articles, config.site.title, config.max_items)
    files = {
        f"{feed.spec.path}{fmt.extension}": render(feed, fmt, config.site)
        for feed in feeds
        for fmt in (FORMATS[name] for name in config.formats if name in FORMATS)
    }
    writes = write_outputs(config.output, files, manifest_path(config.state, config.output), stop_requested)
    skipped = Counter(invalid=collection.invalid, unpublished=live.unpublished, scheduled=live.scheduled, duplicate=live.duplicates)
    report = BuildReport(collection, feeds, skipped, writes, live.next_due, time.monotonic() - started)
    return report
