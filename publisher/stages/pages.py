"""Pages for people, rendered beside the feeds from the same Feed records:

- `<feed path>.html` for every feed (`all.html`, `topics/ai.html`): what the feed is, its latest entries and
  how to subscribe to it, with `<link rel="alternate">` autodiscovery for each format in its head;
- `index.html`: one compact row per feed, grouped by family in FAMILIES order, with a filter box;
- `feeds.opml`: every feed for a one-step import (OPML 2.0, http://opml.org/spec2.opml).

Links between the pages, and from a page to its feeds, are relative, so the pages work on any host and port
(`publisher serve` included); the feeds keep their absolute self links, and the URLs offered for copying are
the absolute ones from `site.base_url`. Nothing is loaded from another host but the articles' own images
(lazy-loaded): the style is inline, no font is fetched, and the only script is the index's few lines that
hide rows (the page works fully without it). Every value from the store or the config is escaped. No page
carries the build time: the same feeds give the same bytes.
HTML: the HTML Living Standard (https://html.spec.whatwg.org/); autodiscovery is `<link rel="alternate">`
with the feed's media type (https://www.rssboard.org/rss-autodiscovery).
"""

from __future__ import annotations

import html
import posixpath
import unicodedata
from collections.abc import Iterable, Sequence
from itertools import groupby

from lxml import etree

from publisher import __version__
from publisher.config import SiteConfig
from publisher.stages.articles import Article, Image
from publisher.stages.render import Format, feed_description, feed_url
from publisher.stages.selection import ALL, BUILT_IN, FAMILIES, Family, Feed

INDEX = "index.html"
OPML = "feeds.opml"
PAGE_EXTENSION = ".html"
OPML_MEDIA_TYPE = "text/x-opml"
OPML_DOCS = "http://opml.org/spec2.opml"
EXCERPT_CHARACTERS = 280  # an excerpt longer than this is cut at a word: the page lists, the article tells
# Every thumbnail takes the same 4:3 box (the picture is cropped to it with object-fit), and the box's size
# is in the markup: the list does not jump while images load, whatever size the images turn out to be.
THUMBNAIL = (160, 120)
PROVIDER_LOGO = 20
FEED_LOGO = 64

# Colours: text, muted text and links keep a contrast ratio of at least 4.5:1 (WCAG 2 AA) on their
# background, in both schemes.
_STYLE = """\
:root{color-scheme:light dark;--text:#1b1b1b;--muted:#4d4d4d;--back:#fff;--line:#d6d6d6;--link:#0b57d0;
--panel:#f3f4f6}
@media (prefers-color-scheme:dark){:root{--text:#e8e8e8;--muted:#b4b4b4;--back:#161616;--line:#3a3a3a;
--link:#8ab4f8;--panel:#222}}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.5;color:var(--text);
background:var(--back);max-width:56rem;margin:0 auto;padding:1rem}
a{color:var(--link)}h1{font-size:1.6rem;margin:.25rem 0;overflow-wrap:anywhere}
h2{font-size:1.15rem;margin:1.5rem 0 .5rem}h3{font-size:1.05rem;margin:0 0 .25rem;overflow-wrap:anywhere}
.muted,.meta{color:var(--muted)}.meta{margin:.25rem 0;font-size:.95rem}
ul,ol{list-style:none;padding:0;margin:0}
.feeds li{display:flex;flex-wrap:wrap;align-items:baseline;gap:.25rem 1rem;padding:.5rem 0;
border-top:1px solid var(--line)}
.feeds .name{flex:1 1 14rem;font-weight:600;overflow-wrap:anywhere}
.formats a{display:inline-block;padding:.25rem .5rem .25rem 0;margin-right:.25rem}
.filter input{width:100%;max-width:24rem;font:inherit;padding:.5rem;color:inherit;background:var(--back);
border:1px solid var(--muted);border-radius:.25rem}
.logo{float:right;margin:0 0 .5rem 1rem;width:64px;height:64px;object-fit:contain}
.subscribe li{padding:.4rem 0;border-top:1px solid var(--line)}
.subscribe a{display:inline-block;min-width:6rem;padding:.25rem 0}
.url{display:block;padding:.35rem .5rem;background:var(--panel);border-radius:.25rem;user-select:all;
-webkit-user-select:all;overflow-wrap:anywhere;font-size:.9rem}
.entries article{display:flex;gap:1rem;padding:1rem 0;border-top:1px solid var(--line)}
.entries .text{flex:1;min-width:0}.entries p{margin:.25rem 0}
.thumb{flex:none;width:160px;height:120px;object-fit:cover;border-radius:.25rem;background:var(--panel)}
.provider{width:20px;height:20px;object-fit:contain;vertical-align:middle;margin-right:.25rem}
footer{margin-top:2rem;padding-top:1rem;border-top:1px solid var(--line)}
@media (max-width:40rem){.thumb{width:96px;height:72px}.logo{width:48px;height:48px}}
[hidden]{display:none !important}"""

# The index's filter: it only hides rows (and a family left without a visible row), so without script the
# page is complete; the box itself stays hidden until the script shows it. Accents and case are ignored,
# as in the rows' data-filter values.
_FILTER_SCRIPT = """\
(function () {
  var form = document.getElementById("filter"), box = document.getElementById("filter-text");
  var fold = function (text) { return text.normalize("NFKD").replace(/[\\u0300-\\u036f]/g, "").toLowerCase(); };
  form.hidden = false;
  form.addEventListener("submit", function (event) { event.preventDefault(); });
  box.addEventListener("input", function () {
    var words = fold(box.value).split(/\\s+/).filter(Boolean);
    document.querySelectorAll("section.family").forEach(function (section) {
      var shown = 0;
      section.querySelectorAll("li[data-filter]").forEach(function (row) {
        var text = row.getAttribute("data-filter");
        row.hidden = !words.every(function (word) { return text.indexOf(word) >= 0; });
        shown += row.hidden ? 0 : 1;
      });
      section.hidden = shown === 0;
    });
  });
})();"""


def site_pages(feeds: Iterable[Feed], formats: Sequence[Format], site: SiteConfig,
               families: Sequence[Family] = FAMILIES) -> dict[str, bytes]:
    """`index.html` and `feeds.opml` for these feeds (output path -> bytes), grouped by `families`."""
    ordered = reading_order(feeds, families)
    return {INDEX: index_html(ordered, formats, site), OPML: opml(ordered, formats, site)}


def page_path(feed: Feed) -> str:
    """The feed's page, beside its files: `topics/ai.html` for `topics/ai.atom`."""
    return f"{feed.spec.path}{PAGE_EXTENSION}"


def reading_order(feeds: Iterable[Feed], families: Sequence[Family] = FAMILIES) -> list[Feed]:
    """Family by family as configured (the overall feed first), then by name as a person reads it."""
    rank = {family.name: index for index, family in enumerate(families)}
    return sorted(feeds, key=lambda feed: (rank.get(feed.spec.family, len(rank)),
                                           _collation_key(feed.spec.label or ""), feed.spec.path))


def _collation_key(name: str) -> tuple[str, str]:
    """Accents and case ignored first ("émile" sorts with "e"), then the name itself for a stable order."""
    folded = _fold(name)
    return folded, name.casefold()


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").casefold()


def _filter_text(name: str) -> str:
    """A row's name as the filter script folds what is typed: compatibility-decomposed, combining marks
    dropped, lower case (JavaScript's toLowerCase, which is str.lower, not casefold)."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).lower()


def _family(name: str) -> Family:
    found = BUILT_IN.get(name)
    return found or Family(name=name, path="", title="", labels=lambda article: ())


def feed_name(feed: Feed) -> str:
    """What a person calls the feed: its label (the topic, the provider, the curated feed's title), or for
    the overall feed, everything."""
    return feed.spec.label or "All articles"


# The feed page

def feed_page(feed: Feed, formats: Sequence[Format], site: SiteConfig) -> bytes:
    """The page of one feed: what it is, how to subscribe, its latest entries."""
    up = _up(feed.spec.path)
    name = feed_name(feed)
    head = _head(feed.spec.title, _description(feed, site), site)
    head += [f'<link rel="alternate" type="{_escape(fmt.media_type)}" '
             f'title="{_escape(f"{feed.spec.title} ({fmt.label})")}" href="{_escape(_relative_feed(feed, fmt))}">'
             for fmt in formats]
    head += [f"<style>\n{_STYLE}\n</style>", "</head>"]
    logo = feed.spec.image.url if feed.spec.image else site.logo
    body = [
        "<body>",
        "<header>",
        f'<p><a href="{up}{INDEX}">{_escape(site.title)}: all feeds</a></p>',
        (f'<img class="logo" src="{_escape(logo)}" alt="{_escape(f"{name} logo")}" '
         f'width="{FEED_LOGO}" height="{FEED_LOGO}">') if logo else "",
        f"<h1>{_escape(feed.spec.title)}</h1>",
        f"<p>{_escape(_description(feed, site))}</p>",
        f'<p class="meta">{_summary(feed)}</p>',
        "</header>",
        "<main>",
        '<section aria-labelledby="subscribe">',
        '<h2 id="subscribe">Subscribe</h2>',
        f'<p class="muted">Give one of these addresses to your feed reader (the address of "{_escape(name)}" '
        "is selected whole with one click).</p>",
        '<ul class="subscribe">',
        *(_subscribe_item(feed, fmt, site) for fmt in formats),
        "</ul>",
        "</section>",
        '<section aria-labelledby="latest">',
        '<h2 id="latest">Latest articles</h2>',
        *(['<ol class="entries">', *(_entry(article) for article in feed.entries), "</ol>"]
          if feed.entries else ['<p class="muted">No articles yet.</p>']),
        "</section>",
        "</main>",
        _footer(up, site),
        "</body>",
        "</html>",
    ]
    return _document(head + body)


def _description(feed: Feed, site: SiteConfig) -> str:
    return feed_description(feed, site)  # the words of the feed itself


def _subscribe_item(feed: Feed, fmt: Format, site: SiteConfig) -> str:
    return (f'<li><a href="{_escape(_relative_feed(feed, fmt))}" type="{_escape(fmt.media_type)}">'
            f"{_escape(fmt.label)}</a>"
            f'<code class="url" translate="no">{_escape(feed_url(site, feed, fmt))}</code></li>')


def _entry(article: Article) -> str:
    parts = ["<li><article>"]
    lead = article.images[0] if article.images else None
    if lead is not None:
        # Decorative: the title beside it says what the article is, so the image adds nothing to read out.
        parts.append(_image(lead, "thumb", "", THUMBNAIL))
    parts.append('<div class="text">')
    parts.append(f'<h3><a href="{_escape(article.url)}">{_escape(article.title)}</a></h3>')
    parts.append(f'<p class="meta">{_byline(article)}</p>')
    if article.summary:
        parts.append(f"<p>{_escape(_excerpt(article.summary))}</p>")
    parts.append("</div>")
    parts.append("</article></li>")
    return "\n".join(parts)


def _byline(article: Article) -> str:
    provider = article.provider
    name = (provider.name or provider.domain) if provider else None
    parts = []
    if provider is not None and provider.logo is not None:
        # The provider's name follows as text, so the logo is decorative.
        parts.append(_image(provider.logo, "provider", "", (PROVIDER_LOGO, PROVIDER_LOGO)))
    if name:
        parts.append(f"{_escape(name)} · ")
    parts.append(_time(article))
    return "".join(parts)


def _time(article: Article) -> str:
    published = article.published
    return f'<time datetime="{published.isoformat()}">{published.date().isoformat()}</time>'


def _image(image: Image, css_class: str, alt: str, size: tuple[int, int]) -> str:
    width, height = size
    return (f'<img class="{css_class}" src="{_escape(image.url)}" alt="{_escape(alt)}" width="{width}" '
            f'height="{height}" loading="lazy" decoding="async">')


def _excerpt(text: str) -> str:
    if len(text) <= EXCERPT_CHARACTERS:
        return text
    cut = text[:EXCERPT_CHARACTERS].rsplit(" ", 1)[0].rstrip(" ,;:.-")
    return f"{cut}…"


# The index

def index_html(feeds: Sequence[Feed], formats: Sequence[Format], site: SiteConfig) -> bytes:
    """One row per feed, grouped by family. Only the overall feed is announced in the head: every feed is
    announced on its own page, and a page that named them all would be as long as the list of topics."""
    head = _head(site.title, site.description, site)
    overall = [feed for feed in feeds if feed.spec.family == FAMILIES[0].name]
    head += [f'<link rel="alternate" type="{_escape(fmt.media_type)}" '
             f'title="{_escape(f"{feed.spec.title} ({fmt.label})")}" href="{_escape(_relative_feed(feed, fmt))}">'
             for feed in overall for fmt in formats]
    head += [f"<style>\n{_STYLE}\n</style>", "</head>"]
    body = [
        "<body>",
        "<header>",
        f"<h1>{_escape(site.title)}</h1>",
        f"<p>{_escape(site.description)}</p>" if site.description != site.title else "",
        f'<p>{len(feeds)} feed{"" if len(feeds) == 1 else "s"}. <a href="{OPML}" type="{OPML_MEDIA_TYPE}">'
        "All feeds as OPML</a>: import this file into a feed reader to subscribe to every feed at once.</p>",
        "</header>",
        "<main>",
        '<form id="filter" class="filter" role="search" hidden>',
        '<label for="filter-text">Filter feeds</label><br>',
        '<input id="filter-text" type="search" autocomplete="off" placeholder="Type part of a name">',
        "</form>",
    ]
    for family_name, group in groupby(feeds, key=lambda feed: feed.spec.family):
        members = list(group)
        family = _family(family_name)
        anchor = f"family-{_escape(family.name)}"
        body += [
            f'<section class="family" aria-labelledby="{anchor}">',
            f'<h2 id="{anchor}">{_escape(family.display_name)} <span class="muted">({len(members)})</span></h2>',
            '<ul class="feeds">',
            *(_index_row(feed, formats) for feed in members),
            "</ul>",
            "</section>",
        ]
    body += [
        "</main>",
        _footer(None, site),
        f"<script>\n{_FILTER_SCRIPT}\n</script>",
        "</body>",
        "</html>",
    ]
    return _document(head + body)


def _index_row(feed: Feed, formats: Sequence[Format]) -> str:
    name = feed_name(feed)
    links = " ".join(f'<a href="{_escape(_relative_feed(feed, fmt, ""))}" type="{_escape(fmt.media_type)}">'
                     f"{_escape(fmt.label)}</a>" for fmt in formats)
    return (f'<li data-filter="{_escape(_filter_text(name))}">'
            f'<a class="name" href="{_escape(page_path(feed))}">{_escape(name)}</a>'
            f'<span class="meta">{_summary(feed)}</span>'
            f'<span class="formats">{links}</span></li>')


def _summary(feed: Feed) -> str:
    if not feed.entries:
        return "No articles yet."
    count = f"{feed.total} article{'' if feed.total == 1 else 's'}"
    newest = feed.entries[0]  # entries are newest first by published date
    return f"{count}, newest {_time(newest)}"


# Shared parts

def _head(title: str, description: str, site: SiteConfig) -> list[str]:
    return [
        "<!DOCTYPE html>",
        f'<html lang="{_escape(site.language or "en")}">',
        "<head>",
        '<meta charset="utf-8">',  # first, within the first 1024 bytes
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_escape(title)}</title>",
        f'<meta name="description" content="{_escape(description)}">',
        f'<meta name="generator" content="publisher {_escape(__version__)}">',
        # No icon: without this line a browser asks the server for /favicon.ico, a 404 in every log.
        '<link rel="icon" href="data:,">',
    ]


def _footer(up: str | None, site: SiteConfig) -> str:
    """Links to the index (`up` leads there from a feed page; None on the index itself), the OPML list
    and the site's home page."""
    index = "" if up is None else f'<a href="{up}{INDEX}">All feeds</a> · '
    return (f'<footer><p>{index}<a href="{up or ""}{OPML}" type="{OPML_MEDIA_TYPE}">All feeds as OPML</a> · '
            f'<a href="{_escape(site.home)}">{_escape(site.title)} home page</a></p></footer>')


def _relative_feed(feed: Feed, fmt: Format, up: str | None = None) -> str:
    """The feed's file from its own page (same folder) or, with `up` given, from the output folder's top
    (`up` = "" for the index)."""
    if up is None:
        return f"{posixpath.basename(feed.spec.path)}{fmt.extension}"
    return f"{up}{feed.spec.path}{fmt.extension}"


def _up(path: str) -> str:
    """From a page at `path` back to the top of the output folder: "../" per folder."""
    return "../" * path.count("/")


def _document(lines: list[str]) -> bytes:
    return ("\n".join(line for line in lines if line) + "\n").encode("utf-8")


def opml(feeds: Sequence[Feed], formats: Sequence[Format], site: SiteConfig) -> bytes:
    """Every feed once, in the first configured format: a reader subscribes to one format of each. Its
    `htmlUrl` is the feed's own page. The overall feed at the top, every other family's feeds in an outline of
    their own (feed readers import it as a folder)."""
    fmt = formats[0]
    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = site.title
    if site.author:
        etree.SubElement(head, "ownerName").text = site.author.name
    etree.SubElement(head, "docs").text = OPML_DOCS
    body = etree.SubElement(root, "body")
    groups: dict[str, etree._Element] = {}
    for feed in feeds:
        parent = body
        if feed.spec.family != ALL.name:
            parent = groups.get(feed.spec.family)
            if parent is None:
                heading = _family(feed.spec.family).display_name
                parent = groups[feed.spec.family] = etree.SubElement(body, "outline", text=heading, title=heading)
        etree.SubElement(parent, "outline", {"type": "rss", "text": feed.spec.title, "title": feed.spec.title,
                                             "xmlUrl": feed_url(site, feed, fmt),
                                             "htmlUrl": f"{site.base_url}{page_path(feed)}"})
    document: bytes = etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8")
    return document


def _escape(text: str) -> str:
    return html.escape(text, quote=True)
