"""The serving stack on Ray: the detached actors next to the application, bringing the
application up, and `RayRuntime`, the `ServingRuntime` a job (the demo) drives."""

from __future__ import annotations

import logging

import ray
from ray import serve

from actors.deploy import deploy
from actors.ray_cluster import init_ray, take_down
from actors.registry import start_registry
from actors.replay_buffer import ActorBuffer, start_replay_buffer
from actors.scheduler import start_scheduler
from cls_ray.config import Config
from cls_ray.registry import ModelVersion
from cls_ray.serving.names import NAMESPACE, buffer_actor_name, scheduler_actor_name

logger = logging.getLogger(__name__)


def start_state_actors(cfg: Config) -> None:
    """The replay buffer and the registry actors, on this node (it holds the state directory),
    and the sleep scheduler."""
    start_replay_buffer(
        str(cfg.replay_path), buffer_actor_name(cfg.serve.app_name), segments=cfg.replay_segments
    )
    start_registry(str(cfg.state_path / "registry.json"), str(cfg.model_path), cfg.serve.app_name)
    start_scheduler(cfg)


def up(cfg: Config, version: ModelVersion | None = None, **batch_sizes) -> str:
    """The actors next to the application, then the application on `version` (default: the
    registry's current one). Returns its URL."""
    start_state_actors(cfg)
    return deploy(cfg, version, **batch_sizes)


class SchedulerClient:
    """The scheduler actor as a `Scheduler` (see `cls_ray.ports`)."""

    def __init__(self, handle, timeout_s: float = 60.0):
        self.handle = handle
        self.timeout_s = timeout_s  # each call; `wait` adds its own wait to it

    def trigger(self, reason: str = "admin request", method: str | None = None) -> dict:
        return ray.get(self.handle.trigger.remote(reason, method), timeout=self.timeout_s)

    def wait(self, timeout_s: float) -> dict:
        return ray.get(self.handle.wait.remote(timeout_s), timeout=timeout_s + self.timeout_s)


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
        return ActorBuffer.of_app(self.cfg.serve.app_name, self.cfg.consolidate.call_timeout_s)

    def scheduler(self) -> SchedulerClient:
        return SchedulerClient(
            ray.get_actor(scheduler_actor_name(self.cfg.serve.app_name), namespace=NAMESPACE),
            self.cfg.consolidate.call_timeout_s,
        )

    def stop(self) -> None:
        if self.deployed is not None:
            take_down(self.deployed)
            serve.shutdown()
        if self.started_ray:
            ray.shutdown()
