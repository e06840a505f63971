"""Best-of-N with the PRM: sample N RGR trajectories per question and keep the one with the
highest R(τ). The PRM at inference time, and the way a model finds good trajectories for a
family it cannot yet solve greedily."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cls_ray.answers import Accept
from cls_ray.prm.aggregate import Aggregation, aggregate_step_scores
from cls_ray.prm.labels import step_evidence
from cls_ray.rgr import run_rgr


def trajectory_items(trajs) -> list[tuple[str, list[str], list[str]]]:
    """`(question, steps, evidence)` for the PRM: each step's evidence is the retrieved document
    it restates best."""
    return [
        (
            tr.question,
            tr.step_texts,
            step_evidence(tr.step_texts, [[d.text for d in s.retrieved] for s in tr.steps]),
        )
        for tr in trajs
    ]


def best_indices(taus: Sequence[float], n: int) -> list[int]:
    """For each run of `n` consecutive samples (one question's), the index of the one with the
    highest R(τ) (the first on ties)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    return [max(range(i, i + n), key=lambda j: taus[j]) for i in range(0, len(taus), n)]


def rgr_best_of_n(
    questions: Sequence[str],
    engine,
    retriever,
    score_many: Callable[[list], list[list[float]]],
    n: int,
    temperature: float = 1.0,
    seed: int | None = None,
    aggregation: Aggregation = "min",
    accept: Accept | None = None,
    **rgr_options,
) -> list[tuple[object, list[float], float]]:
    """For each question: (best trajectory, its step scores, its R(τ)) among `n` samples. With
    `accept(question, answer)`, a sample it accepts (its answer checks against a reference) beats any it does
    not, and R(τ) ranks within each."""
    if n < 1:
        raise ValueError("n must be at least 1")
    flat = [q for q in questions for _ in range(n)]
    for key in ("min_steps", "prefixes", "avoid"):  # one per question: one per sample
        per = rgr_options.get(key)
        if per is not None and not isinstance(per, int):
            rgr_options[key] = [x for x in per for _ in range(n)]
    trajs = run_rgr(flat, engine, retriever, temperature=temperature, seed=seed, **rgr_options)
    scores = score_many(trajectory_items(trajs))
    taus = [aggregate_step_scores(s, aggregation) for s in scores]
    keys = (
        taus
        if accept is None
        else [
            t + 2.0 * bool(accept(tr.question, tr.answer))
            for t, tr in zip(taus, trajs, strict=True)
        ]
    )
    return [(trajs[j], scores[j], taus[j]) for j in best_indices(keys, n)]
