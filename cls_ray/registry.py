"""Model versions: id, parent, artifact, status and metrics, persisted atomically.

Version 0 (`base`) is the bootstrapped model. Consolidation registers candidates; `promote`
makes one current and `rollback` returns to the version promoted before it. The file is
rewritten whole through a temporary file and a rename, so a crash leaves the old or the new
registry, never half of one. Every call re-reads the file, and every change holds an exclusive
lock on `<registry>.lock` from read to rename, so the CLI, the registry actor and an admin request
can change it side by side without losing each other's writes.

A change may carry a `request_id`: the file records the result of each applied request (the last
`REQUESTS_KEPT`), written with the change itself, and the same request again returns that result
without applying it twice. A caller that retries (Ray retries the registry actor's calls after a
crash) cannot promote, register or roll back twice.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cls_ray.storage import write_atomically

Status = Literal["candidate", "promoted", "rolled_back"]

REQUESTS_KEPT = 1000  # applied request ids remembered, oldest dropped first


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
        self.requests: dict[str, dict] = {}  # request id -> {"op", "result"}, oldest first
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
            self.requests = dict(data.get("requests", {}))  # absent in older files

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
        return {
            "versions": [v.model_dump() for v in self.versions],
            "history": self.history,
            "requests": self.requests,
        }

    def _applied(self, op: str, request_id: str | None) -> ModelVersion | None:
        """The result recorded for `request_id` (None: not applied yet, or no id)."""
        if request_id is None or request_id not in self.requests:
            return None
        done = self.requests[request_id]
        if done["op"] != op:
            raise ValueError(f"request_id {request_id!r} was already used for {done['op']}")
        return ModelVersion.model_validate(done["result"])

    def _record(self, op: str, request_id: str | None, result: ModelVersion) -> None:
        if request_id is None:
            return
        self.requests[request_id] = {"op": op, "result": result.model_dump()}
        for old in list(self.requests)[: max(0, len(self.requests) - REQUESTS_KEPT)]:
            del self.requests[old]

    def _save(self) -> None:
        write_atomically(self.path, json.dumps(self._payload(), indent=2).encode())

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
        request_id: str | None = None,
    ) -> ModelVersion:
        """A new candidate; its name is never reused (engines cache adapters by name)."""
        with self._change():
            if (done := self._applied("register", request_id)) is not None:
                return done
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
            self._record("register", request_id, v)
        return v

    def promote(self, name: str, reason: str = "", request_id: str | None = None) -> ModelVersion:
        with self._change():
            if (done := self._applied("promote", request_id)) is not None:
                return done
            v = self._get(name)
            if v.status == "rolled_back":
                raise ValueError(f"{name} was rolled back; register it again to promote it")
            v.status = "promoted"
            v.reason = reason or v.reason
            if not self.history or self.history[-1] != name:
                self.history.append(name)
            self._record("promote", request_id, v)
        return v

    def annotate(self, name: str, reason: str) -> ModelVersion:
        """Records why a version stays what it is (a candidate refused promotion, say)."""
        with self._change():
            v = self._get(name)
            v.reason = reason
        return v

    def _rollback_plan(self) -> tuple[str, list[str]]:
        """The version a rollback retires and the promotion history left after it: the
        versions rolled back before (and the retired one, if promoted twice) are skipped."""
        if len(self.history) < 2:
            raise ValueError("nothing to roll back to: only one version was ever promoted")
        gone, rest = self.history[-1], self.history[:-1]
        while rest and (rest[-1] == gone or self._get(rest[-1]).status == "rolled_back"):
            rest.pop()
        if not rest:
            raise ValueError("nothing to roll back to: every earlier version was rolled back")
        return gone, rest

    def rollback_target(self, request_id: str | None = None) -> ModelVersion:
        """The version `rollback` would make current, changing nothing; for an applied
        `request_id`, the version it made current. Serving deploys it before the registry
        rolls back (see `actors.deploy.rollback`)."""
        self._load()
        if (done := self._applied("rollback", request_id)) is not None:
            return done
        return self._get(self._rollback_plan()[1][-1])

    def rollback(self, reason: str = "rollback", request_id: str | None = None) -> ModelVersion:
        """Marks the current version rolled back; the one promoted before it is current again."""
        with self._change():
            if (done := self._applied("rollback", request_id)) is not None:
                return done
            gone, self.history = self._rollback_plan()
            retired = self._get(gone)
            retired.status = "rolled_back"
            retired.reason = reason
            v = self._get(self.history[-1])
            self._record("rollback", request_id, v)
            return v

    def list(self) -> list[dict]:
        self._load()
        cur = self.history[-1] if self.history else None
        return [{**v.model_dump(), "current": v.name == cur} for v in self.versions]


def registry_for(cfg) -> ModelRegistry:
    """The registry of a config's state directory (version 0 is its base model)."""
    return ModelRegistry(cfg.state_path / "registry.json", base_uri=str(cfg.model_path))
