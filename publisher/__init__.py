"""publisher: builds Atom and RSS feeds from a folder of front-matter article files."""

import functools
import hashlib
from pathlib import Path

__version__ = "0.1.0"


@functools.cache
def source_digest(*modules: str) -> str:
    """A digest of these modules' source files (named from the package: "stages.store"):
    caches keyed by it are dropped when that code changes, even
    without a version bump. Constant for the life of a process, so computed once."""
    digest = hashlib.sha256()
    package = Path(__file__).parent
    for name in modules:
        try:
            digest.update((package / f"{name.replace('.', '/')}.py").read_bytes())
        except OSError:  # an installation without sources, or a module that does not exist (yet)
            digest.update(name.encode("ascii"))
    return digest.hexdigest()
