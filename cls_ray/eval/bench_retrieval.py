"""`cls-ray bench retrieval`: which query and which search mode find the supporting documents.

For every hop of the task's `eval` questions that name their supporting documents, the query is
built from the question and the *gold* steps before that hop (so retrieval is judged apart from
the model), with three query forms: `question` (single-shot), `q+step` (question and last step,
RAT-style) and `state` (RGR's `step_query`), each searched in `dense`, `bm25` and `hybrid` mode.
Where a question has no gold steps, the text of its earlier supporting documents stands in for
them. Documents found for earlier hops are excluded, as RGR excludes what it has cited.

Per form and mode: `recall_hop<i>`; `recall`, the share of (question, hop) pairs whose document
was in the top k; `recall_all`, the share of questions whose every supporting document was
found; recall per group; and the search time per query.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from cls_ray.rgr import step_query
from cls_ray.task import QA, Task

QUERY_FORMS = {
    "question": lambda q, steps: q,
    "q+step": lambda q, steps: f"{q} {steps[-1]}" if steps else q,
    "state": step_query,
}


def gold_reasoning(questions: Sequence[QA], task: Task) -> list[list[str]]:
    """The reasoning each question's hops build on: its gold steps, else its supporting
    documents' text (read from the task's corpus only when needed)."""
    need = {d for q in questions if len(q.steps) < q.hops for d in q.support_ids}
    text = {d["id"]: d["text"] for d in task.documents() if d["id"] in need} if need else {}
    out = []
    for q in questions:
        if len(q.steps) >= q.hops:
            out.append(list(q.steps))
        else:
            out.append([text.get(d, "") for d in q.support_ids])
    return out


def bench_retrieval(
    task: Task,
    embedder,
    store,
    k: int = 4,
    per_group: int | None = 20,
    modes: tuple[str, ...] = ("dense", "bm25", "hybrid"),
    forms: tuple[str, ...] = ("question", "q+step", "state"),
) -> dict:
    questions = [q for q in task.questions("eval", per_group=per_group) if q.support_ids]
    if not questions:
        raise ValueError(
            f"task {task.name}: no eval question names its support_ids; retrieval cannot be scored"
        )
    reasoning = gold_reasoning(questions, task)
    max_hops = max(q.hops for q in questions)
    store.warm_up()
    rows = []
    for form in forms:
        make = QUERY_FORMS[form]
        for mode in modes:
            row: dict = {"query": form, "mode": mode, "k": k}
            search_s, n_q = 0.0, 0
            found = [[False] * q.hops for q in questions]
            for hop in range(max_hops):
                idx = [i for i, q in enumerate(questions) if q.hops > hop]
                texts = [make(questions[i].question, reasoning[i][:hop]) for i in idx]
                t0 = time.perf_counter()
                vecs = embedder.embed(texts) if mode != "bm25" else None
                hits = store.search(
                    vecs,
                    texts,
                    k,
                    exclude=[set(questions[i].support_ids[:hop]) for i in idx],
                    mode=mode,
                )
                search_s += time.perf_counter() - t0
                n_q += len(idx)
                for i, hs in zip(idx, hits, strict=True):
                    found[i][hop] = questions[i].support_ids[hop] in {h.id for h in hs}
                row[f"recall_hop{hop + 1}"] = round(sum(found[i][hop] for i in idx) / len(idx), 4)
            pairs = [x for f in found for x in f]
            row["recall"] = round(sum(pairs) / len(pairs), 4)
            row["recall_all"] = round(sum(all(f) for f in found) / len(found), 4)
            groups: dict[str, list[bool]] = {}
            for q, f in zip(questions, found, strict=True):
                groups.setdefault(q.group or "-", []).extend(f)
            row["by_group"] = {g: round(sum(v) / len(v), 4) for g, v in groups.items()}
            row["ms_per_query"] = round(1000 * search_s / n_q, 2)
            rows.append(row)
    return {
        "task": task.name,
        "rows": rows,
        "questions": len(questions),
        "hops": max_hops,
        "documents": store.count(),
    }


def format_retrieval_table(result: dict) -> str:
    hops = range(1, result["hops"] + 1)
    lines = [
        f"{'query':9}{'mode':8}"
        + "".join(f"{f'hop{h}':>7}" for h in hops)
        + f"{'recall':>8}{'all':>7}{'ms/q':>8}"
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['query']:9}{r['mode']:8}"
            + "".join(f"{r[f'recall_hop{h}']:>7.3f}" for h in hops)
            + f"{r['recall']:>8.3f}{r['recall_all']:>7.3f}{r['ms_per_query']:>8.2f}"
        )
    return "\n".join(lines)
