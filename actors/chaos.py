"""Fault injection into a running application, for `cls-ray bench chaos`: kill a Serve replica,
stop and continue a replica's process, kill the replay-buffer actor, fill the WAL's disk. Each
acts on the application of one config, on this machine (the bench runs on a local cluster)."""

from __future__ import annotations

import os
import signal
import time

import ray
from ray import serve
from ray.serve._private.api import serve_start

from cls_ray.config import Config
from cls_ray.serving.names import NAMESPACE, buffer_actor_name

SERVE_NAMESPACE = "serve"


def replicas(cfg: Config, deployment: str) -> list[dict]:
    """The deployment's running replicas as Serve's controller reports them (`actor_name`,
    `pid`, `replica_id`)."""
    app = serve_start().get_serve_details()["applications"][cfg.serve.app_name]
    return [r for r in app["deployments"][deployment]["replicas"] if r["state"] == "RUNNING"]


def replica_counts(cfg: Config, deployment: str) -> dict[str, int]:
    """The deployment's replicas by state (`RUNNING`, `STARTING`, `STOPPING`, ...), from
    `serve.status()`: quiet and cheap to poll."""
    app = serve.status().applications.get(cfg.serve.app_name)
    if app is None or deployment not in app.deployments:
        return {}
    return {str(k.value if hasattr(k, "value") else k): n
            for k, n in app.deployments[deployment].replica_states.items()}  # fmt: skip


def wait_for_replicas(cfg: Config, deployment: str, n: int, timeout_s: float = 120.0) -> list:
    """Until `n` replicas of the deployment run (Serve replaces a killed one)."""
    deadline = time.monotonic() + timeout_s
    while len(got := replicas(cfg, deployment)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{deployment}: {len(got)} of {n} replicas after {timeout_s:.0f} s")
        time.sleep(0.5)
    return got


def kill_replica(cfg: Config, deployment: str) -> str:
    """Kills one running replica's actor (as a crashed process would die); Serve's controller
    notices and starts another. Returns the killed replica's id."""
    victim = replicas(cfg, deployment)[0]
    ray.kill(ray.get_actor(victim["actor_name"], namespace=SERVE_NAMESPACE), no_restart=True)
    return victim["replica_id"]


class Paused:
    """A replica's process stopped with SIGSTOP (it neither answers nor refuses, as a hung
    server does) until `resume` sends SIGCONT."""

    def __init__(self, cfg: Config, deployment: str):
        self.cfg, self.deployment, self.pid = cfg, deployment, None

    def pause(self) -> None:
        self.pid = replicas(self.cfg, self.deployment)[0]["pid"]
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)


def _buffer(cfg: Config):
    return ray.get_actor(buffer_actor_name(cfg.serve.app_name), namespace=NAMESPACE)


def kill_buffer(cfg: Config) -> None:
    """Kills the replay-buffer actor's process; Ray restarts it and it recovers its WAL."""
    ray.kill(_buffer(cfg), no_restart=False)


def fill_disk(cfg: Config, seconds: float) -> None:
    """For `seconds`, every WAL append fails as on a full disk (ENOSPC)."""
    ray.get(_buffer(cfg).fail_writes.remote(seconds), timeout=30)


def missing_sessions(cfg: Config, ids: list[str], timeout_s: float = 60.0) -> int:
    """How many of `ids` the replay buffer does not hold (asked once it answers again)."""
    held = set(ray.get(_buffer(cfg).ids.remote(), timeout=timeout_s))
    return sum(1 for i in ids if i not in held)
