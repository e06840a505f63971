"""How good the PRM is, on held-out questions (entities never seen in training):

- `step_f1`: per-step F1 against the verifier (a step is predicted correct at score ≥ 0.5),
  averaged over the two classes (correct, wrong), so a PRM that calls every step correct does
  not score well; `step_f1_correct` and `step_f1_wrong` are the two halves;
- `first_error_accuracy` (as in ProcessBench): a wrong trajectory counts when its first step
  scored below 0.5 is its first wrong step; a correct one counts when no step scores below 0.5;
- `auroc_tau`: how well R(τ) separates correct trajectories from incorrect ones;
- `best_of_n`: the model samples N trajectories with RGR; accuracy of the greedy trajectory, of
  the majority answer among the N, and of the trajectory the PRM scores highest.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from cls_ray.answers import normalize
from cls_ray.prm.aggregate import aggregate_step_scores
from cls_ray.prm.best_of_n import trajectory_items
from cls_ray.prm.labels import StepExample
from cls_ray.rgr import run_rgr
from cls_ray.task import QA, Task


def _f1(tp: int, fp: int, fn: int) -> float:
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """The probability that a random positive outscores a random negative (ties count half)."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    if not pos or not neg:
        return float("nan")
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    # Mann-Whitney U with average ranks for ties.
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        avg = (i + j + 1) / 2
        rank_sum += avg * sum(1 for k in range(i, j) if ranked[k][1])
        i = j
    u = rank_sum - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))


def step_metrics(
    examples: Sequence[StepExample], scores: Sequence[Sequence[float]], aggregation: str = "min"
) -> dict:
    tp = fp = fn = tn = 0
    first_ok = 0
    taus, correct = [], []
    for ex, sc in zip(examples, scores, strict=True):
        labels = ex.labels
        for lab, s in zip(labels, sc, strict=True):
            if lab is None:
                continue
            pred, gold = s >= 0.5, lab >= 0.5
            tp += pred and gold
            fp += pred and not gold
            fn += (not pred) and gold
            tn += (not pred) and (not gold)
        gold_first = next(
            (i for i, lab in enumerate(labels) if lab is not None and lab < 0.5), None
        )
        pred_first = next((i for i, s in enumerate(sc) if s < 0.5), None)
        first_ok += gold_first == pred_first
        taus.append(aggregate_step_scores(sc, aggregation))  # type: ignore[arg-type]
        correct.append(bool(ex.meta.get("correct")))
    f1_correct, f1_wrong = _f1(tp, fp, fn), _f1(tn, fn, fp)
    return {
        "step_f1": (f1_correct + f1_wrong) / 2,
        "step_f1_correct": f1_correct,
        "step_f1_wrong": f1_wrong,
        "step_accuracy": (tp + tn) / max(1, tp + tn + fp + fn),
        "first_error_accuracy": first_ok / max(1, len(examples)),
        "auroc_tau": auroc(taus, correct),
        "trajectories": len(examples),
        "steps": tp + tn + fp + fn,
        "wrong_trajectories": sum(not c for c in correct),
    }


def by_source(
    examples: Sequence[StepExample],
    scores: Sequence[Sequence[float]],
    new_groups: Sequence[str] = (),
) -> dict:
    """Step accuracy and first-error accuracy per kind of trajectory (gold, sampled, each
    corruption; Monte Carlo labels keep the kind in `meta`), the held-back (new) groups apart:
    where a PRM errs."""
    parts: dict[str, tuple[list, list]] = {}
    new = set(new_groups)
    for ex, sc in zip(examples, scores, strict=True):
        held = ex.meta.get("held_back") or ex.meta.get("group") in new
        key = ex.meta.get("kind", ex.source) + ("/held_back" if held else "")
        parts.setdefault(key, ([], []))[0].append(ex)
        parts[key][1].append(sc)
    out = {}
    for key in sorted(parts):
        m = step_metrics(*parts[key])
        out[key] = {
            k: m[k] for k in ("trajectories", "steps", "step_accuracy", "first_error_accuracy")
        }
    return out


def best_of_n(
    prm,
    questions: Sequence[QA],
    task: Task,
    engine,
    retriever,
    ns: Sequence[int] = (1, 4, 16),
    temperature: float = 1.0,
    seed: int = 0,
    **rgr_options,
) -> list[dict]:
    """Rows of (n, family group) with greedy, majority and PRM-selected accuracy (by the task's
    answer check; `held_back` rows are the task's new groups)."""
    n_max = max(ns)
    greedy = run_rgr([q.question for q in questions], engine, retriever, **rgr_options)
    flat = [q for q in questions for _ in range(n_max)]
    samples = run_rgr(
        [q.question for q in flat],
        engine,
        retriever,
        temperature=temperature,
        seed=seed,
        **rgr_options,
    )
    items = trajectory_items(samples)
    step_scores = prm.score_many(items)
    taus = [prm.r_tau(s) for s in step_scores]
    rng = random.Random(seed)
    new = set(task.new_groups)
    rows = []
    for group in ("trained", "held_back"):
        idx = [i for i, q in enumerate(questions) if (q.group in new) == (group == "held_back")]
        if not idx:
            continue
        for n in ns:
            hits = {"greedy": 0, "majority": 0, "prm": 0}
            for i in idx:
                q = questions[i]
                hits["greedy"] += task.is_right(greedy[i].answer, q)
                pool = list(range(i * n_max, i * n_max + n))
                # the vote is over normalized answers; the winner is checked like any answer
                answers = [normalize(samples[j].answer) for j in pool]
                counts = Counter(a for a in answers if a)
                if counts:
                    top = max(counts.values())
                    tied = [a for a in counts if counts[a] == top]
                    hits["majority"] += task.is_right(rng.choice(sorted(tied)), q)
                best = max(pool, key=lambda j: taus[j])
                hits["prm"] += task.is_right(samples[best].answer, q)
            rows.append(
                {
                    "n": n,
                    "family": group,
                    "questions": len(idx),
                    **{k: v / len(idx) for k, v in hits.items()},
                }
            )
    return rows
