"""Answer checking as question answering measures it (SQuAD): normalized exact match and token
F1, against every accepted answer (aliases).

Normalizing lowercases, drops punctuation and the articles a / an / the, and collapses spaces,
so "The Falcon Labs." matches "falcon labs". A task chooses `em` (exact match against any alias)
or `f1` (token F1 against the best alias at least `threshold`).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize(text: str | None) -> str:
    text = (text or "").lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str | None, answers: Sequence[str]) -> float:
    """1.0 when the normalized prediction equals a normalized answer; 0.0 for no prediction."""
    if prediction is None:
        return 0.0
    p = normalize(prediction)
    return float(any(p == normalize(a) for a in answers))


def token_f1(prediction: str | None, answers: Sequence[str]) -> float:
    """The best token F1 of the prediction against any answer (SQuAD's definition)."""
    if prediction is None:
        return 0.0
    pred = normalize(prediction).split()
    best = 0.0
    for a in answers:
        gold = normalize(a).split()
        if not pred or not gold:
            best = max(best, float(pred == gold))
            continue
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            p, r = common / len(pred), common / len(gold)
            best = max(best, 2 * p * r / (p + r))
    return best


@dataclass(frozen=True)
class AnswerCheck:
    """Whether an answer counts as right: `em`, or `f1` at or above `threshold`."""

    kind: Literal["em", "f1"] = "em"
    threshold: float = 0.5

    def score(self, prediction: str | None, answers: Sequence[str]) -> float:
        if self.kind == "f1":
            return token_f1(prediction, answers)
        return exact_match(prediction, answers)

    def __call__(self, prediction: str | None, answers: Sequence[str]) -> bool:
        s = self.score(prediction, answers)
        return s >= self.threshold if self.kind == "f1" else s == 1.0


EXACT = AnswerCheck("em")

# (question, answer) -> does a reference answer of the task accept it
Accept = Callable[[str, str | None], bool]
