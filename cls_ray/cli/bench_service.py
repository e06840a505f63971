"""The benchmarks that run an application of their own (`eval.sandbox`) and do to it what a
user's stack must never see: `bench chaos` injects faults under load, `bench fuzz` sends
schemathesis' generated requests as every kind of caller, `bench autoscale` loads it until
the generator scales up and watches it scale back down. The user's stack must be down (its
Milvus file has one owner)."""

from __future__ import annotations

import contextlib
import importlib.util

import ray

from actors.chaos import (
    Paused,
    fill_disk,
    kill_buffer,
    kill_replica,
    missing_sessions,
    replica_counts,
    wait_for_replicas,
)
from actors.ray_cluster import connect_ray, stop_ray, take_down
from actors.runtime import up
from cls_ray.cli.http import stack_up
from cls_ray.config import Config, with_overrides
from cls_ray.eval.bench_autoscale import (
    DECLARED_CPUS,
    autoscale_settings,
    bench_autoscale,
    format_autoscale,
    replica_cpus,
)
from cls_ray.eval.bench_chaos import Fault, bench_chaos, chaos_config, format_chaos
from cls_ray.eval.bench_fuzz import bench_fuzz, format_fuzz, fuzz_settings
from cls_ray.eval.bench_serve import serve_workload
from cls_ray.eval.plots import plot_bench_autoscale
from cls_ray.eval.reports import write_report
from cls_ray.eval.sandbox import sandbox_config
from cls_ray.model.loading import is_checkpoint
from cls_ray.serving.keys import KeyStore
from cls_ray.serving.names import GENERATOR, RETRIEVER
from cls_ray.stack import Stack


def _refuse_if_unready(what: str, cfg: Config) -> None:
    if not is_checkpoint(cfg.model_path):
        raise SystemExit(f"cls-ray bench {what}: no model at {cfg.model_path}; run `cls-ray demo`")
    if stack_up(cfg):
        raise SystemExit(
            f"cls-ray bench {what}: the stack is up; take it down first (`cls-ray down`): the "
            "bench runs an application of its own and needs the Milvus file to itself"
        )


def _none() -> None:
    return None


@contextlib.contextmanager
def _ray(cfg: Config):
    """Ray joined, or started (and stopped after) when none runs."""
    started = connect_ray(cfg, start=True)
    try:
        yield
    finally:
        if started:
            stop_ray()


@contextlib.contextmanager
def _app(app: Config):
    """The bench's application deployed; its URL. Taken down after, also when `up` failed
    half way."""
    try:
        yield up(app)
    finally:
        take_down(app)


def _report(cfg: Config, name: str, result: dict, text: str, plot=None) -> dict:
    report = write_report(cfg, name, result)
    print(text)
    print(f"report: {report}")
    if plot is not None:
        print(f"plot: {plot(result, report.with_suffix('.png'))}")
    return result


def bench_chaos_cmd(args, cfg: Config) -> dict:
    """Faults injected into an application of its own (`eval.bench_chaos.chaos_config`) under a
    bounded load; the user's stack must be down (its store has one owner)."""
    _refuse_if_unready("chaos", cfg)
    app = chaos_config(cfg)
    paused = Paused(app, RETRIEVER)
    with _ray(app), _app(app) as url:
        try:
            result = _chaos(args, app, url, paused)
        finally:
            paused.resume()  # never leave a process stopped
    return _report(cfg, "bench_chaos", result, format_chaos(result))


def _chaos(args, cfg: Config, url: str, paused: Paused) -> dict:
    fault_s = args.fault_seconds
    wait_for_replicas(cfg, GENERATOR, 2)
    questions, _ = serve_workload(Stack(cfg).task)
    print(f"== bench chaos at {url}: {len(questions)} eval questions, faults of {fault_s:g} s")
    faults = [
        Fault("kill a generator replica", lambda: kill_replica(cfg, GENERATOR)),
        Fault(f"stop the retriever {fault_s:g} s", paused.pause, paused.resume, fault_s),
        Fault("kill the replay buffer", lambda: kill_buffer(cfg)),
        # The buffer ends the fault itself after `fault_s`; nothing to heal here.
        Fault(f"WAL disk full {fault_s:g} s", lambda: fill_disk(cfg, fault_s), _none, fault_s),
    ]
    return bench_chaos(
        url,
        questions,
        faults,
        clients=args.concurrency or 4,
        sustainable=cfg.serve.max_concurrent_sessions,
        request_timeout_s=cfg.serve.limits.request_timeout_s,
        missing=lambda ids: missing_sessions(cfg, ids),
        settle=lambda: wait_for_replicas(cfg, GENERATOR, 2),
        after_s=args.after_seconds,
        overload_s=2 * fault_s,
        log=print,
    )


def bench_fuzz_cmd(args, cfg: Config) -> dict:
    """schemathesis against an application of its own (`eval.bench_fuzz.fuzz_settings`): every
    route, without a key and with a key of each role made for the run."""
    if importlib.util.find_spec("schemathesis") is None:  # a dev dependency, run as a CLI
        raise SystemExit("cls-ray bench fuzz: needs schemathesis (pip install 'cls-ray[dev]')")
    _refuse_if_unready("fuzz", cfg)
    app = sandbox_config(cfg, "fuzz", fuzz_settings())
    store = KeyStore(app.keys_path)
    keys: dict[str, str | None] = {"none": None}
    for role in ("user", "curator", "admin"):
        keys[role] = store.add(f"fuzz-{role}", role)[1]
    n = args.examples or 25
    with _ray(app), _app(app) as url:
        print(f"== bench fuzz at {url}: {n} examples an operation, callers {', '.join(keys)}")
        result = bench_fuzz(
            url,
            keys,
            max_examples=n,
            out_dir=cfg.state_path / "reports" / "fuzz",
            seed=args.seed,
            request_timeout_s=app.serve.limits.request_timeout_s + 5,
            log=print,
        )
    return _report(cfg, "bench_fuzz", result, format_fuzz(result))


def bench_autoscale_cmd(args, cfg: Config) -> dict:
    """The generator scaling up under a load and back down after it, on a local cluster that
    declares more CPUs than the machine has (`eval.bench_autoscale.autoscale_settings`)."""
    _refuse_if_unready("autoscale", cfg)
    most = args.replicas or 4
    if most < 2:
        raise SystemExit("cls-ray bench autoscale: --replicas (the most replicas) must be >= 2")
    # A cluster this bench starts declares more CPUs than the machine has; one it joins gives
    # each replica a share of what is free, so `most` of them fit next to the rest of the app.
    with _ray(with_overrides(cfg, {"ray.num_cpus": DECLARED_CPUS})):
        free = ray.available_resources().get("CPU", 0.0)
        per = replica_cpus(free, most)
        if per is None:
            raise SystemExit(
                f"cls-ray bench autoscale: the Ray cluster has {free:g} CPUs free, too few for "
                f"{most} generator replicas next to the rest of the application: stop it "
                "(`ray stop`) so the bench starts one of its own, or lower --replicas"
            )
        app = sandbox_config(cfg, "autoscale", autoscale_settings(most, per))
        print(f"Ray: {free:g} CPUs free; each generator replica takes {per:g}")
        with _app(app) as url:
            questions, _ = serve_workload(Stack(app).task)
            clients = args.concurrency or 2 * most
            print(f"== bench autoscale at {url}: generator 1..{most} replicas, {clients} clients")
            result = bench_autoscale(
                url,
                questions,
                lambda: replica_counts(app, GENERATOR),
                clients=clients,
                load_s=args.load_seconds,
                min_replicas=app.serve.generator.autoscaling.min_replicas,
                max_replicas=most,
                request_timeout_s=app.serve.limits.request_timeout_s,
                log=print,
            )
    return _report(cfg, "bench_autoscale", result, format_autoscale(result), plot_bench_autoscale)
