"""`cls-ray demo`: the main job on the embedded default (see `cls_ray.demo`), on Ray."""

from __future__ import annotations

from actors.runtime import RayRuntime
from cls_ray.config import Config
from cls_ray.demo import run_demo, summary
from cls_ray.stack import Stack
from cls_ray.storage import mirror_reports


def cmd_demo(args, cfg: Config) -> dict:
    runtime = RayRuntime(cfg, log_to_driver=not args.quiet)
    report = run_demo(Stack(cfg), runtime, print, progress=not args.quiet)
    for line in summary(report):
        print(line)
    mirror_reports(cfg)  # a no-op without storage.uri
    return {k: v for k, v in report.items() if k != "r_tau"}
