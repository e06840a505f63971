"""`cls-ray bench retrieval`: which query and which search mode find the supporting documents.

For every hop of held-out questions, the query is built from the question and the *gold* steps
before that hop (so retrieval is judged apart from the model), with three query forms:
`question` (single-shot), `q+step` (question and last step, RAT-style) and `state` (RGR's
`step_query`), each searched in `dense`, `bm25` and `hybrid` mode. Documents cited at earlier
hops are excluded, as RGR does. Reports recall@k per hop and the search time per query.
"""

from __future__ import annotations

import time

from cls_ray.rgr import step_query
from cls_ray.world.core import Question, World

QUERY_FORMS = {
    "question": lambda q, steps: q,
    "q+step": lambda q, steps: f"{q} {steps[-1]}" if steps else q,
    "state": step_query,
}


def _queries(questions: list[Question], hop: int, form: str) -> list[str]:
    f = QUERY_FORMS[form]
    return [f(q.text, [x.text for x in q.chain[:hop]]) for q in questions]


def bench_retrieval(
    world: World,
    embedder,
    store,
    k: int = 4,
    per_family: int = 20,
    modes: tuple[str, ...] = ("dense", "bm25", "hybrid"),
    forms: tuple[str, ...] = ("question", "q+step", "state"),
) -> dict:
    questions = world.questions("heldout", per_family=per_family)
    store.warm_up()
    rows = []
    for form in forms:
        for mode in modes:
            row: dict = {"query": form, "mode": mode, "k": k}
            search_s, n_q, found, total = 0.0, 0, 0, 0
            for hop in range(3):
                sub = [q for q in questions if q.hops > hop]
                texts = _queries(sub, hop, form)
                t0 = time.perf_counter()
                vecs = embedder.embed(texts) if mode != "bm25" else None
                hits = store.search(
                    vecs, texts, k, exclude=[set(q.support_ids[:hop]) for q in sub], mode=mode
                )
                search_s += time.perf_counter() - t0
                n_q += len(sub)
                ok = [
                    q.support_ids[hop] in {h.id for h in hs}
                    for q, hs in zip(sub, hits, strict=True)
                ]
                row[f"recall_hop{hop + 1}"] = round(sum(ok) / len(ok), 4)
                found += sum(ok)
                total += len(ok)
            row["recall"] = round(found / total, 4)
            row["ms_per_query"] = round(1000 * search_s / n_q, 2)
            rows.append(row)
    return {"rows": rows, "questions": len(questions), "documents": store.count()}


def format_retrieval_table(result: dict) -> str:
    lines = [f"{'query':9}{'mode':8}{'hop1':>7}{'hop2':>7}{'hop3':>7}{'all':>7}{'ms/q':>8}"]
    for r in result["rows"]:
        lines.append(
            f"{r['query']:9}{r['mode']:8}{r['recall_hop1']:>7.3f}{r['recall_hop2']:>7.3f}"
            f"{r['recall_hop3']:>7.3f}{r['recall']:>7.3f}{r['ms_per_query']:>8.2f}"
        )
    return "\n".join(lines)
