"""The build: the whole pipeline in one pass, config -> store scan -> article model -> feed selection ->
(enclosure probing) -> rendering -> writing -> notifying (WebSub). Each stage is a plain function of plain
data; this module only calls them in turn and counts what happened."""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from publisher.caches.fingerprints import Trim, known_feeds
from publisher.config import Config
from publisher.errors import BuildInterrupted
from publisher.stages import archives, catalog
from publisher.stages.catalog import Collection
from publisher.stages.mirror import mirror_store, store_label
from publisher.stages.pages import feed_page, page_path, site_pages
from publisher.stages.precompress import gzip_copies
from publisher.stages.render import FORMATS, FeedEntries, Format, render_within
from publisher.stages.render_pool import run_jobs
from publisher.stages.selection import Feed
from publisher.stages.targets import Target, open_target
from publisher.stages.writer import WriteResult
from publisher.wording import plural

if TYPE_CHECKING:  # the network edges (requests) are imported only by builds that use them
    from publisher.stages.probe import ProbeReport
    from publisher.stages.websub import Ping

logger = logging.getLogger(__name__)


@dataclass
class BuildReport:
    collection: Collection
    feeds: list[Feed]
    skipped: Counter[str]
    writes: WriteResult
    next_due: datetime | None
    seconds: float
    probes: ProbeReport | None = None  # None when enclosures.probe is off
    pings: list[Ping] = field(default_factory=list)
    trimmed: dict[str, Trim] = field(default_factory=dict)  # feed files cut down to max_bytes, by file name

    @property
    def trimmed_feeds(self) -> int:
        """How many feeds had a file cut down to max_bytes."""
        return len({trim.feed for trim in self.trimmed.values()})

    @property
    def ok(self) -> bool:
        return self.writes.ok

    @property
    def published(self) -> int:
        return len(self.collection.articles) - sum(self.skipped[k] for k in ("unpublished", "scheduled", "duplicate"))

    def summary(self) -> str:
        c, w = self.collection, self.writes
        reasons = ", ".join(f"{name} {count}" for name, count in sorted(self.skipped.items()) if count)
        line = (f"{plural(len(c.articles) + c.invalid, 'article')} read, {self.published} published, "
                f"{sum(self.skipped.values())} skipped{f' ({reasons})' if reasons else ''}, "
                f"{plural(c.not_articles, 'other document')} ignored; {plural(len(self.feeds), 'feed')}: "
                f"{w.describe()}")
        if w.failed:
            line += f", {len(w.failed)} not written"
        if self.probes is not None:
            p = self.probes
            line += (f"; enclosures: {p.probed} probed, {p.failed} failed"
                     f"{f', {p.deferred} deferred' if p.deferred else ''}")
        if self.trimmed:
            line += f"; {plural(self.trimmed_feeds, 'feed')} trimmed to max_bytes"
        if self.pings:
            sent = sum(1 for ping in self.pings if ping.ok)
            line += f"; WebSub: {plural(sent, 'ping')} sent, {len(self.pings) - sent} failed"
        return f"{line}; {self.seconds:.2f}s"

    def failures(self) -> list[str]:
        """One line per cause of the files that could not be written (empty when every file was)."""
        return self.writes.failure_lines()


def check_store(config: Config) -> Collection:
    """Scan the store and read what changed since the last build's scan, writing nothing (`publisher check`).
    Raises StoreError when the store cannot be read."""
    if config.store_bucket is not None:
        mirror_store(config)  # the mirror is a cache of the bucket: bringing it up to date changes no feed
    return catalog.collect(config, save=False)


def build(config: Config, now: datetime | None = None, stop_requested: Callable[[], bool] = lambda: False,
          target: Target | None = None, memory: catalog.BuildMemory | None = None) -> BuildReport:
    """Build every feed from the store and bring the output (`target`, by default the one `output` names)
    up to date. The caller holds the target (Target.hold) when it has one of its own. `memory`: what the
    daemon keeps from one build to the next (catalog.BuildMemory)."""
    started = time.monotonic()
    now = now or datetime.now(UTC)
    target = target or open_target(config)
    target.refresh()
    if config.store_bucket is not None:
        mirror_store(config, stop_requested)  # the bucket's new and changed objects, into config.store
    listing = catalog.scan(config, memory)
    collection = catalog.read(config, listing, memory=memory, defer_save=True)
    try:
        return _publish(config, collection, now, stop_requested, target, started)
    finally:
        # What each file yielded and the selection, kept for the next build: saved once the feeds are out,
        # so that the time from an article landing to its feed being served does not include it.
        catalog.save(collection)


def _publish(config: Config, collection: Collection, now: datetime, stop_requested: Callable[[], bool],
             target: Target, started: float) -> BuildReport:
    """Select, render, write and notify: the stages after the store is read."""
    where = store_label(config)
    for problem in collection.problems:
        logger.warning("%s%s%s", where, problem, "; left out of every feed" if problem.fatal else "")
    live, feeds = catalog.select(collection, config, now)  # the last selection, when nothing changed
    probes = None
    if config.enclosures.probe:
        from publisher.stages.probe import apply_sizes, enclosure_urls, probe_enclosures
        from publisher.web import user_agent

        probes = probe_enclosures(enclosure_urls(feeds), config.state, config.enclosures,
                                  user_agent(config.site.home), now.timestamp(), stop_requested)
        feeds = apply_sizes(feeds, probes.sizes)
    formats = [FORMATS[name] for name in config.formats]
    archived = None
    if config.archives:  # first: a subscription feed links its newest archive document
        archived = archives.prepare(collection, config, feeds, catalog.feed_families(config), now, target)
        feeds = [replace(feed, history=archived.history.get(feed.spec.path)) for feed in feeds]
    # Feeds whose files are as they would be rendered. Probed enclosure sizes live in the Articles alone.
    tokens = None if config.enclosures.probe else catalog.stamp_tokens(collection, feeds)
    known = known_feeds(config, feeds, formats, target, tokens)
    files, trimmed = _render([feed for feed in feeds if feed.spec.path not in known.unchanged], formats, config,
                             target.gzip_copies)
    known.trimmed.update(trimmed)
    for name, trim in sorted(known.trimmed.items()):
        logger.debug("%s: %s", name, trim)
    site = site_pages(feeds, formats, config.site, catalog.feed_families(config))
    files.update(site)
    if target.gzip_copies:
        files.update(gzip_copies(site))
    if archived is not None:  # no gzip copies: see archives.py
        files.update(archived.files)
    if stop_requested():
        # Stopping before the first write leaves every served file as it was.
        raise BuildInterrupted("stop requested before writing; nothing written")
    writes = target.publish(files, known.kept | (archived.kept if archived else set()), stop_requested)
    if writes.ok:  # a build that could not publish leaves the state as the served files are
        known.record(writes)
        if archived is not None:
            archived.record(writes, target)
    pings = _notify(config, writes)
    skipped = Counter(invalid=collection.invalid, unpublished=live.unpublished, scheduled=live.scheduled,
                      duplicate=live.duplicates)
    report = BuildReport(collection, feeds, skipped, writes, live.next_due, time.monotonic() - started,
                         probes=probes, pings=pings, trimmed=known.trimmed)
    return report


@dataclass(frozen=True)
class _Rendered:
    """One feed's files (each format, its page, their gzip copies) and what fitting them into max_bytes
    found: plain data, so that a rendering process can hand it back."""

    files: dict[str, bytes]
    trimmed: dict[str, Trim]
    over: list[tuple[str, int, bool]]  # (file, its size, without content): over max_bytes all the same


def _render(feeds: list[Feed], formats: list[Format], config: Config,
            gzip: bool) -> tuple[dict[str, bytes], dict[str, Trim]]:
    """Each feed in each format within max_bytes, its page and (with `gzip`) their gzip copies: the files by
    name, and those that had to be cut down. On every core for a cold build (render_pool)."""
    files: dict[str, bytes] = {}
    trimmed: dict[str, Trim] = {}
    for rendered in run_jobs([functools.partial(_render_feed, feed, formats, config, gzip) for feed in feeds]):
        files.update(rendered.files)
        trimmed.update(rendered.trimmed)
        for name, size, without_content in rendered.over:
            logger.warning("%s: %d bytes, over max_bytes (%d) even with its newest entry alone%s", name, size,
                           config.max_bytes, " and without its content" if without_content else "")
    return files, trimmed


def _render_feed(feed: Feed, formats: list[Format], config: Config, gzip: bool) -> _Rendered:
    rendered = _Rendered({}, {}, [])
    entries: FeedEntries = {}  # made once for the feed's Atom and RSS documents
    for fmt in formats:
        name = f"{feed.spec.path}{fmt.extension}"
        fitted = render_within(feed, fmt, config.site, config.websub.hubs, config.max_bytes, entries)
        rendered.files[name] = fitted.data
        if fitted.trimmed:
            rendered.trimmed[name] = Trim(feed.spec.path, fitted.kept, fitted.total, fitted.without_content,
                                          len(fitted.data), config.max_bytes)
        if fitted.over:
            rendered.over.append((name, len(fitted.data), fitted.without_content))
    rendered.files[page_path(feed)] = feed_page(feed, formats, config.site)
    if gzip:
        rendered.files.update(gzip_copies(rendered.files))
    return rendered


def _notify(config: Config, writes: WriteResult) -> list[Ping]:
    """WebSub pings for the feeds this build changed; none (and no HTTP library loaded) without hubs."""
    if not config.websub.hubs:
        return []
    from publisher.stages.websub import changed_feed_urls, ping_hubs
    from publisher.web import user_agent

    return ping_hubs(config.websub.hubs, changed_feed_urls(writes.written, config.site.base_url),
                     user_agent(config.site.home))
