"""`cls-ray bench chaos`: faults injected into the served stack under a bounded load.

A load of RGR sessions (`POST /v1/rgr`) runs over loopback HTTP from a fixed number of client
threads, each honouring `Retry-After` on a 503 and bounded by a client timeout above the
service's own. For each fault the load runs `warm_s`, the fault is injected, lasts `duration_s`,
is healed, and the load goes on `after_s` more. One row per fault:

- `requests`, `ok`, `errors_4xx`, `errors_5xx`, `errors_client` (no HTTP answer at all: a hang
  the client timeout cut, a refused connection), from the requests that ended after the fault
  began;
- `p99_s`, `max_s` over those requests, and `over_timeout`: how many waited longer than the
  service's `request_timeout_s` (a bounded service has none);
- `recovery_s`: from the fault's end to the end of the last failed request (0: none failed
  after it ended); `recovered`: a request that started after the fault ended succeeded;
- `sessions_lost`: sessions the service acknowledged (a 200 with a `session_id`) that the
  replay buffer does not hold once the fault is over;
- `causes`: the distinct failure bodies (status and detail), so every 503/504 names its cause.

The overload row first measures the sustainable concurrency unloaded (its p99), then four times
as many clients: the accepted requests' p99 against the unloaded one, the rest 503 with
`Retry-After`.

The fault injectors and the buffer's ids come from the caller (`actors.chaos`): this module only
drives the load and measures.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cls_ray.config import Config
from cls_ray.eval.load import Load, Record, percentile
from cls_ray.eval.sandbox import sandbox_config


@dataclass
class Fault:
    """`inject` begins the fault and returns; `heal` ends it `duration_s` later (instant
    faults, like a kill, heal themselves: `heal` is None and the fault ends when injected)."""

    name: str
    inject: Callable[[], object]
    heal: Callable[[], object] | None = None
    duration_s: float = 0.0


def fault_row(
    name: str,
    records: Sequence[Record],
    began: float,
    ended: float,
    request_timeout_s: float,
    lost: int,
) -> dict:
    """The row of one fault from the load's records (see the module's docstring)."""
    rs = [r for r in records if r.t1 >= began]
    failed = [r for r in rs if r.status != 200]
    lat = [r.t1 - r.t0 for r in rs]
    last_failure = max((r.t1 for r in failed), default=None)
    statuses = Counter(r.status for r in rs)
    return {
        "fault": name,
        "requests": len(rs),
        "ok": statuses[200],
        "errors_4xx": sum(n for s, n in statuses.items() if s is not None and 400 <= s < 500),
        "errors_5xx": sum(n for s, n in statuses.items() if s is not None and s >= 500),
        "errors_client": statuses[None],
        "statuses": {str(s): n for s, n in sorted(statuses.items(), key=lambda x: str(x[0]))},
        "retry_after_on_503": all(r.retry_after for r in failed if r.status == 503),
        "p99_s": percentile(lat, 99),
        "max_s": max(lat, default=None),
        "over_timeout": sum(1 for x in lat if x > request_timeout_s + 1.0),
        "fault_s": ended - began,
        "recovery_s": 0.0 if last_failure is None else max(0.0, last_failure - ended),
        "recovered": any(r.status == 200 and r.t0 >= ended for r in rs),
        "sessions_acked": sum(1 for r in rs if r.session_id),
        "sessions_lost": lost,
        "causes": sorted({f"{r.status}: {r.detail}" for r in failed})[:6],
        # When the failures came, in seconds from the fault's start: where recovery went.
        "failed_at_s": sorted(round(r.t0 - began, 2) for r in failed)[:20],
    }


def run_fault(
    url: str,
    questions: Sequence[str],
    fault: Fault,
    *,
    clients: int,
    request_timeout_s: float,
    missing: Callable[[list[str]], int],
    warm_s: float = 3.0,
    after_s: float = 12.0,
    headers: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """One fault under load; `missing(ids)` counts the acknowledged ids the buffer lacks."""
    load = Load(url, questions, clients, request_timeout_s + 10, headers or {}).start()
    time.sleep(warm_s)
    began = time.monotonic()
    log(f"  {fault.name}: injecting")
    fault.inject()
    if fault.heal is not None:
        time.sleep(fault.duration_s)
        fault.heal()
    ended = time.monotonic()
    time.sleep(after_s)
    records = load.stop()
    acked = [r.session_id for r in records if r.session_id]
    row = fault_row(fault.name, records, began, ended, request_timeout_s, missing(acked))
    log(
        f"  {fault.name}: {row['ok']}/{row['requests']} ok, 5xx {row['errors_5xx']}, "
        f"recovery {row['recovery_s']:.1f} s, lost {row['sessions_lost']}"
    )
    return row


def run_overload(
    url: str,
    questions: Sequence[str],
    *,
    sustainable: int,
    factor: int,
    seconds: float,
    request_timeout_s: float,
    missing: Callable[[list[str]], int],
    headers: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """`sustainable` clients for `seconds` (the unloaded p99), then `factor` times as many."""
    base = Load(url, questions, sustainable, request_timeout_s + 10, headers or {}).start()
    time.sleep(seconds)
    unloaded = [r.t1 - r.t0 for r in base.stop() if r.status == 200]
    log(f"  overload: {len(unloaded)} sessions at {sustainable} clients unloaded")
    load = Load(url, questions, sustainable * factor, request_timeout_s + 10, headers or {})
    began = time.monotonic()
    load.start()
    time.sleep(seconds)
    records = load.stop()
    ended = time.monotonic()
    acked = [r.session_id for r in records if r.session_id]
    row = fault_row(f"overload {factor}x", records, began, ended, request_timeout_s, missing(acked))
    accepted = [r.t1 - r.t0 for r in records if r.status == 200]
    row.update(
        clients=sustainable * factor,
        unloaded_p99_s=percentile(unloaded, 99),
        accepted_p99_s=percentile(accepted, 99),
        p99_ratio=(percentile(accepted, 99) / percentile(unloaded, 99))
        if accepted and unloaded
        else None,
        # An overload has no end to recover from: what counts is how the excess was answered.
        recovery_s=0.0,
        recovered=bool(accepted),
    )
    log(
        f"  overload: {row['ok']}/{row['requests']} accepted, p99 {row['accepted_p99_s'] or 0:.2f}"
        f" s vs {row['unloaded_p99_s'] or 0:.2f} s unloaded, {row['errors_5xx']} answered 503"
    )
    return row


def summary(rows: Sequence[dict], request_timeout_s: float) -> dict:
    """The targets of the benchmark, each as a boolean, over all rows."""
    over = next((r for r in rows if r["fault"].startswith("overload")), None)
    return {
        "sessions_lost": sum(r["sessions_lost"] for r in rows),
        "every_wait_bounded": all(r["over_timeout"] == 0 and r["errors_client"] == 0 for r in rows),
        "failures_are_503_504": all(
            set(r["statuses"]) <= {"200", "503", "504"} and r["retry_after_on_503"] for r in rows
        ),
        "max_recovery_s": max((r["recovery_s"] for r in rows), default=0.0),
        "recovery_within_10s": all(r["recovery_s"] <= 10.0 for r in rows),
        "all_recovered": all(r["recovered"] for r in rows),
        "overload_p99_ratio": over and over["p99_ratio"],
        "request_timeout_s": request_timeout_s,
    }


def format_chaos(result: dict) -> str:
    head = (
        f"{'fault':<26}{'requests':>9}{'ok':>6}{'4xx':>5}{'5xx':>5}{'client':>7}{'p99 s':>8}"
        f"{'max s':>8}{'recovery s':>11}{'lost':>6}"
    )
    lines = [head]
    for r in result["rows"]:
        lines.append(
            f"{r['fault']:<26}{r['requests']:>9}{r['ok']:>6}{r['errors_4xx']:>5}"
            f"{r['errors_5xx']:>5}{r['errors_client']:>7}{r['p99_s'] or 0:>8.2f}"
            f"{r['max_s'] or 0:>8.2f}{r['recovery_s']:>11.1f}{r['sessions_lost']:>6}"
        )
        for c in r["causes"][:3]:
            lines.append(f"    {c}")
    s = result["summary"]
    lines.append(
        f"lost {s['sessions_lost']}; every wait bounded: {s['every_wait_bounded']}; failures "
        f"503/504 with cause: {s['failures_are_503_504']}; max recovery {s['max_recovery_s']:.1f}"
        f" s; overload p99 x{s['overload_p99_ratio'] or float('nan'):.2f} of unloaded"
    )
    return "\n".join(lines)


def chaos_config(cfg: Config) -> Config:
    """The chaos run's config: `chaos_settings` on a sandbox under `state_dir/chaos`, so the
    faults and the sessions of the load never touch the user's buffer or store."""
    return sandbox_config(cfg, "chaos", chaos_settings())


def chaos_settings() -> dict:
    """What the chaos run changes in the config: its own application (two generator replicas,
    so one can die), short timeouts (a fault shows within seconds), small session batches, a
    queue as deep as the fault load's clients (Serve counts requests waiting for a replica to be
    picked there, so a shallower one refuses some of an ordinary load on a busy machine) that
    four times the sustainable concurrency overflows, and no per-caller limits (the load comes
    from one address on purpose)."""
    return {
        "serve.app_name": "cls-ray-chaos",
        "serve.host": "127.0.0.1",
        "serve.generator.autoscaling.min_replicas": 2,
        "serve.generator.autoscaling.max_replicas": 2,
        "serve.generator.num_cpus": 0.25,
        "serve.limits.call_timeout_s": 5.0,
        "serve.limits.session_timeout_s": 15.0,
        "serve.limits.request_timeout_s": 30.0,
        "serve.limits.retry_after_s": 1.0,
        "serve.limits.max_queued_requests": 4,
        "serve.session_batch_size": 2,
        "serve.max_concurrent_sessions": 8,
        "serve.auth.anonymous": True,
        "serve.auth.rate_per_minute": 0,
        "serve.auth.anonymous_rate_per_minute": 0,
        "serve.auth.work_per_minute": 0,
    }


def bench_chaos(
    url: str,
    questions: Sequence[str],
    faults: Sequence[Fault],
    *,
    clients: int,
    sustainable: int,
    request_timeout_s: float,
    missing: Callable[[list[str]], int],
    settle: Callable[[], object] = lambda: None,
    warm_s: float = 3.0,
    after_s: float = 12.0,
    overload_s: float = 20.0,
    overload_factor: int = 4,
    log: Callable[[str], None] = print,
) -> dict:
    """Every fault in turn under a load of `clients`, `settle()` between them (the stack back
    to its shape), then the overload; returns the rows and the targets' `summary`."""
    # The first requests load models and open connections: not part of any fault.
    warm = Load(url, questions, clients, request_timeout_s + 10, max_requests=2 * clients)
    warm.start().wait()
    rows = []
    for fault in faults:
        rows.append(
            run_fault(
                url,
                questions,
                fault,
                clients=clients,
                request_timeout_s=request_timeout_s,
                missing=missing,
                warm_s=warm_s,
                after_s=after_s,
                log=log,
            )  # fmt: skip
        )
        settle()
    rows.append(
        run_overload(
            url,
            questions,
            sustainable=sustainable,
            factor=overload_factor,
            seconds=overload_s,
            request_timeout_s=request_timeout_s,
            missing=missing,
            log=log,
        )  # fmt: skip
    )
    return {
        "rows": rows,
        "summary": summary(rows, request_timeout_s),
        "clients": clients,
        "sustainable_concurrency": sustainable,
    }
