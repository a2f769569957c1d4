"""URL handling: make the store's URLs safe to publish, and derive stable identities from them."""

from __future__ import annotations

import hashlib
import re
import uuid
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import idna

# RFC 3986 reserved and unreserved characters, plus "%" so existing escapes survive. Anything else (a space,
# a non-ASCII letter) is percent-encoded as UTF-8.
_SAFE = "!#$%&'()*+,/:;=?@[]~-._"

_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes

# An absolute URL that _encoded() gives back as it is, the form nearly every URL of a store is in already
# (one match instead of a split, a host check and three quote() calls): scheme and host name in lower case,
# the host's labels plain and 1 to 63 long, no port, no credentials, and after the host only characters
# quote() leaves alone (with _SAFE). A URL ending in "?" or "#", or with "?#", is not: urlunsplit() drops an
# empty query or fragment.
_UNCHANGED = re.compile(r"https?://[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*\.?"
                        r"(?:[/?#][A-Za-z0-9!#$%&'()*+,/:;=?@\[\]~._-]*)?")

# Query parameters that only track where a click came from: they never make a different article.
_TRACKING = ("utm_", "fbclid", "gclid", "mc_cid", "mc_eid", "ocid", "cmpid")


class InvalidURL(ValueError):
    """The value cannot become an absolute http(s) URL."""


def absolute_link(raw: object) -> str:
    """An article's own link: like publishable(), but never resolved against anything (assets_base_url is
    where the store's images live, not where articles are)."""
    text = raw.strip() if isinstance(raw, str) else ""
    if text and not text.startswith(("//", "https://", "http://")) and _is_relative(text):
        raise InvalidURL(f"relative URL {text!r}: a link must be an absolute http(s) URL "
                         "(links are not resolved against assets_base_url)")
    return publishable(raw, base=None)


def _is_relative(text: str) -> bool:
    """No scheme. A text that cannot even be split is left to publishable(), which says why."""
    try:
        return not urlsplit(text).scheme
    except ValueError:
        return False


def publishable(raw: object, base: str | None) -> str:
    """Return `raw` as an absolute, percent-encoded http(s) URL, resolving it against `base` if relative.

    A site-relative path ("/assets/x.jpg") resolves below the base's path, the way Jekyll's `relative_url`
    does: with base "https://example.org/ai/" it becomes "https://example.org/ai/assets/x.jpg".
    """
    if not isinstance(raw, str):
        raise InvalidURL(f"expected a URL, got {type(raw).__name__}")
    text = raw.strip()
    if not text:
        raise InvalidURL("empty URL")
    if text.startswith(("https://", "http://")):  # nearly every URL: absolute already, one parse fewer
        return _encoded(text)
    try:
        scheme = urlsplit(text).scheme
    except ValueError as exc:
        raise InvalidURL(f"not a valid URL: {exc}") from None
    if text.startswith("//"):
        text = "https:" + text
    elif not scheme:
        if base is None:
            raise InvalidURL(f"relative URL {text!r} and no assets_base_url to resolve it against")
        text = base.rstrip("/") + text if text.startswith("/") else urljoin(base, text)
    return _encoded(text)


def _encoded(text: str) -> str:
    if _UNCHANGED.fullmatch(text) and text[-1] not in "?#" and "?#" not in text:
        return text
    return _normalised(text)


def _normalised(text: str) -> str:
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise InvalidURL(f"not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidURL(f"not an http(s) URL: {text!r}")
    host = parts.hostname
    if not host or any(c in host for c in " <>\"{}|\\^`"):
        raise InvalidURL(f"no valid host in {text!r}")
    try:
        ascii_host = f"[{host}]" if ":" in host else _ascii_host(host)
    except UnicodeError:  # idna.IDNAError is one
        raise InvalidURL(f"no valid host in {text!r}") from None
    netloc = ascii_host if port is None else f"{ascii_host}:{port}"
    if parts.username is not None:
        raise InvalidURL(f"URL with credentials is not published: {text!r}")
    return urlunsplit((parts.scheme.lower(), netloc, quote(parts.path, safe=_SAFE),
                       quote(parts.query, safe=_SAFE), quote(parts.fragment, safe=_SAFE)))


def _ascii_host(host: str) -> str:
    """A host name as DNS knows it. Unicode names go through IDNA as browsers do today (UTS 46,
    non-transitional: "faß.de" is xn--fa-hia.de, not fass.de), with the `idna` package rather than Python's
    IDNA 2003 codec. ASCII names pass as they are: IDNA 2008 would refuse an underscore, which real host
    names carry."""
    if host.isascii():
        if any(not 0 < len(label) < 64 for label in host.removesuffix(".").split(".")):
            raise UnicodeError("an empty label, or one over 63 characters")  # as DNS (and IDNA) refuse
        return host
    return idna.encode(host, uts46=True, transitional=False).decode("ascii")


def canonical(url: str) -> str:
    """The identity of an article URL: scheme-less, lower-case host, no default port, no fragment, no
    tracking parameters, no trailing slash. Two URLs with the same canonical form are the same article."""
    if "?" not in url and "#" not in url and _UNCHANGED.fullmatch(url):  # most article links: one match
        host, slash, path = url[url.index("//") + 2:].partition("/")
        host = host[4:] if host.startswith("www.") else host
        if host:
            return host + ((slash + path).rstrip("/") or "/")
    return _canonical(url)


def _canonical(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host.startswith("www."):
        host = host[4:]
    port = parts.port
    netloc = host if port in (None, 80, 443) else f"{host}:{port}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not k.lower().startswith(_TRACKING)]) if parts.query else ""
    path = parts.path.rstrip("/") or "/"
    return urlunsplit(("", netloc, path, query, "")).lstrip("/")


def entry_id(url: str) -> str:
    """A permanent entry id: a name-based UUID of the canonical URL (RFC 4122 section 4.3), so it survives
    rebuilds, file renames and an http -> https switch. The same value as uuid.uuid5(NAMESPACE_URL, ...).urn,
    without building a UUID object: a cold build makes one per article."""
    digest = bytearray(hashlib.sha1(_URL_NAMESPACE + canonical(url).encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5 (RFC 4122 4.1.3)
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant (4.1.1)
    text = digest.hex()
    return f"urn:uuid:{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
