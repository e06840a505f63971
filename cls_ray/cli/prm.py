"""`cls-ray prm train` and `cls-ray prm eval`: the process reward model."""

from __future__ import annotations

import ray

from actors.ray_cluster import init_ray
from actors.replay_buffer import ActorBuffer
from cls_ray.config import Config
from cls_ray.eval.plots import plot_prm_eval
from cls_ray.eval.reports import write_report
from cls_ray.prm.model import load_prm
from cls_ray.prm.pipeline import (
    describe_training,
    evaluate_prm,
    prepare_training,
    train_new_prm,
)
from cls_ray.replay.buffer import feedback_in_files
from cls_ray.stack import Stack
from cls_ray.storage import mirror_reports


def cmd_prm(args, cfg: Config) -> dict:
    result = prm_train(args, cfg) if args.action == "train" else prm_eval(args, cfg)
    mirror_reports(cfg)  # a no-op without storage.uri
    return result


def feedback_sessions(cfg: Config) -> list[dict]:
    """Sessions with user feedback: from the buffer actor when it runs (it owns the
    write-ahead log), else from the buffer's files."""
    if ray.is_initialized():
        try:
            return ActorBuffer.of_app(cfg.serve.app_name, timeout_s=60).with_feedback()
        except ValueError:
            pass
    return feedback_in_files(cfg)


def prm_train(args, cfg: Config) -> dict:
    stack = Stack(cfg)
    print(f"model version: {stack.model_version.name} (samples the trajectories to label)")
    examples, data = prepare_training(stack, feedback_sessions(cfg), log=print)
    init_ray(cfg, log_to_driver=not args.quiet)
    out, result = train_new_prm(cfg, examples, data, args.steps, log=print)
    write_report(cfg, "prm_train", result)
    print(describe_training(out, result))
    return result


def prm_eval(args, cfg: Config) -> dict:
    stack = Stack(cfg)
    print(f"model version: {stack.model_version.name} (samples the trajectories)")
    result = evaluate_prm(stack, load_prm(cfg), log=print)
    result["model_version"] = stack.model_version.name
    print(f"{'n':>3} {'family':10} {'greedy':>7} {'majority':>9} {'prm':>6}")
    for r in result["best_of_n"]:
        print(
            f"{r['n']:>3} {r['family']:10} {r['greedy']:>7.2f} {r['majority']:>9.2f} "
            f"{r['prm']:>6.2f}"
        )
    report = write_report(cfg, "prm_eval", result)
    png = plot_prm_eval(result, report.with_suffix(".png"))
    print(f"report: {report}; plot: {png}")
    return result
