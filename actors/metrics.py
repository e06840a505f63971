"""Recording the catalogue's metrics (`cls_ray.metrics`) through Ray's metrics API: each process
makes its instruments on first use and Ray exports them on its node's Prometheus endpoint
(`ray start --metrics-export-port`). Recording never fails a request: an error is logged once.
"""

from __future__ import annotations

import logging
import threading

from ray.util import metrics as ray_metrics

from cls_ray.metrics import REQUESTS, Metric, route_label

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_made: dict[str, object] = {}
_warned: set[str] = set()


def _instrument(m: Metric):
    with _lock:
        got = _made.get(m.name)
        if got is None:
            if m.kind == "counter":
                got = ray_metrics.Counter(m.name, m.description, tag_keys=m.tags)
            elif m.kind == "gauge":
                got = ray_metrics.Gauge(m.name, m.description, tag_keys=m.tags)
            else:
                got = ray_metrics.Histogram(
                    m.name, m.description, boundaries=list(m.boundaries), tag_keys=m.tags
                )
            _made[m.name] = got
        return got


def _tags(m: Metric, tags: dict) -> dict[str, str]:
    return {k: str(tags.get(k, "")) for k in m.tags}


def _safely(m: Metric, record) -> None:
    try:
        record(_instrument(m))
    except Exception:  # noqa: BLE001 - a metric never fails what it measures
        if m.name not in _warned:
            _warned.add(m.name)
            logger.warning("recording %s failed", m.name, exc_info=True)


def count(m: Metric, value: float = 1.0, **tags) -> None:
    _safely(m, lambda i: i.inc(value, tags=_tags(m, tags)))


def observe(m: Metric, value: float, **tags) -> None:
    _safely(m, lambda i: i.observe(value, tags=_tags(m, tags)))


def set_gauge(m: Metric, value: float, **tags) -> None:
    _safely(m, lambda i: i.set(value, tags=_tags(m, tags)))


class RequestMetrics:
    """ASGI middleware: every HTTP request the ingress answers, counted by route (ids left
    out), status and the model version that answered it (`request.state.model_version`, set
    by the session routes). Serve's own refusals (backpressure, its request timeout) never
    reach the ingress: Serve counts those (`ray_serve_num_http_error_requests`)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            version = (scope.get("state") or {}).get("model_version", "")
            count(REQUESTS, route=route_label(scope["path"]), status=status[0], version=version)
