"""Pages for people and feed readers, rendered beside the feeds: `index.html` lists every feed with a link
to each format (and autodiscovery links in its head), `feeds.opml` lists every feed for a one-step import.

Both are rendered from the same Feed records as the feeds themselves, with absolute URLs from
`site.base_url`, and never carry the build time: an unchanged store gives the same bytes.
- HTML: the HTML Living Standard (https://html.spec.whatwg.org/); autodiscovery is `<link rel="alternate">`
  with the feed's media type (https://www.rssboard.org/rss-autodiscovery). Written as well-formed markup
  (void elements closed with " />", every attribute quoted) so that an XML parser reads it too; no script.
- OPML 2.0 (http://opml.org/spec2.opml): one `<outline type="rss">` per feed, as subscription lists are.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Iterable, Sequence

from lxml import etree

from publisher import __version__
from publisher.config import SiteConfig
from publisher.render import Format, feed_url
from publisher.selection import FAMILIES, Feed

INDEX = "index.html"
OPML = "feeds.opml"
OPML_MEDIA_TYPE = "text/x-opml"
OPML_DOCS = "http://opml.org/spec2.opml"

_STYLE = """\
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.5;color:#1b1b1b;
background:#fff;max-width:42rem;margin:0 auto;padding:1rem}
h1{font-size:1.6rem;margin:.5rem 0}h2{font-size:1.15rem;margin:0}
ul.feeds{list-style:none;padding:0}ul.feeds li{border-top:1px solid #ddd;padding:.75rem 0}
.meta{color:#555;margin:.25rem 0}.formats a{display:inline-block;margin:.25rem .75rem .25rem 0;padding:.2rem 0}
a{color:#0b57d0}
@media (prefers-color-scheme:dark){body{color:#e6e6e6;background:#161616}.meta{color:#aaa}a{color:#8ab4f8}
ul.feeds li{border-color:#333}}"""


def site_pages(feeds: Iterable[Feed], formats: Sequence[Format], site: SiteConfig) -> dict[str, bytes]:
    """`index.html` and `feeds.opml` for these feeds (output path -> bytes)."""
    ordered = reading_order(feeds)
    return {INDEX: index_html(ordered, formats, site), OPML: opml(ordered, formats, site)}


def reading_order(feeds: Iterable[Feed]) -> list[Feed]:
    """Family by family as configured (the overall feed first), then by name as a person reads it."""
    rank = {family.name: index for index, family in enumerate(FAMILIES)}
    return sorted(feeds, key=lambda feed: (rank.get(feed.spec.family, len(rank)),
                                           _collation_key(feed.spec.label or ""), feed.spec.path))


def _collation_key(name: str) -> tuple[str, str]:
    """Accents and case ignored first ("émile" sorts with "e"), then the name itself for a stable order."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return folded.casefold(), name.casefold()


def index_html(feeds: Sequence[Feed], formats: Sequence[Format], site: SiteConfig) -> bytes:
    opml_url = f"{site.base_url}{OPML}"
    head = [
        "<!DOCTYPE html>",
        f'<html lang="{_escape(site.language or "en")}">',
        "<head>",
        '<meta charset="utf-8" />',
        '<meta name="viewport" content="width=device-width, initial-scale=1" />',
        f"<title>{_escape(site.title)}</title>",
        f'<meta name="description" content="{_escape(site.description)}" />',
        f'<meta name="generator" content="publisher {_escape(__version__)}" />',
    ]
    for feed in feeds:
        for fmt in formats:
            head.append(f'<link rel="alternate" type="{_escape(fmt.media_type)}" '
                        f'title="{_escape(f"{feed.spec.title} ({fmt.label})")}" '
                        f'href="{_escape(feed_url(site, feed, fmt))}" />')
    head += [f"<style>\n{_STYLE}\n</style>", "</head>"]
    body = [
        "<body>",
        "<header>",
        f"<h1>{_escape(site.title)}</h1>",
        f"<p>{_escape(site.description)}</p>" if site.description != site.title else "",
        f'<p><a href="{_escape(opml_url)}" type="{OPML_MEDIA_TYPE}">All feeds as OPML</a>: import this file '
        "into a feed reader to subscribe to every feed at once. "
        f'<a href="{_escape(site.home)}">Home page</a></p>',
        "</header>",
        "<main>",
        '<ul class="feeds">',
        *(_feed_item(feed, formats, site) for feed in feeds),
        "</ul>",
        "</main>",
        "</body>",
        "</html>",
    ]
    return ("\n".join(line for line in head + body if line) + "\n").encode("utf-8")


def _feed_item(feed: Feed, formats: Sequence[Format], site: SiteConfig) -> str:
    name = feed.spec.label or "All articles"
    links = " ".join(f'<a href="{_escape(feed_url(site, feed, fmt))}" type="{_escape(fmt.media_type)}">'
                     f"{_escape(fmt.label)}</a>" for fmt in formats)
    return (f"<li>\n<h2>{_escape(name)}</h2>\n<p class=\"meta\">{_summary(feed)}</p>\n"
            f'<p class="formats">{links}</p>\n</li>')


def _summary(feed: Feed) -> str:
    if not feed.entries:
        return "No articles yet."
    count = f"{feed.total} article{'' if feed.total == 1 else 's'}"
    if feed.total > len(feed.entries):
        count += f" (the feed lists the newest {len(feed.entries)})"
    newest = feed.entries[0].published  # entries are newest first by published date
    return (f'{count}, newest <time datetime="{newest.isoformat()}">{newest.date().isoformat()}</time>.')


def opml(feeds: Sequence[Feed], formats: Sequence[Format], site: SiteConfig) -> bytes:
    """Every feed once, in the first configured format: a reader subscribes to one format of each."""
    fmt = formats[0]
    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = site.title
    if site.author:
        etree.SubElement(head, "ownerName").text = site.author.name
    etree.SubElement(head, "docs").text = OPML_DOCS
    body = etree.SubElement(root, "body")
    for feed in feeds:
        etree.SubElement(body, "outline", {"type": "rss", "text": feed.spec.title, "title": feed.spec.title,
                                           "xmlUrl": feed_url(site, feed, fmt), "htmlUrl": site.home})
    document: bytes = etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8")
    return document


def _escape(text: str) -> str:
    return html.escape(text, quote=True)
