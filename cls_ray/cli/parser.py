"""The command line: one subcommand per job, the options every command shares, `--smoke`, and
the config a command runs with."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cls_ray.config import Config, load_config

DEFAULT_CONFIG = "configs/local.yaml"

DESCRIPTION = "`cls-ray`: one command per job a user runs. Every command takes `--config`."

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
    "consolidate.ppo.steps=4",
    "consolidate.batch_size=8",
    "consolidate.eval_per_family=2",
    "consolidate.new_per_family=2",
    "consolidate.sample_n=2",
    "consolidate.ppo.fresh_per_family=1",
]


def _common() -> argparse.ArgumentParser:
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
    common.add_argument(
        "--version",
        dest="model_version",
        default=None,
        metavar="NAME",
        help="the registered model version to run (default: the registry's current one)",
    )
    common.add_argument("-q", "--quiet", action="store_true", help="no progress displays")
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="every program's output on the console (by default it goes to a log file under "
        "state_dir/logs/, named at the start)",
    )
    common.add_argument(
        "--smoke",
        action="store_true",
        help="a small size of the job, for checks (a cluster's first run, CI); --set still wins",
    )
    return common


def make_parser() -> argparse.ArgumentParser:
    common = _common()
    p = argparse.ArgumentParser(prog="cls-ray", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bootstrap", parents=[common], help="build the small default model")
    b.add_argument("--force", action="store_true", help="rebuild even if it exists")
    i = sub.add_parser("ingest", parents=[common], help="ingest .jsonl/.txt/.md documents")
    i.add_argument("paths", nargs="*", help="files or folders")
    i.add_argument("--world", action="store_true", help="ingest the built-in world's corpus")
    i.add_argument("--task", action="store_true", help="ingest the configured task's corpus")
    t = sub.add_parser("task", parents=[common], help="the task's data: show it, export the world")
    t.add_argument("action", choices=["show", "export-world"])
    t.add_argument("out", nargs="?", help="export-world: the folder to write")
    t.add_argument(
        "--per-family", type=int, default=None, help="export-world: questions per family and split"
    )
    i.add_argument("--no-ray", action="store_true", help="embed in this process, without Ray Data")
    k = sub.add_parser("keys", parents=[common], help="API keys with roles: add, list, revoke")
    k.add_argument("action", choices=["add", "list", "revoke"])
    k.add_argument("name", nargs="?", help="add: who holds the key; revoke: the key's id")
    k.add_argument("--role", choices=["user", "curator", "admin"], default="user")
    a = sub.add_parser("ask", parents=[common], help="answer a question with RGR")
    a.add_argument("question", nargs="?", help="the question (default: a held-out one of the task)")
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
        "which",
        choices=[
            "rgr",
            "retrieval",
            "serve",
            "chaos",
            "fuzz",
            "autoscale",
            "consolidation",
            "train",
            "stream",
            "continual",
        ],
    )
    bench.add_argument(
        "--arms",
        default=None,
        help="continual: the composition arms, comma-separated (continue, base, full; default "
        "continue,base); consolidation: the ablation arms (sft_prm_gated, sft_ungated, "
        "sft_outcome_only, ppo_step_rewards, episodic_only; default all)",
    )
    bench.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="stream: receiving processes (2); autoscale: the generator's most replicas (4)",
    )
    bench.add_argument("--steps", type=int, default=None, help="train: optimizer steps")
    bench.add_argument("--requests", type=int, default=None, help="serve: sessions per load")
    bench.add_argument(
        "--concurrency", type=int, default=None, help="serve, chaos, autoscale: sessions at once"
    )
    bench.add_argument(
        "--fault-seconds", type=float, default=10.0, help="chaos: how long a fault lasts"
    )
    bench.add_argument(
        "--after-seconds", type=float, default=12.0, help="chaos: load after each fault ends"
    )
    bench.add_argument(
        "--examples", type=int, default=None, help="fuzz: generated cases an operation (25)"
    )
    bench.add_argument("--seed", type=int, default=0, help="fuzz: schemathesis' seed")
    bench.add_argument(
        "--load-seconds", type=float, default=40.0, help="autoscale: how long the load lasts"
    )
    bench.add_argument(
        "--per-family",
        "--per-group",
        dest="per_family",
        type=int,
        default=None,
        help="questions per family (group); default: bench.per_family on the world, all of a "
        "files task's",
    )
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
    sub.add_parser("demo", parents=[common], help="the main job on the embedded default")
    r = sub.add_parser(
        "report", parents=[common], help="the demo's report again, as Markdown and one HTML page"
    )
    r.add_argument("paths", nargs="*", help="Markdown reports to turn into HTML pages instead")
    r.add_argument(
        "--screenshot",
        action="store_true",
        help="also render each page in a headless Chromium; its top 1200x2400 pixels "
        "as <page>.screenshot.png",
    )
    return p


def resolve_config(args: argparse.Namespace) -> Config:
    """The config a command runs with: `--config` (or the default file), `--smoke`, `--set`."""
    path = args.config
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    overrides = [*SMOKE, *args.overrides] if getattr(args, "smoke", False) else args.overrides
    if getattr(args, "model_version", None):
        overrides = [*overrides, f"model.version={args.model_version}"]
    return load_config(path, overrides)
