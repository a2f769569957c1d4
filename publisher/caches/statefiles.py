"""State files: what the publisher keeps in the state folder between builds (never served), and the one way
any file is replaced on disk.

- write_atomic(): a temporary file beside the target, flushed, fsynced and renamed over it (`os.replace` is
  atomic on POSIX), then the folder fsynced. The output writer puts the served files in place with it too:
  after a crash every file is whole, old or new.
- JSON state (status, manifest, enclosure cache, feed fingerprints): read_state_json() forgives, since these are
  caches and records: a missing, unreadable or unparsable file is None (with one warning when it exists),
  never a failed build.
- Binary state (the scan cache's index, the last selection, the archive record): a header line (format,
  cache key, the names of the payload's parts), each part of the payload marshalled, then a trailer line
  (the parts' lengths and their CRC-32). Parts are marshalled and written one at a time, so that saving
  the index of 100,000 files never holds it twice. open_binary() checks the header at once and the payload
  only when it is asked for; a file of another format or key is discarded with one INFO line, a damaged
  one with one WARNING line. write_binary() logs a failure rather than raising: the next build just does
  more work. A Memory (the daemon's) keeps what was last written, so that the next build need not read it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import marshal
import os
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

logger = logging.getLogger(__name__)

TEMP_SUFFIX = ".publisher-tmp"  # what a killed build may leave behind (writer.remove_temporaries)
FILE_MODE = 0o644  # readable by the web server's user
BINARY_FORMAT = 3
MAGIC = b"publisher state\n"


def write_atomic(path: Path, data: bytes | Iterable[bytes], sync_folder: bool = True,
                 mtime_ns: int | None = None, durable: bool = True) -> None:
    """Write `data` (bytes, or parts written one after the other as they come, never joined into one more
    copy) to a temporary file beside `path`, fsync it and rename it over `path`, then fsync the
    folder (unless `sync_folder` is false: a caller writing many files there syncs the folder once, with
    fsync_folder()). With `mtime_ns`, the file has that modification time from the moment it appears.
    `durable=False` skips both fsyncs: for a cache that checks itself when read (binary state). Raises
    OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as stream:
            for part in [data] if isinstance(data, bytes) else data:
                stream.write(part)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.chmod(temporary, FILE_MODE)
        if mtime_ns is not None:
            os.utime(temporary, ns=(mtime_ns, mtime_ns))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if sync_folder and durable:
        fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make renames into `folder` durable (POSIX leaves them in the folder's metadata until then)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        logger.debug("%s: cannot open folder to fsync it: %s", folder, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on a folder; the rename is still atomic
        logger.debug("%s: fsync of folder refused: %s", folder, exc)
    finally:
        os.close(fd)


def read_state_json(path: Path, what: str, consequence: str) -> Any:
    """The JSON in a state file, or None when there is none. A file that cannot be read or parsed also gives
    None, with one warning naming it, `what` it is and the `consequence`."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("%s: %s unreadable (%s); %s", path, what, exc, consequence)
        return None




class BinaryState:
    """A binary state file as open_binary() found it: its header at once, its payload when asked for."""

    def __init__(self, path: Path, header: dict[str, Any], stream: BinaryIO | None,
                 remembered: Any = None) -> None:
        self.path = path
        self.header = header
        self._stream = stream
        self._remembered = remembered  # the payload, from a Memory: nothing to read

    def payload(self) -> Any:
        """The payload. Raises ValueError when the file is damaged."""
        if self._stream is None:
            return self._remembered
        with self._stream:
            data = self._stream.read()
        end = data.rfind(b"\n", 0, len(data) - 1)  # the trailer is the last line
        try:
            trailer = json.loads(data[end + 1:])
            lengths, names = trailer["lengths"], self.header["parts"]
            if (end < 0 or not data.endswith(b"\n") or sum(lengths) != end or len(lengths) != len(names)
                    or zlib.crc32(memoryview(data)[:end]) != trailer["crc32"]):
                raise ValueError("payload does not match its lengths and checksum")
            payload, start = {}, 0
            with memoryview(data) as view:
                for name, length in zip(names, lengths, strict=True):
                    payload[name] = marshal.loads(view[start:start + length])
                    start += length
            return payload
        except (EOFError, TypeError, KeyError) as exc:
            raise ValueError(f"payload unreadable: {exc}") from None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


class Memory:
    """What a long-running process (the daemon) keeps of the binary state files between its builds: the
    header and payload it last wrote to each, known by the file's stat afterwards. A file whose stat is
    still that one is not read and decoded again (the scan index of 100,000 articles costs a fifth of a
    second to load); a file that anything else replaced since is read as usual. The payloads are shared,
    never changed in place: every build makes new ones."""

    def __init__(self) -> None:
        self._files: dict[Path, tuple[tuple[int, int, int], dict[str, Any], Any]] = {}

    def recall(self, path: Path, key: str) -> BinaryState | None:
        known = self._files.get(path)
        if known is None or known[1].get("key") != key or _stamp(path) != known[0]:
            return None
        return BinaryState(path, known[1], None, known[2])

    def keep(self, path: Path, header: dict[str, Any], payload: Any) -> None:
        stamp = _stamp(path)
        if stamp is None:
            self._files.pop(path, None)
        else:
            self._files[path] = (stamp, header, payload)

    def forget(self, path: Path) -> None:
        self._files.pop(path, None)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def open_binary(path: Path, key: str, what: str, memory: Memory | None = None) -> BinaryState | None:
    """The binary state file at `path` when it was written with `key`; None when it is missing, from another
    format or key (one INFO line) or damaged (one WARNING line). With a `memory` that holds the file as it
    is, nothing is read."""
    remembered = memory.recall(path, key) if memory is not None else None
    if remembered is not None:
        return remembered
    try:
        stream = open(path, "rb")  # noqa: SIM115 - kept open for payload(), closed there
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("%s: %s unreadable (%s); starting afresh", path, what, exc.strerror or exc)
        return None
    try:
        if stream.read(len(MAGIC)) != MAGIC:
            raise ValueError("not a publisher state file")
        header = json.loads(stream.readline())
        if not isinstance(header, dict):
            raise ValueError("bad header")
    except (ValueError, OSError) as exc:
        stream.close()
        logger.warning("%s: %s is damaged (%s); discarded, starting afresh", path, what, exc)
        return None
    if header.get("format") != BINARY_FORMAT or header.get("key") != key:
        stream.close()
        logger.info("%s: %s is from another publisher version or configuration; starting afresh", path, what)
        return None
    return BinaryState(path, header, stream)


def write_binary(path: Path, key: str, header: Mapping[str, Any], payload: Mapping[str, Any],
                 memory: Memory | None = None) -> bool:
    """Replace a binary state file atomically. A failure is logged, not raised. Not fsynced: these files
    are caches of megabytes (the scan index of a big store), an fsync of them a good part of an incremental
    build, and after a crash a torn one fails its lengths and CRC-32 check and is discarded (one warning,
    then a build that reads more), never trusted."""
    head = {**header, "format": BINARY_FORMAT, "key": key, "parts": list(payload)}
    try:
        write_atomic(path, _binary_parts(head, payload), durable=False)
    except OSError as exc:
        logger.warning("%s: cannot write: %s", path, exc.strerror or exc)
        if memory is not None:
            memory.forget(path)
        return False
    if memory is not None:
        memory.keep(path, head, payload)
    return True


def _binary_parts(head: Mapping[str, Any], payload: Mapping[str, Any]) -> Iterator[bytes]:
    """The bytes of a binary state file, part after part, each marshalled only when the last is written."""
    yield MAGIC + json.dumps(head).encode("utf-8") + b"\n"
    lengths, crc = [], 0
    for value in payload.values():
        data = marshal.dumps(value)
        lengths.append(len(data))
        crc = zlib.crc32(data, crc)
        yield data
    yield b"\n" + json.dumps({"lengths": lengths, "crc32": crc}).encode("utf-8") + b"\n"


def remove(*paths: Path) -> None:
    """Delete state files that must not be trusted any more; a failure is logged."""
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("%s: cannot remove: %s", path, exc.strerror or exc)
