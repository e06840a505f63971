"""Model versions: id, parent, artifact, status and metrics, persisted atomically.

Version 0 (`base`) is the bootstrapped model. Consolidation registers candidates; `promote`
makes one current and `rollback` returns to the version promoted before it. The file is
rewritten whole through a temporary file and a rename, so a crash leaves the old or the new
registry, never half of one. Every call re-reads the file, and every change holds an exclusive
lock on `<registry>.lock` from read to rename, so the CLI, the registry actor and an admin request
can change it side by side without losing each other's writes.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["candidate", "promoted", "rolled_back"]


class ModelVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=0)
    name: str
    parent: str | None = None
    artifact_uri: str
    kind: Literal["base", "lora", "full"]
    status: Status = "candidate"
    metrics: dict = Field(default_factory=dict)
    reason: str = ""
    created_at: float = Field(default_factory=time.time)


class ModelRegistry:
    def __init__(self, path: str | Path, base_uri: str | None = None):
        self.path = Path(path)
        self.versions: list[ModelVersion] = []
        self.history: list[str] = []  # names in promotion order; the last is current
        with self._change():
            if not self.versions and base_uri is not None:
                self.versions = [
                    ModelVersion(
                        id=0,
                        name="base",
                        artifact_uri=base_uri,
                        kind="base",
                        status="promoted",
                        reason="bootstrap",
                    )
                ]
                self.history = ["base"]

    def _load(self) -> None:
        if self.path.exists():
            data = json.loads(self.path.read_text())
            self.versions = [ModelVersion.model_validate(v) for v in data["versions"]]
            self.history = list(data["history"])

    @contextmanager
    def _change(self) -> Iterator[None]:
        """Read, change and write the registry under an exclusive lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._load()
            before = self._payload()
            yield
            if self._payload() != before:
                self._save()

    def _payload(self) -> dict:
        return {"versions": [v.model_dump() for v in self.versions], "history": self.history}

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(json.dumps(self._payload(), indent=2))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)

    def get(self, name: str) -> ModelVersion:
        self._load()
        return self._get(name)

    def _get(self, name: str) -> ModelVersion:
        for v in self.versions:
            if v.name == name:
                return v
        raise KeyError(f"unknown model version {name!r}")

    def current(self) -> ModelVersion:
        self._load()
        if not self.history:
            raise KeyError("no promoted version")
        return self._get(self.history[-1])

    def register(
        self,
        artifact_uri: str,
        kind: Literal["lora", "full"],
        parent: str | None = None,
        metrics: dict | None = None,
    ) -> ModelVersion:
        """A new candidate; its name is never reused (engines cache adapters by name)."""
        with self._change():
            vid = max((v.id for v in self.versions), default=-1) + 1
            v = ModelVersion(
                id=vid,
                name=f"v{vid}",
                parent=parent or (self.history[-1] if self.history else None),
                artifact_uri=artifact_uri,
                kind=kind,
                metrics=metrics or {},
            )
            self.versions.append(v)
        return v

    def promote(self, name: str, reason: str = "") -> ModelVersion:
        with self._change():
            v = self._get(name)
            if v.status == "rolled_back":
                raise ValueError(f"{name} was rolled back; register it again to promote it")
            v.status = "promoted"
            v.reason = reason or v.reason
            if not self.history or self.history[-1] != name:
                self.history.append(name)
        return v

    def annotate(self, name: str, reason: str) -> ModelVersion:
        """Records why a version stays what it is (a candidate refused promotion, say)."""
        with self._change():
            v = self._get(name)
            v.reason = reason
        return v

    def rollback(self, reason: str = "rollback") -> ModelVersion:
        """Marks the current version rolled back; the one promoted before it is current again."""
        with self._change():
            if len(self.history) < 2:
                raise ValueError("nothing to roll back to: only one version was ever promoted")
            gone = self._get(self.history.pop())
            gone.status = "rolled_back"
            gone.reason = reason
            while self._get(self.history[-1]).status == "rolled_back":
                self.history.pop()
            return self._get(self.history[-1])

    def list(self) -> list[dict]:
        self._load()
        cur = self.history[-1] if self.history else None
        return [{**v.model_dump(), "current": v.name == cur} for v in self.versions]


def registry_for(cfg) -> ModelRegistry:
    """The registry of a config's state directory (version 0 is its base model)."""
    return ModelRegistry(cfg.state_path / "registry.json", base_uri=str(cfg.model_path))
