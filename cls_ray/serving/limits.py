"""Bounded waiting and bounded work on the request path.

Every call the ingress makes to a deployment or an actor goes through `bounded` (in the event
loop) or `result_within` (in a session's worker thread): a dependency that hangs, dies or sheds
load becomes an `Unavailable` that names it (504 when it did not answer in time, 503 with
`Retry-After` when it is down or overloaded), never a request that waits without end. What one
request may ask for is priced by `request_cost` and capped (`limits.max_request_cost`), and the
Serve options that bound queues are derived here from the config in one place
(`deployment_limits`), so a batch is never larger than what a replica accepts at once.
"""

from __future__ import annotations

import asyncio
import errno
import math
from typing import Any

from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

_STORAGE_DOWN = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS}
SESSION_BATCHES = 4  # session batches an ingress replica runs at once
SCORER_BATCH = 32  # trajectories per PRM call


class Unavailable(Exception):
    """A dependency on the request path failed in a way the client may retry: `status` 503
    (down, overloaded: `retry_after_s`) or 504 (no answer in time)."""

    def __init__(self, status: int, detail: str, retry_after_s: float | None = None):
        super().__init__(detail)
        self.status, self.detail, self.retry_after_s = status, detail, retry_after_s


def unavailable(e: BaseException, what: str, timeout_s: float, retry_after_s: float) -> Exception:
    """What a failed call to `what` means for the client; `e` itself when it is not about
    availability (a bug, a refused input: the caller maps or raises it)."""
    if isinstance(e, Unavailable):
        return e
    if isinstance(e, TimeoutError | asyncio.TimeoutError | GetTimeoutError):
        return Unavailable(504, f"{what} did not answer within {timeout_s:g} s", retry_after_s)
    if isinstance(e, BackPressureError):
        return Unavailable(503, f"{what} is overloaded ({e})", retry_after_s)
    if isinstance(e, DeploymentUnavailableError | RayActorError):
        return Unavailable(503, f"{what} is unavailable ({type(e).__name__})", retry_after_s)
    cause = getattr(e, "cause", None) if isinstance(e, RayTaskError) else None
    if isinstance(cause, BackPressureError):
        return Unavailable(503, f"{what} is overloaded ({cause})", retry_after_s)
    if isinstance(cause, ConnectionError) or (
        isinstance(cause, OSError) and cause.errno in _STORAGE_DOWN
    ):  # the buffer's disk full, storage unreachable: not the request's fault
        return Unavailable(503, f"{what} failed: {cause}", retry_after_s)
    return e


async def bounded(awaitable, timeout_s: float, what: str, retry_after_s: float = 1.0) -> Any:
    """Awaits a handle's response or an actor's ref for at most `timeout_s`."""
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except Exception as e:  # noqa: BLE001 - mapped by kind below, else re-raised as it was
        raise unavailable(e, what, timeout_s, retry_after_s) from e


def result_within(response, timeout_s: float | None, what: str, retry_after_s: float = 1.0):
    """A deployment response's result, from a worker thread, within `timeout_s`."""
    try:
        return response.result(timeout_s=timeout_s)
    except Exception as e:  # noqa: BLE001 - mapped by kind, else re-raised as it was
        raise unavailable(e, what, timeout_s or math.inf, retry_after_s) from e


def request_cost(best_of: int, max_steps: int, top_k: int) -> int:
    """The work one session request asks for, in the units of `limits.max_request_cost`."""
    return best_of * max_steps * max(1, top_k)


def deployment_limits(cfg) -> dict[str, dict]:
    """Serve options that bound each deployment's queue and concurrency, from the config:
    `max_ongoing_requests` never below the batch a replica must fill, `max_queued_requests` with
    a 503 + `Retry-After` beyond it at the ingress, and the ingress's concurrent session
    batches such that all of them fit in its `max_ongoing_requests`."""
    s, lim = cfg.serve, cfg.serve.limits
    backpressure = {"status_code": 503, "retry_after_s": lim.retry_after_s}
    return {
        "ingress": {
            "max_ongoing_requests": max(
                s.max_concurrent_sessions, s.session_batch_size * SESSION_BATCHES
            ),
            "max_queued_requests": lim.max_queued_requests,
            "backpressure_config": backpressure,
        },
        "generator": {
            "max_ongoing_requests": s.generator.max_ongoing_requests,
            "max_queued_requests": s.generator.max_queued_requests,
        },
        "retriever": {
            "max_ongoing_requests": s.retriever.max_ongoing_requests,
            "max_queued_requests": s.retriever.max_queued_requests,
        },
        "scorer": {"max_ongoing_requests": SCORER_BATCH * 2, "max_queued_requests": 1024},
    }
