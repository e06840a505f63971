"""Where trained PRMs live: `v<N>` folders under `state_dir/prm`, the newest in use (or
`prm.path`). Paths only (no model code), so asking costs nothing."""

from __future__ import annotations

from pathlib import Path


def prm_root(cfg) -> Path:
    return cfg.state_path / "prm"


def latest_prm(cfg) -> Path | None:
    """`prm.path` when set, else the newest `v<N>` under state_dir/prm."""
    if cfg.prm.path:
        return Path(cfg.prm.path)
    versions = sorted(
        (p for p in prm_root(cfg).glob("v*") if p.name[1:].isdigit() and (p / "prm.json").exists()),
        key=lambda p: int(p.name[1:]),
    )
    return versions[-1] if versions else None


def next_prm_path(cfg) -> Path:
    taken = [int(p.name[1:]) for p in prm_root(cfg).glob("v*") if p.name[1:].isdigit()]
    return prm_root(cfg) / f"v{max(taken, default=0) + 1}"
