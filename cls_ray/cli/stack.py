"""`cls-ray up` and `cls-ray down`: the serving stack on a local or an existing Ray cluster."""

from __future__ import annotations

from actors.ray_cluster import connect_ray, marker, stop_ray, take_down
from actors.runtime import up
from cls_ray.config import Config


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
    take_down(cfg)
    stopped = marker(cfg).exists()
    if stopped:
        stop_ray()
        marker(cfg).unlink()
    print("cls-ray is down" + (" (and the Ray cluster it started is stopped)" if stopped else ""))
    return {"stopped_ray": stopped}
