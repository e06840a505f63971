"""The metrics cls-ray exports: one catalogue, read by the processes that record them
(`actors.metrics`, through Ray's metrics API, on each node's Prometheus endpoint) and by the
Grafana dashboard (`cls_ray.dashboard`), so a panel can only query a metric that exists.

Prometheus sees each name with Ray's `ray_` prefix; a counter also with `_total`, a histogram
as `_bucket`, `_sum` and `_count` (`prometheus_name`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

# Seconds, from a Milvus search to a whole session on a busy CPU.
LATENCY_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Scores in [0, 1]: R(τ) and step scores.
SCORE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# Minutes-long jobs: a sleep, a weight sync.
JOB_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    description: str
    tags: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()


REQUESTS = Metric(
    "cls_ray_requests",
    "counter",
    "HTTP requests answered by the ingress, by route, status and model version.",
    ("route", "status", "version"),
)
SESSIONS = Metric(
    "cls_ray_sessions",
    "counter",
    "Sessions stored in the replay buffer, by model version and retrieval mode.",
    ("version", "mode"),
)
SESSION_SECONDS = Metric(
    "cls_ray_session_seconds",
    "histogram",
    "Seconds a session took, from its batch starting to its storage.",
    ("version",),
    LATENCY_S,
)
STEP_SECONDS = Metric(
    "cls_ray_step_seconds",
    "histogram",
    "Seconds per reasoning step (retrieval and generation), averaged over a session.",
    ("version",),
    LATENCY_S,
)
GENERATION_SECONDS = Metric(
    "cls_ray_generation_seconds",
    "histogram",
    "Seconds one engine call of the generator took (a batch of next steps).",
    ("version",),
    LATENCY_S,
)
RETRIEVAL_SECONDS = Metric(
    "cls_ray_retrieval_seconds",
    "histogram",
    "Seconds one retriever batch took (embedding and Milvus search).",
    (),
    LATENCY_S,
)
R_TAU = Metric(
    "cls_ray_r_tau",
    "histogram",
    "R(tau) of scored sessions, by model version.",
    ("version",),
    SCORE,
)
STEP_SCORE = Metric(
    "cls_ray_step_score",
    "histogram",
    "The PRM's score of each step of scored sessions, by model version.",
    ("version",),
    SCORE,
)
BUFFER_SESSIONS = Metric(
    "cls_ray_buffer_sessions", "gauge", "Sessions the replay buffer holds.", ()
)
BUFFER_WAITING = Metric(
    "cls_ray_buffer_waiting",
    "gauge",
    "Sessions no consolidation has consumed yet (what the next sleep learns from).",
    (),
)
BUFFER_SEGMENTS = Metric(
    "cls_ray_buffer_segments", "gauge", "Sealed Parquet segments of the replay buffer.", ()
)
BUFFER_WAL_BYTES = Metric(
    "cls_ray_buffer_wal_bytes",
    "gauge",
    "Bytes in the replay buffer's WAL, not sealed into segments yet.",
    (),
)
SLEEPS = Metric(
    "cls_ray_sleeps",
    "counter",
    "Consolidations that ended, by method and outcome (promoted, refused, failed).",
    ("method", "outcome"),
)
SLEEP_SECONDS = Metric(
    "cls_ray_sleep_seconds",
    "histogram",
    "Seconds a consolidation took, by outcome.",
    ("outcome",),
    JOB_S,
)
REPLICA_VERSION = Metric(
    "cls_ray_replica_version",
    "gauge",
    "1 for the version a generator replica serves (0 for those it served before).",
    ("replica", "version"),
)
WEIGHT_SYNC_SECONDS = Metric(
    "cls_ray_weight_sync_seconds",
    "histogram",
    "Seconds from a promotion's start until every replica served the version, by path.",
    ("mode",),
    JOB_S,
)

CATALOGUE: tuple[Metric, ...] = (
    REQUESTS,
    SESSIONS,
    SESSION_SECONDS,
    STEP_SECONDS,
    GENERATION_SECONDS,
    RETRIEVAL_SECONDS,
    R_TAU,
    STEP_SCORE,
    BUFFER_SESSIONS,
    BUFFER_WAITING,
    BUFFER_SEGMENTS,
    BUFFER_WAL_BYTES,
    SLEEPS,
    SLEEP_SECONDS,
    REPLICA_VERSION,
    WEIGHT_SYNC_SECONDS,
)

PREFIX = "ray_"  # Ray's exporter prefixes every application metric


def prometheus_name(m: Metric, part: str = "") -> str:
    """The series name Prometheus stores: `ray_<name>`, `_total` for a counter, and a
    histogram's `part` (`bucket`, `sum`, `count`)."""
    if m.kind == "counter":
        return f"{PREFIX}{m.name}_total"
    if m.kind == "histogram":
        if part not in ("bucket", "sum", "count"):
            raise ValueError(f"{m.name} is a histogram: name a part (bucket, sum, count)")
        return f"{PREFIX}{m.name}_{part}"
    return f"{PREFIX}{m.name}"


def route_label(path: str) -> str:
    """A request path as a label with bounded cardinality: ids are not part of it."""
    if path.startswith("/v1/sessions/") and path.endswith("/feedback"):
        return "/v1/sessions/{id}/feedback"
    known = {
        "/healthz",
        "/v1/models",
        "/v1/rgr",
        "/v1/chat/completions",
        "/v1/documents",
        "/admin/buffer",
        "/admin/sleep",
        "/admin/promote",
        "/admin/rollback",
        "/openapi.json",
        "/docs",
    }
    return path if path in known else "other"
