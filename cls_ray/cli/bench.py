"""`cls-ray bench rgr | retrieval | serve | chaos | fuzz | autoscale | consolidation | train | stream | continual`: each benchmark prints
its figures, writes a JSON report (and a plot where one helps) under `state_dir/reports/`."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from ray import serve

from actors.deploy import deploy
from actors.ray_cluster import connect_ray, init_ray, stop_ray, take_down
from actors.runtime import up
from cls_ray.cli.bench_service import bench_autoscale_cmd, bench_chaos_cmd, bench_fuzz_cmd
from cls_ray.cli.http import stack_up
from cls_ray.config import Config
from cls_ray.eval.ablation import ABLATION_ARMS, check_arms
from cls_ray.eval.bench_consolidation import bench_consolidation
from cls_ray.eval.bench_continual import bench_continual, check_stream, format_continual
from cls_ray.eval.bench_retrieval import bench_retrieval, format_retrieval_table
from cls_ray.eval.bench_rgr import bench_rgr, format_table
from cls_ray.eval.bench_serve import bench_serve, format_serve, serve_workload
from cls_ray.eval.bench_stream import bench_stream, format_stream
from cls_ray.eval.bench_train import bench_train
from cls_ray.eval.plots import plot_bench_continual, plot_bench_rgr, plot_bench_serve
from cls_ray.eval.reports import write_report
from cls_ray.model.loading import is_checkpoint
from cls_ray.prm.model import load_prm
from cls_ray.serving.keys import without_rate_limits
from cls_ray.serving.names import RETRIEVER
from cls_ray.stack import Stack
from cls_ray.storage import mirror_reports


def cmd_bench(args, cfg: Config) -> dict:
    run = {
        "rgr": bench_rgr_cmd,
        "retrieval": bench_retrieval_cmd,
        "serve": bench_serve_cmd,
        "chaos": bench_chaos_cmd,
        "fuzz": bench_fuzz_cmd,
        "autoscale": bench_autoscale_cmd,
        "consolidation": bench_consolidation_cmd,
        "train": bench_train_cmd,
        "stream": bench_stream_cmd,
        "continual": bench_continual_cmd,
    }[args.which]
    result = run(args, cfg)
    mirror_reports(cfg)  # a no-op without storage.uri
    return result


def _stack_with_documents(args, cfg: Config) -> Stack:
    stack = Stack(cfg)
    if stack.store.count() == 0:
        raise SystemExit(
            f"cls-ray bench {args.which}: the store is empty; run `cls-ray ingest --task`"
        )
    return stack


def _say_version(stack: Stack) -> str:
    name = stack.model_version.name
    print(f"model version: {name}")
    return name


def _per_group(args, cfg: Config) -> int | None:
    """Questions per group: `--per-group`, else `bench.per_family` on the world (thousands of
    questions), else all of a files task's."""
    if args.per_family:
        return args.per_family
    return cfg.bench.per_family if cfg.task.kind == "world" else None


def bench_rgr_cmd(args, cfg: Config) -> dict:
    stack = _stack_with_documents(args, cfg)
    result = bench_rgr(
        stack.task,
        stack.engine,
        stack.retriever,
        modes=cfg.bench.modes,
        per_family=_per_group(args, cfg),
        batch_size=cfg.engine.batch_size,
        progress=not args.quiet,
        **cfg.rgr_options(),
    )
    result["search_mode"] = cfg.store.search_mode
    result["model_version"] = _say_version(stack)
    report = write_report(cfg, "bench_rgr", result)
    png = plot_bench_rgr(result, report.with_suffix(".png"))
    print(format_table(result))
    print(f"report: {report}; plot: {png}")
    return result


def bench_retrieval_cmd(args, cfg: Config) -> dict:
    stack = _stack_with_documents(args, cfg)
    result = bench_retrieval(
        stack.task,
        stack.embedder,
        stack.store,
        k=cfg.rgr.top_k,
        per_group=_per_group(args, cfg),
    )
    report = write_report(cfg, "bench_retrieval", result)
    print(format_retrieval_table(result))
    print(f"report: {report}")
    return result


def bench_serve_cmd(args, cfg: Config) -> dict:
    """The served stack under load (the retriever replica owns the Milvus file: it is not
    opened here); the app comes down afterwards unless it was up before."""
    if not is_checkpoint(cfg.model_path):
        raise SystemExit(f"cls-ray bench serve: no model at {cfg.model_path}; run `cls-ray demo`")
    was_up = stack_up(cfg)
    if not was_up:  # the measured load comes from this one address: no per-caller limits
        cfg = without_rate_limits(cfg)
    started_ray = connect_ray(cfg, start=True)
    try:
        url = up(cfg)
        retriever = serve.get_deployment_handle(RETRIEVER, cfg.serve.app_name)
        if retriever.count.remote().result() == 0:
            raise SystemExit("cls-ray bench serve: the store is empty; run `cls-ray demo`")
        questions, queries = serve_workload(Stack(cfg).task)
        print(f"== bench serve at {url}: {len(questions)} eval questions of the task")
        result = bench_serve(
            cfg,
            functools.partial(deploy, cfg),
            retriever,
            questions,
            queries,
            n_requests=args.requests or cfg.bench.serve_requests,
            concurrency=args.concurrency or cfg.bench.serve_concurrency,
            progress=not args.quiet,
        )
    finally:
        if not was_up:
            take_down(cfg)
        if started_ray:
            stop_ray()
    report = write_report(cfg, "bench_serve", result)
    png = plot_bench_serve(result, report.with_suffix(".png"))
    print(format_serve(result))
    print(f"report: {report}; plot: {png}")
    return result


def _arm_names(args, default: Sequence[str]) -> list[str]:
    """`--arms` (comma-separated), else `default`."""
    if args.arms is None:
        return list(default)
    return [a.strip() for a in args.arms.split(",") if a.strip()]


def bench_consolidation_cmd(args, cfg: Config) -> dict:
    arms = [] if args.no_ablation else _arm_names(args, ABLATION_ARMS)
    try:
        check_arms(arms)
    except ValueError as e:
        raise SystemExit(f"cls-ray bench consolidation: --arms: {e}") from e
    stack = _stack_with_documents(args, cfg)
    prm = load_prm(cfg)
    init_ray(cfg, log_to_driver=not args.quiet)
    version = _say_version(stack)
    result = bench_consolidation(stack, prm, print, arms=arms)
    result["model_version"] = version
    report = write_report(cfg, "bench_consolidation", result)
    print(
        f"new family {result['new_family_before']:.2f} -> {result['new_family_after']:.2f}; "
        f"retention {result['retention_before']:.2f} -> {result['retention_after']:.2f}; "
        f"KL(base||candidate) {result['kl_base_candidate'] or float('nan'):.4f}"
    )
    for row in result.get("ablation", []):
        print(
            f"  {row['arm']:<18} new family {row['new_family_after']:.2f}  "
            f"retention {row['retention_after']:.2f}"
        )
    print(f"report: {report}")
    return result


def bench_continual_cmd(args, cfg: Config) -> dict:
    """Sleep after sleep over the world's skill stream, per composition arm (a copy of the
    state directory each); the accuracy matrix, forgetting, and a heat-map per arm."""
    arms = _arm_names(args, ("continue", "base"))
    try:
        check_stream(cfg, arms)
    except ValueError as e:
        raise SystemExit(f"cls-ray bench continual: {e}") from e
    stack = _stack_with_documents(args, cfg)
    from transformers import AutoTokenizer  # seconds to import: this command only

    tok = AutoTokenizer.from_pretrained(str(cfg.model_path))
    nouns = [r.noun for r in stack.task.world.relations.values()]
    missing = [
        n for n in nouns if tok.unk_token_id in tok(n, add_special_tokens=False)["input_ids"]
    ]
    if missing:
        raise SystemExit(
            f"cls-ray bench continual: the model's tokenizer has no {missing}: bootstrap a model "
            "on this world (`cls-ray bootstrap` with the same world.held_back_sequence)"
        )
    stack.release_store()  # each arm opens its own copy of the store
    prm = load_prm(cfg)
    init_ray(cfg, log_to_driver=not args.quiet)
    result = bench_continual(cfg, prm, arms, log=print)
    report = write_report(cfg, "bench_continual", result)
    png = plot_bench_continual(result, report.with_suffix(".png"))
    print(format_continual(result))
    print(f"report: {report}; plot: {png}")
    return result


def bench_train_cmd(args, cfg: Config) -> dict:
    stack = Stack(cfg)
    if not stack.model_ready():
        raise SystemExit("cls-ray bench train: no model; run `cls-ray bootstrap` first")
    init_ray(cfg, log_to_driver=not args.quiet)
    result = bench_train(stack, args.steps, log=print)
    report = write_report(cfg, "bench_train", result)
    print(
        f"samples/s: ray + deepspeed {result['samples_per_s_ray']:.1f}, trl "
        f"{result['samples_per_s_trl']:.1f}, ratio {result['ratio']:.2f}; peak RSS per worker "
        + ", ".join(f"zero-{k} {v:.0f} MB" for k, v in result["peak_rss_mb_per_worker"].items())
    )
    print(f"report: {report}")
    return result


def bench_stream_cmd(args, cfg: Config) -> dict:
    args.replicas = args.replicas or 2
    if args.replicas < 1:
        raise SystemExit("cls-ray bench stream: --replicas must be at least 1")
    size = {"hidden": 64, "layers": 2, "vocab": 1000} if args.smoke else {}
    result = bench_stream(args.replicas, **size, progress=print)
    report = write_report(cfg, "bench_stream", result)
    print(format_stream(result))
    print(f"report: {report}")
    return result
