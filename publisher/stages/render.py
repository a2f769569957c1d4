"""Rendering: one Feed to the bytes of one format.

Format knowledge lives here, next to the spec it follows:
- Atom 1.0, RFC 4287 (https://www.rfc-editor.org/rfc/rfc4287), with feedgen;
- RSS 2.0 (https://www.rssboard.org/rss-specification), with feedgen, Dublin Core `dc:creator` for the source
  (RSS `<author>` must be an e-mail address) and Media RSS (https://www.rssboard.org/media-rss) for images;
- JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/), written directly: feedgen does not know it;
- WebSub discovery (https://www.w3.org/TR/websub/#discovery): a `rel="hub"` link per configured hub in
  every format, beside the `rel="self"` link that names the topic URL;
- Feed Paging and Archiving, RFC 5005 section 4 (https://www.rfc-editor.org/rfc/rfc5005#section-4): an
  archive document says `<fh:archive/>` and links `current` (the subscription feed), `prev-archive` and
  `next-archive`; a subscription feed links `prev-archive` to its newest archive document. In RSS as
  `atom:link` and `fh:archive` in the channel (RFC 5005 appendix B). JSON Feed has no archives.

feedgen formats RSS dates by switching the process-wide locale, so rendering must stay on one thread; the
build never renders from more than one.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from publisher import __version__
from publisher.config import SiteConfig
from publisher.stages.articles import Article, Image
from publisher.stages.selection import Feed

ATOM_NS = "http://www.w3.org/2005/Atom"
MEDIA_NS = "http://search.yahoo.com/mrss/"
HISTORY_NS = "http://purl.org/syndication/history/1.0"  # RFC 5005's fh: namespace
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
# The date of an empty feed: fixed, so that an empty feed's bytes never change between builds.
EMPTY_FEED_DATE = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Format:
    name: str  # as in config `formats`
    extension: str
    media_type: str
    label: str  # what people call it, for links on the index page
    # (feed, this format, site, WebSub hub URLs) -> the complete document
    render: Renderer


# feedgen entries already made for these Articles: one feed's Atom and RSS documents (and the renderings of a
# fit into max_bytes) share them, since making an entry costs as much as writing it out.
FeedEntries = dict[Article, Any]


class Renderer(Protocol):
    def __call__(self, feed: Feed, fmt: Format, site: SiteConfig, hubs: tuple[str, ...],
                 entries: FeedEntries | None = None) -> bytes: ...


def feed_url(site: SiteConfig, feed: Feed, fmt: Format) -> str:
    return f"{site.base_url}{feed.spec.path}{fmt.extension}"


def render(feed: Feed, fmt: Format, site: SiteConfig, hubs: tuple[str, ...] = (),
           entries: FeedEntries | None = None) -> bytes:
    """The complete document of `feed` in format `fmt`. Same feed, same bytes. `entries`: see FeedEntries."""
    return fmt.render(feed, fmt, site, tuple(hubs), entries)


@dataclass(frozen=True)
class Fitted:
    """A feed document rendered within a byte budget, and what it took."""

    data: bytes
    kept: int  # entries the document lists: the newest `kept` of the feed's
    total: int  # entries the feed had to offer (after max_items)
    without_content: bool  # the one entry kept had to lose its content (the article body)
    over: bool  # still over the budget: the newest entry alone, without content, is bigger

    @property
    def trimmed(self) -> bool:
        return self.kept < self.total or self.without_content


def render_within(feed: Feed, fmt: Format, site: SiteConfig, hubs: tuple[str, ...], max_bytes: int,
                  entries: FeedEntries | None = None) -> Fitted:
    """The document of `feed` in `fmt` in at most `max_bytes` bytes: the newest entries that fit, in order.

    The newest entry is always kept: without its content when it does not fit with it (the excerpt stays).
    Most feeds fit as they are, at the cost of one rendering; one that does not takes a binary search on
    the number of entries, about log2(entries) renderings, since a document grows with every entry it
    lists (dates have fixed widths, so nothing else changes its size). Families that cut feeds into pages
    (archives) call this with the entries of a page."""
    total = len(feed.entries)
    data = render(feed, fmt, site, hubs, entries)
    if len(data) <= max_bytes or total == 0:
        return Fitted(data, total, total, without_content=False, over=len(data) > max_bytes)
    fits, too_many = 0, total  # the most entries known to fit, the fewest known not to
    best = b""
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        candidate = render(replace(feed, entries=feed.entries[:middle]), fmt, site, hubs, entries)
        if len(candidate) <= max_bytes:
            fits, best = middle, candidate
        else:
            too_many = middle
    if fits:
        return Fitted(best, fits, total, without_content=False, over=False)
    newest = replace(feed.entries[0], content=None)
    data = render(replace(feed, entries=(newest,)), fmt, site, hubs, entries)
    return Fitted(data, 1, total, without_content=feed.entries[0].content is not None,
                  over=len(data) > max_bytes)


def _atom(feed: Feed, fmt: Format, site: SiteConfig, hubs: tuple[str, ...],
          entries: FeedEntries | None = None) -> bytes:
    generator = _feedgen(feed, fmt, site, hubs, entries)
    document: bytes = generator.atom_str(pretty=True, encoding="UTF-8", xml_declaration=True)
    return document


def _rss(feed: Feed, fmt: Format, site: SiteConfig, hubs: tuple[str, ...],
         entries: FeedEntries | None = None) -> bytes:
    generator = _feedgen(feed, fmt, site, hubs, entries)
    document: bytes = generator.rss_str(pretty=True, encoding="UTF-8", xml_declaration=True)
    return document


def _feedgen(feed: Feed, fmt: Format, site: SiteConfig, hubs: tuple[str, ...],
             entries: FeedEntries | None) -> FeedGenerator:
    fg = _generator(feed, fmt, site, hubs)
    for article in feed.entries:
        made = entries.get(article) if entries is not None else None
        if made is not None:  # its entry extensions are registered already: add_entry leaves them as they are
            fg.add_entry(feedEntry=made, order="append")
            continue
        made = _add_entry(fg, article)
        if entries is not None:
            entries[article] = made
    return fg


def _generator(feed: Feed, fmt: Format, site: SiteConfig, hubs: tuple[str, ...]) -> FeedGenerator:
    fg = FeedGenerator()
    fg.register_extension("atom_enclosures", _NoFeedExtension, _AtomEnclosures, atom=True, rss=False)
    fg.register_extension("rss_item", _MediaNamespace, _RssItem, atom=False, rss=True)
    fg.load_extension("dc", atom=False, rss=True)
    links = [(hub, "hub", None) for hub in hubs] + _history_links(feed, fmt, site)
    if links:
        fg.register_extension("rss_links", _RssLinks, atom=False, rss=True)
        fg.rss_links.links = links
    if feed.history is not None and feed.history.archive:
        fg.register_extension("archive_mark", _ArchiveMark, atom=True, rss=True)
    self_url = feed_url(site, feed, fmt)
    fg.id(self_url)
    fg.title(feed.spec.title)
    fg.description(feed_description(feed, site))
    # RSS <link> takes the last link set (feedgen), so the home page goes last; RSS gets the self link as
    # atom:link (RSS Advisory Board best practice).
    fg.link(href=self_url, rel="self", type=fmt.media_type)
    for href, rel, media_type in links:  # Atom only: feedgen drops every other rel from RSS (upstream #122)
        fg.link(href=href, rel=rel, **({"type": media_type} if media_type else {}))
    fg.link(href=site.home, rel="alternate", type="text/html")
    if site.language:
        fg.language(site.language)
    author = site.author
    # RFC 4287 4.1.1: a feed needs an author unless every entry has one; the site stands in.
    fg.author({"name": author.name if author else site.title,
               **({"email": author.email} if author and author.email else {}),
               **({"uri": author.uri} if author and author.uri else {})})
    # A feed with a logo of its own (a provider's) shows it as its icon, logo and RSS image.
    own = feed.spec.image.url if feed.spec.image else None
    icon, logo = (own, own) if own else (site.icon, site.logo)
    if icon:
        fg.icon(icon)
    if logo:
        fg.logo(logo)
        fg.image(url=logo, title=feed.spec.title, link=site.home)
    if feed.spec.category and feed.spec.label:
        fg.category(term=feed.spec.label)
    fg.generator(generator="publisher", version=__version__)
    # Never the build time (feedgen's default): readers would re-notify and HTTP caches would miss.
    updated = feed.updated or EMPTY_FEED_DATE
    fg.updated(updated)
    fg.pubDate(updated)
    return fg


def _history_links(feed: Feed, fmt: Format, site: SiteConfig) -> list[tuple[str, str, str | None]]:
    """(href, rel, type) of the RFC 5005 links of `feed`, in Atom and RSS."""
    history = feed.history
    if history is None or fmt.name not in ARCHIVE_FORMATS:
        return []
    targets = [(history.current, "current"), (history.prev, "prev-archive"), (history.next, "next-archive")]
    return [(f"{site.base_url}{path}{fmt.extension}", rel, fmt.media_type) for path, rel in targets if path]


def _add_entry(fg: FeedGenerator, article: Article) -> Any:
    fe = fg.add_entry(order="append")  # feedgen prepends by default
    fe.id(article.id)  # also the RSS guid, isPermaLink="false"
    fe.title(article.title)
    fe.link(href=article.url, rel="alternate", type="text/html")
    fe.published(article.published)
    fe.updated(article.updated)
    if article.summary:
        fe.summary(article.summary, type="text")
    if article.content:  # safe HTML already (body.py)
        fe.content(article.content, type="html")
    provider = article.provider
    if provider and (provider.name or provider.domain):
        name = provider.name or provider.domain
        fe.author({"name": name, **({"uri": provider.uri} if provider.uri else {})})
        fe.dc.dc_creator(name)
    for topic in article.topics:
        fe.category(term=topic)
    fe.atom_enclosures.images = article.enclosures
    fe.rss_item.article = article
    return fe


def feed_description(feed: Feed, site: SiteConfig) -> str:
    spec = feed.spec
    if spec.label is None:
        return site.description
    return f"{site.description} Topic: {spec.label}." if spec.category else f"{site.description} {spec.label}."


def lead_image(article: Article) -> Image | None:
    enclosures = article.enclosures
    return enclosures[0] if enclosures else None


class _NoFeedExtension(BaseExtension):  # type: ignore[misc]  # feedgen is untyped
    pass


class _AtomEnclosures(BaseEntryExtension):  # type: ignore[misc]  # feedgen is untyped
    """Atom `<link rel="enclosure" type length>` per image (RFC 4287 4.2.7.2).

    feedgen 1.0.0 loses rel, type and length of entry links in Atom (upstream issue #135: atom_entry reuses
    its loop variable), so the enclosure links are written here instead of through FeedEntry.link().
    """

    def __init__(self) -> None:
        self.images: tuple[Image, ...] = ()

    def extend_atom(self, entry: etree._Element) -> etree._Element:
        # feedgen builds Atom elements without a namespace and declares xmlns on the root; match it.
        for image in self.images:
            etree.SubElement(entry, "link", rel="enclosure", type=image.mime_type,
                             length=str(image.length), href=image.url)
        return entry


class _RssLinks(BaseExtension):  # type: ignore[misc]  # feedgen is untyped
    """`<atom:link>` per WebSub hub and RFC 5005 link right after the self link: feedgen 1.0.0 writes only
    the first self link of the Atom links into RSS and drops every other (upstream #122)."""

    def __init__(self) -> None:
        self.links: list[tuple[str, str, str | None]] = []

    def extend_rss(self, rss: etree._Element) -> etree._Element:
        channel = rss.find("channel")
        links = channel.findall(f"{{{ATOM_NS}}}link")
        position = channel.index(links[-1]) + 1 if links else len(channel)
        for offset, (href, rel, media_type) in enumerate(self.links):
            link = etree.Element(f"{{{ATOM_NS}}}link", href=href, rel=rel)
            if media_type:
                link.set("type", media_type)
            channel.insert(position + offset, link)
        return rss


class _ArchiveMark(BaseExtension):  # type: ignore[misc]  # feedgen is untyped
    """`<fh:archive/>` in an archive document's head (RFC 5005 section 4; in RSS, in the channel)."""

    def extend_ns(self) -> dict[str, str]:
        return {"fh": HISTORY_NS}

    def extend_atom(self, feed: etree._Element) -> etree._Element:
        feed.insert(0, etree.Element(f"{{{HISTORY_NS}}}archive"))
        return feed

    def extend_rss(self, rss: etree._Element) -> etree._Element:
        channel = rss.find("channel")
        assert channel is not None  # feedgen always writes one
        channel.insert(0, etree.Element(f"{{{HISTORY_NS}}}archive"))
        return rss


class _MediaNamespace(BaseExtension):  # type: ignore[misc]  # feedgen is untyped
    def extend_ns(self) -> dict[str, str]:
        return {"media": MEDIA_NS}


class _RssItem(BaseEntryExtension):  # type: ignore[misc]  # feedgen is untyped
    """What feedgen cannot say right in an RSS item.

    - `<description>` is HTML by definition: the excerpt's text is escaped for HTML here, while Atom keeps
      it as `type="text"` (feedgen would put the same string in both).
    - `<enclosure>`: RSS 2.0 allows one per item: the lead image, else the provider logo. Written here since
      FeedEntry.enclosure() also adds an Atom link that #135 turns into a second alternate link.
    - Media RSS: a `media:content` per image and logo, directly in the item (not in a media:group, which
      feedgen's own media extension always adds), and `media:thumbnail` for the lead image.
    """

    def __init__(self) -> None:
        self.article: Article | None = None

    def extend_rss(self, item: etree._Element) -> etree._Element:
        article = self.article
        if article is None:
            return item
        description = item.find("description")
        if description is not None and article.summary:
            description.text = html.escape(article.summary, quote=False)
        lead = lead_image(article)
        if lead is not None:
            etree.SubElement(item, "enclosure", url=lead.url, length=str(lead.length), type=lead.mime_type)
        for image in article.enclosures:
            attributes = {"url": image.url, "medium": "image", "type": image.mime_type}
            if image.length:
                attributes["fileSize"] = str(image.length)
            attributes.update(_dimensions(image))
            etree.SubElement(item, f"{{{MEDIA_NS}}}content", attributes)
        if lead is not None:
            etree.SubElement(item, f"{{{MEDIA_NS}}}thumbnail", {"url": lead.url, **_dimensions(lead)})
        return item


def _dimensions(image: Image) -> dict[str, str]:
    sizes = {"width": image.width, "height": image.height}
    return {key: str(value) for key, value in sizes.items() if value}


def _json_feed(feed: Feed, fmt: Format, site: SiteConfig, hubs: tuple[str, ...],
               entries: FeedEntries | None = None) -> bytes:
    """JSON Feed 1.1: the same entries in the same order with the same ids as the Atom and RSS feeds."""
    document: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": feed.spec.title,
        "home_page_url": site.home,
        "feed_url": feed_url(site, feed, fmt),
        "description": feed_description(feed, site),
    }
    # JSON Feed's `icon` is the large square image and `favicon` the small one: the site's logo and icon.
    logo = feed.spec.image.url if feed.spec.image else site.logo
    if logo:
        document["icon"] = logo
    if site.icon:
        document["favicon"] = site.icon
    author = site.author
    document["authors"] = [_json_author(author.name if author else site.title, author.uri if author else None)]
    if site.language:
        document["language"] = site.language
    if hubs:
        document["hubs"] = [{"type": "WebSub", "url": hub} for hub in hubs]
    document["items"] = [_json_item(article) for article in feed.entries]
    return (indented_json(document) + "\n").encode("utf-8")


_JSON_CONSTANTS = {True: "true", False: "false", None: "null"}


def indented_json(value: Any, level: int = 0) -> str:
    """Exactly json.dumps(value, ensure_ascii=False, indent=2) for the values a feed document holds (dicts
    with string keys, lists, strings, numbers, booleans, None): json.dumps formats indented output with
    its pure-Python encoder, a fifth of the time of rendering a feed in three formats; this writes the
    same bytes in less than half its time."""
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = "\n" + "  " * (level + 1)
        return ("{" + inner + ("," + inner).join(_json_string(key) + ": " + indented_json(item, level + 1)
                                                  for key, item in value.items()) + "\n" + "  " * level + "}")
    if isinstance(value, list):
        if not value:
            return "[]"
        inner = "\n" + "  " * (level + 1)
        return ("[" + inner + ("," + inner).join(indented_json(item, level + 1) for item in value)
                + "\n" + "  " * level + "]")
    if value is None or isinstance(value, bool):
        return _JSON_CONSTANTS[value]
    if isinstance(value, int):
        return int.__repr__(value)
    return json.dumps(value)  # a float (or anything else): json's own word for it, or its TypeError


_json_string = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) quotes strings with


def _json_item(article: Article) -> dict[str, Any]:
    item: dict[str, Any] = {"id": article.id, "url": article.url, "title": article.title}
    # 1.1: an item has content_html or content_text; the body when there is one, else the excerpt's text.
    if article.content:
        item["content_html"] = article.content
        if article.summary:
            item["summary"] = article.summary
    else:
        item["content_text"] = article.summary or ""
    lead = lead_image(article)
    if lead is not None:
        item["image"] = lead.url
    item["date_published"] = article.published.isoformat()
    item["date_modified"] = article.updated.isoformat()
    provider = article.provider
    author = provider and (provider.name or provider.domain)
    if provider and author:
        item["authors"] = [_json_author(author, provider.uri)]
    if article.topics:
        item["tags"] = list(article.topics)
    if article.enclosures:
        item["attachments"] = [_json_attachment(image) for image in article.enclosures]
    return item


def _json_author(name: str, url: str | None) -> dict[str, str]:
    return {"name": name, **({"url": url} if url else {})}


def _json_attachment(image: Image) -> dict[str, Any]:
    attachment: dict[str, Any] = {"url": image.url, "mime_type": image.mime_type}
    if image.length > 0:  # 0 means unknown; JSON Feed leaves the size out rather than say 0
        attachment["size_in_bytes"] = image.length
    return attachment


ARCHIVE_FORMATS = ("atom", "rss")  # the formats that have RFC 5005 archives
FORMATS: dict[str, Format] = {
    "atom": Format("atom", ".atom", "application/atom+xml", "Atom", _atom),
    "rss": Format("rss", ".rss", "application/rss+xml", "RSS", _rss),
    "json": Format("json", ".json", "application/feed+json", "JSON Feed", _json_feed),
}
