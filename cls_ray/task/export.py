"""Writes any task in the files format, so a task can be read back by `FilesTask` (and the
world measured on the files path against its own path, on the same content)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import yaml

from cls_ray.task.base import SPLITS, Task


def _write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    tmp = path.with_suffix(".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def export_task(task: Task, out: str | Path, per_group: int | None = None) -> dict:
    """Writes `task` under `out` (corpus, every split, task.yaml); returns the counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"corpus": _write_jsonl(out / "corpus.jsonl", task.documents())}
    for split in SPLITS:
        qs = task.questions(split, per_group=per_group)
        counts[split] = _write_jsonl(out / f"{split}.jsonl", (q.to_json() for q in qs))
    meta = {
        "name": task.name,
        "answer_check": task.check.kind,
        "new_groups": list(task.new_groups),
    }
    if task.check.kind == "f1":
        meta["f1_threshold"] = task.check.threshold
    (out / "task.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    return counts
