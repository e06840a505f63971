"""One consolidation job, wherever it runs: by hand (`cls-ray sleep` / `cls-ray ppo`), through
`ray job submit -- python -m cls_ray.cli sleep`, or started by the sleep scheduler actor.

When the serving application is up, the job reads and writes through it: sessions come from
the replay-buffer actor (the process that owns the write-ahead log), memory is read through the
retriever deployment (the process that owns a Milvus Lite file), procedures are indexed there
(the very next request follows them), and a promoted version is pushed to every generator
replica. Otherwise it opens the state directly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


class ActorBuffer:
    """The replay-buffer actor behind `ReplayBuffer`'s consumer interface."""

    def __init__(self, handle):
        self.handle = handle

    def take(self, n: int):
        import ray

        from cls_ray.session import Session

        return [Session.model_validate(s) for s in ray.get(self.handle.take.remote(n))]

    def lease(self, n: int) -> dict:
        import ray

        return ray.get(self.handle.lease.remote(n))

    def set_scores(self, session_id, step_scores, r_tau, prm=None) -> None:
        import ray

        ray.get(self.handle.set_scores.remote(session_id, step_scores, r_tau, prm))

    def ack(self, ids) -> int:
        import ray

        return ray.get(self.handle.ack.remote(list(ids)))

    def compact(self, keep_replay: int, seed: int = 0) -> dict:
        import ray

        return ray.get(self.handle.compact.remote(keep_replay, seed))

    def replay_sample(self, n: int, seed: int = 0):
        import ray

        from cls_ray.session import Session

        got = ray.get(self.handle.replay_sample.remote(n, seed))
        return [Session.model_validate(s) for s in got]


class ServingRetriever:
    """The retriever deployment as RGR's retriever, plus the calls a sleep makes."""

    def __init__(self, app_name: str, max_group: int):
        from ray import serve

        from actors.serve_app import RemoteRetriever

        self.handle = serve.get_deployment_handle("retriever", app_name)
        self.remote = RemoteRetriever(self.handle, max_group)

    def retrieve(self, queries, k, exclude=None):
        return self.remote.retrieve(queries, k, exclude)

    def plans(self, questions):
        return self.remote.plans(questions)

    def add_patterns(self, texts: list[str]) -> int:
        return self.handle.add_patterns.remote(texts).result()

    def get_documents(self, ids: list[str]) -> dict[str, str]:
        return self.handle.get_documents.remote(ids).result()


def serving_is_up(cfg) -> bool:
    """Whether this Ray cluster runs the configured Serve application."""
    from ray import serve

    try:
        return cfg.serve.app_name in serve.status().applications
    except Exception:  # noqa: BLE001 - no Serve controller
        return False


def fit_workers(cfg):
    """The consolidation section with workers that fit what the cluster has free (serving
    replicas hold some of a small machine's CPUs)."""
    import ray

    c = cfg.consolidate
    if c.use_gpu:
        return cfg
    free = ray.available_resources().get("CPU", 0.0)
    per = min(c.cpus_per_worker, max(0.01, int(free / c.num_workers * 100) / 100))
    if per >= c.cpus_per_worker:
        return cfg
    return cfg.model_copy(update={"consolidate": c.model_copy(update={"cpus_per_worker": per})})


def run_consolidation(
    cfg, method: str = "sft", limit: int = 1000, log: Callable[[str], None] = logger.info
) -> dict:
    """Consumes buffered sessions into a candidate; promotes and broadcasts it if it passes the
    retention gate. Needs Ray initialised (it trains on Ray Train)."""
    import ray

    from actors.deploy import promote as broadcast
    from actors.replay_buffer import buffer_actor_name
    from cls_ray.consolidate.sleep import sleep_from_buffer
    from cls_ray.prm.model import ProcessRewardModel
    from cls_ray.prm.pipeline import latest_prm
    from cls_ray.stack import Stack

    path = latest_prm(cfg)
    if path is None:
        raise ValueError("no trained PRM: run `cls-ray prm train` first")
    prm = ProcessRewardModel.load(path, cfg.prm.aggregation)
    serving = serving_is_up(cfg)
    if serving:
        cfg = fit_workers(cfg)
        buffer = ActorBuffer(
            ray.get_actor(buffer_actor_name(cfg.serve.app_name), namespace="cls-ray")
        )
        retriever = ServingRetriever(cfg.serve.app_name, cfg.serve.retriever_max_batch_size)
        log(f"{method}: through the serving application {cfg.serve.app_name!r}")
    else:
        buffer = retriever = None
    stack = Stack(cfg)
    result = sleep_from_buffer(
        stack,
        prm,
        limit,
        log,
        method=method,
        retriever=retriever,
        buffer=buffer,
        broadcast=(lambda name, reason: broadcast(cfg, name, reason)) if serving else None,
    )
    out = cfg.state_path / "reports" / f"{'ppo' if method == 'ppo' else 'sleep'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    result["report"] = str(out)
    from cls_ray.storage import mirror_reports

    mirror_reports(cfg)
    return result
