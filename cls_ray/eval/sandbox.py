"""A benchmark's own application: a copy of the user's state directory under
`state_dir/<name>` with settings of its own, so what the benchmark does to the service (faults,
fuzzed writes, the sessions of its load) never touches the user's buffer, store or keys."""

from __future__ import annotations

import os
import shutil

from cls_ray.config import Config, with_overrides

# What a sandbox never copies: other sandboxes, the user's sessions and keys, their outputs.
SKIPPED = (
    "chaos",
    "fuzz",
    "autoscale",
    "continual-*",
    "replay",
    "reports",
    "bench",
    "logs",
    "keys.json",
    "*.lock",
)


def _link_or_copy(a: str, b: str) -> None:
    # Version folders and PRM weights are written once, never changed in place: linked.
    # Milvus' file is written by its server: copied.
    if a.endswith(".db"):
        shutil.copy2(a, b)
        return
    try:
        os.link(a, b)
    except OSError:
        shutil.copy2(a, b)


def sandbox_config(cfg: Config, name: str, settings: dict) -> Config:
    """`settings` on a fresh copy of `cfg`'s state directory under `state_dir/name` (models,
    PRM, registry and the Milvus file; an empty replay buffer and no keys)."""
    src, dst = cfg.state_path, cfg.state_path / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*SKIPPED), copy_function=_link_or_copy)
    return with_overrides(cfg, {**settings, "state_dir": str(dst), "serve.auth.keys_file": ""})
