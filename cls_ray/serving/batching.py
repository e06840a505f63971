"""How concurrent work is grouped so each round is one engine call and one retrieval call: the
sessions an ingress runs in lock-step, the prompts a generator batch runs together, and the
split of a call larger than a deployment batches at once."""

from __future__ import annotations

from collections.abc import Sequence

SessionKey = tuple  # (mode, top_k, max_steps, temperature, best_of, max_tokens)
GenerationKey = tuple  # (version, temperature, grounded)


def session_groups(requests: Sequence[dict]) -> dict[SessionKey, list[int]]:
    """Indexes of the session requests that can run RGR in lock-step (same mode, retrieval
    depth, step and token limits, temperature and best-of)."""
    groups: dict[SessionKey, list[int]] = {}
    for i, r in enumerate(requests):
        key = (
            r["mode"],
            r["top_k"],
            r["max_steps"],
            r["temperature"],
            r["best_of"],
            r.get("max_tokens"),
        )
        groups.setdefault(key, []).append(i)
    return groups


def generation_groups(
    groups: Sequence[dict], current: str
) -> dict[GenerationKey, list[tuple[int, int]]]:
    """(group, prompt) indexes of a generator batch by what one engine call can run together:
    the version (a group's pinned one, else `current`), the temperature, and whether decoding
    is grounded (the group sends choices)."""
    out: dict[GenerationKey, list[tuple[int, int]]] = {}
    for gi, g in enumerate(groups):
        key = (g.get("version") or current, g.get("temperature", 0.0), bool(g["choices"]))
        for pi in range(len(g["prompts"])):
            out.setdefault(key, []).append((gi, pi))
    return out


def slices(n: int, max_group: int | None) -> list[slice]:
    """`n` items in consecutive slices of at most `max_group` (all of them when None)."""
    step = max_group or max(1, n)
    return [slice(i, i + step) for i in range(0, n, step)]
