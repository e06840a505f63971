"""`cls-ray bench rgr`: RGR against single-shot RAG and no retrieval on held-out questions.

One row per (mode, hops, family) where family is `trained` (the families the small model was
built on) or `held_back` (kept for consolidation to teach). Figures per row: answer accuracy,
chain accuracy (every step verified), support recall (share of the gold chain's documents that
were retrieved at any step), citation precision (share of cited documents that state exactly
the fact of the step citing them), latency p50/p95 per question and retrieval share (retrieval
time over total time).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

from tqdm.auto import tqdm

from cls_ray.rgr import Trajectory, run_rgr
from cls_ray.world.core import Question, World
from cls_ray.world.verifier import normalize_answer, parse_fact, trajectory_correct


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def score_trajectory(world: World, q: Question, tr: Trajectory) -> dict:
    support = set(q.support_ids)
    cited, supported = 0, 0
    for step in tr.steps:
        fact = parse_fact(step.text)
        for did in step.cited:
            cited += 1
            doc = world.doc_by_id.get(did)
            supported += int(doc is not None and fact is not None and doc.fact == fact)
    return {
        "correct": normalize_answer(tr.answer) == normalize_answer(q.answer),
        "chain_correct": trajectory_correct(q, tr.step_texts),
        "support_recall": len(support & tr.retrieved_ids) / len(support),
        "cited": cited,
        "supported": supported,
        "latency_s": tr.latency_s,
        "retrieval_s": tr.retrieval_s,
        "total_s": tr.retrieval_s + tr.generation_s,
    }


def summarize(rows: list[dict]) -> dict:
    lat = [r["latency_s"] for r in rows]
    cited = sum(r["cited"] for r in rows)
    total = sum(r["total_s"] for r in rows)
    return {
        "n": len(rows),
        "accuracy": round(statistics.fmean(r["correct"] for r in rows), 4),
        "chain_accuracy": round(statistics.fmean(r["chain_correct"] for r in rows), 4),
        "support_recall": round(statistics.fmean(r["support_recall"] for r in rows), 4),
        "citation_precision": round(sum(r["supported"] for r in rows) / cited, 4)
        if cited
        else None,
        "latency_p50_s": round(_pct(lat, 0.5), 4),
        "latency_p95_s": round(_pct(lat, 0.95), 4),
        "retrieval_share": round(sum(r["retrieval_s"] for r in rows) / total, 4) if total else 0.0,
    }


def bench_rgr(
    world: World,
    engine,
    retriever,
    modes: Sequence[str] = ("rgr", "single", "none"),
    per_family: int = 20,
    top_k: int = 4,
    max_steps: int = 5,
    exclude_cited: bool = True,
    grounded: bool = True,
    patterns: bool = False,
    batch_size: int = 16,
    progress: bool = True,
) -> dict:
    """Runs every mode on the same held-out questions; returns `{"rows": [...], ...}`."""
    questions = world.questions("heldout", per_family=per_family)
    if retriever is not None and hasattr(retriever, "store"):
        retriever.store.warm_up()
    scored: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    bar = tqdm(total=len(modes) * len(questions), desc="bench rgr", disable=not progress)
    for mode in modes:
        for i in range(0, len(questions), batch_size):
            batch = questions[i : i + batch_size]
            trajs = run_rgr(
                [q.text for q in batch],
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
                fam = "held_back" if q.held_back else "trained"
                scored[(mode, q.hops, fam)].append(score_trajectory(world, q, tr))
            bar.update(len(batch))
    bar.close()
    rows = []
    for (mode, hops, fam), items in sorted(scored.items()):
        rows.append({"mode": mode, "hops": hops, "family": fam, **summarize(items)})
    return {
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
        cp = "-" if r["citation_precision"] is None else f"{r['citation_precision']:.2f}"
        lines.append(
            f"{r['mode']:7}{r['hops']:>5} {r['family']:10}{r['n']:>5}{r['accuracy']:>7.2f}"
            f"{r['chain_accuracy']:>7.2f}{r['support_recall']:>8.2f}{cp:>8}"
            f"{r['latency_p50_s']:>8.3f}{r['latency_p95_s']:>8.3f}{100 * r['retrieval_share']:>6.1f}%"
        )
    return "\n".join(lines)
