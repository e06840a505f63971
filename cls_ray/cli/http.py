"""The CLI's client of a running stack: is it up, and JSON requests to its HTTP API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from cls_ray.config import Config


def url(cfg: Config) -> str:
    return f"http://{cfg.serve.host}:{cfg.serve.port}"


def stack_up(cfg: Config) -> bool:
    """Whether the configured application answers `/healthz`."""
    try:
        with urllib.request.urlopen(url(cfg) + "/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def http_json(method: str, address: str, body: dict | None = None, timeout: float = 300) -> dict:
    """One JSON request; an HTTP error stops the command with its status and body."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        address, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {address}: HTTP {e.code}: {e.read().decode()[:500]}") from None
