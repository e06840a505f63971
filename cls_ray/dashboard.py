"""The Grafana dashboard an operator opens first, built from the metric catalogue
(`cls_ray.metrics`): traffic and errors, latency p50/p99, R(τ) over time and per version, the
replay buffer's depth, the sleep history, and the version each replica serves. Every query names
its series through `prometheus_name`, so a panel cannot ask for a metric the code does not
export; `cls_ray.cluster` ships it as a ConfigMap that Grafana's dashboard sidecar loads."""

from __future__ import annotations

from cls_ray import metrics as m
from cls_ray.metrics import prometheus_name as series

UID = "cls-ray-overview"
WINDOW = "$__rate_interval"


def _rate(metric: m.Metric, by: str, part: str = "", match: str = "") -> str:
    sel = f"{series(metric, part)}{{{match}}}" if match else series(metric, part)
    return f"sum by ({by}) (rate({sel}[{WINDOW}]))"


def _quantile(q: float, metric: m.Metric, by: str = "") -> str:
    keys = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, {_rate(metric, keys, 'bucket')})"


def _mean(metric: m.Metric, by: str) -> str:
    return f"{_rate(metric, by, 'sum')} / {_rate(metric, by, 'count')}"


def _target(expr: str, legend: str, ref: str) -> dict:
    return {
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
    }


def _panel(title: str, targets: list[tuple[str, str]], unit: str, kind: str = "timeseries"):
    return {
        "type": kind,
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [_target(e, leg, chr(ord("A") + i)) for i, (e, leg) in enumerate(targets)],
    }


def panels() -> list[dict]:
    """The panels, in reading order (two a row)."""
    rows = [
        _panel(
            "Requests / s by route",
            [(_rate(m.REQUESTS, "route"), "{{route}}")],
            "reqps",
        ),
        _panel(
            "Errors / s by status",
            [
                (
                    _rate(m.REQUESTS, "route, status", match='status=~"4..|5.."'),
                    "{{status}} {{route}}",
                )
            ],
            "reqps",
        ),
        _panel(
            "Session latency",
            [
                (_quantile(0.5, m.SESSION_SECONDS), "p50"),
                (_quantile(0.99, m.SESSION_SECONDS), "p99"),
            ],
            "s",
        ),
        _panel(
            "Step, generation and retrieval latency (p50 / p99)",
            [
                (_quantile(0.5, m.STEP_SECONDS), "step p50"),
                (_quantile(0.99, m.STEP_SECONDS), "step p99"),
                (_quantile(0.99, m.GENERATION_SECONDS), "generation p99"),
                (_quantile(0.99, m.RETRIEVAL_SECONDS), "retrieval p99"),
            ],
            "s",
        ),
        _panel(
            "Mean R(τ) by model version",
            [(_mean(m.R_TAU, "version"), "{{version}}")],
            "percentunit",
        ),
        _panel(
            "Mean step score by model version",
            [(_mean(m.STEP_SCORE, "version"), "{{version}}")],
            "percentunit",
        ),
        _panel(
            "Sessions / s by model version",
            [(_rate(m.SESSIONS, "version"), "{{version}}")],
            "reqps",
        ),
        _panel(
            "Replay buffer",
            [
                (f"max({series(m.BUFFER_SESSIONS)})", "sessions"),
                (f"max({series(m.BUFFER_WAITING)})", "waiting for a sleep"),
                (f"max({series(m.BUFFER_SEGMENTS)})", "sealed segments"),
            ],
            "short",
        ),
        _panel(
            "Replay buffer: WAL bytes not sealed yet",
            [(f"max({series(m.BUFFER_WAL_BYTES)})", "bytes")],
            "bytes",
        ),
        _panel(
            "Sleeps by outcome (per day)",
            [(f"sum by (outcome) (increase({series(m.SLEEPS)}[1d]))", "{{outcome}}")],
            "short",
            kind="barchart",
        ),
        _panel(
            "Sleep duration (p50) and weight sync (p99)",
            [
                (_quantile(0.5, m.SLEEP_SECONDS, "outcome"), "sleep {{outcome}}"),
                (_quantile(0.99, m.WEIGHT_SYNC_SECONDS, "mode"), "weight sync {{mode}}"),
            ],
            "s",
        ),
        _panel(
            "Version each replica serves",
            [(f"max by (replica, version) ({series(m.REPLICA_VERSION)}) == 1", "{{replica}}")],
            "short",
            kind="table",
        ),
    ]
    for i, p in enumerate(rows):
        p["id"] = i + 1
        p["gridPos"] = {"x": 12 * (i % 2), "y": 8 * (i // 2), "w": 12, "h": 8}
    return rows


def dashboard() -> dict:
    """The dashboard JSON (Grafana's model; import it, or let the sidecar load the ConfigMap)."""
    return {
        "uid": UID,
        "title": "cls-ray",
        "tags": ["cls-ray", "ray"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                }
            ]
        },
        "panels": panels(),
    }
