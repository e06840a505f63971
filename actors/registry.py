"""The model registry as a named Ray actor, so replicas and jobs anywhere in the cluster read and
change one registry: the actor runs on the node that started it (where the state directory is)
and restarts after a crash; the registry file it fronts is the durable state."""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cls_ray.registry import ModelRegistry
from cls_ray.serving.names import NAMESPACE, registry_actor_name


class ModelRegistryActor:
    def __init__(self, path: str, base_uri: str | None = None):
        self.registry = ModelRegistry(path, base_uri=base_uri)

    def list(self) -> list[dict]:
        return self.registry.list()

    def current(self) -> dict:
        return self.registry.current().model_dump()

    def get(self, name: str) -> dict:
        return self.registry.get(name).model_dump()

    def register(self, artifact_uri: str, kind: str, parent=None, metrics=None) -> dict:
        return self.registry.register(artifact_uri, kind, parent, metrics).model_dump()

    def promote(self, name: str, reason: str = "") -> dict:
        return self.registry.promote(name, reason).model_dump()

    def rollback(self, reason: str = "rollback") -> dict:
        return self.registry.rollback(reason).model_dump()


def start_registry(path: str, base_uri: str | None, app_name: str, namespace: str = NAMESPACE):
    """Starts (or finds) the named registry actor, pinned to this node (it owns the file)."""
    return (
        ray.remote(ModelRegistryActor)
        .options(
            name=registry_actor_name(app_name),
            namespace=namespace,
            get_if_exists=True,
            lifetime="detached",
            max_restarts=-1,
            max_task_retries=-1,
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False
            ),
        )
        .remote(path, base_uri)
    )
