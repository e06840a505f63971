"""The Serve application spec: the entry of a Serve deploy config (`serve deploy`,
`serveConfigV2`) that `actors.deploy` applies and `cls_ray.cluster` writes into the KubeRay
manifest, so a cluster serves exactly what the code deploys locally.

Serve derives each deployment's code version from that config without its `user_config`, so
deploying the same application with another model version changes nothing but the generator's
`user_config`: running replicas get `reconfigure()` in place, and replicas that autoscaling adds
later start on it.
"""

from __future__ import annotations

from cls_ray.config import Config
from cls_ray.registry import ModelVersion
from cls_ray.serving.limits import deployment_limits
from cls_ray.serving.names import APP_IMPORT_PATH, GENERATOR, INGRESS, RETRIEVER


def generator_user_config(
    cfg: Config, version: str = "base", path: str | None = None, max_batch_size: int | None = None
) -> dict:
    """The generator's `user_config`: the version to serve (its folder or URI), the batch size."""
    return {
        "version": version,
        "path": path,
        "max_batch_size": max_batch_size or cfg.serve.generator.max_batch_size,
    }


def version_config(cfg: Config, v: ModelVersion, max_batch_size: int | None = None) -> dict:
    """The generator's `user_config` for a registered version."""
    path = None if v.kind == "base" else v.artifact_uri
    return generator_user_config(cfg, v.name, path, max_batch_size)


def generator_options(cfg: Config) -> dict:
    """The generator's deployment options (autoscaling, load, resources), the same in the app
    builder and in a written Serve config."""
    g = cfg.serve.generator
    resources = {"num_cpus": g.num_cpus}
    if g.num_gpus:
        resources["num_gpus"] = g.num_gpus
    return {
        # The config section has exactly Serve's autoscaling fields.
        "autoscaling_config": g.autoscaling.model_dump(),
        **deployment_limits(cfg)["generator"],
        "ray_actor_options": resources,
    }


def app_spec(
    cfg: Config,
    v: ModelVersion,
    max_batch_size: int | None = None,
    retriever_max_batch_size: int | None = None,
    session_batch_size: int | None = None,
) -> dict:
    """The application's entry of a Serve deploy config. Batch sizes live in `user_config`, so
    changing them (as `bench serve` does) reconfigures replicas in place, like a version."""
    return {
        "name": cfg.serve.app_name,
        "route_prefix": "/",
        "import_path": APP_IMPORT_PATH,
        "args": {"config": cfg.model_dump(mode="json")},
        "logging_config": {"enable_access_log": cfg.serve.access_log},
        "deployments": [
            {
                "name": GENERATOR,
                **generator_options(cfg),
                "user_config": version_config(cfg, v, max_batch_size),
            },
            {
                "name": INGRESS,
                "user_config": {
                    "session_batch_size": session_batch_size or cfg.serve.session_batch_size
                },
            },
            {
                "name": RETRIEVER,
                "user_config": {
                    "max_batch_size": retriever_max_batch_size or cfg.serve.retriever.max_batch_size
                },
            },
        ],
    }
