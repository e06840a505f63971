"""A task read from a folder (the format of DESIGN.md, "Tasks"):

    corpus.jsonl      {"id": "d1", "text": "..."}      documents to ingest
    train.jsonl       questions sessions and training may draw on (optional)
    eval.jsonl        held-out questions for benchmarks and the new-skill measure
    retention.jsonl   questions whose answers must not get worse (optional)
    task.yaml         optional: name, answer_check (em | f1), f1_threshold, new_groups

A question line is `{"id", "question", "answers": [...], "support_ids"?, "steps"?, "group"?}`;
only `question` and `answers` are required. Every file is checked when the task is opened, and
a bad line is named by file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path

import yaml

from cls_ray.answers import AnswerCheck
from cls_ray.task.base import QA, SPLITS, Split, TaskError

_TASK_KEYS = {"name", "answer_check", "f1_threshold", "new_groups"}
_QA_KEYS = {"id", "question", "answers", "support_ids", "steps", "group"}


def _str_list(v, field: str, where: str, required: bool) -> tuple[str, ...]:
    if v is None and not required:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
        raise TaskError(f"{where}: {field!r} must be a list of non-empty strings")
    if required and not v:
        raise TaskError(f"{where}: {field!r} must hold at least one answer")
    return tuple(v)


def parse_qa(row, where: str, n: int) -> QA:
    if not isinstance(row, dict):
        raise TaskError(f"{where}: a question line must be a JSON object")
    unknown = set(row) - _QA_KEYS
    if unknown:
        raise TaskError(f"{where}: unknown field(s) {sorted(unknown)}; expected {sorted(_QA_KEYS)}")
    q = row.get("question")
    if not isinstance(q, str) or not q.strip():
        raise TaskError(f"{where}: 'question' must be a non-empty string")
    qid = row.get("id", f"line{n}")
    if not isinstance(qid, str | int) or isinstance(qid, bool):
        raise TaskError(f"{where}: 'id' must be a string")
    group = row.get("group", "")
    if not isinstance(group, str):
        raise TaskError(f"{where}: 'group' must be a string")
    return QA(
        id=str(qid),
        question=q.strip(),
        answers=_str_list(row.get("answers"), "answers", where, required=True),
        support_ids=_str_list(row.get("support_ids"), "support_ids", where, required=False),
        steps=_str_list(row.get("steps"), "steps", where, required=False),
        group=group,
    )


def read_questions(path: Path) -> list[QA]:
    out, seen = [], {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskError(f"{where}: not valid JSON ({e.msg})") from None
            qa = parse_qa(row, where, n)
            if qa.id in seen:
                raise TaskError(f"{where}: id {qa.id!r} repeats line {seen[qa.id]}")
            seen[qa.id] = n
            out.append(qa)
    return out


class FilesTask:
    verify = None
    world = None

    def __init__(self, path: str | Path, answer_check: str | None = None, f1_threshold=None):
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise TaskError(f"task.path {self.path}: no such folder")
        if not (self.path / "corpus.jsonl").is_file():
            raise TaskError(f"{self.path}: a files task needs corpus.jsonl")
        if not (self.path / "eval.jsonl").is_file():
            raise TaskError(f"{self.path}: a files task needs eval.jsonl")
        meta = self._meta()
        self.name = str(meta.get("name") or self.path.name)
        where = self.path / "task.yaml"
        kind = answer_check or meta.get("answer_check") or "em"
        if kind not in ("em", "f1"):
            raise TaskError(f"{where}: answer_check must be em or f1, not {kind!r}")
        threshold = f1_threshold if f1_threshold is not None else meta.get("f1_threshold")
        threshold = 0.5 if threshold is None else threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise TaskError(f"{where}: f1_threshold must be a number in (0, 1], not {threshold!r}")
        if not 0 < threshold <= 1:
            raise TaskError(f"{where}: f1_threshold must be in (0, 1], not {threshold}")
        self.check = AnswerCheck(kind, float(threshold))
        self.new_groups = _str_list(
            meta.get("new_groups"), "new_groups", str(self.path / "task.yaml"), required=False
        )
        self._splits = {s: self._read(s) for s in SPLITS}  # checked up front, whole

    def _meta(self) -> dict:
        f = self.path / "task.yaml"
        if not f.is_file():
            return {}
        try:
            meta = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            raise TaskError(f"{f}:{'' if line is None else line + 1}: not valid YAML") from None
        if not isinstance(meta, dict):
            raise TaskError(f"{f}: expected a mapping of {sorted(_TASK_KEYS)}")
        unknown = set(meta) - _TASK_KEYS
        if unknown:
            raise TaskError(f"{f}: unknown key(s) {sorted(unknown)}; expected {sorted(_TASK_KEYS)}")
        return meta

    def _read(self, split: Split) -> list[QA]:
        f = self.path / f"{split}.jsonl"
        return read_questions(f) if f.is_file() else []

    @cached_property
    def corpus_file(self) -> Path:
        return self.path / "corpus.jsonl"

    def documents(self) -> Iterator[dict]:
        with self.corpus_file.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise TaskError(
                            f"{self.corpus_file}:{n}: not valid JSON ({e.msg})"
                        ) from None
                    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                        raise TaskError(f'{self.corpus_file}:{n}: expected {{"id", "text"}}')
                    yield {"id": str(row.get("id", f"line{n}")), "text": row["text"]}

    def groups(self, split: Split) -> list[str]:
        return list(dict.fromkeys(q.group for q in self._splits[split]))

    def questions(
        self,
        split: Split,
        groups: Sequence[str] | None = None,
        per_group: int | None = None,
        seed: int = 0,
    ) -> list[QA]:
        """File order; with `per_group`, the first that many of each group."""
        if split not in self._splits:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        wanted = None if groups is None else set(groups)
        taken: dict[str, int] = {}
        out = []
        for q in self._splits[split]:
            if wanted is not None and q.group not in wanted:
                continue
            if per_group is not None and taken.get(q.group, 0) >= per_group:
                continue
            taken[q.group] = taken.get(q.group, 0) + 1
            out.append(q)
        return out

    def is_right(self, prediction: str | None, qa: QA) -> bool:
        return self.check(prediction, qa.answers)
