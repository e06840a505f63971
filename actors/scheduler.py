"""The sleep scheduler: a coordinator actor that starts consolidation when enough sessions wait
in the replay buffer, on a timer, or on an admin request, and never runs two at once.

A consolidation runs as a Ray task (`consolidation_job`) that trains on Ray Train, evaluates,
and promotes through the serving application (see `actors.consolidation`). The actor keeps
the running task's reference and the history of finished ones; it is detached and holds no
state that matters across restarts (the buffer and the registry are durable).
"""

from __future__ import annotations

import logging
import threading
import time

import ray
from ray.util.placement_group import PlacementGroup, remove_placement_group

from cls_ray.config import Config
from cls_ray.serving.names import NAMESPACE, buffer_actor_name, scheduler_actor_name

logger = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_retries=0)
def consolidation_job(cfg: dict, method: str, limit: int) -> dict:
    # The whole consolidation pipeline (torch, transformers, Ray Train; seconds and hundreds of
    # MB) is imported by the worker that runs the job, not by the small coordinator actor.
    from actors.consolidation import run_consolidation

    logging.basicConfig(level=logging.INFO)
    return run_consolidation(Config.model_validate(cfg), method, limit)


def _live_placement_groups() -> set[str]:
    """Ids of the cluster's placement groups that still hold or wait for resources (read from
    the GCS, so it works without the dashboard)."""
    table = ray.util.placement_group_table()
    return {k for k, v in table.items() if v["state"] != "REMOVED"}


def _remove_leftover_placement_groups(before: set[str], settle_s: float) -> None:
    """Removes the placement groups that appeared while the cancelled job ran. An interrupted
    Train run removes its own, but not always: on a loaded node its abort can end before the
    removal lands (seen on a 2-core CI machine), and a leftover group holds its CPUs forever, so
    the next consolidation (and any Serve replica) would wait for them. Only one consolidation
    runs at a time, so a group born during it is its own."""
    deadline = time.time() + settle_s
    left = _live_placement_groups() - before
    while left and time.time() < deadline:
        time.sleep(0.5)
        left = _live_placement_groups() - before
    for pg_id in left:
        logger.warning("sleep scheduler: removing the cancelled run's placement group %s", pg_id)
        try:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(pg_id)))
        except Exception:  # noqa: BLE001 - removed meanwhile by Train itself
            logger.debug("placement group %s already gone", pg_id, exc_info=True)


class SleepScheduler:
    def __init__(self, cfg: dict, buffer_name: str, namespace: str = NAMESPACE):
        self.cfg = Config.model_validate(cfg)
        self.cfg_dict = cfg
        self.buffer_name, self.namespace = buffer_name, namespace
        self.lock = threading.Lock()
        self.job = None
        self.current: dict | None = None
        self.current_pgs: set[str] = set()
        self.history: list[dict] = []
        self.last_end = time.time()
        c = self.cfg.consolidate
        if c.schedule.auto:
            threading.Thread(target=self._loop, daemon=True, name="sleep-scheduler").start()

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            time.sleep(self.cfg.consolidate.schedule.poll_s)
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must outlive a failed poll
                logger.exception("sleep scheduler: poll failed")

    def _pending(self) -> int:
        buf = ray.get_actor(self.buffer_name, namespace=self.namespace)
        return int(ray.get(buf.stats.remote())["pending"])

    def _reap(self) -> None:
        if self.job is None or not ray.wait([self.job], timeout=0)[0]:
            return
        try:
            result = ray.get(self.job)
            outcome = {
                "version": result.get("version"),
                "promoted": result.get("promoted"),
                "reason": result.get("reason"),
            }
        except Exception as e:  # noqa: BLE001 - a failed job is recorded, not raised
            last = (str(e).strip().splitlines() or [""])[-1]
            outcome = {"error": f"{type(e).__name__}: {last[:300]}".rstrip(": ")}
        self.history.append({**self.current, **outcome, "ended_at": time.time()})
        self.job, self.current = None, None
        self.last_end = time.time()

    def _start(self, reason: str, method: str | None = None) -> dict:
        c = self.cfg.consolidate
        method = method or c.schedule.method
        pgs = _live_placement_groups()
        self.job = consolidation_job.remote(self.cfg_dict, method, c.schedule.limit)
        self.current = {"reason": reason, "method": method, "started_at": time.time()}
        self.current_pgs = pgs
        logger.info("sleep scheduler: started a %s consolidation (%s)", method, reason)
        return {"started": True, **self.current}

    def tick(self) -> dict:
        """One poll: reap a finished job; start one if the threshold or the timer says so."""
        c = self.cfg.consolidate
        with self.lock:
            self._reap()
            if self.job is not None:
                return {"started": False, "reason": "a consolidation is running"}
            n = self._pending()
            if n >= c.schedule.min_sessions:
                return self._start(f"{n} sessions waiting (threshold {c.schedule.min_sessions})")
            if c.schedule.interval_s and n and time.time() - self.last_end >= c.schedule.interval_s:
                return self._start(f"timer ({c.schedule.interval_s:g} s), {n} sessions waiting")
            return {"started": False, "reason": f"{n} sessions waiting"}

    def trigger(self, reason: str = "admin request", method: str | None = None) -> dict:
        """Starts a consolidation now unless one is running or no session waits."""
        with self.lock:
            self._reap()
            if self.job is not None:
                return {"started": False, "reason": "a consolidation is already running"}
            n = self._pending()
            if not n:
                return {"started": False, "reason": "no unconsumed sessions"}
            return self._start(f"{reason}, {n} sessions waiting", method)

    def cancel(self, grace_s: float = 60.0) -> dict:
        """Stops the running consolidation. Nothing it did is published: adapters are written
        whole or not at all, and a version is registered only after evaluation.

        The job is interrupted first: Ray Train's fit() turns the interrupt into an abort of its
        run, which stops the workers and removes their placement group. Killing the job's process
        outright would leave that placement group holding its CPUs whenever the state API is
        unavailable (Train's cleaner asks the dashboard whether the controller lives), and the next
        consolidation would wait for them forever; so a force-kill is only the fallback, and either
        way the placement groups that appeared while the job ran and outlived it are removed."""
        with self.lock:
            if self.job is None:
                return {"cancelled": False, "reason": "no consolidation is running"}
            job, before = self.job, self.current_pgs
            ray.cancel(job)
        forced = not ray.wait([job], timeout=grace_s)[0]
        if forced:
            logger.warning("sleep scheduler: the job ignored the interrupt; killing it")
            ray.cancel(job, force=True)
            ray.wait([job], timeout=60)
        _remove_leftover_placement_groups(before, settle_s=0 if forced else 15)
        with self.lock:
            self._reap()
        return {"cancelled": True, "forced": forced}

    def status(self) -> dict:
        with self.lock:
            self._reap()
            return {
                "running": self.current,
                "history": list(self.history[-20:]),
                "auto": self.cfg.consolidate.schedule.auto,
            }

    def wait(self, timeout_s: float) -> dict:
        """Blocks until the running consolidation ends (or `timeout_s`); returns `status`."""
        job = self.job
        if job is not None:
            ray.wait([job], timeout=timeout_s)
        return self.status()


def start_scheduler(cfg: Config, namespace: str = NAMESPACE):
    """Starts (or finds) the detached scheduler actor of `cfg`'s application."""
    app = cfg.serve.app_name
    return (
        ray.remote(SleepScheduler)
        .options(
            name=scheduler_actor_name(app),
            namespace=namespace,
            get_if_exists=True,
            lifetime="detached",
            num_cpus=0,
            max_concurrency=4,
        )
        .remote(cfg.model_dump(mode="json"), buffer_actor_name(app), namespace)
    )
