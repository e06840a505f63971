"""Starting and stopping Ray and the serving stack: a local Ray for a command, joining a cluster
(`ray.address`, `RAY_ADDRESS`, a running local head), the detached actors next to the
application, bringing the application up and taking it down. `RayRuntime` is the
`ServingRuntime` a job (the demo) drives."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import ray
from ray import serve

from actors.deploy import deploy
from actors.registry import start_registry
from actors.replay_buffer import ActorBuffer, start_replay_buffer
from actors.scheduler import start_scheduler
from cls_ray.config import Config
from cls_ray.registry import ModelVersion
from cls_ray.serving.names import (
    NAMESPACE,
    buffer_actor_name,
    registry_actor_name,
    scheduler_actor_name,
)

logger = logging.getLogger(__name__)


def _quiet_data() -> None:
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
    except AttributeError:
        pass


def start_local_ray(num_cpus: int | None, log_to_driver: bool = False) -> None:
    """Starts a Ray instance on this machine (no dashboard), quiet Ray Data progress bars."""
    # A loaded machine can miss Ray's start-up deadline (GCS or raylet); Ray raises a plain
    # Exception for that, so any failure of the start gets two more tries.
    for attempt in range(3):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver)
            break
        except Exception:  # noqa: BLE001
            ray.shutdown()
            if attempt == 2:
                raise
            logger.warning("Ray did not start; trying again")
            time.sleep(5)
    _quiet_data()


def init_ray(cfg: Config, log_to_driver: bool = False, num_cpus: int | None = None) -> bool:
    """Ray for a job: the cluster of `ray.address` or `RAY_ADDRESS` (inside `ray job submit`),
    else a local instance (`num_cpus` overrides `ray.num_cpus`). Returns True when this call
    started or joined it (False: this process had it already)."""
    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=log_to_driver)
        _quiet_data()
    else:
        start_local_ray(num_cpus or cfg.ray.num_cpus, log_to_driver)
    return True


def connect_ray(cfg: Config, start: bool) -> bool:
    """Joins `ray.address` / RAY_ADDRESS / a running local head; with `start`, starts a head
    (`ray start --head`, which outlives this process). Returns True when this call started it."""
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=address, log_to_driver=False, namespace=NAMESPACE)
        return False
    except (ConnectionError, RuntimeError):
        if not start or address != "auto":
            raise SystemExit(f"no Ray cluster at {address}; run `cls-ray up` first") from None
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    if cfg.ray.num_cpus:
        cmd.append(f"--num-cpus={cfg.ray.num_cpus}")
    subprocess.run(cmd, check=True, capture_output=True)
    ray.init(address="auto", log_to_driver=False, namespace=NAMESPACE)
    return True


def stop_ray() -> None:
    """Stops Serve and the local Ray cluster (`ray stop`) a command started."""
    serve.shutdown()
    ray.shutdown()
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop"], capture_output=True)


def start_state_actors(cfg: Config) -> None:
    """The replay buffer and the registry actors, on this node (it holds the state directory),
    and the sleep scheduler."""
    start_replay_buffer(
        str(cfg.replay_path), buffer_actor_name(cfg.serve.app_name), segments=cfg.replay_segments
    )
    start_registry(str(cfg.state_path / "registry.json"), str(cfg.model_path), cfg.serve.app_name)
    start_scheduler(cfg)


def stop_state_actors(cfg: Config) -> None:
    """The buffer, registry and scheduler actors are detached; their state is on disk, so
    stopping them loses nothing."""
    app = cfg.serve.app_name
    for name in (buffer_actor_name(app), registry_actor_name(app), scheduler_actor_name(app)):
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except ValueError:
            pass


def up(cfg: Config, version: ModelVersion | None = None, **batch_sizes) -> str:
    """The actors next to the application, then the application on `version` (default: the
    registry's current one). Returns its URL."""
    start_state_actors(cfg)
    return deploy(cfg, version, **batch_sizes)


def down(cfg: Config) -> None:
    """Deletes the application and stops the actors next to it."""
    try:
        serve.delete(cfg.serve.app_name)
    except Exception as e:  # noqa: BLE001 - nothing deployed is fine when going down
        logger.info("no app to delete: %s", e)
    stop_state_actors(cfg)


def marker(cfg: Config) -> Path:
    """The file that says `cls-ray up` started the local Ray cluster (so `down` stops it)."""
    return cfg.state_path / "ray-started-by-cls-ray"


class SchedulerClient:
    """The scheduler actor as a `Scheduler` (see `cls_ray.ports`)."""

    def __init__(self, handle):
        self.handle = handle

    def trigger(self, reason: str = "admin request", method: str | None = None) -> dict:
        return ray.get(self.handle.trigger.remote(reason, method), timeout=60)

    def wait(self, timeout_s: float) -> dict:
        return ray.get(self.handle.wait.remote(timeout_s), timeout=timeout_s + 60)


class RayRuntime:
    """`ServingRuntime` on Ray: joins (or starts) Ray, brings the application up, and takes
    down what it brought up."""

    def __init__(self, cfg: Config, log_to_driver: bool = False):
        self.cfg = cfg
        self.log_to_driver = log_to_driver
        self.started_ray = False
        self.deployed: Config | None = None

    def start(self, num_cpus: int | None = None) -> None:
        self.started_ray = init_ray(self.cfg, self.log_to_driver, num_cpus)

    def deploy(self, cfg: Config) -> str:
        self.deployed = cfg
        return up(cfg)

    def buffer(self) -> ActorBuffer:
        return ActorBuffer.of_app(self.cfg.serve.app_name)

    def scheduler(self) -> SchedulerClient:
        return SchedulerClient(
            ray.get_actor(scheduler_actor_name(self.cfg.serve.app_name), namespace=NAMESPACE)
        )

    def stop(self) -> None:
        if self.deployed is not None:
            serve.delete(self.deployed.serve.app_name)
            serve.shutdown()
            stop_state_actors(self.deployed)
        if self.started_ray:
            ray.shutdown()
