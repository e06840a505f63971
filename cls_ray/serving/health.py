"""`/healthz`: each dependency of the request path probed at once, each within a bound, so a
dependency that hangs shows as failed in seconds instead of hanging the health check."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def _one(make: Callable[[], Awaitable], timeout_s: float) -> dict:
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(make(), timeout_s)
        return {"ok": True, "seconds": round(time.perf_counter() - t0, 4)}
    except (TimeoutError, asyncio.TimeoutError):
        error = f"no answer within {timeout_s:g} s"
    except Exception as e:  # noqa: BLE001 - any failure of a probe is what it reports
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    return {"ok": False, "seconds": round(time.perf_counter() - t0, 4), "error": error}


async def probe(checks: dict[str, Callable[[], Awaitable]], timeout_s: float) -> dict:
    """`{"status": "ok" | "degraded", "dependencies": {name: {ok, seconds, error?}}}`."""
    got = await asyncio.gather(*(_one(make, timeout_s) for make in checks.values()))
    deps = dict(zip(checks, got, strict=True))
    return {
        "status": "ok" if all(d["ok"] for d in deps.values()) else "degraded",
        "dependencies": deps,
    }
