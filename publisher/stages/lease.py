"""One writer per bucket prefix, across machines: a lease object under the prefix, written only with
conditional requests, so that two publishers can never both believe they hold it.

- Taking a free lease: PUT with `If-None-Match: *` (the object must not exist) or, over a released or
  expired lease, PUT with `If-Match: <its ETag>` (nobody changed it since we read it). Of two publishers that
  try at once, S3 lets exactly one write succeed; the other gets 412 Precondition Failed.
- Holding it: the holder rewrites it with `If-Match` every TTL/3 seconds. A lease not renewed for its TTL
  (by the S3 server's own clock: its Date header against the object's LastModified) is expired and may be
  taken over; so is a lease whose holder was a process on this very machine that no longer exists (a killed
  build), at once.
- Releasing it: a last conditional write marks it released (never an unconditional delete, which could
  remove a lease someone else took meanwhile).

A service that ignores the conditions would let two writers in: it is detected when the lease is taken (a
second `If-None-Match: *` write and an `If-Match` with a wrong ETag must both be refused) and refused,
unless `s3.lease: false` says the operator accepts the risk.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from publisher.errors import ConfigError, PublisherError, WriteError
from publisher.stages.s3 import S3Location, describe, error_code, s3_errors

logger = logging.getLogger(__name__)

LEASE_NAME = ".publisher-lease"
TTL = 300.0  # seconds a lease stays valid without renewal
CONFLICT = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
UNSUPPORTED = frozenset({"NotImplemented", "501"})
WRONG_ETAG = '"00000000000000000000000000000000"'


class LeaseHeld(PublisherError):
    """Another publisher holds the lease on the prefix (exit 75: try again later)."""


class LeaseLost(PublisherError):
    """The lease was taken over while this process believed it held it."""


@dataclass
class _Current:
    holder: dict[str, Any]
    etag: str
    age: float  # seconds since its last write, by the server's clock


class Lease:
    def __init__(self, client: Any, location: S3Location, ttl: float = TTL) -> None:
        self.client = client
        self.location = location
        self.key = location.key(LEASE_NAME)
        self.ttl = ttl
        self.etag: str | None = None
        self.since = datetime.now(UTC).isoformat(timespec="seconds")
        self.lost = threading.Event()

    @contextmanager
    def held(self, on_lost: Callable[[], None] = lambda: None) -> Iterator[Lease]:
        """Take the lease, renew it on a thread while the block runs, then release it. Raises LeaseHeld,
        ConfigError (a service without conditional writes) or WriteError (the bucket cannot be reached)."""
        self.acquire()
        stop = threading.Event()
        renewer = threading.Thread(target=self._keep, args=(stop, on_lost), name="publisher-lease", daemon=True)
        renewer.start()
        try:
            yield self
        finally:
            stop.set()
            renewer.join()
            self.release()

    def acquire(self) -> None:
        errors = s3_errors()
        try:
            for _ in range(3):
                current = self._read()
                if current is None:
                    if self._write(IfNoneMatch="*"):
                        break
                    continue
                if not self._free(current):
                    raise LeaseHeld(self._held_message(current))
                logger.info("%s: taking over the lease of host %s, pid %s (%s)", self.location,
                            current.holder.get("host"), current.holder.get("pid"),
                            "released" if current.holder.get("released") else "expired")
                if self._write(IfMatch=current.etag):
                    break
            else:
                raise LeaseHeld(f"{self.location}: the lease {self.key} keeps changing hands; try again later")
            self._check_conditional_writes()
        except errors as exc:
            raise WriteError(describe(exc, self.location)) from None
        logger.debug("%s: lease taken (%s)", self.location, self.key)

    def renew(self) -> None:
        """Rewrite the lease with If-Match on its ETag. Raises LeaseLost when someone else has it now."""
        if not self._write(IfMatch=self.etag):
            self.lost.set()
            raise LeaseLost(f"{self.location}: the lease {self.key} was taken over by another publisher")

    def release(self) -> None:
        if self.etag is None or self.lost.is_set():
            return
        try:
            self._write(IfMatch=self.etag, released=True)
        except s3_errors() as exc:  # it expires by itself after its TTL
            logger.warning("%s: lease not released (%s); it expires after %gs", self.location,
                           describe(exc, self.location), self.ttl)

    def _keep(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        while not stop.wait(self.ttl / 3):
            try:
                self.renew()
            except LeaseLost as exc:
                logger.error("%s; stopping", exc)
                on_lost()
                return
            except s3_errors() as exc:  # tried again at the next tick, well within the TTL
                logger.warning("%s: lease not renewed: %s", self.location, describe(exc, self.location))

    def _body(self, released: bool = False) -> bytes:
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "boot": _boot_id(), "since": self.since,
                  "renewed": datetime.now(UTC).isoformat(timespec="seconds"), "ttl": self.ttl,
                  "released": released}
        return (json.dumps(holder, sort_keys=True) + "\n").encode("utf-8")

    def _write(self, released: bool = False, **condition: Any) -> bool:
        """One conditional write of the lease; False when its condition did not hold."""
        try:
            answer = self.client.put_object(Bucket=self.location.bucket, Key=self.key, Body=self._body(released),
                                            ContentType="application/json", CacheControl="no-store",
                                            **condition)
        except s3_errors() as exc:
            code = error_code(exc)
            if code in CONFLICT:
                return False
            if code in UNSUPPORTED:
                raise self._unsupported() from None
            raise
        self.etag = answer["ETag"]
        return True

    def _read(self) -> _Current | None:
        try:
            answer = self.client.get_object(Bucket=self.location.bucket, Key=self.key)
        except s3_errors() as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        try:
            holder = json.loads(answer["Body"].read())
            if not isinstance(holder, dict):
                raise ValueError("not a mapping")
        except ValueError:
            holder = {"host": "unknown", "ttl": 0}  # not ours to read: treated as expired
        date = answer["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date) if date else datetime.now(UTC)
        return _Current(holder, answer["ETag"], (now - answer["LastModified"]).total_seconds())

    def _free(self, current: _Current) -> bool:
        holder = current.holder
        if holder.get("released"):
            return True
        ttl = holder.get("ttl")
        if not isinstance(ttl, (int, float)) or current.age > ttl:
            return True
        here = holder.get("host") == socket.gethostname() and holder.get("boot") == _boot_id()
        return here and isinstance(holder.get("pid"), int) and (holder["pid"] == os.getpid()
                                                                or not _alive(holder["pid"]))

    def _held_message(self, current: _Current) -> str:
        holder = current.holder
        return (f"{self.location}: another publisher holds the lease ({self.key}): host {holder.get('host')}, "
                f"pid {holder.get('pid')}, since {holder.get('since')}; it expires when not renewed for "
                f"{holder.get('ttl'):g}s (last renewed {current.age:.0f}s ago)")

    def _check_conditional_writes(self) -> None:
        """Both conditions must be refused when they do not hold; a write that goes through anyway rewrites
        our own lease with the same bytes, so the check itself does no harm."""
        held = self.etag
        if self._write(IfNoneMatch="*") or self._write(IfMatch=WRONG_ETAG):
            raise self._unsupported()
        self.etag = held

    def _unsupported(self) -> ConfigError:
        return ConfigError(f"{self.location}: this S3 service does not honour conditional writes (If-None-Match, "
                           "If-Match), so the lease cannot keep a second publisher off the prefix; set "
                           "`s3.lease: false` to publish without it (then make sure only one publisher runs)")


def _boot_id() -> str | None:
    """Tells this boot of this machine from another (a pid is only meaningful within one)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as stream:
            return stream.read().strip()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True
