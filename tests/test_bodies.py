"""Article bodies: Markdown and HTML rendered, sanitized, with absolute URLs, in every format; hostile bodies."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import feedparser
import lxml.html
import pytest
from lxml import etree

from publisher.caches import scan_cache
from publisher.config import load_config
from publisher.errors import ConfigError
from publisher.stages.articles import read_article
from publisher.stages.body import render_body, strip_liquid
from publisher.stages.store import Document, read
from tests.conftest import NS, article_text, make_config, require_corpus, run_main, write_config

BASE = "https://assets.example.org/site/"
FORBIDDEN_TAGS = {"script", "style", "iframe", "form", "input", "button", "object", "embed", "svg", "head",
                  "title", "meta", "link", "textarea", "select"}
NEWSLETTERS = ("ai-every-day-2021-06-15.html", "ai-every-day-2021-09-09.html")

HOSTILE = """
<h2>Still here</h2>
<p onclick="steal()">Text with <b>bold</b> and <a href="javascript:alert(1)">a bad link</a>
and <a href="JaVaScRiPt:alert(2)">another</a> and <a href="java&#x09;script:alert(3)">a third</a>.</p>
<script>alert("script")</script><style>p { color: red }</style>
<img src="x.png" onerror="alert('img')" alt="relative image">
<img src="data:image/png;base64,iVBORw0KGgo=" alt="data image">
<iframe src="https://evil.example/"></iframe>
<form action="https://evil.example/"><input name="q"><button>Go</button></form>
<a href="vbscript:msgbox(1)">vb</a> <a href="/about/">about</a> <a href="mailto:ed@example.org">mail</a>
<svg onload="alert(4)"><circle/></svg>
<div style="background:url(javascript:alert(5))" class="x" id="y">styled</div>
{% include evil.html %}{{ site.secret }}
<p>{% raw %}{{ kept as text }}{% endraw %}</p>
"""


def check_safe(markup: str) -> lxml.html.HtmlElement:
    """The content parses as HTML and holds nothing that runs or loads by itself; every URL absolute."""
    root = lxml.html.fragment_fromstring(markup, create_parent="div")
    for element in root.iter():
        if not isinstance(element.tag, str):
            raise AssertionError(f"comment or processing instruction left: {etree.tostring(element)!r}")
        assert element.tag not in FORBIDDEN_TAGS, element.tag
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on") and name not in ("style", "class", "id"), (element.tag, name)
            if name in ("href", "src"):
                assert value.startswith(("http://", "https://", "mailto:")), (element.tag, value)
    text = root.text_content()
    assert "{%" not in text and "{{ site" not in text and "javascript" not in markup.lower()
    assert "data:" not in markup and "alert(" not in markup
    return root


def images(root: lxml.html.HtmlElement) -> list[str]:
    return [img.get("src") for img in root.iter("img") if img.get("src")]


def test_markdown_is_rendered_as_commonmark_with_tables():
    text = """# Heading

Some *emphasis*, **strong**, `code` and a [relative link](notes/more.html "More").

> A quote

1. one
2. two

![An image](/images/pic.jpg)

| a | b |
|---|---|
| 1 | 2 |

```python
print("hi")
```
"""
    markup = render_body(text, "posts/2024-01-01-story.md", BASE)
    root = check_safe(markup)
    assert root.find("h1").text == "Heading" and root.find(".//em").text == "emphasis"
    assert root.find(".//blockquote/p").text == "A quote"
    assert [li.text for li in root.iter("li")] == ["one", "two"]
    assert root.find(".//a").get("href") == "https://assets.example.org/site/notes/more.html"
    assert root.find(".//a").get("title") == "More"
    assert images(root) == ["https://assets.example.org/site/images/pic.jpg"]  # below the base's path
    assert [td.text for td in root.iter("td")] == ["1", "2"]
    assert root.find(".//pre/code").text == 'print("hi")\n'


def test_markdown_extension_is_case_insensitive_and_markdown_counts():
    assert render_body("*x*", "A.MD", BASE) == render_body("*x*", "a.markdown", BASE) == "<p><em>x</em></p>"


@pytest.mark.parametrize("source", ["hostile.html", "hostile.md"])
def test_hostile_body_keeps_text_and_images_and_nothing_else(source):
    markup = render_body(HOSTILE, source, BASE)
    root = check_safe(markup)
    text = " ".join(root.text_content().split())
    for words in ("Still here", "Text with bold and a bad link and another and a third", "about", "mail",
                  "styled", "{{ kept as text }}"):
        assert words in text, words
    assert "alert" not in text and "color: red" not in text and "site.secret" not in text
    assert images(root) == ["https://assets.example.org/site/x.png"]
    links = {a.text: a.get("href") for a in root.iter("a")}
    assert links["about"] == "https://assets.example.org/site/about/" and links["mail"] == "mailto:ed@example.org"
    assert links["a bad link"] is None and links["vb"] is None


def test_relative_urls_resolve_against_the_article_link_without_assets_base_url():
    markup = render_body('<a href="../b.html">b</a><img src="c.png"><a href="#part">p</a>', "a.html",
                         "https://news.example.com/2024/story/")
    assert 'href="https://news.example.com/2024/b.html"' in markup
    assert 'src="https://news.example.com/2024/story/c.png"' in markup
    assert 'href="https://news.example.com/2024/story/#part"' in markup


def test_an_in_page_anchor_points_into_the_article_itself():
    markup = render_body('[up](#top) ![i](i.png)', "a.md", BASE, "https://news.example.com/story")
    assert 'href="https://news.example.com/story#top"' in markup and f'src="{BASE}i.png"' in markup


def test_liquid_tags_never_reach_a_reader():
    text = "a {% if x %}b{% endif %} {{ page.title | upcase }} {%- raw -%}{% kept %}{%- endraw -%} " \
           "{% comment %}secret{% endcomment %}c"
    assert strip_liquid(text) == "a b  {% kept %} c"
    assert render_body("{{ only.output }}{% tag %}", "x.md", BASE) is None


@pytest.mark.parametrize("body", ["<script>alert(1)</script>", "<style>p{}</style>", "<!-- a comment -->",
                                  "{% include x %}", "<div> <p> </p> </div>", "<iframe src=x></iframe>"])
def test_a_body_with_nothing_left_gives_no_content(body):
    assert render_body(body, "x.html", BASE) is None


def test_plain_text_bodies_keep_their_paragraphs():
    assert render_body("First <para>.\n\nSecond & last.", "x.txt", BASE) == \
        "<p>First &lt;para&gt;.</p>\n<p>Second &amp; last.</p>"
    assert render_body("no extension", "README", BASE) == "<p>no extension</p>"


def test_a_whole_html_document_is_reduced_to_its_body():
    text = """<html><head><title>Head title</title><meta name="x" content="y">
<style>.a { color: {link_color}; }</style></head>
<body><!--[if mso]><table><tr><td>Outlook only</td></tr></table><![endif]-->
<center><table role="presentation"><tr><td><p>Cell text {can-spam}</p></td>
<td><table><tr><th>Data</th></tr><tr><td>42</td></tr></table></td></tr></table></center>
</body></html>
"""
    markup = render_body(text, "mail.html", BASE)
    root = check_safe(markup)
    assert " ".join(" ".join(root.itertext()).split()) == "Cell text Data 42"
    assert len(list(root.iter("table"))) == 1  # the layout table is gone, the data table stays


def test_newsletters_of_the_corpus_become_readable_content():
    corpus = require_corpus()
    for name in NEWSLETTERS:
        relative = f"everyday-ai/_newsletters/{name}"
        document = read(corpus, relative)
        article, problems = read_article(document, "https://everyday-cc.github.io/ai/")
        assert article is not None and not problems
        markup = article.content
        root = check_safe(markup)
        text = " ".join(root.text_content().split())
        for heading in ("News of the day", "Learning of the day", "Companies of the day", "Influencers of the day"):
            assert heading in text, (name, heading)
        assert "Copyright (c) 2020 Everyday.cc" in text and "hello@everyday.cc" in text
        for gone in ("{can-spam}", "{link_color}", "{%", "endraw", "mso", "font-family", "<html", "<title"):
            assert gone not in markup, (name, gone)
        # Item titles (inside {% raw %} in the source) and their images survive.
        first_titles = [strong.text_content() for strong in root.iter("strong")]
        assert len(first_titles) >= 11, first_titles
        assert len(images(root)) > 30
        assert len(markup) < len(document.body) / 2  # the head, styles and layout are gone
    assert "Elisity raises $26M Series A" in read_article(read(corpus, f"everyday-ai/_newsletters/{NEWSLETTERS[0]}"),
                                                          None)[0].content


def test_invalid_utf8_body_is_a_warning_and_the_article_is_published(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "bad.md").write_bytes(article_text(slug="bad").encode() + b"Fine text \xff\xfe then more.\n")
    (store / "badhead.md").write_bytes(article_text(slug="badhead", title="Caf\xe9").encode("latin-1"))
    document = read(store, "bad.md")
    assert document.body == "" and "not UTF-8" in document.body_problem
    article, problems = read_article(document, BASE)
    assert article is not None and article.content is None and article.summary == "Excerpt of bad."
    assert [(p.source, p.field, p.fatal) for p in problems] == [("bad.md", "body", False)]
    result = run_main("build", "-c", write_config(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "bad.md: body: not UTF-8 text" in result.stderr
    assert "badhead.md: not UTF-8 text" in result.stderr  # a front matter that is not UTF-8 still fails
    links = [entry.link for entry in feedparser.parse((tmp_path / "out" / "all.atom").read_bytes()).entries]
    assert links == ["https://news.example.com/bad"]


def test_a_body_longer_than_max_bytes_is_left_out_with_a_warning(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "huge.md").write_text(article_text(slug="huge") + ("Lots of *words* here. " * 250_000), encoding="utf-8")
    (store / "small.md").write_text(article_text(slug="small", publishedDateTime="2024-01-01T00:00:00Z")
                                    + "A *small* body.\n", encoding="utf-8")
    assert (store / "huge.md").stat().st_size > 5_000_000
    result = run_main("build", "-c", write_config(tmp_path))
    assert result.returncode == 0, result.stderr
    assert re.search(r"huge\.md: body: 5\d{6} bytes, longer than max_bytes \(524288\): not rendered; "
                     "published without it", result.stderr)
    for extension in (".atom", ".rss", ".json"):
        assert (tmp_path / "out" / f"all{extension}").stat().st_size <= 512 * 1024
    entries = feedparser.parse((tmp_path / "out" / "all.atom").read_bytes()).entries
    assert [entry.link for entry in entries] == ["https://news.example.com/huge", "https://news.example.com/small"]
    assert "content" not in entries[0] and entries[0].summary == "Excerpt of huge."
    assert entries[1].content[0].value == "<p>A <em>small</em> body.</p>"


@pytest.fixture
def body_store(tmp_path: Path) -> Path:
    """Hand-made Markdown, HTML and text articles, the corpus newsletters and a hostile body."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "guide.md").write_text(article_text(slug="guide", publishedDateTime="2024-01-03T00:00:00Z")
                                    + "## Steps\n\n1. Read *this*\n2. See ![diagram](img/d.png)\n", encoding="utf-8")
    (store / "hostile.html").write_text(article_text(slug="hostile", publishedDateTime="2024-01-02T00:00:00Z")
                                        + HOSTILE, encoding="utf-8")
    (store / "note.txt").write_text(article_text(slug="note", publishedDateTime="2024-01-01T00:00:00Z")
                                    + "Plain <text> & more.\n", encoding="utf-8")
    (store / "empty.html").write_text(article_text(slug="empty", publishedDateTime="2023-12-31T00:00:00Z")
                                      + "<script>only()</script>\n", encoding="utf-8")
    for name in NEWSLETTERS:
        shutil.copy(require_corpus() / "everyday-ai" / "_newsletters" / name, store / name)
    return tmp_path


def contents(out: Path) -> dict[str, dict[str, str | None]]:
    """Per format, entry link -> its content HTML (None: no content element), after checking the feed."""
    found: dict[str, dict[str, str | None]] = {}
    assert not feedparser.parse((out / "all.atom").read_bytes()).bozo
    atom = etree.parse(str(out / "all.atom"))
    found["atom"] = {}
    for entry in atom.iterfind("a:entry", NS):
        content = entry.find("a:content", NS)
        assert content is None or content.get("type") == "html"
        link = next(a.get("href") for a in entry.iterfind("a:link", NS) if a.get("rel") != "enclosure")
        found["atom"][link] = None if content is None else content.text
    rss = etree.parse(str(out / "all.rss"))
    found["rss"] = {item.findtext("link"): item.findtext("content:encoded", namespaces=NS)
                    for item in rss.iter("item")}
    assert not feedparser.parse((out / "all.rss").read_bytes()).bozo
    document = json.loads((out / "all.json").read_bytes())
    found["json"] = {item["url"]: item.get("content_html") for item in document["items"]}
    return found


def test_bodies_in_every_format_sanitized_with_the_excerpt_as_summary(body_store):
    result = run_main("build", "-c", write_config(body_store, assets_base_url=None))
    assert result.returncode == 0, result.stderr
    out = body_store / "out"
    found = contents(out)
    assert found["atom"] == found["rss"] == found["json"]
    by_link = found["atom"]
    assert by_link["https://news.example.com/empty"] is None
    assert by_link["https://news.example.com/note"] == "<p>Plain &lt;text&gt; &amp; more.</p>"
    guide = check_safe(by_link["https://news.example.com/guide"])
    assert images(guide) == ["https://news.example.com/img/d.png"]  # no assets_base_url: the article's link
    check_safe(by_link["https://news.example.com/hostile"])
    for url in ("https://everyday.cc/ai/newsletter/ai-every-day-2021-06-15/",
                "https://everyday.cc/ai/newsletter/ai-every-day-2021-09-09/"):
        assert "News of the day" in check_safe(by_link[url]).text_content()
    atom = feedparser.parse((out / "all.atom").read_bytes())
    assert {e.link: e.summary for e in atom.entries}["https://news.example.com/guide"] == "Excerpt of guide."
    rss = etree.parse(str(out / "all.rss"))
    assert {i.findtext("link"): i.findtext("description") for i in rss.iter("item")}[
        "https://news.example.com/guide"] == "Excerpt of guide."
    items = {item["url"]: item for item in json.loads((out / "all.json").read_bytes())["items"]}
    assert items["https://news.example.com/guide"]["summary"] == "Excerpt of guide."
    assert items["https://news.example.com/empty"]["content_text"] == "Excerpt of empty."
    raw = b"".join((out / f"all{extension}").read_bytes() for extension in (".atom", ".rss", ".json"))
    for needle in (b"<script", b"&lt;script", b"onerror", b"javascript:", b"<iframe", b"&lt;iframe", b"{%"):
        assert needle not in raw, needle


def test_content_summary_publishes_no_bodies_and_switching_rereads(body_store):
    config = write_config(body_store)
    assert run_main("build", "-c", config).returncode == 0
    assert contents(body_store / "out")["atom"]["https://news.example.com/guide"] is not None
    config = write_config(body_store, content="summary")
    result = run_main("build", "-c", config)
    assert result.returncode == 0, result.stderr
    found = contents(body_store / "out")
    assert all(value is None for by_link in found.values() for value in by_link.values()), found
    assert b"content:encoded" not in (body_store / "out" / "all.rss").read_bytes()
    config = write_config(body_store, content="full")  # and back: the bodies come back
    assert run_main("build", "-c", config).returncode == 0
    assert contents(body_store / "out")["json"]["https://news.example.com/guide"] is not None


def test_the_scan_cache_key_covers_what_bodies_depend_on(tmp_path):
    full = make_config(tmp_path)
    assert scan_cache.cache_key(full) != scan_cache.cache_key(make_config(tmp_path, content="summary"))
    assert scan_cache.cache_key(full) != scan_cache.cache_key(make_config(tmp_path, max_bytes="1MiB"))
    assert "stages.body" in scan_cache.CODE


def test_content_setting_is_validated(tmp_path):
    path = write_config(tmp_path, content="excerpt")
    with pytest.raises(ConfigError, match="content: expected full or summary, got 'excerpt'"):
        load_config(path)
    assert load_config(write_config(tmp_path)).content == "full"


def test_article_model_without_bodies():
    document = Document(source="a.md", metadata={"title": "T", "publishedDateTime": "2024-01-01",
                                                  "webUrl": "https://x.example/a"}, body="*body*")
    assert read_article(document, None)[0].content == "<p><em>body</em></p>"
    assert read_article(document, None, body_limit=0)[0].content is None
