"""Precompressed copies: `all.atom.gz` beside `all.atom`, for nginx's `gzip_static` (and `publisher serve`),
so a server sends the compressed bytes without compressing on every request.

A copy must be as deterministic as the file it compresses, or every no-op build would rewrite it: the gzip
header carries no file name and a zero modification time (RFC 1952 2.3.1: MTIME = 0 means none).
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping

SUFFIX = ".gz"


def gzip_copies(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """A `<path>.gz` for every file (output path -> bytes)."""
    return {f"{path}{SUFFIX}": compress(data) for path, data in files.items() if not path.endswith(SUFFIX)}


def compress(data: bytes) -> bytes:
    # Level 6 (gzip's default): on feeds within 0.5% of level 9's size, in two thirds of the time.
    return gzip.compress(data, compresslevel=6, mtime=0)
