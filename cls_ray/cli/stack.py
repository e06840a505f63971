"""`cls-ray up`, `down`, `status`, `promote`, `rollback`: the serving stack on a local or an
existing Ray cluster."""

from __future__ import annotations

from ray import serve

from actors.deploy import promote, rollback
from actors.replay_buffer import ActorBuffer
from actors.runtime import connect_ray, down, marker, stop_ray, up
from cls_ray.cli.http import http_json, stack_up, url
from cls_ray.config import Config
from cls_ray.prm.store import latest_prm
from cls_ray.registry import registry_for


def cmd_up(args, cfg: Config) -> dict:
    started = connect_ray(cfg, start=True)
    address = up(cfg)
    if started:
        marker(cfg).parent.mkdir(parents=True, exist_ok=True)
        marker(cfg).write_text("1")
    print(f"cls-ray is serving at {address} (OpenAPI: {address}/docs)")
    return {"url": address, "started_ray": started}


def cmd_down(args, cfg: Config) -> dict:
    connect_ray(cfg, start=False)
    down(cfg)
    stopped = marker(cfg).exists()
    if stopped:
        stop_ray()
        marker(cfg).unlink()
    print("cls-ray is down" + (" (and the Ray cluster it started is stopped)" if stopped else ""))
    return {"stopped_ray": stopped}


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
