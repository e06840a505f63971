"""Where reports go: JSON under `state_dir/reports/` (copied to `storage.uri` when set)."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(cfg, name: str, result: dict) -> Path:
    """Writes `result` as `state_dir/reports/<name>.json` (whole or not at all); returns it."""
    out = cfg.state_path / "reports" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(out)
    return out
