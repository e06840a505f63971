"""Autoscaling shown, not only configured (`cls-ray bench autoscale`): an application of its
own whose generator deployment may grow from one replica to `max_replicas`, a load of RGR
sessions over loopback for a while, then quiet; a sampler counts the generator's running
replicas every second throughout.

The result: the timeline (seconds since the start, replicas, requests in flight), the peak,
how long the scale-up took after the load began (`scale_up_s`) and the scale-down after it
ended (`scale_down_s`), and the load's requests with every status: the target is a scale-up
under load, a scale-down after it, and no failed request.

The local cluster declares more CPUs than the machine has (`ray.num_cpus`), so the replicas it
places are real processes that share the cores: the figure shows the controller's decisions,
not added throughput.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from cls_ray.eval.load import Load, percentile

DECLARED_CPUS = 8
# Replicas the controller has decided to add that do not serve yet.
STARTING_STATES = ("STARTING", "UPDATING", "RECOVERING", "PENDING_MIGRATION")
# What the application's other deployments and actors take (ingress, retriever, scorer: 0.25
# each; the replay buffer 0.1), rounded up.
REST_CPUS = 1.0


def replica_cpus(free_cpus: float, max_replicas: int) -> float | None:
    """CPUs per generator replica so that `max_replicas` fit next to the rest: one where there
    is room, else an equal share of what is left (None: not even 0.05 each)."""
    room = free_cpus - REST_CPUS
    if room >= max_replicas:
        return 1.0
    share = int(room / max_replicas * 100) / 100
    return share if share >= 0.05 else None


def autoscale_settings(max_replicas: int = 4, cpus_per_replica: float = 1.0) -> dict:
    """The application's config: one generator replica at rest and up to `max_replicas` under
    load, with short delays and a short look-back so the run takes a minute or
    two; sessions go one per generator request (so the load reaches the controller as ongoing
    requests); no per-caller rates (the load comes from one address)."""
    return {
        "serve.app_name": "cls-ray-autoscale",
        "serve.host": "127.0.0.1",
        "serve.generator.num_cpus": cpus_per_replica,
        "serve.generator.autoscaling.min_replicas": 1,
        "serve.generator.autoscaling.max_replicas": max_replicas,
        "serve.generator.autoscaling.target_ongoing_requests": 1,
        "serve.generator.autoscaling.upscale_delay_s": 2.0,
        "serve.generator.autoscaling.downscale_delay_s": 8.0,
        "serve.generator.autoscaling.look_back_period_s": 3.0,
        "serve.generator.autoscaling.metrics_interval_s": 0.5,
        "serve.session_batch_size": 1,
        "serve.auth.anonymous": True,
        "serve.auth.rate_per_minute": 0,
        "serve.auth.anonymous_rate_per_minute": 0,
        "serve.auth.work_per_minute": 0,
    }


class Sampler:
    """A thread that records `(t_s, running, starting)` every `every_s` until stopped, from
    `count()`: the replicas by state."""

    def __init__(self, count: Callable[[], dict[str, int]], every_s: float = 1.0):
        self.count, self.every_s = count, every_s
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="replicas", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def now(self) -> float:
        return time.monotonic() - self._t0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                by_state = self.count()
            except Exception:  # noqa: BLE001 - a controller busy for a moment: skip the sample
                by_state = None
            if by_state is not None:
                running = by_state.get("RUNNING", 0)
                starting = sum(n for s, n in by_state.items() if s in STARTING_STATES)
                self.samples.append((self.now(), running, starting))
            self._stop.wait(self.every_s)

    def last(self) -> int | None:
        return self.samples[-1][1] if self.samples else None

    def stop(self) -> list[tuple[float, int, int]]:
        self._stop.set()
        self._thread.join(self.every_s + 30)
        return list(self.samples)


def first_time(samples: Sequence[tuple], after: float, test) -> float | None:
    """Seconds from `after` to the first sample `(t, running, starting)` at or after it for
    which `test(running, starting)` holds."""
    return next((s[0] - after for s in samples if s[0] >= after and test(*s[1:])), None)


def at_rest(sample: tuple, min_replicas: int) -> bool:
    """Back at rest: no more replicas serving, and none still starting, than at rest."""
    _, running, starting = sample
    return running + starting <= min_replicas


def added_not_serving(samples: Sequence[tuple], since: float, min_replicas: int) -> bool:
    """The controller has added replicas since `since`, and none of them serves yet."""
    recent = [s for s in samples if s[0] >= since]
    decided = any(n + st > min_replicas for _, n, st in recent)
    return decided and not any(n > min_replicas for _, n, _ in recent)


def bench_autoscale(
    url: str,
    questions: Sequence[str],
    count_replicas: Callable[[], dict[str, int]],
    *,
    clients: int,
    load_s: float,
    min_replicas: int,
    max_replicas: int,
    request_timeout_s: float,
    quiet_max_s: float = 90.0,
    start_grace_s: float = 60.0,
    log: Callable[[str], None] = print,
) -> dict:
    """Quiet, then `clients` sessions at a time for `load_s`, then quiet until the generator is
    back to `min_replicas` (at most `quiet_max_s`); the timeline and the load's figures.

    A replica the controller has added may still be starting when `load_s` is over (a new
    process that loads the model, on cores the load keeps busy): the load then goes on until
    one serves, at most `start_grace_s` more, so the run shows the scale-up it decided on."""
    sampler = Sampler(count_replicas).start()
    time.sleep(3.0)  # the resting shape
    began = sampler.now()
    log(f"  load: {clients} sessions at a time for {load_s:g} s")
    load = Load(url, questions, clients, request_timeout_s).start()
    deadline = time.monotonic() + load_s
    grace_over, said = deadline + start_grace_s, False
    while (now := time.monotonic()) < deadline or (
        now < grace_over and added_not_serving(sampler.samples, began, min_replicas)
    ):
        if now >= deadline and not said:
            log("  the added replicas are still starting: the load goes on until one serves")
            said = True
        time.sleep(min(5.0, max(1.0, deadline - now)))
        log(f"    t={sampler.now():5.1f} s  replicas {sampler.last()}  sent {len(load.records)}")
    records = load.stop()
    ended = sampler.now()
    log("  quiet: waiting for the generator to scale back down")
    quiet_deadline = time.monotonic() + quiet_max_s
    while time.monotonic() < quiet_deadline:
        last = sampler.samples[-1] if sampler.samples else None
        if last is not None and at_rest(last, min_replicas) and last[0] > ended + 2:
            break
        time.sleep(1.0)
    time.sleep(2.0)  # a last sample or two at rest
    samples = sampler.stop()
    statuses = Counter(str(r.status) if r.status else (r.detail or "no answer") for r in records)
    ok = [r.t1 - r.t0 for r in records if r.status == 200]
    peak = max((n for _, n, _ in samples), default=0)
    result = {
        "timeline": [{"t_s": round(t, 2), "replicas": n, "starting": st} for t, n, st in samples],
        "load_began_s": began,
        "load_ended_s": ended,
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "peak_replicas": peak,
        "final_replicas": samples[-1][1] if samples else None,
        # The controller's decision (a replica starting) and the replica serving.
        "decided_up_s": first_time(samples, began, lambda n, st: n + st > min_replicas),
        "scale_up_s": first_time(samples, began, lambda n, st: n > min_replicas),
        "scale_down_s": first_time(samples, ended, lambda n, st: at_rest((0, n, st), min_replicas)),
        "clients": clients,
        "requests": len(records),
        "ok": len(ok),
        "failed": len(records) - len(ok),
        "statuses": dict(sorted(statuses.items())),
        "p50_s": percentile(ok, 50),
        "p99_s": percentile(ok, 99),
    }
    result["scaled_up"] = peak > min_replicas
    result["scaled_down"] = result["scale_down_s"] is not None
    return result


def format_autoscale(result: dict) -> str:
    r = result
    lines = ["  t (s)  running  starting"]
    last = None
    for row in r["timeline"]:  # the changes, not every second
        if (row["replicas"], row["starting"]) != last:
            lines.append(f"{row['t_s']:7.1f}  {row['replicas']:>7}  {row['starting']:>8}")
            last = (row["replicas"], row["starting"])
    up = "n/a" if r["scale_up_s"] is None else f"{r['scale_up_s']:.1f} s"
    down = "n/a" if r["scale_down_s"] is None else f"{r['scale_down_s']:.1f} s"
    lines.append(
        f"load {r['load_began_s']:.0f}-{r['load_ended_s']:.0f} s: {r['clients']} clients, "
        f"{r['ok']}/{r['requests']} ok ({r['failed']} failed), p99 {r['p99_s'] or 0:.2f} s; "
        f"replicas {r['min_replicas']} -> {r['peak_replicas']} (decided after "
        f"{r['decided_up_s'] or 0:.1f} s, serving after {up}) -> "
        f"{r['final_replicas']} (down after {down})"
    )
    return "\n".join(lines)
