"""`cls-ray sleep` / `cls-ray ppo`: one consolidation of the buffered sessions, through the
serving application when it is up (its buffer actor, its retriever, a broadcast on promotion),
on the state directory otherwise."""

from __future__ import annotations

from actors.consolidation import run_consolidation
from actors.ray_cluster import connect_ray, init_ray
from cls_ray.cli.http import stack_up
from cls_ray.config import Config


def cmd_sleep(args, cfg: Config) -> dict:
    method = "ppo" if args.command == "ppo" else "sft"
    if stack_up(cfg):
        connect_ray(cfg, start=False)
    else:
        init_ray(cfg, log_to_driver=not args.quiet)
    try:
        result = run_consolidation(cfg, method, args.limit, print)
    except ValueError as e:
        raise SystemExit(f"cls-ray {args.command}: {e}") from None
    print(
        f"{result['version']}: {'promoted' if result['promoted'] else 'kept as a candidate'} "
        f"({result['reason']})"
    )
    return result
