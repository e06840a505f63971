"""`cls-ray`: one command per job a user runs. Every command takes `--config` and `--set`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from cls_ray.config import Config, ConfigError, load_config

logger = logging.getLogger("cls_ray")

DEFAULT_CONFIG = "configs/local.yaml"


def make_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=os.environ.get("CLS_RAY_CONFIG"),
        help=f"YAML config (default: $CLS_RAY_CONFIG, else {DEFAULT_CONFIG} if present)",
    )
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set rgr.top_k=6 (repeatable)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON object last")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    common.add_argument(
        "--smoke",
        action="store_true",
        help="a small size of the job, for checks (a cluster's first run, CI); --set still wins",
    )

    p = argparse.ArgumentParser(prog="cls-ray", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bootstrap", parents=[common], help="build the small default model")
    b.add_argument("--force", action="store_true", help="rebuild even if it exists")
    i = sub.add_parser("ingest", parents=[common], help="ingest .jsonl/.txt/.md documents")
    i.add_argument("paths", nargs="*", help="files or folders")
    i.add_argument("--world", action="store_true", help="ingest the built-in world's corpus")
    i.add_argument("--no-ray", action="store_true", help="embed in this process, without Ray Data")
    a = sub.add_parser("ask", parents=[common], help="answer a question with RGR")
    a.add_argument("question", nargs="?", help="the question (default: a held-out world one)")
    a.add_argument("--mode", choices=["rgr", "single", "none"], default="rgr")
    a.add_argument("--local", action="store_true", help="run here even if the stack is up")
    sub.add_parser("up", parents=[common], help="start Ray (or join RAY_ADDRESS) and deploy")
    sub.add_parser("down", parents=[common], help="delete the Serve app; stop a Ray we started")
    sub.add_parser("status", parents=[common], help="health, versions and buffer of the stack")
    pr = sub.add_parser("promote", parents=[common], help="make a registered version current")
    pr.add_argument("version")
    sub.add_parser("rollback", parents=[common], help="return to the previously promoted version")
    bench = sub.add_parser("bench", parents=[common], help="benchmarks")
    bench.add_argument(
        "which", choices=["rgr", "retrieval", "serve", "consolidation", "train", "stream"]
    )
    bench.add_argument("--replicas", type=int, default=2, help="stream: receiving processes")
    bench.add_argument("--steps", type=int, default=None, help="train: optimizer steps")
    bench.add_argument("--requests", type=int, default=None, help="serve: sessions per load")
    bench.add_argument("--concurrency", type=int, default=None, help="serve: sessions at once")
    bench.add_argument("--per-family", type=int, default=None, help="questions per family")
    bench.add_argument(
        "--no-ablation", action="store_true", help="consolidation: skip the ablation arms"
    )
    prm = sub.add_parser("prm", parents=[common], help="the process reward model")
    prm.add_argument("action", choices=["train", "eval"])
    prm.add_argument("--steps", type=int, default=None, help="train: optimizer steps")
    sl = sub.add_parser("sleep", parents=[common], help="consolidate buffered sessions (SFT)")
    sl.add_argument("--limit", type=int, default=1000, help="sessions to consume at most")
    pp = sub.add_parser(
        "ppo", parents=[common], help="PPO on buffered sessions and fresh rollouts (step rewards)"
    )
    pp.add_argument("--limit", type=int, default=1000, help="sessions to consume at most")
    cl = sub.add_parser("cluster", parents=[common], help="KubeRay manifests from the config")
    cl.add_argument("action", choices=["render"])
    cl.add_argument("--out", default="cluster/kuberay", help="folder of the manifests")
    cl.add_argument("--image", default=None, help="the cls-ray image the pods run")
    cl.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the files differ"
    )
    d = sub.add_parser("demo", parents=[common], help="the main job on the embedded default")
    d.add_argument("--per-family", type=int, default=None, help="bench questions per family")
    return p


# `--smoke`: every long job at a size that checks the path end to end in a minute or two.
SMOKE = [
    "model.bootstrap.steps=20",
    "bench.per_family=2",
    "bench.serve_requests=8",
    "prm.steps=10",
    "prm.questions_per_family=4",
    "prm.eval_per_family=2",
    "prm.best_of_n=[1,4]",
    "prm.best_of_n_per_family=1",
    "consolidate.steps=10",
    "consolidate.ppo_steps=4",
    "consolidate.batch_size=8",
    "consolidate.eval_per_family=2",
    "consolidate.new_per_family=2",
    "consolidate.sample_n=2",
    "consolidate.ppo_fresh_per_family=1",
]


def resolve_config(args) -> Config:
    path = args.config
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    overrides = [*SMOKE, *args.overrides] if getattr(args, "smoke", False) else args.overrides
    return load_config(path, overrides)


def _emit(args, obj: dict) -> None:
    if args.json:
        print(json.dumps(obj, default=str))


def cmd_bootstrap(args, stack) -> dict:
    from cls_ray.model.bootstrap import bootstrap

    if stack.model_ready() and not args.force:
        metrics_file = stack.cfg.model_path / "bootstrap_metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        print(f"model already built at {stack.cfg.model_path} (use --force to rebuild)")
        return {"path": str(stack.cfg.model_path), "built": False, **metrics}
    metrics = bootstrap(stack.cfg, stack.world, progress=not args.quiet)
    print(
        f"built {stack.cfg.model_path}: {metrics['params']:,} parameters, "
        f"{metrics['steps']} steps in {metrics['train_seconds']} s, loss "
        f"{metrics['loss_first']} -> {metrics['loss_last']}, next-step accuracy "
        f"{metrics['episode_step_accuracy']:.3f} (grounded "
        f"{metrics['episode_step_accuracy_grounded']:.3f})"
    )
    return {"path": str(stack.cfg.model_path), "built": True, **metrics}


def start_local_ray(num_cpus: int | None, log_to_driver: bool = False) -> None:
    """Starts a Ray instance on this machine (no dashboard), quiet Ray Data progress bars."""
    import ray

    # A loaded machine can miss Ray's start-up deadline (GCS or raylet); Ray raises a plain
    # Exception for that, so any failure of the start gets two more tries.
    for attempt in range(3):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver)
            break
        except Exception:  # noqa: BLE001
            ray.shutdown()
            if attempt == 2:
                raise
            logging.getLogger(__name__).warning("Ray did not start; trying again")
            time.sleep(5)
    _quiet_data()


def _quiet_data() -> None:
    import ray

    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
    except AttributeError:
        pass


def _init_ray(cfg: Config, log_to_driver: bool = False) -> None:
    import ray

    if ray.is_initialized():
        return
    # Inside `ray job submit` the job's cluster is in RAY_ADDRESS: join it.
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=log_to_driver)
        _quiet_data()
    else:
        start_local_ray(cfg.ray.num_cpus, log_to_driver)


def cmd_ingest(args, stack) -> dict:
    from cls_ray.memory.ingest import ingest_paths

    paths: list = list(args.paths)
    if args.world:
        paths.append(stack.export_world())
    if not paths:
        raise SystemExit("cls-ray ingest: give files or folders, or --world")
    if not args.no_ray:
        _init_ray(stack.cfg)
    report = ingest_paths(
        paths, stack.cfg, stack.store, progress=not args.quiet, use_ray=not args.no_ray
    )
    for e in report.errors:
        print(f"error: {e}", file=sys.stderr)
    total = stack.store.count()
    print(
        f"ingested {report.written} new documents from {report.files} file(s); "
        f"{report.skipped_existing} already stored; {len(report.errors)} bad line(s); "
        f"{total} documents in {stack.store.name()}"
    )
    return {**report.to_dict(), "total": total}


def print_trajectory(tr) -> None:
    print(f"question: {tr.question}")
    for n, s in enumerate(tr.steps, 1):
        kind = "answer" if s.is_answer else f"step {n}"
        print(f"  {kind}: {s.text}")
        if s.query is not None:
            print(f"      query: {s.query}")
        texts = {d.id: d.text for d in s.retrieved}
        for c in s.cited:
            print(f"      cites {c}: {texts.get(c, '')}")
    print(f"answer: {tr.answer if tr.answer is not None else '(none within the step limit)'}")
    print(
        f"model version: {tr.model_version}; retrieval {tr.retrieval_s:.3f} s, "
        f"generation {tr.generation_s:.3f} s"
    )


def _url(cfg: Config) -> str:
    return f"http://{cfg.serve.host}:{cfg.serve.port}"


def _stack_up(cfg: Config) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(_url(cfg) + "/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _http_json(method: str, url: str, body: dict | None = None, timeout: float = 300) -> dict:
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {url}: HTTP {e.code}: {e.read().decode()[:500]}") from None


def cmd_ask(args, stack) -> dict:
    from cls_ray.rgr import run_rgr

    question = args.question
    if not getattr(args, "local", True) and question and _stack_up(stack.cfg):
        res = _http_json(
            "POST", _url(stack.cfg) + "/v1/rgr", {"question": question, "mode": args.mode}
        )
        if not args.json:
            print(f"question: {question}")
            for n, st in enumerate(res["steps"], 1):
                print(f"  {'answer' if st['is_answer'] else f'step {n}'}: {st['text']}")
                for c in st["citations"]:
                    print(f"      cites {c['id']}: {c['text']}")
            print(f"answer: {res['answer']}")
            print(f"model version: {res['model_version']}; session {res['session_id']} (served)")
        return res
    if not question:
        qs = stack.world.questions("heldout", families=stack.world.trained_families, per_family=1)
        question = next(q for q in qs if q.hops == 3).text
    if not question.strip():
        raise SystemExit("cls-ray ask: the question is empty")
    cfg = stack.cfg
    tr = run_rgr(
        [question],
        stack.engine,
        None if args.mode == "none" else stack.retriever,
        mode=args.mode,
        temperature=cfg.engine.temperature,
        **cfg.rgr_options(),
    )[0]
    if not args.json:
        print_trajectory(tr)
    return tr.to_dict()


def cmd_bench(args, stack) -> dict:
    from cls_ray.eval.bench_rgr import bench_rgr, format_table
    from cls_ray.eval.plots import plot_bench_rgr

    cfg = stack.cfg
    if args.which == "serve":  # the retriever replica owns the Milvus file: not opened here
        return cmd_bench_serve(args, stack)
    if args.which == "train":
        return cmd_bench_train(args, stack)
    if args.which == "stream":
        return cmd_bench_stream(args, stack)
    if stack.store.count() == 0:
        raise SystemExit(
            f"cls-ray bench {args.which}: the store is empty; run `cls-ray ingest --world`"
        )
    if args.which == "retrieval":
        return cmd_bench_retrieval(args, stack)
    if args.which == "consolidation":
        return cmd_bench_consolidation(args, stack)
    result = bench_rgr(
        stack.world,
        stack.engine,
        stack.retriever,
        modes=cfg.bench.modes,
        per_family=args.per_family or cfg.bench.per_family,
        batch_size=cfg.engine.batch_size,
        progress=not args.quiet,
        **cfg.rgr_options(),
    )
    result["search_mode"] = cfg.store.search_mode
    report = _write_report(cfg, "bench_rgr", result)
    png = plot_bench_rgr(result, report.with_suffix(".png"))
    print(format_table(result))
    print(f"report: {report}" + (f"; plot: {png}" if png else ""))
    return result


def _write_report(cfg: Config, name: str, result: dict) -> Path:
    out = cfg.state_path / "reports" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return out


def cmd_bench_serve(args, stack) -> dict:
    from ray import serve

    from actors.deploy import deploy
    from cls_ray.eval.bench_serve import bench_serve, format_serve
    from cls_ray.eval.plots import plot_bench_serve
    from cls_ray.rgr import step_query

    cfg = stack.cfg
    if not (cfg.model_path / "config.json").exists():
        raise SystemExit(f"cls-ray bench serve: no model at {cfg.model_path}; run `cls-ray demo`")
    was_up = _stack_up(cfg)
    started_ray = _connect_ray(cfg, start=True)
    try:
        url = deploy(cfg)
        n_docs = serve.get_deployment_handle("retriever", cfg.serve.app_name).count.remote()
        if n_docs.result() == 0:
            raise SystemExit("cls-ray bench serve: the store is empty; run `cls-ray demo`")
        world = stack.world
        qs = world.questions("heldout", world.trained_families, per_family=4)
        queries = [step_query(q.text, []) for q in qs] + [
            step_query(q.text, [fact.text for fact in q.chain[:1]]) for q in qs
        ]
        print(f"== bench serve at {url}: {len(qs)} held-out questions")
        result = bench_serve(
            cfg,
            [q.text for q in qs],
            queries,
            n_requests=args.requests or cfg.bench.serve_requests,
            concurrency=args.concurrency or cfg.bench.serve_concurrency,
            progress=not args.quiet,
        )
    finally:
        if not was_up:
            serve.delete(cfg.serve.app_name)
            _stop_state_actors(cfg)
        if started_ray:
            _stop_ray()
    report = _write_report(cfg, "bench_serve", result)
    png = plot_bench_serve(result, report.with_suffix(".png"))
    print(format_serve(result))
    print(f"report: {report}" + (f"; plot: {png}" if png else ""))
    return result


def cmd_prm(args, stack) -> dict:
    if args.action == "train":
        return cmd_prm_train(args, stack)
    return cmd_prm_eval(args, stack)


def cmd_prm_train(args, stack) -> dict:
    from cls_ray.prm.pipeline import next_prm_path, training_examples
    from cls_ray.prm.train import train_prm

    cfg = stack.cfg
    if stack.store.count() == 0:
        raise SystemExit("cls-ray prm train: the store is empty; run `cls-ray demo` first")
    examples, data = training_examples(stack, log=print)
    print(
        f"prm data: {data['trajectories']} trajectories, {data['labelled_steps']} labelled steps "
        f"({data['wrong_steps']} wrong), {data['human_trajectories']} from user feedback"
    )
    out = next_prm_path(cfg)
    print(
        f"== training the PRM on Ray Train: {cfg.prm.num_workers} workers, DeepSpeed ZeRO-"
        f"{cfg.prm.zero_stage}, {args.steps or cfg.prm.steps} steps"
    )
    _init_ray(cfg, log_to_driver=not args.quiet)
    metrics = train_prm(cfg, examples, out, steps=args.steps)
    result = {**metrics, "data": data}
    _write_report(cfg, "prm_train", result)
    print(
        f"PRM {out.name} saved at {out}: loss {metrics.get('first_loss', float('nan')):.4f} -> "
        f"{metrics.get('loss', float('nan')):.4f} in {metrics['seconds']:.0f} s"
    )
    return result


def _load_prm(cfg: Config, command: str):
    """The newest trained PRM (or `prm.path`), or a message naming the command that needs it."""
    from cls_ray.prm.model import ProcessRewardModel
    from cls_ray.prm.pipeline import latest_prm

    path = latest_prm(cfg)
    if path is None:
        raise SystemExit(f"cls-ray {command}: no trained PRM; run `cls-ray prm train` first")
    return ProcessRewardModel.load(path, cfg.prm.aggregation)


def cmd_prm_eval(args, stack) -> dict:
    from cls_ray.prm.evaluate import best_of_n, step_metrics
    from cls_ray.prm.pipeline import eval_examples

    cfg = stack.cfg
    prm = _load_prm(cfg, "prm eval")
    path = prm.path
    print(f"== PRM {path}: step labels on held-out trajectories")
    examples = eval_examples(stack)
    scores = prm.score_many([(e.prompt, e.completions, e.evidence) for e in examples])
    result = {"prm": str(path), "aggregation": cfg.prm.aggregation}
    result.update(step_metrics(examples, scores, cfg.prm.aggregation))
    print(
        f"step_f1 {result['step_f1']:.3f} (correct {result['step_f1_correct']:.3f}, wrong "
        f"{result['step_f1_wrong']:.3f}); first_error_accuracy "
        f"{result['first_error_accuracy']:.3f}; auroc_tau {result['auroc_tau']:.3f} on "
        f"{result['trajectories']} trajectories ({result['wrong_trajectories']} wrong)"
    )
    world = stack.world
    qs = world.questions("heldout", per_family=cfg.prm.best_of_n_per_family, seed=cfg.prm.seed + 2)
    print(f"== best-of-N on {len(qs)} held-out questions, N in {cfg.prm.best_of_n}")
    rows = best_of_n(
        prm,
        qs,
        stack.engine,
        stack.retriever,
        ns=cfg.prm.best_of_n,
        temperature=cfg.prm.sample_temperature,
        seed=cfg.prm.seed,
        **cfg.rgr_options(),
    )
    result["best_of_n"] = rows
    print(f"{'n':>3} {'family':10} {'greedy':>7} {'majority':>9} {'prm':>6}")
    for r in rows:
        print(
            f"{r['n']:>3} {r['family']:10} {r['greedy']:>7.2f} {r['majority']:>9.2f} "
            f"{r['prm']:>6.2f}"
        )
    report = _write_report(cfg, "prm_eval", result)
    from cls_ray.eval.plots import plot_prm_eval

    png = plot_prm_eval(result, report.with_suffix(".png"))
    print(f"report: {report}" + (f"; plot: {png}" if png else ""))
    return result


def cmd_sleep(args, stack) -> dict:
    """`cls-ray sleep` / `cls-ray ppo`: through the serving application when it is up (its
    buffer actor, its retriever, a broadcast on promotion), on the state directory otherwise."""
    from cls_ray.consolidate.job import run_consolidation

    cfg = stack.cfg
    method = "ppo" if args.command == "ppo" else "sft"
    if _stack_up(cfg):
        _connect_ray(cfg, start=False)
    else:
        _init_ray(cfg, log_to_driver=not args.quiet)
    try:
        result = run_consolidation(cfg, method, args.limit, print)
    except ValueError as e:
        raise SystemExit(f"cls-ray {args.command}: {e}") from None
    print(
        f"{result['version']}: {'promoted' if result['promoted'] else 'kept as a candidate'} "
        f"({result['reason']})"
    )
    return result


def cmd_bench_consolidation(args, stack) -> dict:
    from cls_ray.consolidate.sleep import bench_consolidation

    cfg = stack.cfg
    prm = _load_prm(cfg, "bench consolidation")
    _init_ray(cfg, log_to_driver=not args.quiet)
    result = bench_consolidation(stack, prm, print, arms=not args.no_ablation)
    report = _write_report(cfg, "bench_consolidation", result)
    print(
        f"new family {result['new_family_before']:.2f} -> {result['new_family_after']:.2f}; "
        f"retention {result['retention_before']:.2f} -> {result['retention_after']:.2f}; "
        f"KL(base||candidate) {result['kl_base_candidate']:.4f}"
    )
    for row in result.get("ablation", []):
        print(
            f"  {row['arm']:<18} new family {row['new_family_after']:.2f}  "
            f"retention {row['retention_after']:.2f}"
        )
    print(f"report: {report}")
    return result


def cmd_bench_train(args, stack) -> dict:
    from cls_ray.eval.bench_train import bench_train

    cfg = stack.cfg
    if not stack.model_ready():
        raise SystemExit("cls-ray bench train: no model; run `cls-ray bootstrap` first")
    _init_ray(cfg, log_to_driver=not args.quiet)
    result = bench_train(stack, args.steps, log=print)
    report = _write_report(cfg, "bench_train", result)
    print(
        f"samples/s: ray + deepspeed {result['samples_per_s_ray']:.1f}, trl "
        f"{result['samples_per_s_trl']:.1f}, ratio {result['ratio']:.2f}; peak RSS per worker "
        + ", ".join(f"zero-{k} {v:.0f} MB" for k, v in result["peak_rss_mb_per_worker"].items())
    )
    print(f"report: {report}")
    return result


def cmd_bench_stream(args, stack) -> dict:
    from cls_ray.eval.bench_stream import bench_stream, format_stream

    if args.replicas < 1:
        raise SystemExit("cls-ray bench stream: --replicas must be at least 1")
    size = {"hidden": 64, "layers": 2, "vocab": 1000} if args.smoke else {}
    result = bench_stream(args.replicas, **size, progress=print)
    report = _write_report(stack.cfg, "bench_stream", result)
    print(format_stream(result))
    print(f"report: {report}")
    return result


def cmd_bench_retrieval(args, stack) -> dict:
    from cls_ray.eval.bench_retrieval import bench_retrieval, format_retrieval_table

    cfg = stack.cfg
    result = bench_retrieval(
        stack.world,
        stack.embedder,
        stack.store,
        k=cfg.rgr.top_k,
        per_family=args.per_family or cfg.bench.per_family,
    )
    report = _write_report(cfg, "bench_retrieval", result)
    print(format_retrieval_table(result))
    print(f"report: {report}")
    return result


def cmd_demo(args, stack) -> dict:
    """The main job: build what is missing, serve simulated users, sleep, promote, measure,
    report."""
    import ray
    from ray import serve

    from actors.deploy import deploy
    from cls_ray.demo import markdown, plot_demo, run_loop
    from cls_ray.prm.pipeline import latest_prm

    cfg = stack.cfg
    t_start = time.time()
    print("== 1/6 bootstrap: the small default model")
    args.force = False
    cmd_bootstrap(args, stack)
    print("== 2/6 ingest: the built-in world into Milvus")
    args.paths, args.world, args.no_ray = [], True, True
    cmd_ingest(args, stack)
    # Milvus Lite's in-process server keeps indexing after an ingest; stop it while Ray starts
    # (the store reopens on first use).
    stack.store.close(release=True)
    stack.__dict__.pop("store", None)
    stack.__dict__.pop("retriever", None)
    # Serving replicas idle while the sleep trains: logical CPUs beyond the cores let both fit.
    ray_cfg = cfg.model_copy(
        update={"ray": cfg.ray.model_copy(update={"num_cpus": max(4, cfg.ray.num_cpus or 0)})}
    )
    own_ray = not ray.is_initialized()
    _init_ray(ray_cfg, log_to_driver=not args.quiet)
    if latest_prm(cfg) is None:
        print("== 3/6 prm train: the process reward model (Ray Train + DeepSpeed)")
        args.steps, json_flag, args.json = None, args.json, False
        cmd_prm_train(args, stack)
        args.json = json_flag
    else:
        print(f"== 3/6 prm: using {latest_prm(cfg)}")
    # The serving retriever owns the Milvus Lite file from here on.
    stack.store.close(release=True)
    for part in ("store", "retriever"):
        stack.__dict__.pop(part, None)
    print("== 4/6 serve: the application on Ray Serve")
    # The demo prints its own progress; replicas' per-request lines would bury it.
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"access_log": False})})
    url = deploy(cfg)
    print(f"   {url}")
    try:
        print("== 5/6 users, scores, sleep, promotion, measurement")
        report = run_loop(cfg, stack.world, url, print)
    finally:
        serve.delete(cfg.serve.app_name)
        serve.shutdown()
        _stop_state_actors(cfg)
        if own_ray:
            ray.shutdown()
    print("== 6/6 report")
    out_dir = cfg.state_path / "reports" / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    report["seconds"] = time.time() - t_start
    (out_dir / "demo.json").write_text(json.dumps(report, indent=2))
    plots = plot_demo(report, out_dir)
    md = out_dir / "report.md"
    md.write_text(markdown(report, plots))
    b, a, s = report["before"], report["after"], report["sleep"]
    print(f"{'':<26}{'new family':>12}{'old families':>14}")
    print(
        f"{'before (' + ', '.join(b['versions']) + ')':<26}{b['new_family']:>12.2f}{b['old_families']:>14.2f}"
    )
    print(
        f"{'after (' + ', '.join(a['versions']) + ')':<26}{a['new_family']:>12.2f}{a['old_families']:>14.2f}"
    )
    print(
        f"retention gate {'passed' if s['passes_gate'] else 'refused'}: {s['reason']}; "
        f"{s['version']} {'promoted' if s['promoted'] else 'kept as a candidate'}"
    )
    print(f"report: {md} ({(time.time() - t_start) / 60:.0f} min)")
    return {k: v for k, v in report.items() if k != "r_tau"}


def _connect_ray(cfg: Config, start: bool) -> bool:
    """Joins `ray.address` / RAY_ADDRESS / a running local head; with `start`, starts a head.
    Returns True when this call started it."""
    import subprocess

    import ray

    address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=address, log_to_driver=False, namespace="cls-ray")
        return False
    except (ConnectionError, RuntimeError):
        if not start or address != "auto":
            raise SystemExit(f"no Ray cluster at {address}; run `cls-ray up` first") from None
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    if cfg.ray.num_cpus:
        cmd.append(f"--num-cpus={cfg.ray.num_cpus}")
    subprocess.run(cmd, check=True, capture_output=True)
    ray.init(address="auto", log_to_driver=False, namespace="cls-ray")
    return True


def cmd_up(args, stack) -> dict:
    from actors.deploy import deploy

    started = _connect_ray(stack.cfg, start=True)
    url = deploy(stack.cfg)
    marker = stack.cfg.state_path / "ray-started-by-cls-ray"
    if started:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("1")
    print(f"cls-ray is serving at {url} (OpenAPI: {url}/docs)")
    return {"url": url, "started_ray": started}


def _stop_state_actors(cfg: Config) -> None:
    """The buffer, registry and scheduler actors are detached; their state is on disk, so
    stopping them loses nothing."""
    import ray

    from actors.registry import registry_actor_name
    from actors.replay_buffer import buffer_actor_name
    from actors.scheduler import scheduler_actor_name

    app = cfg.serve.app_name
    for name in (buffer_actor_name(app), registry_actor_name(app), scheduler_actor_name(app)):
        try:
            ray.kill(ray.get_actor(name, namespace="cls-ray"), no_restart=True)
        except ValueError:
            pass


def _stop_ray() -> None:
    """Stops Serve and the local Ray cluster this process's command started."""
    import subprocess

    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop"], capture_output=True)


def cmd_down(args, stack) -> dict:
    from ray import serve

    _connect_ray(stack.cfg, start=False)
    try:
        serve.delete(stack.cfg.serve.app_name)
    except Exception as e:  # noqa: BLE001 - nothing deployed is fine when going down
        logger.info("no app to delete: %s", e)
    _stop_state_actors(stack.cfg)
    marker = stack.cfg.state_path / "ray-started-by-cls-ray"
    stopped = marker.exists()
    if stopped:
        _stop_ray()
        marker.unlink()
    print("cls-ray is down" + (" (and the Ray cluster it started is stopped)" if stopped else ""))
    return {"stopped_ray": stopped}


def cmd_status(args, stack) -> dict:
    from actors.deploy import registry_for

    cfg = stack.cfg
    out: dict = {"url": _url(cfg), "up": _stack_up(cfg)}
    out["versions"] = registry_for(cfg).list() if cfg.model_path.exists() else []
    from cls_ray.prm.pipeline import latest_prm

    prm = latest_prm(cfg)
    out["prm"] = str(prm) if prm else None
    if out["up"]:
        out["health"] = _http_json("GET", _url(cfg) + "/healthz")
        import ray

        _connect_ray(cfg, start=False)
        try:
            from actors.replay_buffer import buffer_actor_name

            buf = ray.get_actor(buffer_actor_name(cfg.serve.app_name), namespace="cls-ray")
            out["buffer"] = ray.get(buf.stats.remote(), timeout=30)
        except ValueError:
            out["buffer"] = None
        from ray import serve

        apps = serve.status().applications
        app = apps.get(cfg.serve.app_name)
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


def cmd_promote(args, stack) -> dict:
    from actors.deploy import promote, registry_for

    if _stack_up(stack.cfg):
        _connect_ray(stack.cfg, start=False)
        v = promote(stack.cfg, args.version)
    else:
        v = registry_for(stack.cfg).promote(args.version)
    print(f"current version: {v.name}")
    return v.model_dump()


def cmd_rollback(args, stack) -> dict:
    from actors.deploy import registry_for, rollback

    if _stack_up(stack.cfg):
        _connect_ray(stack.cfg, start=False)
        v = rollback(stack.cfg)
    else:
        v = registry_for(stack.cfg).rollback()
    print(f"current version: {v.name}")
    return v.model_dump()


def cmd_cluster(args, stack) -> dict:
    from cls_ray.cluster import IMAGE, manifests, render, render_text

    if not args.config:
        raise ValueError("--config names the cluster config the manifests are built from")
    image = args.image or IMAGE
    out = Path(args.out)
    if args.check:
        stale = [
            name
            for name, docs in manifests(stack.cfg, args.config, image).items()
            if not (out / name).exists()
            or (out / name).read_text() != render_text(docs, args.config)
        ]
        for name in stale:
            print(f"{out / name}: differs from what {args.config} builds", file=sys.stderr)
        if stale:
            raise ValueError(f"{len(stale)} manifest(s) drifted: run `cls-ray cluster render`")
        print(f"{out}: up to date with {args.config}")
        return {"stale": []}
    paths = render(stack.cfg, args.config, out, image)
    for p in paths:
        print(f"wrote {p}")
    return {"written": [str(p) for p in paths]}


COMMANDS = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "bootstrap": cmd_bootstrap,
    "ingest": cmd_ingest,
    "ask": cmd_ask,
    "bench": cmd_bench,
    "prm": cmd_prm,
    "sleep": cmd_sleep,
    "ppo": cmd_sleep,
    "demo": cmd_demo,
    "cluster": cmd_cluster,
}


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in (
        "httpx",
        "urllib3",
        "filelock",
        "transformers",
        "ray",
        "pymilvus",
        "milvus_lite",
        "faiss",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Milvus Lite's in-process gRPC server logs every call it does not implement (pymilvus
    # probes AllocTimestamp and falls back); that is not an error of ours.
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cfg = resolve_config(args)
    except ConfigError as e:
        print(f"cls-ray: {e}", file=sys.stderr)
        return 2
    from cls_ray.stack import Stack

    stack = Stack(cfg)
    try:
        result = COMMANDS[args.command](args, stack)
        if args.command in ("bench", "demo", "prm"):
            from cls_ray.storage import mirror_reports

            mirror_reports(cfg)  # a no-op without storage.uri
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"cls-ray {args.command}: {e}", file=sys.stderr)
        return 1
    _emit(args, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
