"""The episodic fast path of a sleep: the gated patterns of many sessions folded into one
procedure per question shape, which RGR follows from the next request on (see
`cls_ray.memory.procedures`)."""

from __future__ import annotations

from collections.abc import Sequence

from cls_ray.consolidate.extract import Artifact
from cls_ray.memory.procedures import Pattern


def fold_patterns(artifacts: Sequence[Artifact]) -> list[Pattern]:
    """One procedure per question shape among the (gated) `pattern` artifacts: the chain most
    sessions followed, ties to the higher mean R(τ)."""
    groups: dict[tuple[str, tuple[str, ...]], list[float]] = {}
    for a in artifacts:
        if a.kind == "pattern":
            key = (a.content["question"], tuple(a.content["steps"]))
            groups.setdefault(key, []).append(a.r_tau or 0.0)
    best: dict[str, Pattern] = {}
    for (q, steps), taus in groups.items():
        p = Pattern(q, steps, len(taus), sum(taus) / len(taus))
        cur = best.get(q)
        if cur is None or (p.support, p.r_tau) > (cur.support, cur.r_tau):
            best[q] = p
    return [best[q] for q in sorted(best)]
