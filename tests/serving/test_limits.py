"""Bounded waiting and bounded work on the request path, without a running service: how a
failed call becomes a 503/504 naming its dependency, the cost and token caps, the work budget,
the health probe's bound, and Serve options derived so batches can fill."""

import asyncio
import errno
import time

import pytest
from fastapi import HTTPException
from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError

from cls_ray.config import load_config
from cls_ray.config.base import ConfigError
from cls_ray.serving.api import RGRRequest
from cls_ray.serving.health import probe
from cls_ray.serving.keys import Access, AccessDenied, Principal
from cls_ray.serving.limits import (
    SESSION_BATCHES,
    Unavailable,
    bounded,
    deployment_limits,
    unavailable,
)
from cls_ray.serving.sessions import session_request


def _task_error(cause: BaseException) -> RayTaskError:
    return RayTaskError("add", "traceback", cause)


def test_a_call_that_does_not_answer_is_a_504_naming_the_dependency():
    async def hang():
        await asyncio.sleep(30)

    t0 = time.perf_counter()
    with pytest.raises(Unavailable) as e:
        asyncio.run(bounded(hang(), 0.2, "the retriever"))
    assert time.perf_counter() - t0 < 2
    assert e.value.status == 504 and "the retriever did not answer within 0.2 s" in e.value.detail


def test_failures_map_to_503_by_kind_and_the_requests_own_errors_pass_through():
    full = OSError(errno.ENOSPC, "No space left on device")
    got = unavailable(_task_error(full), "the replay buffer", 5, 2)
    assert got.status == 503 and "No space left" in got.detail and got.retry_after_s == 2
    assert unavailable(BackPressureError(9, 8), "the generator", 5, 1).status == 503
    refused = _task_error(PermissionError("feedback only from the owner"))
    assert unavailable(refused, "the replay buffer", 5, 1) is refused  # a 403, not a 503
    bug = ValueError("a bug")
    assert unavailable(bug, "x", 5, 1) is bug


def test_a_request_asking_for_too_much_work_is_refused_naming_the_fields():
    cfg = load_config(None, ["serve.limits.max_request_cost=100", "serve.limits.max_tokens=64"])
    ok = session_request(cfg, RGRRequest(question="q", top_k=5, max_steps=4), None)
    assert ok["cost"] == 20 and ok["top_k"] == 5 and ok["max_steps"] == 4
    with pytest.raises(HTTPException) as e:
        session_request(
            cfg, RGRRequest(question="q", top_k=10, max_steps=8, best_of=2), None, scorer=True
        )
    assert e.value.status_code == 422 and "best_of x max_steps x top_k" in e.value.detail
    with pytest.raises(HTTPException) as e:
        session_request(cfg, RGRRequest(question="q"), None, max_tokens=65)
    assert e.value.status_code == 422 and e.value.detail.startswith("max_tokens")


def test_a_callers_work_budget_runs_out_with_a_retry_after():
    cfg = load_config(None, ["serve.auth.work_per_minute=600", "serve.limits.max_request_cost=100"])
    access, p = Access(cfg), Principal("k1", "alice", "user")
    access.charge(p, 100)  # the burst holds the largest request
    access.charge(p, 50)
    with pytest.raises(AccessDenied) as e:
        access.charge(p, 100)
    assert e.value.status == 429 and "work budget" in e.value.detail and e.value.retry_after_s > 0
    access.charge(Principal("k2", "bob", "user"), 100)  # another caller's budget is its own


def test_the_health_probe_reports_a_hanging_dependency_within_its_bound():
    async def ok():
        return 1

    async def hang():
        await asyncio.sleep(30)

    async def broken():
        raise ConnectionError("refused")

    t0 = time.perf_counter()
    got = asyncio.run(probe({"generator": ok, "retriever": hang, "buffer": broken}, 0.3))
    assert time.perf_counter() - t0 < 2
    assert got["status"] == "degraded"
    deps = got["dependencies"]
    assert deps["generator"]["ok"] and not deps["retriever"]["ok"]
    assert "no answer within 0.3 s" in deps["retriever"]["error"]
    assert deps["buffer"]["error"] == "ConnectionError: refused"


def test_serve_options_let_every_batch_fill_and_bound_every_queue():
    cfg = load_config(None, [])
    lim = deployment_limits(cfg)
    s = cfg.serve
    assert lim["ingress"]["max_ongoing_requests"] >= s.session_batch_size * SESSION_BATCHES
    assert lim["ingress"]["max_queued_requests"] == s.limits.max_queued_requests
    assert lim["ingress"]["backpressure_config"]["retry_after_s"] == s.limits.retry_after_s
    assert lim["generator"]["max_ongoing_requests"] >= s.generator.max_batch_size
    assert all("max_queued_requests" in lim[d] for d in ("generator", "retriever", "scorer"))
    with pytest.raises(ConfigError, match="max_ongoing_requests"):
        load_config(None, ["serve.retriever.max_ongoing_requests=8"])
    with pytest.raises(ConfigError, match="call_timeout_s <= session_timeout_s"):
        load_config(None, ["serve.limits.session_timeout_s=500"])
