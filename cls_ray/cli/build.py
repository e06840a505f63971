"""`cls-ray bootstrap` and `cls-ray ingest`: build the small default model; fill memory."""

from __future__ import annotations

from actors.ray_cluster import init_ray
from cls_ray import console
from cls_ray.bootstrap import describe, ensure_model
from cls_ray.config import Config
from cls_ray.memory.ingest import ingest_paths
from cls_ray.stack import Stack


def cmd_bootstrap(args, cfg: Config) -> dict:
    result = ensure_model(cfg, Stack(cfg).world, force=args.force, progress=not args.quiet)
    print(describe(result))
    return result


def cmd_ingest(args, cfg: Config) -> dict:
    stack = Stack(cfg)
    paths: list = list(args.paths)
    if args.world:
        paths.append(stack.export_world())
    if args.task:
        paths.append(stack.task_corpus())
    if not paths:
        raise SystemExit("cls-ray ingest: give files or folders, --task or --world")
    if not args.no_ray:
        init_ray(cfg)
    report = ingest_paths(paths, cfg, stack.store, progress=not args.quiet, use_ray=not args.no_ray)
    for e in report.errors:
        print(f"error: {e}", file=console.stream())
    total = stack.store.count()
    print(report.describe(total, stack.store.name()))
    return {**report.to_dict(), "total": total}
