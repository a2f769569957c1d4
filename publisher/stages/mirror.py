"""A store in a bucket: `store: s3://bucket/prefix/`. The articles are the objects under the prefix
(include and exclude apply to their names below it, as to paths below a store folder).

Each build lists the prefix and compares every object's ETag, size and LastModified with what the last build
downloaded (a record in the state folder): only new and changed objects are downloaded, in parallel
(`s3.workers`), into a mirror folder in the state folder, with the object's LastModified as the file's
modification time; objects that are gone leave the mirror. The rest of the pipeline then reads the mirror as
any store folder, with its scan cache, so an object downloaded again is read again and every rule of a
local store (embargo, validation, problems) applies unchanged. Warnings name the object by its s3:// URL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from publisher.caches.statefiles import read_state_json, write_atomic
from publisher.config import Config
from publisher.errors import StoreError
from publisher.stages import store
from publisher.stages.s3 import S3Location, client, describe, s3_errors

logger = logging.getLogger(__name__)

RECORD_VERSION = 1
Stamp = tuple[str, int, int]  # ETag, size, LastModified in nanoseconds


def store_label(config: Config) -> str:
    """What problems' sources are relative to, for messages: the store bucket's URL, or nothing for a folder
    (a local store names its files relative to itself)."""
    return str(config.store_bucket) if config.store_bucket is not None else ""


def mirror_store(config: Config, stop_requested: Callable[[], bool] = lambda: False) -> None:
    """Bring the mirror of the store bucket up to date. Raises StoreError when the bucket cannot be listed."""
    location = config.store_bucket
    assert location is not None
    folder = config.store
    connection = client(config.s3)
    listed = _list(connection, location, config)
    record_path = folder.with_name(f"{folder.name}.json")
    record = _read_record(record_path, location)
    wanted = sorted(name for name, stamp in listed.items()
                    if record.get(name) != stamp or not (folder / name).is_file())

    def fetch(name: str) -> tuple[str, Stamp | None, str | None]:
        if stop_requested():
            return name, None, "stop requested"
        try:
            answer = connection.get_object(Bucket=location.bucket, Key=location.key(name))
            data = answer["Body"].read()
        except s3_errors() as exc:
            return name, None, describe(exc, location)
        # What was downloaded, which may be newer than what was listed a moment ago.
        stamp = (answer["ETag"], len(data), _nanoseconds(answer["LastModified"]))
        target = folder / name
        try:
            write_atomic(target, data, sync_folder=False)  # a cache of the bucket: no need to wait for the disk
            os.utime(target, ns=(stamp[2], stamp[2]))
        except OSError as exc:
            return name, None, f"cannot write {target}: {exc.strerror or exc}"
        return name, stamp, None

    failed = 0
    if wanted:
        logger.info("%s: downloading %d new or changed objects of %d", location, len(wanted), len(listed))
        with ThreadPoolExecutor(config.s3.workers) as pool:
            for name, stamp, cause in pool.map(fetch, wanted):
                if stamp is not None:
                    record[name] = stamp
                else:
                    failed += 1
                    logger.warning("%s%s: not downloaded (%s); %s", location, name, cause,
                                   "the copy of the last build stays" if name in record else "left out until "
                                   "the next build")
    for name in set(record) - set(listed):
        del record[name]
    _prune(folder, set(record))
    _save_record(record_path, location, record)
    if failed:
        logger.warning("%s: %d objects not downloaded; retried at the next build", location, failed)


def _list(connection: Any, location: S3Location, config: Config) -> dict[str, Stamp]:
    listed: dict[str, Stamp] = {}
    selecting = bool(config.include or config.exclude)
    try:
        paginator = connection.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=location.bucket, Prefix=location.prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(location.prefix):]
                if name.endswith("/"):  # a "folder" marker some tools create
                    continue
                if not _safe(name):
                    logger.warning("%s%s: a key that cannot be a file name (empty, '.' or '..' parts); skipped",
                                   location, name)
                    continue
                if selecting and not store.selected(name, config.include, config.exclude):
                    continue
                listed[name] = (item["ETag"], item["Size"], _nanoseconds(item["LastModified"]))
    except s3_errors() as exc:
        raise StoreError(describe(exc, location)) from None
    return listed


def _nanoseconds(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000  # S3 keeps whole seconds


def _safe(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not PurePosixPath(name).is_absolute() and all(p not in ("", ".", "..") for p in parts)


def _prune(folder: Path, keep: set[str]) -> None:
    """Remove every file of the mirror that is not a current object (deleted objects, and temporary files
    of a killed build), then the folders left empty."""
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        return
    for root, folders, names in os.walk(folder, topdown=False):
        base = Path(root)
        for name in names:
            path = base / name
            if path.relative_to(folder).as_posix() not in keep:
                logger.debug("%s: no longer in the bucket; removed from the mirror", path)
                path.unlink(missing_ok=True)
        for name in folders:
            with contextlib.suppress(OSError):
                (base / name).rmdir()  # only when empty


def _read_record(path: Path, location: S3Location) -> dict[str, Stamp]:
    data = read_state_json(path, "record of the store bucket", "every object is downloaded again")
    if not (isinstance(data, dict) and data.get("version") == RECORD_VERSION and data.get("store") == str(location)
            and isinstance(data.get("objects"), dict)):
        return {}
    return {name: (stamp[0], stamp[1], stamp[2]) for name, stamp in data["objects"].items()
            if isinstance(stamp, list) and len(stamp) == 3}


def _save_record(path: Path, location: S3Location, record: dict[str, Stamp]) -> None:
    data = {"version": RECORD_VERSION, "store": str(location),
            "objects": {name: list(stamp) for name, stamp in sorted(record.items())}}
    text = (json.dumps(data, indent=0) + "\n").encode("utf-8")
    try:
        if path.exists() and path.read_bytes() == text:
            return
        write_atomic(path, text)
    except OSError as exc:  # the next build downloads what it cannot tell is current
        logger.warning("%s: cannot write: %s", path, exc.strerror or exc)
