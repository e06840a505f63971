"""Model versions: id, parent, artifact, status and metrics, persisted atomically.

Version 0 (`base`) is the bootstrapped model. Consolidation registers candidates; `promote`
makes one current and `rollback` returns to the version promoted before it. The file is
rewritten whole through a temporary file and a rename, so a crash leaves the old or the new
registry, never half of one.
"""

from __future__ import annotations

import json
import os
import time
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
        if self.path.exists():
            data = json.loads(self.path.read_text())
            self.versions = [ModelVersion.model_validate(v) for v in data["versions"]]
            self.history = list(data["history"])
        elif base_uri is not None:
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
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        payload = {
            "versions": [v.model_dump() for v in self.versions],
            "history": self.history,
        }
        with tmp.open("w") as f:
            f.write(json.dumps(payload, indent=2))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)

    def get(self, name: str) -> ModelVersion:
        for v in self.versions:
            if v.name == name:
                return v
        raise KeyError(f"unknown model version {name!r}")

    def current(self) -> ModelVersion:
        if not self.history:
            raise KeyError("no promoted version")
        return self.get(self.history[-1])

    def register(
        self,
        artifact_uri: str,
        kind: Literal["lora", "full"],
        parent: str | None = None,
        metrics: dict | None = None,
    ) -> ModelVersion:
        """A new candidate; its name is never reused (engines cache adapters by name)."""
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
        self._save()
        return v

    def promote(self, name: str, reason: str = "") -> ModelVersion:
        v = self.get(name)
        if v.status == "rolled_back":
            raise ValueError(f"{name} was rolled back; register it again to promote it")
        v.status = "promoted"
        v.reason = reason or v.reason
        if not self.history or self.history[-1] != name:
            self.history.append(name)
        self._save()
        return v

    def rollback(self, reason: str = "rollback") -> ModelVersion:
        """Marks the current version rolled back; the one promoted before it is current again."""
        if len(self.history) < 2:
            raise ValueError("nothing to roll back to: only one version was ever promoted")
        gone = self.get(self.history.pop())
        gone.status = "rolled_back"
        gone.reason = reason
        while self.get(self.history[-1]).status == "rolled_back":
            self.history.pop()
        self._save()
        return self.current()

    def list(self) -> list[dict]:
        cur = self.history[-1] if self.history else None
        return [{**v.model_dump(), "current": v.name == cur} for v in self.versions]
