"""The application builder: the deployment graph with its options from the config. Serve imports
`app_from_args` (`cls_ray.serving.names.APP_IMPORT_PATH`) wherever the application runs."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ray import serve

from actors.serve.generator import Generator
from actors.serve.ingress import Ingress
from actors.serve.retriever import Retriever
from actors.serve.scorer import Scorer
from cls_ray.config import Config
from cls_ray.prm.store import latest_prm
from cls_ray.serving.limits import deployment_limits
from cls_ray.serving.names import GENERATOR, INGRESS, RETRIEVER, SCORER
from cls_ray.serving.spec import generator_options, generator_user_config


def build_app(cfg: Config, engine_factory: Callable | None = None, user_config: dict | None = None):
    """The application graph with deployment options from `cfg`; `user_config` names the
    model version the generator replicas serve."""
    s = cfg.serve
    limits = deployment_limits(cfg)
    data = cfg.model_dump(mode="json")
    gen = serve.deployment(
        Generator,
        name=GENERATOR,
        **generator_options(cfg),
        user_config=user_config or generator_user_config(cfg),
    ).bind(data, engine_factory)
    # Milvus Lite allows one process per file: one retriever replica owns it. Against a Milvus
    # server every replica connects on its own, so more replicas are fine there.
    ret = serve.deployment(
        Retriever,
        name=RETRIEVER,
        num_replicas=1 if cfg.store_uri.endswith(".db") else 2,
        **limits["retriever"],
        ray_actor_options={"num_cpus": 0.25},
        user_config={"max_batch_size": s.retriever.max_batch_size},
    ).bind(data)
    scorer = None
    prm_path = latest_prm(cfg)
    if prm_path is not None:
        scorer = serve.deployment(
            Scorer, name=SCORER, **limits["scorer"], ray_actor_options={"num_cpus": 0.25}
        ).bind(data, str(prm_path.resolve()))
    return serve.deployment(
        Ingress,
        name=INGRESS,
        **limits["ingress"],
        ray_actor_options={"num_cpus": 0.25},
        user_config={"session_batch_size": s.session_batch_size},
    ).bind(data, gen, ret, scorer)


def app_from_args(args: dict):
    """Serve's application builder: `config` is the cls-ray config; `engine_factory`, optional,
    an importable `module:callable` building an engine from (config, version, path)."""
    factory = None
    if args.get("engine_factory"):
        module, _, attr = args["engine_factory"].partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return build_app(Config.model_validate(args["config"]), factory)
