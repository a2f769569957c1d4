"""publisher: builds Atom and RSS feeds from a folder of front-matter article files."""

__version__ = "0.1.0"
