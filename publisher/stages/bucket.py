"""Publishing to a bucket: `output: s3://bucket/prefix/`, for a CDN in front of S3-compatible storage.

What the bucket holds is known from a manifest in the state folder: each object the publisher owns under
the prefix, with the SHA-256 of its bytes, its ETag and the headers it was uploaded with. Every build lists
the prefix first; an entry whose ETag is not the listed one (someone changed the object, or a killed build
uploaded it without recording it) no longer vouches for the object. A file whose bytes and headers match
its entry is not uploaded. Without an entry, an object whose listed ETag is the MD5 of the new bytes (as S3
gives for a single-part upload) is checked with one HEAD request for its headers and adopted: a lost
manifest is rebuilt from the listing, never by uploading everything again.

Readers never see a feed listed before it exists: new and changed feeds are uploaded first, then the index,
the OPML list and other pages, then the objects the publisher owns and no longer produces are deleted. Each
PUT replaces an object whole or not at all. The names about to be uploaded are recorded as owned before the
first PUT, so that a build killed at any moment leaves nothing the next build would not clean up; the
manifest records an upload only once S3 has confirmed it. Objects under the prefix that the publisher did
not write are never touched. Precompressed `.gz` copies are not uploaded: the CDN compresses.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from publisher.caches.statefiles import read_state_json, write_atomic
from publisher.config import Config
from publisher.errors import PublisherError, WriteError
from publisher.serve import FEED_EXTENSIONS, content_type
from publisher.stages.lease import LEASE_NAME, Lease
from publisher.stages.s3 import S3Location, client, describe, s3_errors
from publisher.stages.writer import WriteResult
from publisher.wording import by_cause, plural

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
DELETE_BATCH = 1000  # keys per DeleteObjects request, S3's limit


class DeletionLimit(PublisherError):
    """A build would delete more objects than `s3.max_deletes` allows (exit 2); it deleted nothing."""


@dataclass
class UploadResult(WriteResult):
    location: str = ""  # the s3:// URL of the prefix, for messages

    def describe(self) -> str:
        return (f"{plural(len(self.written), 'object')} uploaded, {len(self.unchanged)} unchanged, "
                f"{len(self.removed)} deleted")

    def failure_lines(self) -> list[str]:
        """One line per cause: a bucket that cannot be reached fails every upload for the same reason."""
        return by_cause([(f"{self.location}{name}", cause) for name, cause in self.failed], "not uploaded",
                        "object")


@dataclass(frozen=True)
class Entry:
    """An object as the publisher uploaded it."""

    sha256: str
    etag: str
    content_type: str
    cache_control: str

    def matches(self, sha256: str, headers: tuple[str, str]) -> bool:
        return self.sha256 == sha256 and (self.content_type, self.cache_control) == headers


@dataclass
class Holdings:
    """The manifest checked against a listing: what the publisher owns, and which of it is as recorded."""

    owned: set[str] = field(default_factory=set)
    verified: dict[str, Entry] = field(default_factory=dict)
    listed: dict[str, str] = field(default_factory=dict)  # every object under the prefix: name -> ETag


class BucketTarget:
    def __init__(self, config: Config, location: S3Location) -> None:
        self.location = location
        self.settings = config.s3
        self.identity = str(location)
        self.gzip_copies = False
        self.noun = "objects"
        digest = hashlib.sha256(str(location).encode("utf-8")).hexdigest()[:16]
        self.manifest = config.state / "manifests" / f"s3-{digest}.json"
        self._client: Any = None
        self._holdings: Holdings | None = None
        self._lease: Lease | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = client(self.settings)
        return self._client

    @contextmanager
    def hold(self, on_lost: Callable[[], None] = lambda: None) -> Iterator[None]:
        """The lease on the prefix, renewed while the block runs (unless `s3.lease: false`)."""
        if not self.settings.lease:
            logger.debug("%s: s3.lease is off: nothing keeps a second publisher off this prefix", self.location)
            yield
            return
        lease = Lease(self.client, self.location)
        with lease.held(on_lost):
            self._lease = lease
            try:
                yield
            finally:
                self._lease = None

    def label(self, name: str) -> str:
        return f"{self.location}{name}"

    def refresh(self) -> None:
        self._holdings = None  # listed again at the next build: someone may have changed the bucket

    def stamps(self, names: Iterable[str]) -> dict[str, list[Any]] | None:
        """The ETag of each object as listed at the start of this build, when the publisher uploaded it."""
        holdings = self.holdings()
        found: dict[str, list[Any]] = {}
        for name in names:
            entry = holdings.verified.get(name)
            if entry is None:
                return None
            found[name] = [entry.etag]
        return found

    def holdings(self) -> Holdings:
        """The manifest checked against a listing of the prefix (once per build). Raises WriteError."""
        if self._holdings is None:
            listed = self._list()
            owned, recorded = self._read_manifest()
            verified = {name: entry for name, entry in recorded.items() if listed.get(name) == entry.etag}
            if len(verified) < len(recorded):
                logger.info("%s: %d objects changed since the manifest recorded them; checked again",
                            self.location, len(recorded) - len(verified))
            self._holdings = Holdings(owned, verified, listed)
        return self._holdings

    def publish(self, files: Mapping[str, bytes], keep: Iterable[str],
                stop_requested: Callable[[], bool]) -> WriteResult:
        result = UploadResult(location=str(self.location))
        holdings = self.holdings()
        present = set(files) | set(keep)
        uploads, adopted = self._plan(files, holdings, result)
        deletions = sorted(name for name in holdings.owned - present if name in holdings.listed)
        if len(deletions) > self.settings.max_deletes:
            raise DeletionLimit(
                f"{self.location}: this build would delete {len(deletions)} objects, more than s3.max_deletes "
                f"({self.settings.max_deletes}); nothing was uploaded or deleted. If that many feeds really "
                f"went away, raise s3.max_deletes for one build")
        result.unchanged.extend(sorted(name for name in keep if name not in files))
        holdings.verified.update(adopted)
        # Gone already (deleted by someone, or by a killed build): no longer ours to track.
        holdings.owned -= {name for name in holdings.owned - present if name not in holdings.listed}
        holdings.owned |= present  # before the first PUT: a killed build must not orphan an object
        self._save(holdings)

        def stop() -> bool:
            return stop_requested() or (self._lease is not None and self._lease.lost.is_set())

        feeds = [name for name in uploads if Path(name).suffix in FEED_EXTENSIONS]
        pages = [name for name in uploads if Path(name).suffix not in FEED_EXTENSIONS]
        for batch in (feeds, pages):  # pages list the feeds: they go up once every feed is there
            self._upload(batch, files, holdings, result, stop)
            self._save(holdings)
            if result.failed or stop():
                break
        else:
            self._delete(deletions, holdings, result)
            self._save(holdings)
        if self._lease is not None and self._lease.lost.is_set():
            result.failed.append(("", "the lease was taken over by another publisher; stopped uploading"))
        return result

    def _plan(self, files: Mapping[str, bytes], holdings: Holdings, result: WriteResult
              ) -> tuple[list[str], dict[str, Entry]]:
        """The names to upload, and the entries of objects found to be as they should be already."""
        uploads: list[str] = []
        adopted: dict[str, Entry] = {}
        candidates: list[str] = []
        for name in sorted(files):
            digest, headers = _sha256(files[name]), self._headers(name)
            entry = holdings.verified.get(name)
            if entry is not None and entry.matches(digest, headers):
                result.unchanged.append(name)
            elif entry is None and holdings.listed.get(name) == f'"{hashlib.md5(files[name]).hexdigest()}"':
                candidates.append(name)  # same bytes, not recorded: its headers decide
            else:
                uploads.append(name)
        if candidates:
            logger.info("%s: %d objects not in the manifest already hold the bytes to publish; checking their "
                        "headers", self.location, len(candidates))
            with ThreadPoolExecutor(self.settings.workers) as pool:
                heads = list(pool.map(self._head, candidates))
            for name, head in zip(candidates, heads, strict=True):
                headers = self._headers(name)
                if head is not None and head == headers:
                    adopted[name] = Entry(_sha256(files[name]), holdings.listed[name], *headers)
                    result.unchanged.append(name)
                else:
                    uploads.append(name)
        return sorted(uploads), adopted

    def _upload(self, names: list[str], files: Mapping[str, bytes], holdings: Holdings, result: WriteResult,
                stop: Callable[[], bool]) -> None:
        def put(name: str) -> tuple[str, Entry | None, str | None]:
            if stop():
                return name, None, None
            data, headers = files[name], self._headers(name)
            try:
                answer = self.client.put_object(Bucket=self.location.bucket, Key=self.location.key(name), Body=data,
                                                ContentType=headers[0], CacheControl=headers[1])
            except s3_errors() as exc:
                return name, None, describe(exc, self.location)
            return name, Entry(_sha256(data), answer["ETag"], *headers), None

        with ThreadPoolExecutor(self.settings.workers) as pool:
            for name, entry, cause in pool.map(put, names):  # map(): results in the order of the names
                if entry is not None:
                    holdings.verified[name] = entry
                    holdings.listed[name] = entry.etag
                    result.written.append(name)
                    logger.debug("uploaded %s", self.label(name))
                elif cause is not None:
                    logger.debug("%s: not uploaded, the previous object stays: %s", self.label(name), cause)
                    result.failed.append((name, cause))

    def _delete(self, names: list[str], holdings: Holdings, result: WriteResult) -> None:
        for start in range(0, len(names), DELETE_BATCH):
            batch = names[start:start + DELETE_BATCH]
            try:
                answer = self.client.delete_objects(Bucket=self.location.bucket, Delete={
                    "Objects": [{"Key": self.location.key(name)} for name in batch], "Quiet": True})
            except s3_errors() as exc:
                cause = describe(exc, self.location)
                result.failed.extend((name, cause) for name in batch)
                continue
            refused = {error["Key"][len(self.location.prefix):]: f"{error.get('Code')}: {error.get('Message')}"
                       for error in answer.get("Errors", [])}
            for name in batch:
                if name in refused:
                    result.failed.append((name, f"not deleted: {refused[name]}"))
                    continue
                holdings.owned.discard(name)
                holdings.verified.pop(name, None)
                holdings.listed.pop(name, None)
                result.removed.append(name)
                logger.debug("deleted %s", self.label(name))

    def _headers(self, name: str) -> tuple[str, str]:
        """Content-Type as nginx sends it (deploy/nginx.conf) and the configured Cache-Control."""
        return content_type(Path(name)), self.settings.cache_control

    def _head(self, name: str) -> tuple[str, str] | None:
        try:
            answer = self.client.head_object(Bucket=self.location.bucket, Key=self.location.key(name))
        except s3_errors():
            return None  # uploaded again
        return answer.get("ContentType", ""), answer.get("CacheControl", "")

    def _list(self) -> dict[str, str]:
        """Every object under the prefix but the lease: name (the key without the prefix) -> ETag."""
        listed: dict[str, str] = {}
        lease = self.location.key(LEASE_NAME)
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket,
                                                                           Prefix=self.location.prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    if item["Key"] != lease:
                        listed[item["Key"][len(self.location.prefix):]] = item["ETag"]
        except s3_errors() as exc:
            raise WriteError(describe(exc, self.location)) from None
        return listed

    def _read_manifest(self) -> tuple[set[str], dict[str, Entry]]:
        data = read_state_json(self.manifest, "bucket manifest", "it is rebuilt from a listing of the bucket")
        if data is None:
            return set(), {}
        if not (isinstance(data, dict) and data.get("version") == MANIFEST_VERSION
                and data.get("output") == str(self.location) and isinstance(data.get("objects"), dict)):
            logger.warning("%s: manifest of another version or bucket; rebuilt from a listing", self.manifest)
            return set(), {}
        owned, recorded = set(), {}
        for name, entry in data["objects"].items():
            owned.add(name)
            if isinstance(entry, list) and len(entry) == 4 and all(isinstance(part, str) for part in entry):
                recorded[name] = Entry(*entry)
        return owned, recorded

    def _save(self, holdings: Holdings) -> None:
        objects: dict[str, list[str] | None] = dict.fromkeys(holdings.owned)
        objects.update((name, [e.sha256, e.etag, e.content_type, e.cache_control])
                       for name, e in holdings.verified.items() if name in holdings.owned)
        data = {"version": MANIFEST_VERSION, "output": str(self.location), "objects": dict(sorted(objects.items()))}
        text = (json.dumps(data, indent=0) + "\n").encode("utf-8")
        try:
            if self.manifest.exists() and self.manifest.read_bytes() == text:
                return
            write_atomic(self.manifest, text)
        except OSError as exc:
            raise WriteError(f"{self.manifest}: cannot write the manifest: {exc.strerror or exc}") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
