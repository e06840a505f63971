"""Dreams: inside one sleep, the candidate asks the sessions' own questions again (expert
iteration, as in STaR and ReST-EM). The PRM keeps the best of N samples of each and the same
gate judges them as it judges served sessions, so a right chain the model could not find before
the sleep (a multi-hop chain of a relation it did not know) becomes training data once the
first round has taught the relation's single steps.

Nothing a client sent beyond the question it asked becomes training data: what does is the
model's own trajectory, scored by the PRM and gated, and, where the task holds a reference
answer for the question in its `train` split (`reference_check`), one whose answer checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cls_ray.ports import Retriever, Scorer
from cls_ray.prm.best_of_n import rgr_best_of_n
from cls_ray.session import Session


def best_of_n_sessions(
    cfg,
    engine,
    retriever: Retriever,
    prm: Scorer,
    questions: Sequence[str],
    n: int,
    seed: int = 0,
    model_version: str | None = None,
    accept: Callable[[str, str | None], bool] | None = None,
    min_steps: Sequence[int] | None = None,
) -> tuple[list[dict], dict[str, str]]:
    """For each question, the best of `n` RGR samples by the PRM (among those `accept` takes,
    where any does), as a scored session dict; and the texts of every document they
    retrieved. `min_steps`: per question, the fewest steps before an answer (grounded)."""
    options = cfg.rgr_options()
    if min_steps is not None:
        options["min_steps"] = list(min_steps)
    best = rgr_best_of_n(
        list(questions),
        engine,
        retriever,
        prm.score_many,
        n,
        temperature=cfg.prm.sample_temperature,
        seed=seed,
        aggregation=cfg.prm.aggregation,
        accept=accept,
        **options,
    )
    sessions, docs = [], {}
    for tr, scores, tau in best:
        s = Session.from_trajectory(tr)
        s.prm_step_scores, s.r_tau = list(scores), tau
        if model_version:
            s.model_version = model_version
        sessions.append(s.model_dump())
        for st in tr.steps:
            docs.update({d.id: d.text for d in st.retrieved})
    return sessions, docs


def dream_round(
    cfg,
    engine,
    retriever: Retriever,
    prm: Scorer,
    questions: Sequence[str],
    seed: int,
    accept: Callable[[str, str | None], bool] | None,
) -> tuple[list[dict], dict[str, str], dict]:
    """One round's samples: the best of `consolidate.dream_n` per question. With a reference
    check, a dream whose answer it refutes is dropped; and first, where decoding is grounded
    (`consolidate.dream_further`), its question is asked once more with one step more before
    any answer than the refuted dream took: a wrong answer is most often a stop one hop short
    (asked for the founder of the employer of the rival, the model names the employer), and a
    grammar that withholds the answer for one more step lets it take the hop it skipped.
    Returns the kept sessions, the documents they retrieved, and `{"refuted", "further"}`:
    how many stayed refuted, how many the further step put right."""
    c = cfg.consolidate
    got, docs = best_of_n_sessions(
        cfg, engine, retriever, prm, questions, c.dream_n, seed, "dream", accept
    )
    if accept is None:
        return got, docs, {"refuted": 0, "further": 0}
    checks = [accept(s["question"], s["answer"]) for s in got]
    kept = [s for s, ok in zip(got, checks, strict=True) if ok]
    wrong = [s for s, ok in zip(got, checks, strict=True) if not ok]
    further = further_floors(wrong, cfg.rgr.max_steps) if c.dream_further and cfg.grounded else {}
    right = []
    if further:
        again, more = best_of_n_sessions(
            cfg,
            engine,
            retriever,
            prm,
            list(further),
            c.dream_n,
            seed + 7919,
            "dream",
            accept,
            min_steps=list(further.values()),
        )
        right = [s for s in again if accept(s["question"], s["answer"])]
        docs.update(more)
    return kept + right, docs, {"refuted": len(wrong) - len(right), "further": len(right)}


def further_floors(refuted: Sequence[dict], max_steps: int) -> dict[str, int]:
    """For each refuted dream that gave an answer early enough to leave room for one more
    step and the answer (`max_steps`): its question and the fewest steps before an answer
    when asked again, one more than it took."""
    out = {}
    for s in refuted:
        floor = sum(not st["is_answer"] for st in s["steps"]) + 1
        if s["answer"] is not None and floor < max_steps:
            out.setdefault(s["question"], floor)
    return out


def reference_check(task, sessions: Sequence[dict]) -> Callable[[str, str | None], bool] | None:
    """Where the task holds reference answers for the sessions' questions (its `train` split,
    the questions training may draw on; never `eval` or `retention`), a check that a
    trajectory's answer is one of them; a question without one passes. None when the task
    knows none of them: dreams then rest on the PRM alone (STaR and ReST-EM keep a sample only
    when its answer is right; the PRM alone passes a chain of true facts in the wrong order on
    a relation it never saw)."""
    asked = {s["question"] for s in sessions}
    ref = {q.question: q.answers for q in task.questions("train") if q.question in asked}
    if not ref:
        return None
    return lambda question, answer: question not in ref or task.check(answer, ref[question])


def dream_questions(sessions: Sequence[dict], limit: int, solved_at: float) -> list[str]:
    """The questions of `sessions` none of whose sessions the PRM trusts yet (R(τ) below
    `solved_at`), in order of first appearance, at most `limit`: a dream asks again only what
    no trajectory has solved."""
    solved = {s["question"] for s in sessions if (s.get("r_tau") or 0.0) >= solved_at}
    asked = dict.fromkeys(s["question"] for s in sessions if s["question"] not in solved)
    return list(asked)[: max(0, limit)]
