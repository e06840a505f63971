"""`cls-ray`: parse, load the config, run one command, print its result.

The CLI is the composition root: its command modules wire the Ray-backed services of `actors/`
into the pure code of `cls_ray`. Nothing else in `cls_ray` imports `actors`.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from cls_ray import console
from cls_ray.cli.parser import make_parser, resolve_config
from cls_ray.config import Config, ConfigError
from cls_ray.eval.screenshot import BrowserError

# command -> "module:function" under cls_ray.cli
COMMANDS = {
    "bootstrap": "build:cmd_bootstrap",
    "ingest": "build:cmd_ingest",
    "task": "task:cmd_task",
    "keys": "keys:cmd_keys",
    "ask": "ask:cmd_ask",
    "up": "stack:cmd_up",
    "down": "stack:cmd_down",
    "status": "status:cmd_status",
    "promote": "versions:cmd_promote",
    "rollback": "versions:cmd_rollback",
    "bench": "bench:cmd_bench",
    "prm": "prm:cmd_prm",
    "sleep": "consolidate:cmd_sleep",
    "ppo": "consolidate:cmd_sleep",
    "demo": "demo:cmd_demo",
    "report": "report:cmd_report",
    "cluster": "cluster:cmd_cluster",
}

# Commands that start no Ray, model or Milvus: nothing to keep out of the console.
PLAIN = {"task", "keys", "cluster", "report"}

NOISY_LOGGERS = (
    "httpx",
    "urllib3",
    "filelock",
    "transformers",
    "ray",
    "pymilvus",
    "milvus_lite",
    "faiss",
)


def command(name: str):
    """The function that runs command `name`. Its module is imported here, on demand: a command
    loads only what it runs (torch, Ray, Milvus take seconds), so `--help`, a config error or
    `cluster render` answer at once."""
    module, _, func = COMMANDS[name].partition(":")
    return getattr(importlib.import_module(f"cls_ray.cli.{module}"), func)


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Milvus Lite's in-process gRPC server logs every call it does not implement (pymilvus
    # probes AllocTimestamp and falls back); that is not an error of ours.
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)


def log_path(cfg: Config, name: str) -> Path:
    return cfg.state_path / "logs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    setup_logging(args.quiet)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cfg = resolve_config(args)
    except ConfigError as e:
        print(f"cls-ray: {e}", file=sys.stderr)
        return 2
    if args.verbose or args.command in PLAIN:
        return run_command(args, cfg, sys.stderr)
    path = log_path(cfg, args.command)
    with console.quiet_console(path) as c:
        print(f"log: {path} (--verbose: everything here)", file=c.err)
        ours = logging.StreamHandler(c.err)  # cls-ray's own warnings stay in sight
        ours.setLevel(logging.WARNING)
        ours.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        for name in ("cls_ray", "actors"):
            logging.getLogger(name).addHandler(ours)
        if "ray" in sys.modules:  # a Ray this process joined before (a test's)
            from actors.ray_cluster import route_worker_output

            route_worker_output(c)
        try:
            return run_command(args, cfg, c.err)
        except Exception:
            text = traceback.format_exc()
            c.log.write(text)
            c.err.write(text)
            c.err.write(f"cls-ray {args.command} failed; its whole log: {path}\n")
            return 1
        finally:
            for name in ("cls_ray", "actors"):
                logging.getLogger(name).removeHandler(ours)


def run_command(args, cfg: Config, err) -> int:
    run = command(args.command)
    try:
        result = run(args, cfg)
    except (FileNotFoundError, KeyError, ValueError, BrowserError) as e:
        # the command as typed: `cls-ray prm eval: ...`, `cls-ray bench consolidation: ...`
        name = " ".join([args.command, *(getattr(args, a, "") for a in ("action", "which"))])
        print(f"cls-ray {name.strip()}: {e}", file=err)
        if (c := console.active()) is not None:
            c.log.write(traceback.format_exc())
            print(f"(its log: {c.log_path})", file=err)
        return 1
    if args.json:
        print(json.dumps(result, default=str))
    return 0
