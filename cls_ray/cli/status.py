"""`cls-ray status`: health, versions, the PRM, and (when up) the buffer and the replicas."""

from __future__ import annotations

from ray import serve

from actors.ray_cluster import connect_ray
from actors.replay_buffer import ActorBuffer
from cls_ray.cli.http import http_json, stack_up, url
from cls_ray.config import Config
from cls_ray.prm.store import latest_prm
from cls_ray.registry import registry_for


def cmd_status(args, cfg: Config) -> dict:
    out: dict = {"url": url(cfg), "up": stack_up(cfg)}
    out["versions"] = registry_for(cfg).list() if cfg.model_path.exists() else []
    prm = latest_prm(cfg)
    out["prm"] = str(prm) if prm else None
    if out["up"]:
        out["health"] = http_json("GET", url(cfg) + "/healthz")
        connect_ray(cfg, start=False)
        try:
            out["buffer"] = ActorBuffer.of_app(cfg.serve.app_name, timeout_s=30).stats()
        except ValueError:
            out["buffer"] = None
        app = serve.status().applications.get(cfg.serve.app_name)
        out["replicas"] = (
            {name: dict(d.replica_states) for name, d in app.deployments.items()} if app else {}
        )
    if not args.json:
        print(f"{out['url']}: {'up' if out['up'] else 'down'}")
        for v in out["versions"]:
            mark = "*" if v["current"] else " "
            print(f" {mark} {v['name']:6} {v['status']:12} {v['kind']:5} {v['artifact_uri']}")
        if out.get("buffer"):
            print(f"buffer: {out['buffer']}")
        if out.get("replicas"):
            print(f"replicas: {out['replicas']}")
        print(f"prm: {out['prm'] or '(none; cls-ray prm train)'}")
    return out
