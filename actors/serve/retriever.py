"""The retriever deployment: owns the embedder and the Milvus client (in the embedded mode, the
one process that may open the Milvus Lite file) and batches concurrent queries."""

from __future__ import annotations

import asyncio
import time

from ray import serve

from actors.metrics import observe
from cls_ray import metrics as m
from cls_ray.config import Config
from cls_ray.memory.procedures import Pattern
from cls_ray.stack import Stack


class Retriever:
    def __init__(self, cfg: dict):
        self.stack = Stack(Config.model_validate(cfg))
        self.memory = self.stack.retriever
        self.stack.store.warm_up()
        r = self.stack.cfg.serve.retriever
        self.retrieve.set_max_batch_size(r.max_batch_size)
        self.retrieve.set_batch_wait_timeout_s(r.batch_wait_s)

    async def check_health(self) -> None:
        """Serve's liveness probe: Milvus answers a count within the store's timeout."""
        await asyncio.to_thread(self.memory.count)

    def reconfigure(self, user_config: dict) -> None:
        """`{"max_batch_size": n}`: queries per embedding call and Milvus search."""
        if user_config.get("max_batch_size"):
            self.retrieve.set_max_batch_size(int(user_config["max_batch_size"]))

    @serve.batch(
        max_batch_size=32,
        batch_wait_timeout_s=0.02,
        batch_size_fn=lambda groups: sum(len(g["queries"]) for g in groups),
    )
    async def retrieve(self, groups: list[dict]) -> list[list[list[dict]]]:
        """Each request is a group of queries (`queries`, `k`, `exclude`); all groups that
        arrive together are embedded in one call and searched in one Milvus request."""
        queries = [q for g in groups for q in g["queries"]]
        excludes = [set(e) for g in groups for e in (g.get("exclude") or [[]] * len(g["queries"]))]
        k = max(g["k"] for g in groups)
        t0 = time.perf_counter()
        got = await asyncio.to_thread(self.memory.retrieve, queries, k, excludes)
        observe(m.RETRIEVAL_SECONDS, time.perf_counter() - t0)
        out, i = [], 0
        for g in groups:
            docs = got[i : i + len(g["queries"])]
            i += len(g["queries"])
            out.append(
                [
                    [{"id": d.id, "score": d.score, "text": d.text} for d in ds[: g["k"]]]
                    for ds in docs
                ]
            )
        return out

    async def plans(self, questions: list[str]) -> list[dict | None]:
        """The episodic procedure each question follows (see `cls_ray.memory.procedures`)."""
        got = await asyncio.to_thread(self.memory.plans, questions)
        return [None if p is None else {"text": p.text} for p in got]

    async def add_patterns(self, patterns: list[dict]) -> int:
        """Indexes procedures in the episodic collection: the fast path a sleep takes while
        this replica owns the Milvus Lite file."""
        pats = [
            Pattern(p["question"], tuple(p["steps"]), p["support"], p["r_tau"]) for p in patterns
        ]
        return await asyncio.to_thread(self.memory.add_patterns, pats)

    async def get_documents(self, ids: list[str]) -> dict[str, str]:
        return await asyncio.to_thread(self.memory.get_documents, ids)

    async def add_documents(self, docs: list[dict], replace: bool = False) -> int:
        return await asyncio.to_thread(self.memory.add_documents, docs, replace)

    async def count(self) -> int:
        return await asyncio.to_thread(self.memory.count)
