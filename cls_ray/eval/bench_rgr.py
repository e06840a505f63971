"""`cls-ray bench rgr`: RGR against single-shot RAG and no retrieval on the task's `eval`
questions.

One row per (mode, hops, family) where family is `held_back` (the task's new groups, kept for
consolidation to teach) or `trained` (the rest). Figures per row: answer accuracy (the task's
answer check), chain accuracy (every step verified; only where the task has a verifier),
support recall (share of the supporting documents retrieved at any step; where questions name
them), citation precision (share of cited documents that state exactly the fact of the step
citing them on the world; elsewhere, that are supporting documents), latency p50/p95 per
question and retrieval share (retrieval time over total time). `by_group` breaks accuracy
down per group.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

from cls_ray import console
from cls_ray.rgr import Trajectory, run_rgr
from cls_ray.steps import parse_answer
from cls_ray.task import QA, Task
from cls_ray.world.verifier import parse_fact


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _supports(task: Task, q: QA, step_text: str, doc_id: str) -> bool:
    if task.world is not None:  # the world knows the fact each document states
        doc, fact = task.world.doc_by_id.get(doc_id), parse_fact(step_text)
        return doc is not None and fact is not None and doc.fact == fact
    return doc_id in q.support_ids


def chain_correct(task: Task, q: QA, steps: list[str]) -> bool | None:
    """Every step verified and the last one an answer; None where the task cannot verify."""
    if task.verify is None:
        return None
    return bool(steps) and all(task.verify(q, steps)) and parse_answer(steps[-1]) is not None


def score_trajectory(task: Task, q: QA, tr: Trajectory) -> dict:
    support = set(q.support_ids)
    cited, supported = 0, 0
    for step in tr.steps:
        for did in step.cited:
            cited += 1
            supported += int(_supports(task, q, step.text, did))
    can_cite = task.world is not None or bool(support)
    return {
        "group": q.group,
        "correct": task.is_right(tr.answer, q),
        "chain_correct": chain_correct(task, q, tr.step_texts),
        "support_recall": len(support & tr.retrieved_ids) / len(support) if support else None,
        "cited": cited if can_cite else 0,
        "supported": supported,
        "latency_s": tr.latency_s,
        "retrieval_s": tr.retrieval_s,
        "total_s": tr.retrieval_s + tr.generation_s,
    }


def _mean(values) -> float | None:
    """Mean of the values that were measured (None where none was)."""
    got = [v for v in values if v is not None]
    return round(statistics.fmean(got), 4) if got else None


def summarize(rows: list[dict]) -> dict:
    lat = [r["latency_s"] for r in rows]
    cited = sum(r["cited"] for r in rows)
    total = sum(r["total_s"] for r in rows)
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        groups[r["group"] or "-"].append(r["correct"])
    return {
        "n": len(rows),
        "accuracy": round(statistics.fmean(r["correct"] for r in rows), 4),
        "chain_accuracy": _mean(r["chain_correct"] for r in rows),
        "support_recall": _mean(r["support_recall"] for r in rows),
        "citation_precision": round(sum(r["supported"] for r in rows) / cited, 4)
        if cited
        else None,
        "latency_p50_s": round(_pct(lat, 0.5), 4),
        "latency_p95_s": round(_pct(lat, 0.95), 4),
        "retrieval_share": round(sum(r["retrieval_s"] for r in rows) / total, 4) if total else 0.0,
        "by_group": {g: round(statistics.fmean(v), 4) for g, v in groups.items()},
    }


def bench_rgr(
    task: Task,
    engine,
    retriever,
    modes: Sequence[str] = ("rgr", "single", "none"),
    per_family: int | None = 20,
    top_k: int = 4,
    max_steps: int = 5,
    exclude_cited: bool = True,
    grounded: bool = True,
    patterns: bool = False,
    batch_size: int = 16,
    progress: bool = True,
) -> dict:
    """Runs every mode on the same held-out questions; returns `{"rows": [...], ...}`."""
    questions = task.questions("eval", per_group=per_family)
    new = set(task.new_groups)
    if retriever is not None and hasattr(retriever, "store"):
        retriever.store.warm_up()
    scored: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    bar = console.progress(
        "bench rgr", len(modes) * len(questions), unit="question", disable=not progress
    )
    for mode in modes:
        for i in range(0, len(questions), batch_size):
            batch = questions[i : i + batch_size]
            trajs = run_rgr(
                [q.question for q in batch],
                engine,
                retriever,
                mode=mode,  # type: ignore[arg-type]
                top_k=top_k,
                max_steps=max_steps,
                exclude_cited=exclude_cited,
                grounded=grounded,
                patterns=patterns,
            )
            for q, tr in zip(batch, trajs, strict=True):
                fam = "held_back" if q.group in new else "trained"
                scored[(mode, q.hops, fam)].append(score_trajectory(task, q, tr))
            bar.update(len(batch))
    bar.close()
    rows = []
    for (mode, hops, fam), items in sorted(scored.items()):
        rows.append({"mode": mode, "hops": hops, "family": fam, **summarize(items)})
    return {
        "task": task.name,
        "rows": rows,
        "questions": len(questions),
        "top_k": top_k,
        "grounded": grounded,
        "batch_size": batch_size,
    }


def format_table(result: dict) -> str:
    head = f"{'mode':7}{'hops':>5} {'family':10}{'n':>5}{'acc':>7}{'chain':>7}{'recall':>8}"
    head += f"{'cite_p':>8}{'p50_s':>8}{'p95_s':>8}{'retr%':>7}"
    lines = [head]
    for r in result["rows"]:
        cp, ch, sr = (
            "-" if r[k] is None else f"{r[k]:.2f}"
            for k in ("citation_precision", "chain_accuracy", "support_recall")
        )
        lines.append(
            f"{r['mode']:7}{r['hops']:>5} {r['family']:10}{r['n']:>5}{r['accuracy']:>7.2f}"
            f"{ch:>7}{sr:>8}{cp:>8}"
            f"{r['latency_p50_s']:>8.3f}{r['latency_p95_s']:>8.3f}{100 * r['retrieval_share']:>6.1f}%"
        )
    return "\n".join(lines)
