"""The replay-buffer actor: one process owns the buffer's files; producers and consumers call it.

Ray restarts it after a crash (`max_restarts`) and it recovers from its WAL and segments; calls
in flight are retried (`max_task_retries`), which is safe because `add` is idempotent by id.
A thread of its own seals the WAL into segments, so no producer waits for a seal (or fails with
one when storage is down: `stats()["seal_error"]` says so).
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Sequence

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.metrics import set_gauge
from cls_ray import metrics as m
from cls_ray.replay.buffer import ReplayBuffer
from cls_ray.serving.names import NAMESPACE, buffer_actor_name
from cls_ray.session import Session


class ReplayBufferActor:
    def __init__(
        self,
        root: str,
        seal_every: int = 256,
        lease_seconds: float = 300.0,
        segments: str | None = None,
        seal_interval_s: float = 1.0,
    ):
        self.buffer = ReplayBuffer(
            root,
            seal_every=seal_every,
            lease_seconds=lease_seconds,
            segments=segments,
            background_seal=True,
        )
        self._sealer = threading.Thread(
            target=self._seal_loop, args=(seal_interval_s,), name="seal", daemon=True
        )
        self._sealer.start()

    def _seal_loop(self, every_s: float) -> None:
        while True:
            time.sleep(every_s)
            self.buffer.maybe_seal()
            self._gauges()

    def _gauges(self) -> None:
        """The buffer's depth for Prometheus (`cls_ray.metrics`), every tick of the seal loop:
        counters only, not `stats()`'s pass over every session."""
        st = self.buffer.depth()
        set_gauge(m.BUFFER_SESSIONS, st["sessions"])
        set_gauge(m.BUFFER_WAITING, st["pending"])
        set_gauge(m.BUFFER_SEGMENTS, st["segments"])
        set_gauge(m.BUFFER_WAL_BYTES, st["wal_bytes"])

    def fail_writes(self, seconds: float) -> None:
        """Fault injection (`cls-ray bench chaos`): for `seconds`, every WAL append fails as on
        a full disk (ENOSPC) after writing half its bytes."""
        self.buffer.log.fail_writes = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        threading.Timer(seconds, setattr, (self.buffer.log, "fail_writes", None)).start()

    def add(self, session: dict, consumed: bool = False) -> str:
        return self.buffer.add(session, consumed)

    def add_many(self, sessions: list[dict]) -> list[str]:
        return [self.buffer.add(s) for s in sessions]

    def add_feedback(self, session_id: str, feedback: dict, token: str | None = None) -> None:
        self.buffer.add_feedback(session_id, feedback, token)

    def get(self, session_id: str) -> dict | None:
        s = self.buffer.get(session_id)
        return None if s is None else s.model_dump()

    def ids(self) -> list[str]:
        return self.buffer.ids()

    def take(self, n: int) -> list[dict]:
        return [s.model_dump() for s in self.buffer.take(n)]

    def lease(self, n: int) -> dict:
        return self.buffer.lease(n)

    def renew(self, ids: list[str], holder: str) -> int:
        return self.buffer.renew(ids, holder)

    def ack(self, ids: list[str]) -> int:
        return self.buffer.ack(ids)

    def seal(self) -> str | None:
        p = self.buffer.seal()
        return None if p is None else str(p)

    def segment_paths(self) -> list[str]:
        return self.buffer.segment_paths()

    def set_scores(self, session_id: str, step_scores: list[float], r_tau: float, prm=None):
        self.buffer.set_scores(session_id, step_scores, r_tau, prm)

    def with_feedback(self) -> list[dict]:
        return self.buffer.with_feedback()

    def stats(self) -> dict:
        return self.buffer.stats()

    def compact(self, keep_replay: int, seed: int = 0, strata: dict | None = None) -> dict:
        return self.buffer.compact(keep_replay, seed, strata)

    def replay_sample(self, n: int, seed: int = 0, strata: dict | None = None) -> list[dict]:
        return [s.model_dump() for s in self.buffer.replay_sample(n, seed, strata)]

    def pid(self) -> int:
        return os.getpid()


def start_replay_buffer(
    root: str,
    name: str = "cls-ray-replay-buffer",
    namespace: str = NAMESPACE,
    seal_every: int = 256,
    num_cpus: float = 0.1,
    pin_here: bool = True,
    segments: str | None = None,
):
    """Starts (or finds) the named buffer actor. It is detached (it outlives the process that
    started it), restarts forever after crashes, and by default runs on this node, where its
    write-ahead log is."""
    options: dict = {}
    if pin_here:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False
        )
    return (
        ray.remote(ReplayBufferActor)
        .options(
            name=name,
            namespace=namespace,
            get_if_exists=True,
            lifetime="detached",
            max_restarts=-1,
            max_task_retries=-1,
            num_cpus=num_cpus,
            **options,
        )
        .remote(root, seal_every, segments=segments)
    )


class ActorBuffer:
    """The buffer actor as a `Buffer` (see `cls_ray.ports`): what a sleep, PPO and the PRM's
    human labels read from the process that owns the write-ahead log."""

    def __init__(self, handle, timeout_s: float | None = None):
        self.handle = handle
        self.timeout_s = timeout_s

    @classmethod
    def of_app(cls, app_name: str, timeout_s: float | None = None) -> ActorBuffer:
        """The buffer of a running application (a `ValueError` when it has none)."""
        return cls(ray.get_actor(buffer_actor_name(app_name), namespace=NAMESPACE), timeout_s)

    def _get(self, ref):
        return ray.get(ref, timeout=self.timeout_s)

    def lease(self, n: int) -> dict:
        return self._get(self.handle.lease.remote(n))

    def add(self, session: Session | dict, consumed: bool = False) -> str:
        s = session.model_dump() if isinstance(session, Session) else session
        return self._get(self.handle.add.remote(s, consumed))

    def set_scores(self, session_id, step_scores, r_tau, prm=None) -> None:
        self._get(self.handle.set_scores.remote(session_id, step_scores, r_tau, prm))

    def renew(self, ids: Sequence[str], holder: str) -> int:
        return self._get(self.handle.renew.remote(list(ids), holder))

    def ack(self, ids: Sequence[str]) -> int:
        return self._get(self.handle.ack.remote(list(ids)))

    def compact(self, keep_replay: int, seed: int = 0, strata: dict | None = None) -> dict:
        return self._get(self.handle.compact.remote(keep_replay, seed, strata))

    def replay_sample(self, n: int, seed: int = 0, strata: dict | None = None) -> list[Session]:
        got = self._get(self.handle.replay_sample.remote(n, seed, strata))
        return [Session.model_validate(s) for s in got]

    def with_feedback(self) -> list[dict]:
        return self._get(self.handle.with_feedback.remote())

    def stats(self) -> dict:
        return self._get(self.handle.stats.remote())
