"""One consolidation job, wherever it runs: by hand (`cls-ray sleep` / `cls-ray ppo`), through
`ray job submit -- python -m cls_ray.cli sleep`, or started by the sleep scheduler actor.

When the serving application is up, the job reads and writes through it: sessions come from
the replay-buffer actor (the process that owns the write-ahead log), memory is read through the
retriever deployment (the process that owns a Milvus Lite file), procedures are indexed there
(the very next request follows them), and a promoted version is pushed to every generator
replica. Otherwise it opens the state directly. Either way the sleep itself is
`cls_ray.consolidate.sleep`, given the services.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import ray
import torch
from ray import serve

from actors.deploy import ServingPublisher
from actors.metrics import count, observe
from actors.replay_buffer import ActorBuffer
from actors.serve.handles import RemoteRetriever
from cls_ray import metrics as m
from cls_ray.config import Config
from cls_ray.consolidate.promotion import SleepServices
from cls_ray.consolidate.sleep import sleep_from_buffer
from cls_ray.eval.reports import write_report
from cls_ray.prm.model import load_prm
from cls_ray.registry import registry_for
from cls_ray.replay.buffer import ReplayBuffer
from cls_ray.stack import Stack
from cls_ray.storage import mirror_reports

logger = logging.getLogger(__name__)


def serving_is_up(cfg: Config) -> bool:
    """Whether this Ray cluster runs the configured Serve application."""
    try:
        return cfg.serve.app_name in serve.status().applications
    except Exception:  # noqa: BLE001 - no Serve controller
        return False


def fit_workers(cfg: Config) -> Config:
    """The consolidation section with workers that fit what the cluster has free (serving
    replicas hold some of a small machine's CPUs)."""
    c = cfg.consolidate
    if c.use_gpu:
        return cfg
    free = ray.available_resources().get("CPU", 0.0)
    per = min(c.cpus_per_worker, max(0.01, int(free / c.num_workers * 100) / 100))
    if per >= c.cpus_per_worker:
        return cfg
    return cfg.model_copy(update={"consolidate": c.model_copy(update={"cpus_per_worker": per})})


def use_threads(threads: int | None) -> None:
    """Sets this process's torch threads (`consolidate.threads`): Ray starts a task with one
    (OMP_NUM_THREADS=1), which leaves a core idle through a sleep's measurements and dreams,
    when its Train workers are not training."""
    if threads is None:
        return
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))


def run_consolidation(
    cfg: Config, method: str = "sft", limit: int = 1000, log: Callable[[str], None] = logger.info
) -> dict:
    """Consumes buffered sessions into a candidate; promotes and broadcasts it if it passes the
    retention gate. Needs Ray initialised (it trains on Ray Train)."""
    use_threads(cfg.consolidate.threads)
    prm = load_prm(cfg)
    if serving_is_up(cfg):
        cfg = fit_workers(cfg)
        stack = Stack(cfg)
        t, app = cfg.consolidate.call_timeout_s, cfg.serve.app_name
        memory = RemoteRetriever.of_app(app, cfg.serve.retriever.max_batch_size, t)
        services = SleepServices(memory, registry_for(cfg), ServingPublisher(cfg))
        buffer = ActorBuffer.of_app(app, t)
        log(f"{method}: through the serving application {cfg.serve.app_name!r}")
    else:
        stack = Stack(cfg)
        services = SleepServices.local(cfg, stack.retriever)
        buffer = ReplayBuffer(cfg.replay_path, segments=cfg.replay_segments)
    t0, outcome = time.monotonic(), "failed"
    try:
        result = sleep_from_buffer(stack, prm, buffer, services, limit, method=method, log=log)
        outcome = "promoted" if result.get("promoted") else "refused"
    finally:
        count(m.SLEEPS, method=method, outcome=outcome)
        observe(m.SLEEP_SECONDS, time.monotonic() - t0, outcome=outcome)
        if isinstance(buffer, ReplayBuffer):
            buffer.close()
    out = write_report(cfg, "ppo" if method == "ppo" else "sleep", result)
    result["report"] = str(out)
    mirror_reports(cfg)
    return result
