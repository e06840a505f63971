"""Samples that keep a share per stratum: the replay of every skill learned, not only the
latest (the buffer's compaction and replay sample, a sleep's replayed pairs)."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")


def balanced(items: Sequence[T], key: Callable[[T], Hashable], n: int, seed: int = 0) -> list[T]:
    """Up to `n` of `items`, shared as equally as the strata allow: each stratum (`key`) in
    random order, one at a time from each in turn, so a stratum with few items keeps them all
    and the others share the rest. With one stratum: a plain random sample."""
    rng = random.Random(seed)
    strata: dict[Hashable, list[T]] = {}
    for it in items:
        strata.setdefault(key(it), []).append(it)
    queues = [rng.sample(v, len(v)) for _, v in sorted(strata.items(), key=lambda kv: str(kv[0]))]
    out: list[T] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop())
    return out
