"""The fast front-matter reader gives PyYAML's exact result, or steps aside (None) for PyYAML to decide."""

from __future__ import annotations

import random
from datetime import date
from typing import Any

import pytest
import yaml
from frontmatter.default_handlers import YAMLHandler

from publisher.stages import simple_yaml
from publisher.stages.store import split_front_matter, yaml_loader
from tests.conftest import CORPUS, require_corpus

LOADER = yaml_loader()


def pyyaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=LOADER)
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        return exc


def same(fast: Any, slow: Any) -> bool:
    """Equal values of equal types all the way down (1 == 1.0 == True would hide a wrong type)."""
    if type(fast) is not type(slow):
        return False
    if isinstance(fast, dict):
        return list(fast) == list(slow) and all(same(fast[key], slow[key]) for key in fast)
    if isinstance(fast, list):
        return len(fast) == len(slow) and all(same(a, b) for a, b in zip(fast, slow, strict=True))
    return repr(fast) == repr(slow)  # nan != nan, but their reprs agree


def check(text: str) -> Any:
    fast = simple_yaml.load(text, LOADER)
    if fast is not None:
        assert same(fast, pyyaml(text)), text
    return fast


def test_every_front_matter_of_the_corpus_reads_as_pyyaml_reads_it():
    read = 0
    for path in sorted(require_corpus().rglob("*")):
        raw = path.read_bytes() if path.is_file() else b""
        if not raw.startswith(b"---"):
            continue
        try:
            front, _ = YAMLHandler().split(raw.decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError):
            continue
        read += check(front) is not None
    assert read > 150, f"the fast reader took only {read} files of {CORPUS}"  # it does the everyday work


TYPICAL = """\
category: news
title: "Nvidia Launches AI Enterprise Suite for \\"VMware\\" vSphere"
excerpt: It's plain, with 'quotes', a#hash and a colon:inside
publishedDateTime: 2021-03-11T18:10:00Z
updatedDateTime: 2021-03-12 08:00:00+02:00
published: true
quality: 050
heat: -1
score: 1_000
ratio: .5
type: article
empty:

provider:
  name: HPCwire
  domain: hpcwire.com
  images:
    - url: /assets/images/organizations/hpcwire.com-50x50.jpg
      width: 50
      height: 50

topics:
  - AI Hardware
  - AI
  -
  - 1984
  - yes

images:
  - https://example.com/a.jpg?w=1&h=2
  - url: 'https://example.com/it''s.jpg'
    width: 700
    isCached: true
# a comment line
secured: "A0jCh7s2+/=="
"""


def test_typical_front_matter_is_read_with_pyyamls_types():
    value = check(TYPICAL)
    assert value is not None
    assert value["quality"] == 40 and value["heat"] == -1 and value["score"] == 1000 and value["empty"] is None
    assert value["topics"] == ["AI Hardware", "AI", None, 1984, True]


@pytest.mark.parametrize("text", [
    "a: [1, 2]", "a: {b: c}", "a: |\n  text\n", "a: >\n  text\n", "a: &x 1\nb: *x", "base: &b\n  c: 1\nd:\n  <<: *b",
    "a: !!str 1", "? a\n: b", '"a": b', "a: b # comment", "a: 'unclosed", 'a: "unclosed', "a: b\n  c",
    "a:\n- 1\n- 2", "- 1\n- 2", "just text", "a: b: c", "a:b", "a: 2020-02-30", "a: 1\na: 2", "a: b ",
    "a: \"tab\\there\"", "a: \"\\x41\"", "a: \"end\\\\\"", "a: \"q\\\"\"", "yes: 1", "1: one", "~: x",
    "a:\n  - - 1", "a:\n    b: 1\n  c: 2", "---\na: 1", "a: 1\n...", "%YAML 1.1\n---\na: 1", "a: -", "a: - b",
    "a: ''", "a: \"\"", "a: ' lead'", "a: .inf\nb: -.Inf\nc: .nan\nd: 0x1F\ne: 0o17\nf: +12\ng: 1e3\nh: 1.5e3",
    "a: Null\nb: NULL\nc: ~\nd: off\ne: On\nf: n\ng: Y", "a: 190:20:30", "a: 2001-12-14t21:59:43.10-05:00",
    "a: 2002-12-14", "a: x\x07y", "a: \ufeffb", "a: \U0001d400 mathematical", "a: 한국어 텍스트",
    "  a: 1", "a:\n  b:\n    c:\n      - d: 1\n        e: [x]", "list:\n  - a: 1\n    b: 2\n  - c: 3",
    "a: \"x\" y", "a: 'x' y", "a: x\n\n\nb: y\n", "a: @at", "a: `tick", "a: %pct", "a: ,comma", "a: ?q",
    "a: :colon", "a: -dash", "a: ?", "a: x:", "a:\n-", "a:\n  -\n  - b",
])
def test_hostile_or_unusual_yaml_is_pyyamls_or_left_to_it(text):
    check(text)


def test_random_documents_agree_with_pyyaml():
    """Documents stitched from fragments at random indentations: whatever the fast reader accepts, PyYAML
    reads the same way."""
    keys = ["a", "title", "yes", "b.c", "x-y", "1", "key with space", "'q'", "null", "_u"]
    values = ["", "plain", "'single'", '"double"', '"esc\\"aped"', "1", "-1", "0.5", "true", "~", "2021-03-11",
              "[1]", "{a: 1}", "x # c", "a: b", "|", "- item", "'it''s'", "\"\\/\"", ".inf", "0b101", "é"]
    rng = random.Random(1)
    accepted = 0
    for _ in range(3000):
        lines = []
        for _ in range(rng.randint(1, 8)):
            indent = " " * rng.choice([0, 0, 0, 2, 2, 4, 1, 3])
            if rng.random() < 0.3:
                lines.append(f"{indent}- {rng.choice(values)}".rstrip())
            elif rng.random() < 0.1:
                lines.append(f"{indent}- {rng.choice(keys)}: {rng.choice(values)}".rstrip())
            else:
                lines.append(f"{indent}{rng.choice(keys)}: {rng.choice(values)}".rstrip())
        accepted += check("\n".join(lines)) is not None
    assert accepted > 20  # the comparison covered accepted documents, not only refusals


SCALARS = ["plain text", "'single'", '"double \\"q\\" \\\\ \\/"', "1", "-1", "0.5", "true", "no", "~", "null",
           "2021-03-11", "2021-03-11T18:10:00Z", "012", "0x1F", "1_000", ".inf", "é ü 한국어", "http://x.org/?a=1&b=2",
           "a'b", 'say "hi"', "x#y", "-dash", "a:b", "'it''s'", '""', "''", "=", "<", "+1", "1e3", "1.5e3"]


def _tree(rng: random.Random, depth: int) -> str | list[Any] | dict[str, Any]:
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return rng.choice(SCALARS)
    if roll < 0.75:
        return [_tree(rng, depth + 1) for _ in range(rng.randint(1, 4))]
    return {rng.choice(["a", "b", "title", "url", "width", "x.y", "k-1", "_u"]) + str(n): _tree(rng, depth + 1)
            for n in range(rng.randint(1, 4))}


def _block(value: Any, indent: int) -> list[str]:
    """Lines of `value` in block style; scalars are YAML source text already."""
    pad = " " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                lines += [f"{pad}{key}:", *_block(item, indent + 2)]
            else:
                lines.append(f"{pad}{key}: {item}")
        return lines
    for item in value:
        if isinstance(item, dict):
            inner = _block(item, indent + 2)
            lines += [f"{pad}- {inner[0].lstrip()}", *inner[1:]]
        elif isinstance(item, list):
            lines += [f"{pad}-", *_block(item, indent + 2)]
        else:
            lines.append(f"{pad}- {item}")
    return lines


def test_random_block_documents_agree_with_pyyaml():
    rng = random.Random(2)
    accepted = 0
    for _ in range(2000):
        document = {f"key{n}": _tree(rng, 1) for n in range(rng.randint(1, 6))}
        accepted += check("\n".join(_block(document, 0)) + "\n") is not None
    assert accepted > 1000


def test_remembered_scalars_keep_their_meaning_as_keys_and_as_values():
    """Plain scalars are resolved once and remembered: a word remembered as a value (`yes` is True) is still
    no string key, a remembered string still is one, and remembering many never changes a result."""
    assert check("a: yes\nb: 1_000\nc: 2024-02-14\nd: on\n") == {"a": True, "b": 1000, "c": date(2024, 2, 14),
                                                                "d": True}
    assert check("yes: 1\n") is None and check("1_000: x\n") is None  # not string keys: PyYAML decides
    assert check("title: x\nnote: title\n") == {"title": "x", "note": "title"}
    assert check("a: 2020-02-30\n") is None and check("a: 2020-02-30\n") is None  # refused every time
    many = "".join(f"k{index}: {index}\n" for index in range(simple_yaml._REMEMBERED + 10))
    assert check(many) == {f"k{index}": index for index in range(simple_yaml._REMEMBERED + 10)}
    assert check("a: yes\nb: 1_000\n") == {"a": True, "b": 1000}


def handler_split(text: str) -> tuple[str, str] | str:
    try:
        return YAMLHandler().split(text)
    except ValueError:
        return "ValueError"


def quick_split(text: str) -> tuple[str, str] | str:
    try:
        return split_front_matter(text)
    except ValueError:
        return "ValueError"


def test_front_matter_is_split_where_python_frontmatter_splits_it():
    """store.split_front_matter finds python-frontmatter's fences without its regular expression scanning
    every character: the same front matter and body on every file of the corpus, and on generated text
    made of fences, near-fences, blank lines and the whitespace that Python's \\s and $ treat apart."""
    files = [path.read_bytes().decode("utf-8-sig", "replace") for path in sorted(require_corpus().rglob("*"))
             if path.is_file()]
    assert sum(1 for text in files if quick_split(text) != "ValueError") > 150
    for text in files:
        assert quick_split(text) == handler_split(text)
    rng = random.Random(16)
    parts = ["---", "----", "--- ", "---\t", "-- ", "---x", "\n", "\n", "\n", " ", "x", "a: b", "\r", "\v", "\f",
             "\x1c", "\x85", "\u2028", "\n---\n", "\n----  \n"]
    for _ in range(20_000):
        text = "".join(rng.choice(parts) for _ in range(rng.randrange(1, 14)))
        assert quick_split(text) == handler_split(text), repr(text)


def test_characters_pyyaml_refuses_are_found_in_ascii_and_beyond():
    """The reader steps aside for text PyYAML's reader refuses; ASCII text is checked another way than the
    rest, with the same answer for every character."""
    for code in [*range(0x300), *range(0xD7F0, 0xE010), *range(0xFFF0, 0x10010)]:
        for text in (f"a: b{chr(code)}\n", f"a: {chr(code)}é\n"):
            assert simple_yaml._printable(text) == (simple_yaml._NON_PRINTABLE.search(text) is None), hex(code)
    assert simple_yaml.load("a: b\x07\n", LOADER) is None
    assert isinstance(pyyaml("a: b\x07\n"), yaml.YAMLError)
