"""The article model: one document's front matter in, one validated Article (or a named problem) out."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest

from publisher.stages import articles, urls
from publisher.stages.articles import UNKNOWN_TYPE, guess_image_type, parse_datetime, read_article
from publisher.stages.store import Document
from publisher.stages.urls import InvalidURL, canonical, entry_id, publishable
from tests.conftest import require_corpus

BASE = "https://everyday-cc.github.io/ai/"


def doc(body: str = "", **meta) -> Document:
    fields = {"title": "A title", "publishedDateTime": "2024-02-14T20:13:00Z",
              "webUrl": "https://news.example.com/a"}
    fields.update(meta)
    return Document(source="news/a.md", metadata={k: v for k, v in fields.items() if v is not None}, body=body)


def article(**meta):
    result, problems = read_article(doc(**meta), BASE)
    assert result is not None, problems
    return result


def problem(**meta):
    result, problems = read_article(doc(**meta), BASE)
    assert result is None and problems and problems[-1].fatal
    return problems[-1]


@pytest.mark.parametrize("value, expected", [
    ("2024-02-14T20:13:00Z", datetime(2024, 2, 14, 20, 13, tzinfo=UTC)),
    ("2024-02-14T21:13:00+01:00", datetime(2024, 2, 14, 20, 13, tzinfo=UTC)),
    ("2024-02-14T20:13:00", datetime(2024, 2, 14, 20, 13, tzinfo=UTC)),  # naive means UTC
    ("2024-02-14T20:13:00.987654Z", datetime(2024, 2, 14, 20, 13, tzinfo=UTC)),
    (datetime(2024, 2, 14, 20, 13), datetime(2024, 2, 14, 20, 13, tzinfo=UTC)),
    (datetime(2019, 12, 8, 8, 0, tzinfo=timezone(timedelta(hours=-8))),
     datetime(2019, 12, 8, 16, 0, tzinfo=UTC)),
    (date(2024, 2, 14), datetime(2024, 2, 14, tzinfo=UTC)),
])
def test_dates_become_utc_whole_seconds(value, expected):
    parsed = parse_datetime(value)
    assert parsed == expected and parsed.tzinfo == UTC and parsed.microsecond == 0


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01T00:00:00Z", 20240214, ["2024-02-14"]])
def test_bad_dates_are_refused(value):
    with pytest.raises(ValueError):
        parse_datetime(value)


def test_updated_defaults_to_published():
    a = article()
    assert a.updated == a.published
    assert article(updatedDateTime="2024-03-01T00:00:00Z").updated == datetime(2024, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize("meta, field, words", [
    ({"title": None}, "title", "missing"),
    ({"title": {"en": "map"}}, "title", "expected text"),
    ({"title": "   "}, "title", "empty"),
    ({"publishedDateTime": None}, "publishedDateTime", "missing"),
    ({"publishedDateTime": "soon"}, "publishedDateTime", "not an ISO 8601 date"),
    ({"webUrl": "ftp://news.example.com/a"}, "webUrl", "not an http(s) URL"),
    ({"webUrl": "/relative/story"}, "webUrl", "links are not resolved against assets_base_url"),
    ({"webUrl": None}, "webUrl", "missing"),
    ({"topics": ["AI", ["nested"]]}, "topics[1]", "expected a topic name"),
    ({"topics": {"a": 1}}, "topics", "expected a list"),
    ({"provider": "Forbes"}, "provider", "expected a mapping"),
    ({"images": "https://x.example/a.jpg"}, "images", "expected a list"),
    ({"published": "maybe"}, "published", "expected true or false"),
    ({"quality": "high"}, "quality", "expected a number"),
])
def test_broken_fields_are_named(meta, field, words):
    found = problem(**meta)
    assert found.field == field and words in found.reason and found.source == "news/a.md"


def test_every_problem_of_a_file_is_found_in_one_pass():
    result, problems = read_article(doc(title={"en": "map"}, publishedDateTime="soon", webUrl="story.html",
                                        topics=["AI", ["x"], {"y": 1}], quality="high", published="maybe"), BASE)
    assert result is None and all(found.fatal for found in problems)
    assert [found.field for found in problems] == ["title", "publishedDateTime", "webUrl", "topics[1]", "topics[2]",
                                                   "published", "quality"]


def test_not_an_article_without_title_and_date():
    result, problems = read_article(Document("events/e.md", {"name": "NeurIPS", "startDateTime": "x"}, ""), BASE)
    assert result is None and problems == []


def test_original_url_is_the_fallback_link():
    assert article(webUrl=None, originalUrl="https://orig.example.com/x").url == "https://orig.example.com/x"
    a, problems = read_article(doc(webUrl="mailto:x@y", originalUrl="https://orig.example.com/x"), BASE)
    assert a.url == "https://orig.example.com/x" and problems[0].field == "webUrl"


def test_excerpt_entities_are_decoded_to_text():
    assert article(excerpt="V&amp;L&nbsp;models &lt;3").summary == "V&L models <3"  # nbsp folds to a space
    assert article(excerpt=None).summary is None


def test_control_characters_are_stripped_everywhere():
    a = article(title="Bad\x00 \x08title\x1b", excerpt="x\x0cy", topics=["A\x01I"], body="")
    assert (a.title, a.summary, a.topics) == ("Bad title", "xy", ("AI",))


def test_numbers_as_titles_are_text():
    assert article(title=1984).title == "1984"


def test_topics_collapse_duplicates_keep_order():
    assert article(topics=["AI", "Machine Learning", "ai", "AI", None, "  Machine   Learning "]).topics == \
        ("AI", "Machine Learning")


def test_single_topic_string_is_one_topic():
    assert article(topics="AI").topics == ("AI",)


def test_images_in_every_shape():
    a = article(images=[
        {"url": "https://img.example.com/a.jpg", "width": 800, "height": 600, "isCached": True},
        "https://img.example.com/b.png",
        {"url": None, "width": 1},
        {"url": "https://img.example.com/with space.jpg"},
        {"url": "javascript:alert(1)"},
        {"url": "https://img.example.com/a.jpg"},
    ])
    assert [i.url for i in a.images] == ["https://img.example.com/a.jpg", "https://img.example.com/b.png",
                                         "https://img.example.com/with%20space.jpg"]
    assert (a.images[0].width, a.images[0].height, a.images[1].width) == (800, 600, None)
    _, problems = read_article(doc(images=[{"url": "javascript:alert(1)"}]), BASE)
    assert problems[0].field == "images[0].url" and not problems[0].fatal


def test_relative_logo_resolves_below_the_site_path():
    a = article(provider={"name": "Medium", "domain": "medium.com",
                          "images": [{"url": "/assets/images/organizations/medium.com-50x50.jpg"}]})
    assert a.provider.logo.url == "https://everyday-cc.github.io/ai/assets/images/organizations/medium.com-50x50.jpg"
    assert a.provider.uri == "https://medium.com/"


def test_relative_url_without_base_is_dropped_with_a_warning():
    result, problems = read_article(doc(images=["/a.jpg"]), None)
    assert result.images == () and "assets_base_url" in problems[0].reason


def test_unpublished_and_kept_fields():
    a = article(published=False, quality=71, heat=-1, type="article", secured="blob")
    assert (a.is_published, a.quality, a.heat, a.kind) == (False, 71, -1, "article")
    assert "blob" not in repr(a)
    assert article(published=None).is_published


def test_body_is_content():
    assert article(body="First *para*.\n\nSecond.").content == "<p>First <em>para</em>.</p>\n<p>Second.</p>"


@pytest.mark.parametrize("url, expected", [
    ("https://x.example/a.JPG", "image/jpeg"),
    ("https://x.example/a.png?w=10", "image/png"),
    ("https://x.example/0x0.jpg?format=jpg&height=900", "image/jpeg"),
    ("https://x.example/img?format=webp", "image/webp"),
    ("https://x.example/img/abc", UNKNOWN_TYPE),
    ("https://x.example/dir.v2/abc", UNKNOWN_TYPE),
])
def test_image_type_from_extension_or_format(url, expected):
    assert guess_image_type(url) == expected


@pytest.mark.parametrize("url, expected", [
    ("https://Bücher.example/a b", "https://xn--bcher-kva.example/a%20b"),
    ("https://faß.de/x", "https://xn--fa-hia.de/x"),  # UTS 46 non-transitional, as browsers: not fass.de
    ("https://cdn_1.example.org/x", "https://cdn_1.example.org/x"),  # ASCII host names pass as they are
])
def test_host_names_go_through_idna(url, expected):
    assert publishable(url, None) == expected


@pytest.mark.parametrize("url", ["https://☃.net/", "https://a..b/", f"https://{'x' * 64}.org/"])
def test_host_names_idna_refuses(url):
    with pytest.raises(InvalidURL, match="no valid host"):
        publishable(url, None)


@pytest.mark.parametrize("url", [
    "https://example.com/a", "http://www.Example.com:443/a/?utm_source=x&b=1#frag", "https://例え.jp/パス",
    "https://example.com/?q=a+b&q=c%20d", "https://example.com", "https://example.com:8080/x/",
])
def test_entry_id_is_the_uuid5_of_the_canonical_url(url):
    assert entry_id(url) == uuid.uuid5(uuid.NAMESPACE_URL, canonical(url)).urn


def _url_pieces(rng: random.Random) -> str:
    schemes = ["https://", "http://", "HTTPS://", "ftp://", "//", ""]
    hosts = ["example.com", "Example.COM", "a.b.", "cdn_1.x-y.org", "a..b", "x" * 63 + ".org", "x" * 64 + ".org",
             "user@host.org", "[::1]", "host.org:443", "host.org:0443", "host.org:99999", "bücher.de", "h",
             "-.org", "", "a b.org", "host.org:"]
    rests = ["", "/", "/p", "/a b", "/%7e~", "/p?q", "/p?", "/p#", "/p?#f", "/p#f?x", "?q", "#f", "/[x]", "/é",
             "/a\tb", "/ä?b=ü#c", "//x", "/p??", "/p##", "/;,=@!$&'()*+:", "/<>", '/"', "/`{}|^\\"]
    return rng.choice(schemes) + rng.choice(hosts) + rng.choice(rests) + rng.choice(["", "", rng.choice(rests)])


def _outcome(function: Callable[[str], str], url: str) -> str:
    try:
        return function(url)
    except InvalidURL as exc:
        return f"InvalidURL: {exc}"


def test_urls_already_in_published_form_pass_through_unchanged_exactly_as_normalised():
    """urls._encoded() returns a URL that matches its shortcut as it is: for every URL, that is what the full
    normalisation (urls._normalised) gives too, or the same refusal."""
    rng = random.Random(11)
    candidates = {_url_pieces(rng) for _ in range(20_000)}
    candidates |= {line.split(":", 1)[1].strip().strip('"') for path in sorted(require_corpus().rglob("*.md"))
                   for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                   if "http" in line and ":" in line}
    shortcut = 0
    for url in sorted(candidates):
        assert _outcome(urls._encoded, url) == _outcome(urls._normalised, url), url
        shortcut += urls._encoded(url) == url if not _outcome(urls._encoded, url).startswith("Invalid") else 0
    assert shortcut > 1000  # both paths were exercised


def test_path_and_query_as_urlsplit_gives_them():
    rng = random.Random(12)
    for url in sorted({_url_pieces(rng) for _ in range(5000)}):
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        assert articles._path_and_query(url) == (parts.path, parts.query), url


def test_canonical_forms_of_published_urls_are_those_of_the_full_parse():
    rng = random.Random(13)
    candidates = {_url_pieces(rng) for _ in range(20_000)} | {"https://www./x", "https://www.x.org", "http://x.org//"}
    shortcut = 0
    for url in sorted(candidates):
        try:
            published = publishable(url, None)
        except InvalidURL:
            continue
        assert canonical(published) == urls._canonical(published), published
        shortcut += "?" not in published and "#" not in published
    assert shortcut > 1000


def test_a_provider_or_topics_read_once_are_told_for_every_file_with_its_name():
    """Providers and topics lists are read once per distinct value (articles._remembered): what each file
    gets, problems and all, is what reading it alone gives, named after that file."""
    cases = [
        {"provider": {"name": "Wired", "domain": "not a domain!", "images": [{"url": "https://w.example/l.png"}]}},
        {"provider": "Wired"},  # not a mapping: fatal
        {"topics": ["AI", 7, ["nested"], "ai", "  Robots  "]},  # a list is not a topic name: fatal
        {"topics": ["AI", "Robots"], "provider": {"name": "Wired"}},
    ]
    for meta in cases:
        for source in ("news/one.md", "news/two.md", "news/one.md"):
            document = Document(source=source, metadata={**doc().metadata, **meta}, body="")
            articles._read_once.cache_clear()
            alone = read_article(document, BASE)
            remembered = read_article(document, BASE)  # the second time from the cache
            assert remembered == alone
            assert all(problem.source == source for problem in remembered[1])
    first = article(provider={"name": "Wired", "domain": "wired.com"}, topics=["AI"])
    again = article(provider={"name": "Wired", "domain": "wired.com"}, topics=["AI"])
    assert first.provider is again.provider and first.topics is again.topics  # shared: immutable
    # Values that compare equal but read otherwise are told apart: 1 is a name, True is not.
    assert article(provider={"name": 1}).provider.name == "1"
    assert read_article(doc(provider={"name": True}), BASE)[1][0].reason == "expected text, got bool True"
