"""`cls-ray bench serve`: a bounded concurrent load on the deployed app over loopback HTTP.

Four measurements, in one run, on the same deployment:
1. the load itself: `requests` RGR sessions (`POST /v1/rgr`), `concurrency` at a time, with
   batching as configured: throughput, latency percentiles, failures;
2. the same load with the generator's batch size set to 1 (through `user_config`, so the same
   replicas): `batched_generation_speedup` = sessions/s batched over unbatched;
3. the retriever alone through its deployment handle, `concurrency` callers at a time, batch size
   as configured and then 1: `batched_retrieval_speedup` = queries/s batched over unbatched;
4. a hot swap: a LoRA adapter version is registered and promoted; `swap_seconds` runs from the
   promote call until the service answers on the new version (every replica reconfigured); the
   bench then rolls it back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests

from cls_ray import console
from cls_ray.config import Config
from cls_ray.model.loading import load_model_and_tokenizer, save_version
from cls_ray.registry import registry_for
from cls_ray.rgr import step_query
from cls_ray.task import Task

# Deploys the application on a version with batch sizes (`actors.deploy.deploy` bound to a
# config): `deploy(version, max_batch_size=..., session_batch_size=...,
# retriever_max_batch_size=...)` returns the URL once every replica serves it.
Deploy = Callable[..., str]


def http_load(
    url: str,
    questions: Sequence[str],
    n: int,
    concurrency: int,
    on_done: Callable[[], None] | None = None,
    timeout_s: float = 300.0,
) -> dict:
    """`n` RGR sessions, `concurrency` in flight; every request is bounded by `timeout_s`."""
    latencies: list[float] = []
    failures: list[str] = []
    versions: dict[str, int] = {}
    lock = threading.Lock()
    session = threading.local()

    def one(i: int) -> None:
        s = getattr(session, "s", None) or requests.Session()
        session.s = s
        t0 = time.perf_counter()
        try:
            r = s.post(
                f"{url}/v1/rgr", json={"question": questions[i % len(questions)]}, timeout=timeout_s
            )
            ok = r.status_code == 200
            version = r.json().get("model_version") if ok else None
            err = None if ok else f"{r.status_code}: {r.text[:200]}"
        except Exception as e:  # noqa: BLE001 - a failed request is a measured outcome
            ok, version, err = False, None, repr(e)[:200]
        dt = time.perf_counter() - t0
        with lock:
            if ok:
                latencies.append(dt)
                versions[version] = versions.get(version, 0) + 1
            else:
                failures.append(err)
        if on_done:
            on_done()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {
        "requests": n,
        "failed": len(failures),
        "failures": failures[:5],
        "wall_s": wall,
        "throughput_rps": len(latencies) / wall,
        "latency_p50_s": float(np.percentile(lat, 50)),
        "latency_p99_s": float(np.percentile(lat, 99)),
        "versions": versions,
    }


def retriever_load(handle, queries: Sequence[str], k: int, per_caller: int, concurrency: int):
    """`concurrency` callers (one event loop, as an ingress has), each sending `per_caller`
    single-query requests one after another."""

    async def caller(c: int) -> int:
        for j in range(per_caller):
            q = queries[(c * per_caller + j) % len(queries)]
            await handle.retrieve.remote({"queries": [q], "k": k, "exclude": None})
        return per_caller

    async def run() -> int:
        return sum(await asyncio.gather(*(caller(c) for c in range(concurrency))))

    t0 = time.perf_counter()
    done = asyncio.run(run())
    wall = time.perf_counter() - t0
    return {"queries": done, "wall_s": wall, "qps": done / wall}


def make_swap_adapter(cfg: Config, out) -> str:
    """A LoRA adapter on the base model (PEFT's default init: the same outputs as the base),
    saved like consolidation saves one."""
    from peft import LoraConfig, get_peft_model  # seconds to import: only the hot swap needs it

    model, _ = load_model_and_tokenizer(cfg.model_path)
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    save_version(lora, out, {"method": "bench serve hot swap"})
    return str(out)


def wait_for_version(url: str, version: str, checks: int = 8, timeout_s: float = 120.0) -> None:
    """Until `checks` health probes in a row (each asks a generator replica) name `version`."""
    deadline = time.monotonic() + timeout_s
    streak = 0
    while streak < checks:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the service did not answer on {version} in {timeout_s:.0f} s")
        got = requests.get(f"{url}/healthz", timeout=30).json().get("model_version")
        streak = streak + 1 if got == version else 0


def serve_workload(task: Task, per_group: int = 4) -> tuple[list[str], list[str]]:
    """Eval questions of the groups the model knows (all groups where none is new), and the
    retrieval queries of their first two hops (the question, then the reasoning state after
    the gold first step, where the task has gold steps)."""
    known = [g for g in task.groups("eval") if g not in task.new_groups]
    qs = task.questions("eval", known or None, per_group=per_group)
    if not qs:
        raise ValueError(f"task {task.name} has no eval questions to serve")
    queries = [step_query(q.question, []) for q in qs] + [
        step_query(q.question, list(q.steps[:1])) for q in qs if q.steps
    ]
    return [q.question for q in qs], queries


def bench_serve(
    cfg: Config,
    deploy: Deploy,
    retriever,
    questions: Sequence[str],
    queries: Sequence[str],
    n_requests: int = 64,
    concurrency: int = 16,
    retrieval_per_caller: int = 16,
    progress: bool = True,
) -> dict:
    """Measures the deployed app; see the module's docstring. `retriever` is the retriever
    deployment's handle."""
    reg = registry_for(cfg)
    current = reg.current()
    url = deploy(current)
    bar = console.progress("bench serve", 3 * n_requests, unit="session", disable=not progress)

    # Warm every path once (first calls load lazily), then the measured loads.
    http_load(url, questions, min(concurrency, n_requests), concurrency)
    batched = http_load(url, questions, n_requests, concurrency, bar.update)
    deploy(current, max_batch_size=1, session_batch_size=1, retriever_max_batch_size=1)
    try:
        unbatched = http_load(url, questions, n_requests, concurrency, bar.update)
    finally:
        deploy(current)

    k = cfg.rgr.top_k
    retriever_load(retriever, queries, k, 2, concurrency)  # warm
    r_on = retriever_load(retriever, queries, k, retrieval_per_caller, concurrency)
    deploy(current, retriever_max_batch_size=1)
    try:
        r_off = retriever_load(retriever, queries, k, retrieval_per_caller, concurrency)
    finally:
        deploy(current)

    # Hot swap while a load runs: nothing may fail.
    adapter = make_swap_adapter(cfg, cfg.state_path / "bench" / f"swap-{int(time.time())}")
    v = reg.register(adapter, "lora", metrics={"purpose": "bench serve hot swap"})
    during: dict = {}
    loader = threading.Thread(
        target=lambda: during.update(http_load(url, questions, n_requests, concurrency, bar.update))
    )
    loader.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    deploy(reg.promote(v.name, reason="bench serve hot swap"))
    wait_for_version(url, v.name)
    swap_seconds = time.perf_counter() - t0
    loader.join()
    deploy(reg.rollback(reason="bench serve: swap measured, rolled back"))
    bar.close()

    return {
        "sessions": concurrency,
        "requests": batched["requests"] + unbatched["requests"] + during["requests"],
        "failed": batched["failed"] + unbatched["failed"] + during["failed"],
        "throughput_rps": batched["throughput_rps"],
        "latency_p50_s": batched["latency_p50_s"],
        "latency_p99_s": batched["latency_p99_s"],
        "unbatched_throughput_rps": unbatched["throughput_rps"],
        "unbatched_latency_p50_s": unbatched["latency_p50_s"],
        "batched_generation_speedup": batched["throughput_rps"] / unbatched["throughput_rps"],
        "retrieval_qps": r_on["qps"],
        "unbatched_retrieval_qps": r_off["qps"],
        "batched_retrieval_speedup": r_on["qps"] / r_off["qps"],
        "swap_seconds": swap_seconds,
        "swap_version": v.name,
        "during_swap": {k: during[k] for k in ("requests", "failed", "versions")},
        "failures": (batched["failures"] + unbatched["failures"] + during["failures"])[:5],
        "max_batch_size": cfg.serve.generator.max_batch_size,
        "retriever_max_batch_size": cfg.serve.retriever.max_batch_size,
    }


def format_serve(r: dict) -> str:
    return "\n".join(
        [
            f"{r['requests']} sessions over HTTP, {r['sessions']} concurrent, {r['failed']} failed",
            f"batched   : {r['throughput_rps']:.2f} sessions/s, p50 {r['latency_p50_s']:.2f} s, "
            f"p99 {r['latency_p99_s']:.2f} s (max batch {r['max_batch_size']})",
            f"unbatched : {r['unbatched_throughput_rps']:.2f} sessions/s, "
            f"p50 {r['unbatched_latency_p50_s']:.2f} s  -> generation speedup "
            f"{r['batched_generation_speedup']:.2f}x",
            f"retriever : {r['retrieval_qps']:.1f} queries/s batched, "
            f"{r['unbatched_retrieval_qps']:.1f} unbatched -> speedup "
            f"{r['batched_retrieval_speedup']:.2f}x",
            f"hot swap  : {r['swap_seconds']:.2f} s to {r['swap_version']} on every replica; "
            f"{r['during_swap']['failed']} of {r['during_swap']['requests']} requests failed "
            f"meanwhile",
        ]
    )
