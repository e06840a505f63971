"""The promotion decision and what follows it: a candidate is promoted only if no retention
measure or learned skill drops by more than the tolerance, and none falls further below its
best; its artifact is published (to object storage when configured) before it is registered,
so a registered version is always loadable."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cls_ray.consolidate.skills import BASE, EPS, below_best
from cls_ray.ports import Memory, Publisher, Registry
from cls_ray.registry import ModelRegistry, ModelVersion, registry_for


@dataclass
class SleepServices:
    """What a sleep reads and writes beyond its own process: memory (retrieval, procedures,
    document texts), the registry, and the publisher that makes a version current (in the
    registry alone, or on every serving replica first)."""

    memory: Memory
    registry: Registry
    publisher: Publisher

    @classmethod
    def local(cls, cfg, memory: Memory) -> SleepServices:
        """This process's memory and the state directory's registry, which also publishes."""
        registry: ModelRegistry = registry_for(cfg)
        return cls(memory, registry, registry)


RETENTION_MEASURES = ("retention", "retention_steps")


def _measured(before: dict, key: str) -> bool:
    b = before.get(key)
    return b is not None and not math.isnan(b) and b > 0


def decide(
    before: dict,
    after: dict,
    tolerance: float,
    best: dict | None = None,
    best_tolerance: float | None = None,
) -> tuple[bool, str]:
    """Promote only with evidence, and only if no retention measure, and no learned skill in
    `after["skills"]`, drops by more than `tolerance` against the current version (`before`).
    A measure is evidence when the current version scores above 0 on it: an empty retention
    set (NaN) or one the current version answers none of cannot show forgetting, and a gate
    with nothing to measure refuses. With `best` (skill → (best promoted score, its version),
    `skills.SkillLedger.best`), every learned skill must also stay within `best_tolerance`
    of its best (never less than `tolerance`: what all sleeps may cost a skill is at least
    what one may): small drops cannot add up over sleeps."""
    measured = [k for k in RETENTION_MEASURES if _measured(before, k) and k in after]
    if not measured:
        return False, (
            "no retention evidence: the retention set is empty or the current version answers "
            "none of it (promotion needs evidence)"
        )
    for key in measured:
        a = after[key]
        drop = before[key] - (a if a is not None and not math.isnan(a) else 0.0)
        if drop - tolerance > EPS:  # a drop of exactly the tolerance is allowed
            return False, f"{key} fell {drop:.3f} (> {tolerance:.3f} allowed)"
    # One sleep's cost to each learned skill (retention, the base skill, is measured above).
    now = {k: (v, "the current version") for k, v in (before.get("skills") or {}).items()}
    now.pop(BASE, None)
    if why := below_best(after.get("skills") or {}, now, tolerance, bar="its score"):
        return False, why
    bar = tolerance if best_tolerance is None else max(tolerance, best_tolerance)
    if best and (why := below_best(after.get("skills") or {}, best, bar)):
        return False, why
    parts = [f"{k} change {after[k] - before[k]:+.3f}" for k in measured]
    new = after.get("new_family")
    if new is not None and not math.isnan(new):
        parts.append(f"new family {new:.3f}")
    return True, ", ".join(parts)


def version_kind(cfg, method: str) -> str:
    """What a consolidation registers: a LoRA adapter, or a full checkpoint (SFT, `weights:
    full`)."""
    return "full" if method == "sft" and cfg.consolidate.weights == "full" else "lora"


def publish(cfg, out: Path) -> str:
    """Where replicas load a trained version from: its folder, or (with `storage.uri`) a copy
    in the storage, uploaded whole before the version is registered."""
    store = cfg.artifacts
    return str(out) if store is None else store.put_dir(out, out.name)


def conclude(
    cfg,
    services: SleepServices,
    out: Path,
    method: str,
    parent: str,
    metrics: dict,
    decision: tuple[bool, str],
    promote: bool = True,
) -> ModelVersion:
    """Registers the candidate at `out` with its metrics; promotes it through the publisher
    when the gate passed (and `promote`), otherwise records why it stays a candidate."""
    ok, reason = decision
    v = services.registry.register(
        publish(cfg, out), version_kind(cfg, method), parent=parent, metrics=metrics
    )
    if ok and promote:
        services.publisher.promote(v.name, reason)
    else:
        services.registry.annotate(
            v.name, reason if not ok else f"not promoted (measured only): {reason}"
        )
    return v
