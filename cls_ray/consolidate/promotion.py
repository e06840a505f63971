"""The promotion decision and what follows it: a candidate is promoted only if no retention
measure drops by more than the tolerance; its artifact is published (to object storage when
configured) before it is registered, so a registered version is always loadable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def decide(before: dict, after: dict, tolerance: float) -> tuple[bool, str]:
    """Promote only if no retention measure drops by more than `tolerance`."""
    for key in ("retention", "retention_steps"):
        if key in before and key in after:
            drop = before[key] - after[key]
            if drop > tolerance:
                return False, f"{key} fell {drop:.3f} (> {tolerance:.3f} allowed)"
    drop = before["retention"] - after["retention"]
    return True, f"retention change {-drop:+.3f}, new family {after['new_family']:.3f}"


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
