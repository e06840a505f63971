"""The main job (`cls-ray demo`): the whole loop on the configured task (the embedded world by
default).

Simulated users talk to the serving application over HTTP: users of the groups the model
knows, and users of the new groups it cannot yet solve (they ask for the best of N samples);
users rate right answers, and a curator (a key with that role) corrects some wrong ones. The PRM scores every session; the
sleep scheduler consolidates them (procedures into episodic memory at once, then a LoRA
candidate), the retention gate decides, and the promoted version is broadcast to every replica.
Accuracy is measured through the same HTTP API before and after, and a report (Markdown and
PNG plots) is written under the state directory.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from cls_ray.bootstrap import describe, ensure_model
from cls_ray.eval.html import write_html
from cls_ray.eval.plots import plt, save
from cls_ray.eval.reports import write_report
from cls_ray.memory.ingest import ingest_paths
from cls_ray.ports import Buffer, Scheduler, ServingRuntime
from cls_ray.prm.pipeline import describe_training, prepare_training, train_new_prm
from cls_ray.prm.store import latest_prm
from cls_ray.prm.trajectories import gold_steps
from cls_ray.replay.buffer import feedback_in_files
from cls_ray.serving.keys import KeyStore, without_rate_limits
from cls_ray.stack import Stack
from cls_ray.task import QA, Split, Task

Log = Callable[[str], None]


def ask_many(
    url: str, requests_: Sequence[dict], concurrency: int = 16, timeout_s: float = 600
) -> list[dict]:
    """POSTs every body to /v1/rgr, `concurrency` in flight; the replies in order (a failed
    request's reply is `{"error": ...}`)."""
    local = threading.local()

    def one(body: dict) -> dict:
        s = getattr(local, "s", None) or requests.Session()
        local.s = s
        try:
            r = s.post(f"{url}/v1/rgr", json=body, timeout=timeout_s)
        except requests.RequestException as e:
            return {"error": repr(e)[:200]}
        return r.json() if r.status_code == 200 else {"error": f"{r.status_code} {r.text[:200]}"}

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, requests_))


def accuracy(task: Task, questions: Sequence[QA], replies) -> float:
    right = [
        "error" not in r and task.is_right(r.get("answer"), q)
        for q, r in zip(questions, replies, strict=True)
    ]
    return sum(right) / max(1, len(right))


def known_groups(task: Task, split: Split) -> list[str]:
    return [g for g in task.groups(split) if g not in task.new_groups]


def workload(cfg, task: Task, new_per_family: int, old_per_family: int, best_of: int):
    """The simulated users: (question, request body) pairs on the task's `train` questions,
    the new groups' first."""
    new = (
        task.questions("train", task.new_groups, per_group=new_per_family)
        if task.new_groups
        else []
    )
    old = task.questions("train", known_groups(task, "train"), per_group=old_per_family)
    users = [
        (
            q,
            {"question": q.question, "best_of": best_of, "temperature": cfg.prm.sample_temperature},
        )
        for q in new
    ]
    users += [(q, {"question": q.question, "score": True}) for q in old]
    if not users:
        raise ValueError(f"task {task.name} has no train questions for the simulated users")
    return users


def send_feedback(url: str, task: Task, users, replies, curator_key: str, every: int = 3) -> dict:
    """Users with a right answer rate it (their own sessions, by the feedback token); a curator
    corrects every `every`-th wrong answer (where the task has gold steps): only a curator's
    corrections are trusted as given, a user's would go through the PRM's gate."""
    corrected = rated = wrong = 0
    for (q, _), r in zip(users, replies, strict=True):
        if "error" in r:
            continue
        body, headers = None, {"X-Session-Token": r["feedback_token"]}
        if task.is_right(r.get("answer"), q):
            body, rated = {"rating": 1.0}, rated + 1
        else:
            wrong += 1
            if wrong % every == 0 and q.steps:
                body, corrected = {"corrected_steps": gold_steps(q), "rating": -1.0}, corrected + 1
                headers = {"X-API-Key": curator_key}
        if body:
            requests.post(
                f"{url}/v1/sessions/{r['session_id']}/feedback",
                json=body,
                headers=headers,
                timeout=60,
            ).raise_for_status()
    return {"corrected": corrected, "rated": rated}


def measure(url: str, task: Task, new_qs, old_qs) -> dict:
    """Greedy accuracy of the serving application on held-out questions."""
    new_r = ask_many(url, [{"question": q.question} for q in new_qs])
    old_r = ask_many(url, [{"question": q.question} for q in old_qs])
    versions = sorted({r.get("model_version") for r in new_r + old_r if "error" not in r})
    return {
        "new_family": accuracy(task, new_qs, new_r),
        "old_families": accuracy(task, old_qs, old_r),
        "versions": versions,
        "failed": sum("error" in r for r in new_r + old_r),
        "session_ids": [r["session_id"] for r in new_r + old_r if "error" not in r],
    }


def plot_demo(report: dict, out_dir: Path) -> list[Path]:
    paths = []
    before, after, sleep = report["before"], report["after"], report["sleep"]

    fig, ax = plt.subplots(figsize=(7, 4))
    groups = ["new family", "old families"]
    bars = [
        (f"{before['versions'][0]} (served)", [before["new_family"], before["old_families"]]),
        (f"{after['versions'][-1]} (served)", [after["new_family"], after["old_families"]]),
    ]
    width = 0.8 / len(bars)
    for i, (label, vals) in enumerate(bars):
        xs = [g + (i - (len(bars) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, vals, width, label=label)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (held-out questions)")
    ax.set_title("accuracy per version")
    ax.legend(fontsize=8)
    paths.append(save(fig, out_dir / "accuracy_per_version.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    right = [t for t, ok in report["r_tau"] if ok]
    wrong = [t for t, ok in report["r_tau"] if not ok]
    bins = [i / 20 for i in range(21)]
    ax.hist(right, bins=bins, alpha=0.7, label=f"right answer ({len(right)})")
    ax.hist(wrong, bins=bins, alpha=0.7, label=f"wrong answer ({len(wrong)})")
    ax.axvline(report["gate"]["min_r_tau"], color="k", ls="--", label="gate")
    ax.set_xlabel("R(τ) from the PRM")
    ax.set_ylabel("sessions")
    ax.set_title("PRM scores of the served sessions")
    ax.legend(fontsize=8)
    paths.append(save(fig, out_dir / "prm_scores.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    keys = [
        ("new_family", "session families"),
        ("retention", "old families (RGR)"),
        ("retention_steps", "next step, frozen suite"),
    ]
    for i, (k, label) in enumerate(keys):
        b, a = sleep.get(f"{k}_before"), sleep.get(f"{k}_after")
        if b is None or a is None:
            continue
        ax.bar([i - 0.2, i + 0.2], [b, a], 0.4, color=["tab:gray", "tab:blue"])
        if k != "new_family":  # the gate's floors
            ax.plot([i - 0.4, i + 0.4], [b - report["gate"]["tolerance"]] * 2, "r--")
        ax.text(i, 0.02, label, ha="center", fontsize=8)
    ax.set_xticks([])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy, weights only: base (gray), candidate (blue)")
    ax.set_title(
        f"retention check: {'passed' if sleep['passes_gate'] else 'failed'} (red: the floor)"
    )
    paths.append(save(fig, out_dir / "retention.png"))
    return paths


def markdown(report: dict, plots: list[Path]) -> str:
    b, a, s = report["before"], report["after"], report["sleep"]
    lines = [
        "# cls-ray demo report",
        "",
        f"{report['users']} simulated users ({report['new_users']} of the held-back family, "
        f"best of {report['best_of']}); {report['feedback']['corrected']} sent corrected "
        f"steps, {report['feedback']['rated']} rated their answer.",
        "",
        "| | new family | old families | version |",
        "|---|---|---|---|",
        f"| before sleep (served) | {b['new_family']:.2f} | {b['old_families']:.2f} | "
        f"{', '.join(b['versions'])} |",
        f"| after sleep (served) | {a['new_family']:.2f} | {a['old_families']:.2f} | "
        f"{', '.join(a['versions'])} |",
        "",
        "The retention gate reads the weights alone (no procedures), base → candidate "
        f"{s['version']}: held-out questions of the sessions' families "
        f"{s['new_family_before']:.2f} → {s['new_family_after']:.2f}; trained families "
        f"{s['retention_before']:.2f} → {s['retention_after']:.2f}; next step on the frozen "
        f"suite {s.get('retention_steps_before') or float('nan'):.3f} → "
        f"{s.get('retention_steps_after') or float('nan'):.3f}.",
        "",
        f"Episodic fast path (base weights + the indexed procedures), sessions' families: "
        f"{s.get('new_family_fast_path') or float('nan'):.2f}.",
        f"Retention gate: {'passed' if s['passes_gate'] else 'refused'} ({s['reason']}); "
        f"KL(base ‖ candidate) {s['kl_base_candidate'] or float('nan'):.3f}; "
        f"{'promoted and broadcast' if s['promoted'] else 'kept as a candidate'}.",
        f"Sleep data: {json.dumps(s['data'])}.",
        "",
    ]
    base = report.get("base_model") or {}  # a report of an older run has none
    if base.get("weights_sha256"):
        m = base.get("machine") or {}
        lines += [
            f"Base model: weights {base['weights_sha256'][:12]}, trained with torch "
            f"{m.get('torch', '?')}'s {m.get('kernels', '?')} kernels on {m.get('threads', '?')} "
            'threads (the same code and seed give other floats, and another "before", on a CPU '
            "with other kernels).",
            "",
        ]
    stages = report.get("stage_seconds") or {}  # a report of an older run has none
    if stages:
        lines += [
            "| stage | " + " | ".join(stages) + " | all |",
            "|---" * (len(stages) + 2) + "|",
            "| minutes | "
            + " | ".join(f"{v / 60:.1f}" for v in stages.values())
            + f" | {report.get('seconds', 0) / 60:.1f} |",
            "",
        ]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def run_loop(cfg, task: Task, url: str, buffer: Buffer, scheduler: Scheduler, log: Log) -> dict:
    """Users → scores → sleep → promotion → measurement, on a running application. The new
    groups are measured on their `eval` questions, the others on the `retention` set."""
    c = cfg.consolidate
    new_qs = (
        task.questions("eval", task.new_groups, per_group=c.eval_per_family)
        if task.new_groups
        else []
    )
    old_qs = task.questions("retention", per_group=3)
    log(f"measuring the served base model on {len(new_qs) + len(old_qs)} held-out questions")
    before = measure(url, task, new_qs, old_qs)
    log(f"  new family {before['new_family']:.2f}, old families {before['old_families']:.2f}")
    # The held-out probes are stored like any session; acknowledging them now keeps them out
    # of the sleep's training data.
    buffer.ack(before.pop("session_ids"))
    best_of = min(8, c.sample_n)
    users = workload(cfg, task, c.new_per_family, 3, best_of)
    log(f"{len(users)} simulated users ask (held-back family: best of {best_of})")
    t0 = time.time()
    replies = ask_many(url, [b for _, b in users], concurrency=8)
    failed = sum("error" in r for r in replies)
    log(f"  answered in {time.time() - t0:.0f} s ({failed} failed)")
    _, curator = KeyStore(cfg.keys_path).add("demo curator", "curator")
    fb = send_feedback(url, task, users, replies, curator)
    log(f"  feedback: {fb['corrected']} corrected by a curator, {fb['rated']} ratings")
    r_tau = [
        (r["r_tau"], task.is_right(r.get("answer"), q))
        for (q, _), r in zip(users, replies, strict=True)
        if "error" not in r and r.get("r_tau") is not None
    ]
    started = scheduler.trigger("demo", "sft")
    if not started["started"]:
        raise RuntimeError(f"the sleep did not start: {started['reason']}")
    log(f"sleep started ({started['reason']}); consolidating on Ray Train ...")
    t0 = time.time()
    status = scheduler.wait(3600)
    done = status["history"][-1]
    if "error" in done:
        raise RuntimeError(f"the sleep failed: {done['error']}")
    log(
        f"  {done['version']}: {'promoted' if done['promoted'] else 'kept as a candidate'} "
        f"after {time.time() - t0:.0f} s ({done['reason']})"
    )
    sleep = json.loads((cfg.state_path / "reports" / "sleep.json").read_text())
    log("measuring the served model after the sleep")
    after = measure(url, task, new_qs, old_qs)
    buffer.ack(after.pop("session_ids"))
    log(f"  new family {after['new_family']:.2f}, old families {after['old_families']:.2f}")
    return {
        "users": len(users),
        "new_users": sum(1 for q, _ in users if q.group in task.new_groups),
        "best_of": best_of,
        "failed_requests": failed,
        "feedback": fb,
        "r_tau": r_tau,
        "before": before,
        "after": after,
        "sleep": sleep,
        "gate": {
            "min_r_tau": c.min_r_tau,
            "tolerance": c.retention_tolerance,
            "forgetting_tolerance": c.forgetting_tolerance,
        },
        "new_family_questions": len(new_qs),
        "old_family_questions": len(old_qs),
    }


class Stages:
    """The demo's stages as it announces them, with the seconds each took."""

    def __init__(self, log: Log, total: int):
        self.log, self.total, self.seconds = log, total, {}
        self.name: str | None = None
        self.at = time.time()

    def start(self, name: str, title: str) -> None:
        self.stop()
        self.name, self.at = name, time.time()
        self.log(f"== {len(self.seconds) + 1}/{self.total} {name}: {title}")

    def stop(self) -> None:
        if self.name is not None:
            self.seconds[self.name] = round(time.time() - self.at, 1)
        self.name = None


def run_demo(stack: Stack, runtime: ServingRuntime, log: Log, progress: bool = True) -> dict:
    """The main job: build what is missing (model, memory, PRM), serve simulated users, sleep,
    promote, measure, and write the report. Returns the report (with `report_path` and the
    seconds of each stage, `stage_seconds`)."""
    cfg = stack.cfg
    t_start = time.time()
    task = stack.task
    stages = Stages(log, 6)
    stages.start("bootstrap", "the small default model")
    # Only the small default model is built here, from the world; a checkpoint is used as it is
    # (where `cls-ray bootstrap` built it, its fingerprint goes into the report).
    base = ensure_model(cfg, stack.world, progress=progress)
    log(describe(base) if base["built"] else f"model at {cfg.model_path}")
    stages.start("ingest", f"the corpus of task {task.name} into Milvus")
    # Ray starts before this process opens Milvus: Ray forks its raylet from here, and a fork
    # while Milvus Lite's gRPC threads run can leave the raylet hung before it starts (a start
    # that failed after 30 s, then a retry, in one of the fresh-clone demos).
    # Serving replicas idle while the sleep trains: logical CPUs beyond the cores let both fit.
    runtime.start(num_cpus=max(4, cfg.ray.num_cpus or 0))
    try:
        ingest = ingest_paths([stack.task_corpus()], cfg, stack.store, progress, use_ray=False)
        for e in ingest.errors:
            log(f"error: {e}")
        log(ingest.describe(stack.store.count(), stack.store.name()))
        # Milvus Lite's in-process server keeps indexing after an ingest; stop it while the PRM's
        # data is built and its workers start (the store reopens on first use).
        stack.release_store()
        if latest_prm(cfg) is None:
            stages.start("prm", "the process reward model (Ray Train + DeepSpeed)")
            examples, data = prepare_training(stack, feedback_in_files(cfg), log)
            out, result = train_new_prm(cfg, examples, data, log=log)
            write_report(cfg, "prm_train", result)
            log(describe_training(out, result))
        else:
            stages.start("prm", f"using {latest_prm(cfg)}")
        # The serving retriever owns the Milvus Lite file from here on.
        stack.release_store()
        stages.start("serve", "the application on Ray Serve")
        # The demo prints its own progress; replicas' per-request lines would bury it.
        cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"access_log": False})})
        cfg = without_rate_limits(cfg)  # every simulated user asks from this one address
        url = runtime.deploy(cfg)
        log(f"   {url}")
        stages.start("loop", "users, scores, sleep, promotion, measurement")
        report = run_loop(cfg, task, url, runtime.buffer(), runtime.scheduler(), log)
    finally:
        runtime.stop()
    stages.start("report", "Markdown, plots and one HTML page")
    out_dir = cfg.state_path / "reports" / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_demo(report, out_dir)  # the stage's work; the pages then carry its time
    stages.stop()
    # which base model the figures are of: its floats depend on the CPU that trained it
    report["base_model"] = {k: base[k] for k in ("weights_sha256", "machine") if k in base}
    report["seconds"] = time.time() - t_start
    report["stage_seconds"] = stages.seconds
    write_report(cfg, "demo/demo", report)
    write_demo_report(report, out_dir, plots)
    return report


def write_demo_report(report: dict, out_dir: Path, plots: list[Path] | None = None) -> None:
    """`report.md` with its plots (drawn here unless given) and `report.html` (the same, one
    page) under `out_dir`; their paths into `report`."""
    md = out_dir / "report.md"
    md.write_text(markdown(report, plots if plots is not None else plot_demo(report, out_dir)))
    report["report_path"] = str(md)
    report["report_html"] = str(write_html(md))


def summary(report: dict) -> list[str]:
    """The demo's closing lines: accuracy before and after, the gate's decision."""
    b, a, s = report["before"], report["after"], report["sleep"]
    before = f"before ({', '.join(b['versions'])})"
    after = f"after ({', '.join(a['versions'])})"
    return [
        f"{'':<26}{'new family':>12}{'old families':>14}",
        f"{before:<26}{b['new_family']:>12.2f}{b['old_families']:>14.2f}",
        f"{after:<26}{a['new_family']:>12.2f}{a['old_families']:>14.2f}",
        f"retention gate {'passed' if s['passes_gate'] else 'refused'}: {s['reason']}; "
        f"{s['version']} {'promoted' if s['promoted'] else 'kept as a candidate'}",
        "stage minutes: "
        + ", ".join(f"{k} {v / 60:.1f}" for k, v in report.get("stage_seconds", {}).items()),
        f"report: {report['report_path']} ({report['seconds'] / 60:.0f} min); as one page: "
        f"{report['report_html']}",
    ]
