"""Deploying the Serve application and moving it between model versions.

A version reaches the generator replicas through Serve's `user_config`: redeploying the same
application with another `user_config` calls `reconfigure()` on every running replica without
restarting it, and replicas that autoscaling adds later start with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cls_ray.config import Config
from cls_ray.registry import ModelRegistry, ModelVersion

logger = logging.getLogger(__name__)


def registry_for(cfg: Config) -> ModelRegistry:
    return ModelRegistry(cfg.state_path / "registry.json", base_uri=str(cfg.model_path))


def version_config(v: ModelVersion) -> dict:
    return {"version": v.name, "path": None if v.kind == "base" else v.artifact_uri}


def deploy(
    cfg: Config, version: ModelVersion | None = None, engine_factory: Callable | None = None
):
    """Starts Serve on `serve.host:port` (if needed) and deploys the app on `version`
    (default: the registry's current one). Returns the HTTP URL."""
    from ray import serve

    from actors.serve_app import build_app

    v = version or registry_for(cfg).current()
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(
        build_app(cfg, engine_factory, version_config(v)),
        name=cfg.serve.app_name,
        route_prefix="/",
    )
    logger.info("deployed %s on version %s", cfg.serve.app_name, v.name)
    return f"http://{cfg.serve.host}:{cfg.serve.port}"


def promote(cfg: Config, name: str, engine_factory: Callable | None = None) -> ModelVersion:
    reg = registry_for(cfg)
    v = reg.promote(name)
    deploy(cfg, v, engine_factory)
    return v


def rollback(cfg: Config, engine_factory: Callable | None = None) -> ModelVersion:
    reg = registry_for(cfg)
    v = reg.rollback()
    deploy(cfg, v, engine_factory)
    return v
