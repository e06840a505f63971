"""Trajectories to label on any task: each question's gold chain (where the task has gold
steps), wrong versions of it made from other questions of its group, and the model's own
samples. None of them carries a label: Monte Carlo rollouts (`mc.mc_labels`) or the task's
verifier label them afterwards.

The wrong versions need no knowledge of the domain: a hop replaced by the same hop of another
question of the group (the chain then follows that question: a plausible step about the wrong
thing), a skipped hop, an answer given early, and a wrong final answer (another question's).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from cls_ray.prm.labels import StepExample, evidence_for
from cls_ray.rgr import run_rgr
from cls_ray.steps import answer_step
from cls_ray.task import QA

KINDS = ("foreign_hop", "skipped_hop", "early_answer", "wrong_answer")


def unlabelled(qa: QA, steps: Sequence[str], docs: Sequence[Sequence[str]], source: str):
    """`steps` of `qa` with no labels yet; evidence from each step's documents."""
    return StepExample(
        qa.question,
        list(steps),
        [None] * len(steps),
        [evidence_for(s, d) for s, d in zip(steps, docs, strict=True)],
        source,
        {"question_id": qa.id, "group": qa.group, "hops": qa.hops},
    )


def gold_steps(qa: QA) -> list[str]:
    return [*qa.steps, answer_step(qa.answer)]


def _wrong_answer(qa: QA, others: Sequence[QA], rng: random.Random) -> str | None:
    mine = {a.lower() for a in qa.answers}
    pool = [o.answer for o in others if o.answer.lower() not in mine]
    return rng.choice(pool) if pool else None


def corrupt(
    qa: QA, kind: str, others: Sequence[QA], rng: random.Random
) -> tuple[list[str], QA | None] | None:
    """A wrong trajectory for `qa` built from `others` (questions of its group) and the other
    question whose steps it borrowed, or None when `kind` does not apply."""
    gold, hops = list(qa.steps), len(qa.steps)
    if not hops:
        return None
    if kind == "foreign_hop":
        i = rng.randrange(hops)
        pool = [o for o in others if len(o.steps) > i and o.steps[i] != gold[i]]
        if not pool:
            return None
        o = rng.choice(pool)
        return gold[:i] + list(o.steps[i:]) + [answer_step(o.answer)], o
    if kind == "skipped_hop":
        if hops < 2:
            return None
        j = rng.randrange(hops - 1)
        return gold[:j] + gold[j + 1 :] + [answer_step(qa.answer)], None
    wrong = _wrong_answer(qa, others, rng)
    if wrong is None:
        return None
    if kind == "early_answer":
        if hops < 2:
            return None
        return gold[: rng.randrange(1, hops)] + [answer_step(wrong)], None
    if kind == "wrong_answer":
        return gold + [answer_step(wrong)], None
    raise ValueError(f"unknown corruption {kind!r}; expected one of {KINDS}")


def gold_and_corrupted(
    questions: Sequence[QA], doc_text: dict[str, str], per_question: int = 2, seed: int = 0
) -> list[StepExample]:
    """For each question with gold steps: its gold chain and `per_question` wrong versions,
    unlabelled. A step's evidence is the supporting document of its hop (`doc_text`)."""
    rng = random.Random(seed)
    by_group: dict[str, list[QA]] = {}
    for q in questions:
        by_group.setdefault(q.group, []).append(q)
    out = []
    for q in questions:
        if not q.steps:
            continue

        def docs_for(steps: list[str], *of: QA) -> list[list[str]]:
            texts = [doc_text[d] for x in of for d in x.support_ids if d in doc_text]
            return [texts for _ in steps]

        gold = gold_steps(q)
        out.append(unlabelled(q, gold, docs_for(gold, q), "gold"))
        others = [o for o in by_group[q.group] if o.id != q.id]
        kinds = list(KINDS)
        rng.shuffle(kinds)
        made = 0
        for kind in kinds:
            if made == per_question:
                break
            made_ = corrupt(q, kind, others, rng)
            if made_ is None or made_[0] == gold:
                continue
            steps, borrowed = made_  # a borrowed hop restates the other question's document
            docs = docs_for(steps, q, *([borrowed] if borrowed else []))
            out.append(unlabelled(q, steps, docs, f"corrupt:{kind}"))
            made += 1
    return out


def sampled(
    questions: Sequence[QA],
    engine,
    retriever,
    samples: int = 2,
    temperature: float = 1.0,
    seed: int = 0,
    **rgr_options,
) -> list[StepExample]:
    """`samples` RGR trajectories per question at `temperature`, unlabelled, with the documents
    each step had in context as its evidence."""
    qs = [q for q in questions for _ in range(samples)]
    trajs = run_rgr(
        [q.question for q in qs],
        engine,
        retriever,
        temperature=temperature,
        seed=seed,
        **rgr_options,
    )
    return [
        unlabelled(q, tr.step_texts, [[d.text for d in s.retrieved] for s in tr.steps], "sampled")
        for q, tr in zip(qs, trajs, strict=True)
    ]
