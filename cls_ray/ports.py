"""The services pure code asks for, as protocols. Each is defined once, here; the plain classes of
`cls_ray` satisfy them in one process, and `actors/` provides Ray-backed implementations that the
composition root (`cls_ray.cli`) wires in:

| protocol        | in this process                      | on Ray (`actors/`)                      |
|-----------------|--------------------------------------|-----------------------------------------|
| `Engine`        | `HFEngine`, `VLLMEngine`             | `serve.handles.RemoteEngine`            |
| `Retriever`     | `memory.StoreRetriever`              | `serve.handles.RemoteRetriever`         |
| `Memory`        | `memory.StoreRetriever`              | `serve.handles.RemoteRetriever`         |
| `Buffer`        | `replay.ReplayBuffer`                | `replay_buffer.ActorBuffer`             |
| `Registry`      | `registry.ModelRegistry`             | (the registry file is shared)           |
| `Publisher`     | `registry.ModelRegistry`             | `deploy.ServingPublisher`               |
| `Scorer`        | `prm.ProcessRewardModel`             | (the scorer deployment wraps one)       |
| `Scheduler`     |                                      | `runtime.SchedulerClient` (the actor)   |
| `ServingRuntime`|                                      | `runtime.RayRuntime`                    |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from cls_ray.engine.base import Engine, Generation, StreamableEngine
from cls_ray.memory.documents import RetrievedDoc
from cls_ray.memory.procedures import Pattern
from cls_ray.registry import ModelVersion
from cls_ray.session import Session

__all__ = [
    "Buffer",
    "Engine",
    "Generation",
    "Memory",
    "Publisher",
    "Registry",
    "RetrievedDoc",
    "Retriever",
    "Scheduler",
    "Scorer",
    "ServingRuntime",
    "StreamableEngine",
]


@runtime_checkable
class Retriever(Protocol):
    def retrieve(
        self, queries: Sequence[str], k: int, exclude: Sequence[set[str]] | None = None
    ) -> list[list[RetrievedDoc]]:
        """Top-k documents for every query, in one batched call."""
        ...


@runtime_checkable
class Memory(Retriever, Protocol):
    """Retrieval plus what a sleep reads and writes: episodic procedures and document texts."""

    def plans(self, questions: Sequence[str]) -> list[Pattern | None]:
        """The episodic procedure each question has the shape of, or None."""
        ...

    def add_patterns(self, patterns: Sequence[Pattern]) -> int:
        """Indexes procedures in episodic memory; returns how many."""
        ...

    def get_documents(self, ids: Sequence[str]) -> dict[str, str]:
        """The texts of the documents with these ids (unknown ids are left out)."""
        ...


@runtime_checkable
class Buffer(Protocol):
    """The replay buffer as its consumers (sleep, PPO, the PRM's human labels) use it."""

    def lease(self, n: int) -> dict:
        """Seals, leases up to `n` unconsumed sessions: `{"ids", "holder", "lease_s",
        "segments", "late"}`."""
        ...

    def renew(self, ids: Sequence[str], holder: str) -> int:
        """Extends `holder`'s leases on these sessions by the lease time (taking back the ones
        that ran out, unless another consumer has them); returns how many it holds or are
        acknowledged."""
        ...

    def add(self, session: Session | dict, consumed: bool = False) -> str:
        """Stores a session durably; returns its id (adding an id again changes nothing).
        `consumed`: stored as already learned from, in the same step (for replay only)."""
        ...

    def set_scores(
        self, session_id: str, step_scores: list[float], r_tau: float, prm: str | None = None
    ) -> None: ...

    def ack(self, ids: Sequence[str]) -> int:
        """Marks sessions consumed; returns how many were new."""
        ...

    def compact(
        self, keep_replay: int, seed: int = 0, strata: Mapping[str, str] | None = None
    ) -> dict: ...

    def replay_sample(
        self, n: int, seed: int = 0, strata: Mapping[str, str] | None = None
    ) -> list[Session]: ...

    def with_feedback(self) -> list[dict]: ...

    def stats(self) -> dict: ...


@runtime_checkable
class Registry(Protocol):
    """Model versions: register candidates, read what is current, record decisions."""

    def current(self) -> ModelVersion: ...

    def get(self, name: str) -> ModelVersion: ...

    def list(self) -> list[dict]: ...

    def register(
        self,
        artifact_uri: str,
        kind: str,
        parent: str | None = None,
        metrics: dict | None = None,
    ) -> ModelVersion: ...

    def annotate(self, name: str, reason: str) -> ModelVersion: ...


@runtime_checkable
class Publisher(Protocol):
    """Makes a registered version the one served (and back): in the registry alone, or pushed
    to every serving replica first."""

    def promote(self, name: str, reason: str = "") -> ModelVersion: ...

    def rollback(self, reason: str = "rollback") -> ModelVersion: ...


@runtime_checkable
class Scorer(Protocol):
    """A process reward model: step scores for (question, steps, evidence) items, and R(τ)."""

    path: str | None

    def score_many(
        self, items: Sequence[tuple[str, Sequence[str], Sequence[str] | None]]
    ) -> list[list[float]]: ...

    def r_tau(self, scores: Sequence[float]) -> float: ...


@runtime_checkable
class Scheduler(Protocol):
    """The sleep scheduler: starts one consolidation at a time."""

    def trigger(self, reason: str = "admin request", method: str | None = None) -> dict: ...

    def wait(self, timeout_s: float) -> dict:
        """Blocks until the running consolidation ends (or `timeout_s`); returns the status."""
        ...


@runtime_checkable
class ServingRuntime(Protocol):
    """The serving stack as a job drives it: a cluster to join or start, the application
    deployed on it, and the actors next to it."""

    def start(self, num_cpus: int | None = None) -> None:
        """Joins the configured cluster, or starts one on this machine."""
        ...

    def deploy(self, cfg) -> str:
        """Deploys the application on the registry's current version; returns its URL."""
        ...

    def buffer(self) -> Buffer: ...

    def scheduler(self) -> Scheduler: ...

    def stop(self) -> None:
        """Takes the application down and stops what `start` started."""
        ...
