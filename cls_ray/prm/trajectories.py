"""Trajectories to label on any task: each question's gold chain (where the task has gold
steps), wrong versions of it made from other questions of its group, and the model's own
samples. None of them carries a label: Monte Carlo rollouts (`mc.mc_labels`) or the task's
verifier label them afterwards.

The wrong versions need no knowledge of the domain: a hop replaced by the same hop of another
question of the group (the chain then follows that question: a plausible step about the wrong
thing), a hop whose last differing words are that other hop's (a false statement about the right
thing, which the document it restates contradicts; the chain then follows the other question), a
true statement off the chain (a document retrieved for the reasoning before the hop or for
the hop itself that supports none of the question's hops: another statement about the same
thing, or a look-alike's), a skipped hop, an
answer given early, and a wrong final answer (another question's).
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Mapping, Sequence

from cls_ray.prm.labels import StepExample, evidence_for
from cls_ray.rgr import run_rgr
from cls_ray.steps import answer_step
from cls_ray.task import QA

KINDS = ("foreign_hop", "swapped_span", "off_chain", "skipped_hop", "early_answer", "wrong_answer")


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


def swap_last_span(step: str, other: str) -> str | None:
    """`step` with its last run of words that differ from `other` replaced by `other`'s
    ("the rival of A is B" and "the rival of C is D" make "the rival of A is D"), or None
    when that is one of the two (they differ nowhere, or only in their last run)."""
    a, b = step.split(), other.split()
    ops = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()]
    diff = [op for op in ops if op[0] != "equal"]
    if not diff:
        return None
    _, i1, i2, j1, j2 = diff[-1]
    out = " ".join(a[:i1] + b[j1:j2] + a[i2:])
    return out if out not in (step, other) else None  # the other's statement is a foreign hop


def corrupt(
    qa: QA,
    kind: str,
    others: Sequence[QA],
    rng: random.Random,
    near: Mapping[tuple[str, int], Sequence[str]] | None = None,
) -> tuple[list[str], QA | None] | None:
    """A wrong trajectory for `qa` built from `others` (questions of its group) and the other
    question whose steps it borrowed, or None when `kind` does not apply. `near[(qa.id, hop)]`
    holds statements retrieved near a gold step that support none of `qa`'s hops (for
    `off_chain`)."""
    gold, hops = list(qa.steps), len(qa.steps)
    if not hops:
        return None
    if kind in ("foreign_hop", "swapped_span"):
        i = rng.randrange(hops)
        pool = [o for o in others if len(o.steps) > i and o.steps[i] != gold[i]]
        if not pool:
            return None
        o = rng.choice(pool)
        if kind == "foreign_hop":
            return gold[:i] + list(o.steps[i:]) + [answer_step(o.answer)], o
        swapped = swap_last_span(gold[i], o.steps[i])
        if swapped is None:
            return None
        return gold[:i] + [swapped, *o.steps[i + 1 :], answer_step(o.answer)], o
    if kind == "off_chain":
        i = rng.randrange(hops)
        pool = [d for d in (near or {}).get((qa.id, i), ()) if d not in gold]
        wrong = _wrong_answer(qa, others, rng)
        if not pool or wrong is None:
            return None
        return gold[:i] + [rng.choice(pool), answer_step(wrong)], None
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
    questions: Sequence[QA],
    doc_text: dict[str, str],
    per_question: int = 2,
    seed: int = 0,
    near: Mapping[tuple[str, int], Sequence[str]] | None = None,
) -> list[StepExample]:
    """For each question with gold steps: its gold chain and `per_question` wrong versions,
    unlabelled. A step's evidence is the best of its question's supporting documents
    (`doc_text`); a hop borrowed from another question's chain gets that question's, and an
    off-chain step the sentence it restates. `near` (see `corrupt`) enables `off_chain`."""
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
            made_ = corrupt(q, kind, others, rng, near)
            if made_ is None or made_[0] == gold:
                continue
            steps, borrowed = made_
            docs = docs_for(steps, q)
            wrong = next(
                (k for k, s in enumerate(steps) if k >= len(gold) or s != gold[k]), len(steps) - 1
            )
            if kind == "off_chain":  # the off-chain step restates the sentence it was
                docs[wrong] = [*docs[wrong], steps[wrong]]
            if borrowed is not None:  # the other question's hops restate its documents; a
                # swapped step is read next to its own question's, which it contradicts
                theirs = docs_for(steps, borrowed)
                first = wrong + 1 if kind == "swapped_span" else wrong
                docs = docs[:first] + theirs[first:]
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
