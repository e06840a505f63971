"""`cls-ray promote VERSION` and `cls-ray rollback`: through the running stack (every replica
first, then the registry) when it is up, in the registry alone otherwise."""

from __future__ import annotations

from actors.deploy import promote, rollback
from actors.ray_cluster import connect_ray
from cls_ray.cli.http import stack_up
from cls_ray.config import Config
from cls_ray.registry import registry_for


def cmd_promote(args, cfg: Config) -> dict:
    if stack_up(cfg):
        connect_ray(cfg, start=False)
        v = promote(cfg, args.version)
    else:
        v = registry_for(cfg).promote(args.version)
    print(f"current version: {v.name}")
    return v.model_dump()


def cmd_rollback(args, cfg: Config) -> dict:
    if stack_up(cfg):
        connect_ray(cfg, start=False)
        v = rollback(cfg)
    else:
        v = registry_for(cfg).rollback()
    print(f"current version: {v.name}")
    return v.model_dump()
