"""Exception types shared by the pipeline stages.

Each carries enough context (file, key or field) for the CLI to print a one-line message that tells the
operator what to fix.
"""

from __future__ import annotations


class PublisherError(Exception):
    """Base class for every error the publisher reports to its user."""


class ConfigError(PublisherError):
    """The configuration file is missing, unreadable or invalid."""


class StoreError(PublisherError):
    """The article store as a whole cannot be read (missing folder, permission denied)."""


class ArticleError(PublisherError):
    """One article file is broken; it is left out and the build goes on."""

    def __init__(self, source: str, field: str | None, reason: str) -> None:
        self.source = source
        self.field = field
        self.reason = reason
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {reason}")


class WriteError(PublisherError):
    """An output file could not be written; the previous version stays in place."""


class BuildInterrupted(PublisherError):
    """A stop was requested (SIGTERM) before the build started writing; nothing was written."""


class ServeError(PublisherError):
    """The preview server cannot start: the output folder is missing or the address cannot be bound."""
