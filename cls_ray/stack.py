"""The embedded stack a config describes: world, embedder, store, retriever and engine.

Each part is built on first use, so a command pays only for what it touches.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from cls_ray.config import Config


class Stack:
    def __init__(self, cfg: Config):
        self.cfg = cfg

    @cached_property
    def world(self):
        from cls_ray.world import build_world

        return build_world(self.cfg.world)

    @cached_property
    def embedder(self):
        from cls_ray.memory import Embedder

        return Embedder.from_config(self.cfg.embedder)

    @cached_property
    def store(self):
        from cls_ray.memory import MilvusStore

        return MilvusStore.from_config(self.cfg, self.embedder.dim)

    @cached_property
    def retriever(self):
        from cls_ray.rgr import StoreRetriever

        return StoreRetriever(self.embedder, self.store)

    @cached_property
    def engine(self):
        from cls_ray.engine import build_engine

        return build_engine(self.cfg)

    def model_ready(self) -> bool:
        return (self.cfg.model_path / "config.json").exists()

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
