"""Labels every step of a trajectory correct or incorrect against the world.

A step is correct when every earlier step was correct and it is exactly the next hop of the
question's gold chain (same subject, relation and object) or, once all hops are stated, the
gold answer. A skipped hop, a wrong entity, a wrong relation or a garbled name makes the step
wrong, and every later step is wrong too (the trajectory has left the chain).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cls_ray.answers import EXACT
from cls_ray.steps import parse_answer
from cls_ray.world.core import RELATIONS, Fact, Question

_FACT_RE = re.compile(
    r"^\s*the\s+(?P<n>"
    + "|".join(re.escape(r.noun) for r in RELATIONS.values())
    + r")\s+of\s+(?P<s>.+?)\s+is\s+(?P<o>.+?)\s*\.?\s*$"
)
_NOUN_TO_REL = {r.noun: r.name for r in RELATIONS.values()}


def parse_fact(text: str) -> Fact | None:
    """`"the employer of Alice Porter is Falcon Labs ."` -> Fact; None when no fact is stated."""
    m = _FACT_RE.match(text)
    if not m:
        return None
    return Fact(m["s"], _NOUN_TO_REL[m["n"]], m["o"])


@dataclass(frozen=True)
class StepLabel:
    correct: bool
    reason: str


def verify_trajectory(question: Question, steps: list[str]) -> list[StepLabel]:
    """One label per step; the answer is the last step ("the answer is X .")."""
    labels: list[StepLabel] = []
    ok = True
    for t, step in enumerate(steps):
        if not ok:
            labels.append(StepLabel(False, "after an earlier wrong step"))
            continue
        given = parse_answer(step)
        if t < question.hops:
            fact = parse_fact(step)
            if given is not None:
                labels.append(StepLabel(False, "answered before the last hop"))
            elif fact is None:
                labels.append(StepLabel(False, "states no fact"))
            elif fact == question.chain[t]:
                labels.append(StepLabel(True, "next hop"))
            elif fact.subject != question.chain[t].subject:
                labels.append(StepLabel(False, "wrong entity"))
            elif fact.relation != question.chain[t].relation:
                labels.append(StepLabel(False, "wrong relation"))
            else:
                labels.append(StepLabel(False, "wrong object"))
        elif given is not None:
            right = EXACT(given, [question.answer])
            labels.append(StepLabel(right, "answer" if right else "wrong answer"))
        else:
            labels.append(StepLabel(False, "extra step after the last hop"))
        ok = labels[-1].correct
    return labels


def trajectory_correct(question: Question, steps: list[str]) -> bool:
    """All steps on the gold chain and the last one the right answer."""
    labels = verify_trajectory(question, steps)
    return bool(labels) and all(x.correct for x in labels) and parse_answer(steps[-1]) is not None
