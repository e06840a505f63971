"""The model registry as a named Ray actor, so replicas and jobs anywhere in the cluster read and
change one registry: the actor runs on the node that started it (where the state directory is)
and restarts after a crash; the registry file it fronts is the durable state.

Ray retries a call the crash interrupted (`max_task_retries=-1`) with the same arguments, so a
change carries a request id (`RegistryClient` makes one per call): the retry returns what the
first attempt recorded instead of promoting or rolling back a second time."""

from __future__ import annotations

import uuid

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cls_ray.registry import ModelRegistry, ModelVersion
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

    def register(
        self, artifact_uri: str, kind: str, parent=None, metrics=None, request_id=None
    ) -> dict:
        return self.registry.register(artifact_uri, kind, parent, metrics, request_id).model_dump()

    def promote(self, name: str, reason: str = "", request_id: str | None = None) -> dict:
        return self.registry.promote(name, reason, request_id).model_dump()

    def rollback(self, reason: str = "rollback", request_id: str | None = None) -> dict:
        return self.registry.rollback(reason, request_id).model_dump()

    def rollback_target(self, request_id: str | None = None) -> dict:
        return self.registry.rollback_target(request_id).model_dump()


class RegistryClient:
    """The registry actor behind the synchronous calls of `ModelRegistry` (what
    `actors.deploy.promote` and `rollback` take), each bounded by `timeout_s`. A change without
    a request id gets a fresh one, so Ray's retry of it is applied once."""

    def __init__(self, handle, timeout_s: float = 60.0):
        self.handle = handle
        self.timeout_s = timeout_s

    def _call(self, method: str, *args):
        return ray.get(getattr(self.handle, method).remote(*args), timeout=self.timeout_s)

    def list(self) -> list[dict]:
        return self._call("list")

    def current(self) -> ModelVersion:
        return ModelVersion.model_validate(self._call("current"))

    def get(self, name: str) -> ModelVersion:
        return ModelVersion.model_validate(self._call("get", name))

    def promote(self, name: str, reason: str = "", request_id: str | None = None) -> ModelVersion:
        rid = request_id or uuid.uuid4().hex
        return ModelVersion.model_validate(self._call("promote", name, reason, rid))

    def rollback(self, reason: str = "rollback", request_id: str | None = None) -> ModelVersion:
        rid = request_id or uuid.uuid4().hex
        return ModelVersion.model_validate(self._call("rollback", reason, rid))

    def rollback_target(self, request_id: str | None = None) -> ModelVersion:
        return ModelVersion.model_validate(self._call("rollback_target", request_id))


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
