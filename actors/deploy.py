"""Deploying the Serve application and moving it between model versions.

The app is deployed from a config (the path `serve deploy config.yaml` and Serve's REST API
take; see `cls_ray.serving.spec.app_spec`): an import path, the cls-ray config as its args, and
the generator's `user_config` naming the model version. Deploying the same application with
another version changes nothing but that `user_config`, so every running generator replica gets
`reconfigure()` in place (no restart, no reload of the retriever's Milvus file). (Serve's
imperative `serve.run` gives every deployment a fresh random version on each call, which would
restart all replicas, the retriever too, on every promote.)
"""

from __future__ import annotations

import logging
import time

from ray.serve._private.api import serve_start
from ray.serve.schema import ServeDeploySchema

from actors.metrics import observe
from actors.weight_stream import WeightSyncError, stream_version
from cls_ray import metrics as m
from cls_ray.config import Config
from cls_ray.registry import ModelVersion, registry_for
from cls_ray.serving.names import GENERATOR
from cls_ray.serving.spec import app_spec

logger = logging.getLogger(__name__)


class DeployError(RuntimeError):
    pass


def _client(cfg: Config):
    # The same calls `serve deploy` / `serve run config.yaml` and the dashboard's REST handler
    # make: start (or find) the controller, then apply a declarative config.
    client = serve_start(
        http_options={
            "host": cfg.serve.host,
            "port": cfg.serve.port,
            "request_timeout_s": cfg.serve.limits.request_timeout_s,
        }
    )
    running = client.http_config
    if running.port != cfg.serve.port:
        # Serve was already up with other HTTP options; they cannot change while it runs, and
        # the application would answer on a port nobody is told about.
        raise DeployError(
            f"serve.port is {cfg.serve.port} but Serve already runs on this cluster with HTTP "
            f"on {running.host}:{running.port}: set serve.port={running.port} "
            "(or shut Serve down with `serve shutdown`)"
        )
    return client


def _app_status(client, name: str) -> tuple[str, dict[str, str], str, dict[str, dict]]:
    """The app's status, its deployments' statuses, its message and each deployment's target
    `user_config`."""
    details = client.get_serve_details()
    app = (details.get("applications") or {}).get(name)
    if app is None:
        return "NOT_STARTED", {}, "", {}
    deployments = app.get("deployments") or {}
    deps = {d: info["status"] for d, info in deployments.items()}
    targets = {
        d: (info.get("deployment_config") or {}).get("user_config")
        for d, info in deployments.items()
    }
    return app["status"], deps, app.get("message") or "", targets


def _stream(cfg: Config, client, v: ModelVersion) -> None:
    """Streams full-weight `v` into the running replicas before they are switched to it; a
    stream that fails leaves them to load it from storage."""
    status, deps, _, targets = _app_status(client, cfg.serve.app_name)
    if status != "RUNNING" or (targets.get(GENERATOR) or {}).get("version") == v.name:
        return
    try:
        stream_version(cfg, v)
    except WeightSyncError as e:
        logger.warning("%s; the replicas load %s from storage", e, v.name)
    except ValueError as e:
        raise DeployError(str(e)) from e


def deploy(
    cfg: Config,
    version: ModelVersion | None = None,
    timeout_s: float = 300.0,
    max_batch_size: int | None = None,
    retriever_max_batch_size: int | None = None,
    session_batch_size: int | None = None,
) -> str:
    """Deploys the app on `version` (default: the registry's current one) next to any other
    declaratively deployed apps, and waits until every replica serves it. Returns the URL.
    The actors next to the app (buffer, registry, scheduler) are `actors.runtime.up`'s."""
    v = version or registry_for(cfg).current()
    client = _client(cfg)
    name = cfg.serve.app_name
    apps = []
    for other, info in (client.get_serve_details().get("applications") or {}).items():
        if (
            other != name
            and info.get("source") == "declarative"
            and info.get("deployed_app_config")
        ):
            apps.append(info["deployed_app_config"])
    if v.kind == "full" and cfg.serve.weight_sync.mode == "stream":
        _stream(cfg, client, v)
    spec = app_spec(cfg, v, max_batch_size, retriever_max_batch_size, session_batch_size)
    apps.append(spec)
    client.deploy_apps(ServeDeploySchema(applications=apps))
    # apply_config returns before the controller acts on it: wait until every deployment's
    # target is this spec and every deployment is HEALTHY (all replicas reconfigured).
    want = {d["name"]: d["user_config"] for d in spec["deployments"]}
    deadline = time.monotonic() + timeout_s
    while True:
        status, deps, message, targets = _app_status(client, name)
        if status == "DEPLOY_FAILED" or "UNHEALTHY" in deps.values():
            raise DeployError(f"deploying {name} on {v.name} failed: {message}")
        on_target = all(targets.get(d) == u for d, u in want.items())
        if status == "RUNNING" and on_target and set(deps.values()) == {"HEALTHY"}:
            break
        if time.monotonic() > deadline:
            raise DeployError(f"{name} not running after {timeout_s:.0f} s: {status} {deps}")
        time.sleep(0.2)
    logger.info("deployed %s on version %s", name, v.name)
    return f"http://{cfg.serve.host}:{cfg.serve.port}"


def _switch(cfg: Config, v: ModelVersion, before: ModelVersion, change):
    """Deploys `v`, then applies `change` to the registry; if either fails, `before` is
    deployed back and the error raised: serving and the registry never disagree."""
    try:
        t0 = time.monotonic()
        deploy(cfg, v)
        streamed = v.kind == "full" and cfg.serve.weight_sync.mode == "stream"
        observe(m.WEIGHT_SYNC_SECONDS, time.monotonic() - t0, mode="stream" if streamed else "load")
        return change()
    except Exception:
        logger.warning("switching to %s failed: %s is deployed back", v.name, before.name)
        deploy(cfg, before)
        raise


def promote(
    cfg: Config,
    name: str,
    reason: str = "",
    request_id: str | None = None,
    registry=None,
) -> ModelVersion:
    """Pushes `name` to every generator replica, then marks it promoted in the registry. If a
    replica refuses it (its weights fail their checksum, it cannot load), the previous version
    is pushed back and the registry keeps it. `registry`: the state directory's by default, or
    any object with its calls (`actors.registry.RegistryClient` of the registry actor); a
    repeated `request_id` is promoted once."""
    reg = registry if registry is not None else registry_for(cfg)
    v, before = reg.get(name), reg.current()
    if v.status == "rolled_back":  # the registry would refuse it: never serve it meanwhile
        raise ValueError(f"{name} was rolled back; register it again to promote it")
    return _switch(cfg, v, before, lambda: reg.promote(name, reason=reason, request_id=request_id))


def rollback(
    cfg: Config,
    reason: str = "rollback",
    request_id: str | None = None,
    registry=None,
) -> ModelVersion:
    """Pushes the version promoted before the current one to every replica, then rolls the
    registry back to it; if the push fails, the current version is pushed back and the registry
    keeps it. A repeated `request_id` rolls back once (its target is the recorded result)."""
    reg = registry if registry is not None else registry_for(cfg)
    target, before = reg.rollback_target(request_id), reg.current()
    v = _switch(cfg, target, before, lambda: reg.rollback(reason, request_id=request_id))
    if v.name != target.name:  # another change landed in between: serve what the registry says
        deploy(cfg, v)
    return v


class ServingPublisher:
    """`Publisher` of a running application: a version reaches every generator replica before
    the registry calls it current (see `promote`)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def promote(self, name: str, reason: str = "") -> ModelVersion:
        return promote(self.cfg, name, reason)

    def rollback(self, reason: str = "rollback") -> ModelVersion:
        return rollback(self.cfg, reason)
