"""The embedded stack a config describes: task, embedder, store, retriever and engine.

Each part is built on first use, so a command pays only for what it touches. `release_store`
closes the Milvus Lite file so another process (a Serve replica) can open it.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from cls_ray.answers import AnswerCheck
from cls_ray.config import Config
from cls_ray.engine.base import StreamableEngine
from cls_ray.engine.factory import build_engine
from cls_ray.memory import Embedder, MilvusStore
from cls_ray.memory.retriever import StoreRetriever
from cls_ray.model.loading import is_checkpoint
from cls_ray.registry import ModelVersion, registry_for
from cls_ray.storage import materialize
from cls_ray.task import FilesTask, Task, WorldTask
from cls_ray.world import World, build_world


class NeedsWorld(ValueError):
    """A command that only the built-in world supports yet, run on a files task."""


class Stack:
    def __init__(self, cfg: Config):
        self.cfg = cfg

    @cached_property
    def task(self) -> Task:
        t = self.cfg.task
        if t.kind == "files":
            return FilesTask(t.path, t.answer_check, t.f1_threshold)
        return WorldTask(self.world, AnswerCheck(t.answer_check or "em", t.f1_threshold or 0.5))

    @cached_property
    def world(self) -> World:
        """The built-in world; only on the world task (a files task never builds it)."""
        if self.cfg.task.kind != "world":
            raise NeedsWorld(
                "this needs the built-in world (task.kind=world); it is not available on a "
                f"{self.cfg.task.kind} task yet"
            )
        return build_world(self.cfg.world)

    @cached_property
    def embedder(self) -> Embedder:
        return Embedder.from_config(self.cfg.embedder)

    @cached_property
    def store(self) -> MilvusStore:
        return MilvusStore.from_config(self.cfg, self.embedder.dim)

    @cached_property
    def retriever(self) -> StoreRetriever:
        return StoreRetriever(self.embedder, self.store)

    @cached_property
    def model_version(self) -> ModelVersion:
        """The version this stack runs: `model.version`, else the registry's current one."""
        reg = registry_for(self.cfg)
        name = self.cfg.model.version
        if name and name not in {v["name"] for v in reg.list()}:
            raise ValueError(
                f"model.version {name!r} is not registered; versions: "
                + ", ".join(v["name"] for v in reg.list())
            )
        return reg.get(name) if name else reg.current()

    @cached_property
    def engine(self) -> StreamableEngine:
        """The engine of `model_version`: the base model, or a registered adapter / checkpoint
        (copied from storage to this node once)."""
        v = self.model_version
        if v.kind == "base":
            return build_engine(self.cfg, "base")
        path = materialize(v.artifact_uri, self.cfg.state_path / "cache" / "artifacts")
        return build_engine(self.cfg, v.name, path)

    def model_ready(self) -> bool:
        return is_checkpoint(self.cfg.model_path)

    def release_store(self) -> None:
        """Closes the store (and Milvus Lite's in-process server for its file): the next use
        opens it again. A Serve replica cannot open a Lite file this process holds."""
        if "store" in self.__dict__:
            self.store.close(release=True)
        for part in ("store", "retriever"):
            self.__dict__.pop(part, None)

    def export_world(self) -> Path:
        """Writes the world's documents as JSONL under the state dir; returns the file."""
        out = self.cfg.state_path / "world" / f"documents-seed{self.cfg.world.seed}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        with tmp.open("w") as f:
            for d in self.world.documents:
                f.write(json.dumps({"id": d.id, "text": d.text}) + "\n")
        tmp.replace(out)
        return out

    def task_corpus(self) -> Path:
        """The task's corpus as a JSONL file: a files task's own, the world's written out."""
        if isinstance(self.task, FilesTask):
            return self.task.corpus_file
        return self.export_world()
