"""Text that XML 1.0 can carry: every feed format here is XML or goes beside one, and lxml refuses the
characters outside the XML 1.0 Char production (https://www.w3.org/TR/xml/#charsets)."""

from __future__ import annotations

import re

XML_FORBIDDEN = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean_text(value: str) -> str:
    """`value` without the characters XML 1.0 forbids (control characters, lone surrogates, U+FFFE/FFFF)."""
    return XML_FORBIDDEN.sub("", value)


def is_xml_text(value: object) -> bool:
    return isinstance(value, str) and not XML_FORBIDDEN.search(value)
