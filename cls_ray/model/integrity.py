"""The checksum of a version's files: recorded in its `consolidation.json` when it is saved,
recomputed before an engine loads it.

A LoRA adapter or a full checkpoint is served only as it was saved: a partial copy, a changed
file or a folder that nobody saved through `save_version` (so nothing vouches for it) is refused
before any replica serves it. The checksum is SHA-256 over every file of the folder but the
record itself, by relative path, so it holds for any engine (HF, vLLM) and for a copy fetched
from storage. The base model (no version folder) is not checked.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

RECORD = "consolidation.json"
FILES_KEY = "files_sha256"


class UnverifiedVersion(RuntimeError):
    """A version folder with no recorded checksum of its files, or files that differ from it."""


def files_checksum(path: str | Path) -> str:
    """SHA-256 of the folder's files (names and bytes, sorted by relative path), but `RECORD`."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.name != RECORD):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.stat().st_size.to_bytes(8, "little"))
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def record_files_checksum(path: str | Path) -> str:
    """Writes the checksum of the folder's files into its `consolidation.json` (kept, or
    created); returns it. Call it last, once every file of the version is written."""
    record = Path(path) / RECORD
    meta = json.loads(record.read_text()) if record.exists() else {}
    meta[FILES_KEY] = files_checksum(path)
    tmp = record.with_name(RECORD + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, record)
    return meta[FILES_KEY]


def verify_version(path: str | Path, version: str) -> None:
    """Refuses the folder of `version` unless its files match the checksum recorded when it
    was saved."""
    record = Path(path) / RECORD
    want = json.loads(record.read_text()).get(FILES_KEY) if record.exists() else None
    if not want:
        raise UnverifiedVersion(
            f"version {version}: {record} records no {FILES_KEY} (the checksum of the "
            "version's files, written when it is saved); not loading it"
        )
    got = files_checksum(path)
    if got != want:
        raise UnverifiedVersion(
            f"version {version}: the files at {path} do not match the checksum recorded when "
            f"they were saved ({got[:12]} != {want[:12]}); not loading them"
        )
