"""The scorer deployment: the PRM, batching the steps of finished sessions."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ray import serve

from cls_ray.config import Config
from cls_ray.prm.model import ProcessRewardModel
from cls_ray.serving.limits import SCORER_BATCH


class Scorer:
    def __init__(self, cfg: dict, path: str):
        c = Config.model_validate(cfg)
        self.prm = ProcessRewardModel.load(path, c.prm.aggregation)
        self.name = Path(path).name

    def check_health(self) -> None:
        """Serve's liveness probe (and `/healthz`'s): the PRM is loaded."""
        if self.prm is None:
            raise RuntimeError("no PRM loaded")

    @serve.batch(max_batch_size=SCORER_BATCH, batch_wait_timeout_s=0.05)
    async def score(self, items: list[dict]) -> list[dict]:
        """Each item is one trajectory: `question`, `steps`, `evidence` (one per step)."""
        got = await asyncio.to_thread(
            self.prm.score_many, [(i["question"], i["steps"], i["evidence"]) for i in items]
        )
        return [{"scores": s, "r_tau": self.prm.r_tau(s), "prm": self.name} for s in got]
