"""`cls-ray ingest PATH`: documents from .jsonl / .txt / .md files into the Milvus store.

Files are parsed here, line by line, so that a malformed line is reported with its file and
line number and skipped while the rest goes on. Documents whose id is already stored with the
same text are skipped before any embedding work; the rest are embedded in batches by a Ray Data
pipeline (`map_batches` over an actor that loads the encoder once) and upserted by id, so
ingesting the same documents again adds nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray

from cls_ray import console
from cls_ray.memory.documents import doc_id_for
from cls_ray.memory.embedder import Embedder

logger = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".txt", ".md")


@dataclass
class IngestReport:
    files: int = 0
    parsed: int = 0
    skipped_existing: int = 0
    written: int = 0
    errors: list[str] = field(default_factory=list)

    def describe(self, total: int, collection: str) -> str:
        """One line about the ingest, with the store's size after it."""
        return (
            f"ingested {self.written} new documents from {self.files} file(s); "
            f"{self.skipped_existing} already stored; {len(self.errors)} bad line(s); "
            f"{total} documents in {collection}"
        )

    def to_dict(self) -> dict:
        return {
            "files": self.files,
            "parsed": self.parsed,
            "skipped_existing": self.skipped_existing,
            "written": self.written,
            "errors": self.errors,
        }


def find_files(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_file():
        if p.suffix not in SUFFIXES:
            raise ValueError(f"{p}: unsupported file type {p.suffix!r}; expected {SUFFIXES}")
        return [p]
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES)
    raise FileNotFoundError(f"{p}: no such file or folder")


def parse_file(path: Path, errors: list[str]) -> Iterator[dict]:
    """Documents of one file as `{id, text, source}`; bad lines go to `errors` as
    `file:line: reason`."""
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    errors.append(f"{path}:{n}: not valid JSON ({e.msg})")
                    continue
                if not isinstance(row, dict):
                    errors.append(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
                    continue
                text = row.get("text")
                if not isinstance(text, str) or not text.strip():
                    errors.append(f"{path}:{n}: field 'text' missing or not a non-empty string")
                    continue
                did = row.get("id")
                if did is not None and (not isinstance(did, str | int) or not str(did).strip()):
                    errors.append(f"{path}:{n}: field 'id' must be a string or integer")
                    continue
                did = str(did) if did is not None else doc_id_for(text)
                if len(did.encode()) > 64:
                    errors.append(f"{path}:{n}: field 'id' longer than 64 bytes (UTF-8)")
                    continue
                yield {"id": did, "text": text.strip(), "source": f"{path.name}:{n}"}
    else:
        # .txt / .md: one document per paragraph (blocks separated by blank lines).
        block: list[str] = []
        first = 0
        with path.open(encoding="utf-8", errors="replace") as f:
            lines = list(f) + [""]
        for n, line in enumerate(lines, 1):
            if line.strip():
                if not block:
                    first = n
                block.append(line.strip())
            elif block:
                text = " ".join(block)
                yield {"id": doc_id_for(text), "text": text, "source": f"{path.name}:{first}"}
                block = []


class _EmbedBatch:
    """Ray Data callable class: loads the encoder once per worker, embeds a batch of rows."""

    def __init__(self, embedder_cfg):
        self.embedder = Embedder.from_config(embedder_cfg)

    def __call__(self, batch: dict) -> dict:
        batch["dense"] = self.embedder.embed(list(batch["text"]))
        return batch


def ingest_paths(
    paths: list[str | Path], cfg, store, progress: bool = True, use_ray: bool = True
) -> IngestReport:
    """Ingests every supported file under `paths` into `store` (documents collection)."""
    report = IngestReport()
    files = [f for p in paths for f in find_files(p)]
    report.files = len(files)
    docs: dict[str, dict] = {}
    for f in files:
        for d in parse_file(f, report.errors):
            docs[d["id"]] = d
    report.parsed = len(docs)
    for e in report.errors:
        logger.warning("ingest: %s", e)
    # Skip what is already stored with the same text: re-ingesting costs no embedding.
    ids = list(docs)
    for i in range(0, len(ids), 1000):
        chunk = ids[i : i + 1000]
        have = store.get(chunk)
        for did in chunk:
            if have.get(did) == docs[did]["text"]:
                del docs[did]
                report.skipped_existing += 1
    todo = list(docs.values())
    if not todo:
        return report
    bs = cfg.ingest.batch_size
    bar = console.progress("ingest", len(todo), unit="doc", disable=not progress)
    if use_ray:
        ds = ray.data.from_items(todo).map_batches(
            _EmbedBatch,
            fn_constructor_args=(cfg.embedder,),
            batch_size=bs,
            concurrency=cfg.ingest.concurrency,
            batch_format="numpy",
        )
        batches = ds.iter_batches(batch_size=bs, batch_format="numpy")
    else:
        embed = _EmbedBatch(cfg.embedder)
        batches = (
            embed({k: np.array([d[k] for d in todo[i : i + bs]]) for k in ("id", "text", "source")})
            for i in range(0, len(todo), bs)
        )
    for b in batches:
        report.written += store.upsert(
            [str(x) for x in b["id"]],
            [str(x) for x in b["text"]],
            np.asarray(b["dense"], dtype=np.float32),
            [str(x) for x in b["source"]],
        )
        bar.update(len(b["id"]))
    bar.close()
    store.flush()
    return report
