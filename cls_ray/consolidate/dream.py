"""Dreams: inside one sleep, the candidate asks the sessions' own questions again (expert
iteration, as in STaR and ReST-EM). The PRM keeps the best of N samples of each and the same
gate judges them as it judges served sessions, so a right chain the model could not find before
the sleep (a multi-hop chain of a relation it did not know) becomes training data once the
first round has taught the relation's single steps.

Nothing a client sent beyond the question it asked becomes training data: what does is the
model's own trajectory, scored by the PRM and gated, and, where the task holds a reference
answer for the question in its `train` split (`reference_check`), one whose answer checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cls_ray.answers import Accept
from cls_ray.ports import RetrievedDoc, Retriever, Scorer
from cls_ray.prm.best_of_n import rgr_best_of_n
from cls_ray.rgr import StepRecord
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
    accept: Accept | None = None,
    min_steps: Sequence[int] | None = None,
    retry: Sequence[Retry] | None = None,
) -> tuple[list[dict], dict[str, str]]:
    """For each question, the best of `n` RGR samples by the PRM (among those `accept` takes,
    where any does), as a scored session dict; and the texts of every document they
    retrieved. `min_steps`: per question, the fewest steps before an answer (grounded);
    `retry`: per question, the steps it starts from and the steps not offered next."""
    options = cfg.rgr_options()
    if min_steps is not None:
        options["min_steps"] = list(min_steps)
    if retry is not None:
        if [r.question for r in retry] != list(questions):
            raise ValueError("retry: one per question, in the questions' order")
        options["prefixes"] = [r.prefix for r in retry]
        options["avoid"] = [r.avoid for r in retry]
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
    accept: Accept | None,
) -> tuple[list[dict], dict[str, str], dict]:
    """One round's samples: the best of `consolidate.dream_n` per question. With a reference
    check, a dream whose answer it refutes is dropped; and first, where decoding is grounded
    (`consolidate.dream_further`), its question is asked once more with one step more before
    any answer than the refuted dream took: a wrong answer is most often a stop one hop short
    (asked for the founder of the employer of the rival, the model names the employer), and a
    grammar that withholds the answer for one more step lets it take the hop it skipped.
    Then (`consolidate.dream_backtrack`, grounded) a refuted dream the further step did not put
    right is asked again from before the first step the PRM found wrong, that step withheld
    there, up to `consolidate.dream_backtrack` times (`backtrack_point`). Returns the kept
    sessions, the documents they retrieved, and `{"refuted", "further", "backtracked"}`: how
    many stayed refuted, how many the further step and how many the retry put right."""
    c = cfg.consolidate
    got, docs = best_of_n_sessions(
        cfg, engine, retriever, prm, questions, c.dream_n, seed, "dream", accept
    )
    if accept is None:
        return got, docs, {"refuted": 0, "further": 0, "backtracked": 0}
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
    done = {s["question"] for s in right}
    back: list[dict] = []
    if c.dream_backtrack and cfg.grounded:
        todo = [backtrack_point(s, docs, c.min_step_score) for s in wrong]
        retries = [r for r in todo if r is not None and r.question not in done]
        for t in range(c.dream_backtrack):
            if not retries:
                break
            again, more = best_of_n_sessions(
                cfg,
                engine,
                retriever,
                prm,
                [r.question for r in retries],
                c.dream_n,
                seed + 104729 * (t + 1),
                "dream",
                accept,
                retry=retries,
            )
            docs.update(more)
            nxt = []
            for r, s in zip(retries, again, strict=True):
                if accept(s["question"], s["answer"]):
                    back.append(s)
                elif (p := backtrack_point(s, docs, c.min_step_score, r)) is not None:
                    nxt.append(p)
            retries = nxt
    fixed = len(right) + len(back)
    counts = {"refuted": len(wrong) - fixed, "further": len(right), "backtracked": len(back)}
    return kept + right + back, docs, counts


@dataclass(frozen=True)
class Retry:
    """A question asked again from the steps before the first one the PRM found wrong
    (`prefix`, with what each retrieved), without the steps found wrong there (`avoid`)."""

    question: str
    prefix: list[StepRecord]
    avoid: frozenset[str]


def backtrack_point(refuted: dict, docs: dict[str, str], floor: float, after: Retry | None = None):
    """The retry of a refuted dream whose PRM step scores fall below `floor` first at a
    reasoning step (not its answer): from the steps before it, that step withheld there; where
    the dream was itself a retry (`after`) that went wrong at the same step, the steps withheld
    there before stay withheld. None where the PRM doubts no reasoning step, or (`after`) one
    of the retry's own prefix.

    Asked for the headquarters of the partner of the employer, a model that knows the
    headquarters relation well and the partner relation a little takes a headquarters at the
    second step (the employer's, then a look-alike's); with those withheld, the partner's is
    the step it takes next, and the chain the reference answer then accepts is made of the
    model's own choices, trained in the context they were made in (the withheld documents
    still there). The PRM judges a step with the steps after it (a right step that ends a
    chain early scores low), so the wrong step is found in whole dreams, one at a time."""
    scores, steps = refuted.get("prm_step_scores") or [], refuted["steps"]
    i = next((k for k, x in enumerate(scores) if x < floor), None)
    if i is None or i >= len(steps) or steps[i]["is_answer"]:
        return None
    avoid = {steps[i]["text"]}
    if after is not None:
        if i < len(after.prefix):
            return None
        if i == len(after.prefix):
            avoid |= after.avoid
    prefix = [
        StepRecord(
            st["text"],
            st.get("query"),
            [RetrievedDoc(r["id"], r["score"], docs.get(r["id"], "")) for r in st["retrieved"]],
            list(st.get("cited") or []),
            list(st.get("token_ids") or []),
            list(st.get("logprobs") or []),
        )
        for st in steps[:i]
    ]
    return Retry(refuted["question"], prefix, frozenset(avoid))


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


def reference_check(task, sessions: Sequence[dict]) -> Accept | None:
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


def dream_questions(
    sessions: Sequence[dict], limit: int, solved_at: float, accept: Accept | None = None
) -> list[str]:
    """The questions of `sessions` none of whose sessions the PRM trusts yet (R(τ) below
    `solved_at`) with an answer `accept` takes, in order of first appearance, at most `limit`:
    a dream asks again only what no trajectory has solved."""
    solved = {
        s["question"]
        for s in sessions
        if (s.get("r_tau") or 0.0) >= solved_at
        and (accept is None or accept(s["question"], s.get("answer")))
    }
    asked = dict.fromkeys(s["question"] for s in sessions if s["question"] not in solved)
    return list(asked)[: max(0, limit)]
