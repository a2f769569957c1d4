"""JSON Feed 1.1 beside every Atom and RSS feed, WebSub hub links in all three formats, and the `formats`
switch. The JSON is checked field by field against the Atom feed of the same build, parsed with feedparser."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from publisher.build import build
from publisher.config import SiteConfig
from publisher.stages import render as render_module
from publisher.stages.articles import Article, Image, Provider
from publisher.stages.render import FORMATS, render
from publisher.stages.selection import Feed, FeedSpec
from tests.conftest import ATOM, SITE, make_config, require_corpus, run_main, write_article

JSON_FEED_1_1 = "https://jsonfeed.org/version/1.1"
HUBS = ("https://hub.example.org/", "https://websub.example.net/hub?x=1&y=2")


def check_json_feed(document: dict) -> None:
    """The structure JSON Feed 1.1 requires (https://www.jsonfeed.org/version/1.1/)."""
    assert document["version"] == JSON_FEED_1_1
    assert isinstance(document["title"], str) and document["title"]
    assert isinstance(document["items"], list)
    for key in ("home_page_url", "feed_url", "icon", "favicon"):
        assert key not in document or document[key].startswith(("http://", "https://")), key
    for author in document.get("authors", []):
        assert set(author) <= {"name", "url", "avatar"} and author
    for hub in document.get("hubs", []):
        assert set(hub) == {"type", "url"}
    ids = [item["id"] for item in document["items"]]
    assert len(ids) == len(set(ids)), "ids are unique"
    for item in document["items"]:
        assert isinstance(item["id"], str) and item["id"]
        assert ("content_html" in item) != ("content_text" in item), item["id"]
        for key in ("date_published", "date_modified"):
            assert datetime.fromisoformat(item[key]).utcoffset() is not None, (item["id"], key)
        for attachment in item.get("attachments", []):
            assert attachment["url"].startswith(("http://", "https://"))
            assert isinstance(attachment["mime_type"], str) and "/" in attachment["mime_type"]
            assert attachment.get("size_in_bytes", 1) > 0
        assert all(isinstance(tag, str) for tag in item.get("tags", []))


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def corpus_out(corpus_build: dict) -> Path:
    return corpus_build["out"]


def test_every_atom_feed_has_a_json_feed_with_the_same_entries(corpus_out):
    atoms = sorted(corpus_out.rglob("*.atom"))
    assert len(atoms) > 10
    for atom_path in atoms:
        document = load(atom_path.with_suffix(".json"))
        check_json_feed(document)
        atom = feedparser.parse(atom_path.read_bytes())
        rss = feedparser.parse(atom_path.with_suffix(".rss").read_bytes())
        items = document["items"]
        assert [i["id"] for i in items] == [e.id for e in atom.entries] == [e.id for e in rss.entries]
        assert document["title"] == atom.feed.title
        relative = atom_path.relative_to(corpus_out).with_suffix(".json").as_posix()
        assert document["feed_url"] == SITE["base_url"] + relative
        assert document["home_page_url"] == SITE["home"]
        for item, entry in zip(items, atom.entries, strict=False):
            assert item["url"] == entry.link
            assert item["title"] == entry.title
            assert datetime.fromisoformat(item["date_published"]) == datetime.fromisoformat(entry.published)
            assert datetime.fromisoformat(item["date_modified"]) == datetime.fromisoformat(entry.updated)
            assert item.get("tags", []) == [tag.term for tag in entry.get("tags", [])]
            assert [a["name"] for a in item.get("authors", [])] == ([entry.author] if "author" in entry else [])
            enclosures = [(link.href, link.type) for link in entry.links if link.rel == "enclosure"]
            assert [(a["url"], a["mime_type"]) for a in item.get("attachments", [])] == enclosures
            if "summary" in entry and "content_text" in item:
                assert item["content_text"] == entry.summary


def test_json_feed_fields_of_one_article(tmp_path):
    store = tmp_path / "store"
    write_article(store, "a.md", title='Quotes " and <tags> & ünïcode', excerpt="Text &amp; more",
                  topics=["AI", "Robots"], updatedDateTime="2024-01-03T00:00:00+02:00")
    (store / "b.txt").write_text((store / "a.md").read_text().replace("/a", "/b") + "A body.\n\nSecond <p>.\n")
    config = make_config(tmp_path, site={**SITE, "icon": "https://example.org/icon.png",
                                         "logo": "https://example.org/logo.png",
                                         "author": {"name": "Ed", "uri": "https://example.org/ed"}})
    result = run_main("build", "-c", config.source)
    assert result.returncode == 0, result.stderr
    document = load(tmp_path / "out" / "topics" / "robots.json")
    check_json_feed(document)
    assert document["title"] == "Test Feeds: Robots"
    assert document["description"] == "Feeds for tests. Topic: Robots."
    assert document["icon"] == "https://example.org/logo.png"
    assert document["favicon"] == "https://example.org/icon.png"
    assert document["authors"] == [{"name": "Ed", "url": "https://example.org/ed"}]
    assert document["language"] == "en" and "hubs" not in document
    with_body, without = sorted(document["items"], key=lambda item: item["url"], reverse=True)
    assert without == {
        "id": without["id"],
        "url": "https://news.example.com/a",
        "title": 'Quotes " and <tags> & ünïcode',
        "content_text": "Text & more",
        "image": "https://img.example.com/a.jpg",
        "date_published": "2024-01-02T03:04:05+00:00",
        "date_modified": "2024-01-02T22:00:00+00:00",
        "authors": [{"name": "Example News", "url": "https://news.example.com/"}],
        "tags": ["AI", "Robots"],
        "attachments": [{"url": "https://img.example.com/a.jpg", "mime_type": "image/jpeg"},
                        {"url": "https://assets.example.org/site/assets/logos/news.png",
                         "mime_type": "image/png"}],
    }
    assert with_body["content_html"] == "<p>A body.</p>\n<p>Second &lt;p&gt;.</p>"
    assert with_body["summary"] == "Text & more" and "content_text" not in with_body


def article(slug: str, images: tuple[Image, ...] = ()) -> Article:
    moment = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    return Article(source=f"{slug}.md", id=f"urn:uuid:{slug}", url=f"https://news.example.com/{slug}",
                   title=slug, summary=None, content=None, published=moment, updated=moment,
                   provider=Provider("P", None, None), topics=(), images=images)


@pytest.fixture
def site(tmp_path: Path) -> SiteConfig:
    return make_config(tmp_path).site


def test_attachment_sizes_and_types_come_from_the_image(site):
    """Whatever the Image says (issue 5 fills in probed sizes and types) is what the attachment says."""
    images = (Image("https://img.example.com/1.jpg", mime_type="image/webp", length=12345),
              Image("https://img.example.com/2.bin"))
    feed = Feed(FeedSpec("all", "all", "T", None), (article("x", images),), 1)
    item = json.loads(render(feed, FORMATS["json"], site))["items"][0]
    assert item["attachments"] == [
        {"url": "https://img.example.com/1.jpg", "mime_type": "image/webp", "size_in_bytes": 12345},
        {"url": "https://img.example.com/2.bin", "mime_type": "application/octet-stream"},
    ]
    assert item["content_text"] == "" and item["authors"] == [{"name": "P"}]


@pytest.mark.parametrize("hubs", [(), HUBS])
def test_hub_links_in_every_format(site, hubs):
    feed = Feed(FeedSpec("topics", "topics/x", "T: X", "X"), (article("a"),), 1)
    atom = etree.fromstring(render(feed, FORMATS["atom"], site, hubs))
    assert atom.xpath("a:link[@rel='hub']/@href", namespaces={"a": ATOM}) == list(hubs)
    assert atom.xpath("a:link[@rel='self']/@href", namespaces={"a": ATOM}) == [f"{site.base_url}topics/x.atom"]
    rss_bytes = render(feed, FORMATS["rss"], site, hubs)
    channel = etree.fromstring(rss_bytes).find("channel")
    links = [(link.get("rel"), link.get("href")) for link in channel.findall(f"{{{ATOM}}}link")]
    assert links == [("self", f"{site.base_url}topics/x.rss"), *(("hub", hub) for hub in hubs)]
    assert not feedparser.parse(rss_bytes).bozo
    document = json.loads(render(feed, FORMATS["json"], site, hubs))
    assert document.get("hubs", []) == [{"type": "WebSub", "url": hub} for hub in hubs]


@pytest.mark.parametrize("formats", [["json"], ["rss", "atom"], ["atom"]])
def test_formats_choose_the_files_written(tmp_path, formats):
    write_article(tmp_path / "store", "a.md", topics=["AI"])
    build(make_config(tmp_path, formats=formats, precompress=False))
    out = tmp_path / "out"
    extensions = [FORMATS[name].extension for name in formats]
    expected = sorted([f"{feed}{ext}" for feed in ("all", "topics/ai") for ext in [*extensions, ".html"]]
                      + ["feeds.opml", "index.html"])
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == expected
    outlines = etree.parse(str(out / "feeds.opml")).findall(".//outline[@type='rss']")
    assert [o.get("xmlUrl") for o in outlines] == [f"{SITE['base_url']}{feed}{extensions[0]}"
                                                   for feed in ("all", "topics/ai")]
    index = (out / "index.html").read_text(encoding="utf-8")
    for name, fmt in FORMATS.items():
        assert (f'type="{fmt.media_type}"' in index) == (name in formats)


def _json_value(rng: random.Random, depth: int) -> object:
    scalars = ["", "plain", "quote \" back \\ slash", "tab\tnew\nline\r", "\u2028\u2029", "émoji 😀 中文",
               "\x00\x1f\x7f", "</script>", 0, -1, 2**70, 1.5, -0.0, 1e300, True, False, None]
    if depth <= 0 or rng.random() < 0.4:
        return rng.choice(scalars)
    if rng.random() < 0.5:
        return [_json_value(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {str(rng.choice(scalars)) + str(index): _json_value(rng, depth - 1) for index in range(rng.randrange(4))}


def test_indented_json_is_json_dumps_to_the_byte(tmp_path):
    rng = random.Random(5)
    for _ in range(3000):
        value = _json_value(rng, 4)
        assert render_module.indented_json(value) == json.dumps(value, ensure_ascii=False, indent=2), value
    build(make_config(tmp_path, store=str(require_corpus())))
    documents = sorted((tmp_path / "out").rglob("*.json"))
    assert len(documents) > 10
    for path in documents:  # every JSON feed of the corpus, as json.dumps writes it
        text = path.read_text(encoding="utf-8")
        assert json.dumps(json.loads(text), ensure_ascii=False, indent=2) + "\n" == text, path
