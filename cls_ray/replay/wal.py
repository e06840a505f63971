"""An append-only log of JSON records that survives its own failures, and the lock that keeps
one writer on a folder.

Each record is one line, framed with its length and a CRC-32 of its bytes:
`<bytes> <crc32 hex> <json>\\n`. On reading, a record whose frame does not match (torn by a
crash, cut short by a full disk, flipped on the medium) is detected and skipped, never glued to
the next; a torn last line is cut off the file. An append that fails part-way (ENOSPC, EIO)
truncates the file back to the last whole record before it raises, and the next append checks
that again first, so an acknowledged record can never follow garbage on its own line.
Unframed lines (`{...}`, the format before framing) are still read.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


def frame(record: dict) -> bytes:
    payload = json.dumps(record, separators=(",", ":")).encode()
    return b"%d %08x " % (len(payload), zlib.crc32(payload)) + payload + b"\n"


def unframe(line: bytes) -> dict | None:
    """The record of one line, or None when its frame does not check out."""
    if line.startswith((b"{", b"[")):  # written before framing: JSON decides
        try:
            return json.loads(line)
        except ValueError:
            return None
    parts = line.split(b" ", 2)
    if len(parts) != 3:
        return None
    size, crc, payload = parts
    try:
        if int(size) != len(payload) or int(crc, 16) != zlib.crc32(payload):
            return None
        return json.loads(payload)
    except ValueError:
        return None


class Log:
    """One framed log file. Not thread-safe: its owner serialises appends and rewrites."""

    def __init__(self, path: Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self.size = 0  # bytes of whole records; what follows them is a failed write
        self.skipped = 0  # records that failed their check when the log was read
        self.fail_writes: OSError | None = None  # set by a fault injector (`bench chaos`)

    def read(self) -> Iterator[dict]:
        """Every whole record, in order; cuts a torn last line off the file (unless read-only)."""
        self.size, self.skipped = 0, 0
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        whole = data.rfind(b"\n") + 1
        if whole < len(data):
            logger.warning(
                "log %s: dropping a torn last record (%d bytes)", self.path, len(data) - whole
            )
            if not self.readonly:
                self._truncate(whole)
        self.size = whole
        for n, line in enumerate(data[:whole].splitlines(), 1):
            rec = unframe(line)
            if rec is None:
                self.skipped += 1
                logger.warning("log %s:%d: a damaged record skipped", self.path, n)
                continue
            yield rec

    def append(self, records: list[dict]) -> None:
        """Writes `records` and fsyncs them; on failure the file is back at its last whole
        record and the error is raised."""
        data = b"".join(frame(r) for r in records)
        with self.path.open("ab") as f:
            if os.fstat(f.fileno()).st_size != self.size:  # an earlier append failed part-way
                os.ftruncate(f.fileno(), self.size)
            try:
                if self.fail_writes is not None:
                    f.write(data[: len(data) // 2])  # what a full disk lets through
                    f.flush()
                    raise self.fail_writes
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                try:
                    os.ftruncate(f.fileno(), self.size)
                except OSError:  # the next append truncates again before writing
                    logger.exception("log %s: could not cut a failed append", self.path)
                raise
        self.size += len(data)

    def keep_from(self, offset: int, head: list[dict] | None = None) -> None:
        """Rewrites the log as `head` followed by its bytes from `offset` on (records appended
        after a snapshot at `offset`): written aside, fsynced, then renamed over it."""
        tail = b""
        if self.path.exists():
            with self.path.open("rb") as f:
                f.seek(offset)
                tail = f.read(max(0, self.size - offset))
        data = b"".join(frame(r) for r in head or []) + tail
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        self.size = len(data)

    def _truncate(self, size: int) -> None:
        with self.path.open("r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())


class FolderLocked(RuntimeError):
    """Another process writes to this folder."""


class FolderLock:
    """An exclusive `flock` on `folder/.lock`, held until `release` or the process ends (the
    kernel drops it when a writer dies, so a crash never leaves it stale)."""

    def __init__(self, folder: Path, what: str = "folder"):
        path = Path(folder) / ".lock"
        self._file = path.open("a+")
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "?"
            self._file.close()
            raise FolderLocked(
                f"{what} {folder} is in use by another writer (process {holder}); stop it, or "
                "go through it (a running application's buffer is reached through its actor)"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
