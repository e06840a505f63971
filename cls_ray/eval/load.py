"""A bounded HTTP load on loopback: client threads posting `/v1/rgr` sessions, each request
bounded by its timeout and the whole load by a request count, as a client should behave (it
waits what a 503's `Retry-After` asks). The chaos and autoscaling benchmarks drive it."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import requests


@dataclass
class Record:
    t0: float
    t1: float
    status: int | None  # None: no HTTP answer
    detail: str = ""
    session_id: str | None = None
    retry_after: str | None = None


@dataclass
class Load:
    """Client threads posting `/v1/rgr` until stopped; each request bounded by `timeout_s`, at
    most `max_requests` in all (a bounded loop whatever the service does)."""

    url: str
    questions: Sequence[str]
    clients: int
    timeout_s: float
    headers: dict = field(default_factory=dict)
    max_requests: int = 100_000
    records: list[Record] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sent = 0

    def _next(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._sent >= self.max_requests:
                return None
            self._sent += 1
            return self._sent

    def _client(self) -> None:
        http = requests.Session()
        while (i := self._next()) is not None:
            q = self.questions[i % len(self.questions)]
            t0 = time.monotonic()
            rec = Record(t0, t0, None)
            try:
                r = http.post(
                    f"{self.url}/v1/rgr", json={"question": q}, headers=self.headers,
                    timeout=self.timeout_s,
                )  # fmt: skip
                rec.status, rec.retry_after = r.status_code, r.headers.get("Retry-After")
                if r.status_code == 200:
                    rec.session_id = r.json().get("session_id")
                else:
                    rec.detail = detail_of(r)
            except requests.RequestException as e:
                rec.detail = type(e).__name__
            rec.t1 = time.monotonic()
            with self._lock:
                self.records.append(rec)
            if rec.status == 503:  # as a client should: wait what the service asked
                self._stop.wait(min(float(rec.retry_after or 1.0), 10.0))

    def start(self, clients: int | None = None) -> Load:
        for _ in range(clients or self.clients):
            t = threading.Thread(target=self._client, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def wait(self) -> list[Record]:
        """Until every client has sent its share of `max_requests`."""
        return self._join()

    def stop(self) -> list[Record]:
        self._stop.set()
        return self._join()

    def _join(self) -> list[Record]:
        for t in self._threads:
            t.join(self.timeout_s + 5)
        with self._lock:
            return list(self.records)


def detail_of(r: requests.Response) -> str:
    try:
        body = r.json()
        d = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        d = r.text
    return str(d)[:160]


def percentile(xs: Sequence[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if len(xs) else None
