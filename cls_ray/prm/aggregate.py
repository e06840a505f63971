"""R(τ): one number for a trajectory from its step scores.

`min` (the default) is as good as the weakest step: it does not grow or shrink with the number of
steps and a single bad step cannot be outvoted, which is what keeps policy optimisation from
gaming a PRM (PURE). `product` is the probability that every step is right under independence
(PRM800K); `last` trusts the score of the final step; `mean` is the average.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Aggregation = Literal["min", "product", "last", "mean"]
AGGREGATIONS: tuple[Aggregation, ...] = ("min", "product", "last", "mean")


def aggregate_step_scores(scores: Sequence[float], how: Aggregation = "min") -> float:
    """R(τ) from the step scores (probabilities in [0, 1]). A trajectory with no steps has not
    done anything right: R = 0 for every aggregation."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; expected one of {AGGREGATIONS}")
    xs = [float(s) for s in scores]
    for s in xs:
        if not 0.0 <= s <= 1.0 or math.isnan(s):
            raise ValueError(f"step scores are probabilities in [0, 1]; got {s}")
    if not xs:
        return 0.0
    if how == "min":
        return min(xs)
    if how == "product":
        return math.prod(xs)
    if how == "last":
        return xs[-1]
    return sum(xs) / len(xs)
