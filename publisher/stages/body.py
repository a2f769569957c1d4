"""Article bodies: the text after the front matter, made into HTML that a feed reader can show safely.

By the file's extension:
- Markdown (`.md`, `.markdown`): CommonMark (markdown-it-py) with tables and strikethrough; raw HTML in it is
  allowed through to the sanitizer, as CommonMark says.
- HTML (`.html`, `.htm`): taken as HTML. A whole document (an e-mail newsletter) is reduced to what its
  `<body>` holds; comments (Outlook's conditional ones too) go, and layout tables (`role="presentation"`,
  the way e-mail is laid out) become plain blocks, so that a reader shows the text rather than a grid.
- Anything else (`.txt`, no extension): plain text, escaped, one paragraph per blank-line block.

Then, for every kind: Jekyll's Liquid tags (`{% ... %}`, `{{ ... }}`) are taken out first, as Jekyll would
have evaluated them (`{% raw %}x{% endraw %}` keeps x); the HTML passes an allow-list sanitizer (nh3, the
Python binding of the Rust crate ammonia) that keeps text structure, links and images and nothing that runs
or loads on its own (scripts, styles, frames, forms, event handlers, `javascript:`/`data:` URLs); every
`href` and `src` becomes an absolute http(s) URL (or a `mailto:` link), resolved against the base given, or
is dropped.
"""

from __future__ import annotations

import functools
import html
import re
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import nh3

from publisher.stages.urls import InvalidURL, publishable
from publisher.stages.xmltext import clean_text

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

MARKDOWN = frozenset({".md", ".markdown"})
HTML = frozenset({".html", ".htm"})

TAGS = frozenset({
    "p", "br", "hr", "div", "span", "a", "img", "figure", "figcaption",
    "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "q", "cite",
    "ul", "ol", "li", "dl", "dt", "dd",
    "em", "strong", "b", "i", "u", "s", "del", "ins", "sub", "sup", "small", "mark", "abbr", "time",
    "code", "pre", "kbd", "samp", "var",
    "table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td",
})
# Removed with everything inside them: what they hold is code, styling, a document head, or a control.
DROPPED_WITH_CONTENT = frozenset({
    "script", "style", "template", "noscript", "iframe", "frame", "frameset", "object", "embed", "applet",
    "form", "button", "select", "textarea", "svg", "math", "head", "title",
})
ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "ol": {"start"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
    "abbr": {"title"},
    "time": {"datetime"},
}
URL_ATTRIBUTES = frozenset({"href", "src"})

_LIQUID = re.compile(r"""
      \{%-?\s*raw\s*-?%\}(?P<raw>.*?)\{%-?\s*endraw\s*-?%\}      # {% raw %}...{% endraw %}: its text stays
    | \{%-?\s*comment\s*-?%\}.*?\{%-?\s*endcomment\s*-?%\}      # a Liquid comment: gone with its text
    | \{%.*?%\}                                                 # any other tag
    | \{\{.*?\}\}                                               # an output tag: nothing to fill it with
""", re.DOTALL | re.VERBOSE)
# An unfilled mail-merge placeholder of an e-mail template, such as {can-spam} or {link_color}.
_PLACEHOLDER = re.compile(r"\{[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*\}")
_PRE = re.compile(r"(<pre\b.*?</pre>)", re.DOTALL)
_BLANK_RUN = re.compile(r"[ \t\r\f]*\n\s*")
_TAG = re.compile(r"<[^>]*>")
_EMPTY = re.compile(r"<(div|p|span)>\s*</\1>")
_NUMBER = re.compile(r"\d{1,5}")


class BodyError(ValueError):
    """A body that cannot be rendered: the article is published with its excerpt only."""


def render_body(text: str, source: str, base: str, link: str | None = None) -> str | None:
    """Safe HTML for the body `text` of the store file `source` (its extension says what the text is);
    relative URLs resolve against `base` (an absolute http(s) URL), an in-page `#anchor` against the
    article's own `link` (default: `base`). None when nothing is left to show.

    Raises BodyError when a parser fails on the text."""
    suffix = PurePosixPath(source).suffix.lower()
    text = strip_liquid(text)
    try:
        if suffix in MARKDOWN:
            markup = _markdown().render(text)
        elif suffix in HTML:
            markup = _reduce(text)
        else:
            return plain_paragraphs(text) or None
        cleaned = sanitize(markup, base, link or base)
    except Exception as exc:  # noqa: BLE001 - parsers on text from anywhere: one article never breaks a build
        raise BodyError(f"cannot be rendered: {type(exc).__name__}: {exc}"[:200]) from None
    return cleaned if _shows_something(cleaned) else None


def strip_liquid(text: str) -> str:
    """`text` without Jekyll/Liquid tags: a store written for Jekyll has them evaluated at site build time,
    which a feed cannot do. `{% raw %}` blocks keep their text, comments go with theirs."""
    if "{%" not in text and "{{" not in text:
        return text
    return _LIQUID.sub(lambda match: match.group("raw") or "", text)


def plain_paragraphs(text: str) -> str:
    """Plain text as HTML: escaped, one paragraph per blank-line block, white space folded."""
    blocks = [" ".join(block.split()) for block in text.split("\n\n")]
    return "\n".join(f"<p>{html.escape(block, quote=False)}</p>" for block in blocks if block)


def sanitize(markup: str, base: str, link: str) -> str:
    """`markup` through the allow-list, every URL absolute (see absolute_url()), blank runs between tags
    folded (outside `<pre>`), and only characters that XML 1.0 allows."""
    cleaned = nh3.clean(
        markup,
        tags=set(TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={tag: set(names) for tag, names in ATTRIBUTES.items()},
        attribute_filter=functools.partial(_attribute, base=base, link=link),
        url_schemes={"http", "https", "mailto"},
        strip_comments=True,
        link_rel="noopener noreferrer",
    )
    parts = _PRE.split(cleaned)
    folded = "".join(part if index % 2 else _fold(part) for index, part in enumerate(parts))
    return clean_text(folded).strip()


def _fold(markup: str) -> str:
    """Blank runs as one line break, and no empty blocks (what is left of an e-mail's spacer cells)."""
    markup = _BLANK_RUN.sub("\n", markup)
    for _ in range(8):  # each pass empties one level more; a few suffice for real layouts
        emptied = _EMPTY.sub("", markup)
        if emptied == markup:
            break
        markup = _BLANK_RUN.sub("\n", emptied)
    return markup


def _attribute(tag: str, name: str, value: str, base: str, link: str) -> str | None:
    """Keep an allowed attribute as it may be published, or drop it (None)."""
    if name in URL_ATTRIBUTES:
        return absolute_url(value, base, link)
    if name in ("width", "height", "colspan", "rowspan", "start"):
        return value.strip() if _NUMBER.fullmatch(value.strip()) else None
    return value


def absolute_url(value: str, base: str, link: str) -> str | None:
    """An href or src as published: absolute http(s), resolved against `base` when relative, or against
    the article's `link` for an in-page `#anchor` (it points into the article itself); or a `mailto:`
    link. None to drop it: any other scheme, or no valid URL."""
    text = value.strip()
    if text.lower().startswith("mailto:"):
        return text if not re.search(r"[\s<>\"']", text) else None
    try:
        return publishable(text, link if text.startswith("#") else base)
    except InvalidURL:
        return None


def _shows_something(markup: str) -> bool:
    return bool(markup) and ("<img" in markup or bool(html.unescape(_TAG.sub("", markup)).strip()))


@functools.cache  # one parser per process, configured once and never changed after
def _markdown() -> MarkdownIt:
    # Imported here: it takes longer to import than the rest of this module, and most stores (front
    # matter only) never need it.
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def _reduce(text: str) -> str:
    """An HTML body as a fragment: the content of `<body>` for a whole document, without comments,
    declarations, layout tables or unfilled placeholders. Not a safety step (sanitize() is): it only keeps
    the sanitizer from showing a document's head or an e-mail's layout grid."""
    reducer = _Reducer()
    reducer.feed(text)
    reducer.close()
    return reducer.fragment()


class _Reducer(HTMLParser):
    """Re-emits the markup as it came, token by token, except what _reduce() leaves out."""

    LAYOUT_ROLES = frozenset({"presentation", "none"})
    TABLE_PARTS = frozenset({"tbody", "thead", "tfoot", "tr"})
    CELLS = frozenset({"td", "th"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.out: list[str] = []
        self.document = False  # an <html>, <head> or <body> tag was seen: a whole document
        self.in_body = False
        self.body_ended = False
        self.head_depth = 0
        self.tables: list[bool] = []  # per open table: is it a layout table?

    def fragment(self) -> str:
        return "".join(self.out)

    def _emit(self, text: str) -> None:
        if self.head_depth or self.body_ended:
            return
        self.out.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("html", "head", "body"):
            self.document = True
            if tag == "head":
                self.head_depth += 1
            elif tag == "body" and not self.in_body:
                self.in_body, self.out, self.head_depth = True, [], 0  # what came before was head matter
            return
        if tag == "table":
            layout = dict(attrs).get("role", "") in self.LAYOUT_ROLES
            self.tables.append(layout)
            self._emit("<div>" if layout else self._tag_text())
        elif self.tables and self.tables[-1] and tag in self.TABLE_PARTS:
            return
        elif self.tables and self.tables[-1] and tag in self.CELLS:
            self._emit("<div>")
        else:
            self._emit(self._tag_text())

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("html", "head", "body"):
            self._emit(self._tag_text())

    def handle_endtag(self, tag: str) -> None:
        if tag in ("html", "head", "body"):
            if tag == "head":
                self.head_depth = max(0, self.head_depth - 1)
            elif tag == "body" and self.in_body:
                self.body_ended = True
            return
        if tag == "table" and self.tables:
            self._emit("</div>" if self.tables.pop() else "</table>")
        elif self.tables and self.tables[-1] and tag in self.TABLE_PARTS:
            return
        elif self.tables and self.tables[-1] and tag in self.CELLS:
            self._emit("</div>")
        else:
            self._emit(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        self._emit(_PLACEHOLDER.sub("", data) if self.document else data)

    def handle_entityref(self, name: str) -> None:
        self._emit(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self._emit(f"&#{name};")

    def handle_comment(self, data: str) -> None:
        pass  # Outlook's conditional comments hold markup for Outlook alone

    def handle_decl(self, decl: str) -> None:
        pass

    def unknown_decl(self, data: str) -> None:
        pass

    def handle_pi(self, data: str) -> None:
        pass

    def _tag_text(self) -> str:
        return self.get_starttag_text() or ""
