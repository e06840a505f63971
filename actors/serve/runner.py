"""How the ingress runs sessions: the requests that arrive together run RGR in lock-step over
the generator and retriever deployments, the PRM scores them where asked, and the replay buffer
stores them before anyone is answered. Every call is bounded (`cls_ray.serving.limits`); a
group that fails fails only its own requests."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from ray import serve

from actors.metrics import count, observe
from actors.serve.handles import RemoteEngine, RemoteRetriever
from cls_ray import metrics as m
from cls_ray.config import Config
from cls_ray.prm.best_of_n import trajectory_items
from cls_ray.rgr import run_rgr
from cls_ray.serving.batching import session_groups
from cls_ray.serving.limits import SESSION_BATCHES as BATCHES
from cls_ray.serving.limits import Unavailable, bounded
from cls_ray.serving.sessions import issue_tokens, pick_best, session_records, session_reply
from cls_ray.steps import StepFormat

logger = logging.getLogger(__name__)


class SessionRunner:
    def __init__(self, cfg: Config, fmt: StepFormat, generator, retriever, scorer, buffer):
        self.cfg, self.format, self.limits = cfg, fmt, cfg.serve.limits
        self.generator, self.retriever, self.scorer, self.buffer = (
            generator,
            retriever,
            scorer,
            buffer,
        )
        s = cfg.serve
        # RGR is a blocking loop of handle calls; each running session batch holds one thread.
        self.pool = ThreadPoolExecutor(BATCHES + 2, thread_name_prefix="rgr")
        self._background: set[asyncio.Task] = set()
        self._sessions.set_max_batch_size(s.session_batch_size)
        self._sessions.set_batch_wait_timeout_s(s.session_batch_wait_s)

    def set_batch_size(self, n: int) -> None:
        self._sessions.set_max_batch_size(n)

    async def call(self, awaitable, what: str, timeout_s: float | None = None):
        """A call to a deployment or actor, bounded (`limits.Unavailable` naming `what`)."""
        t = timeout_s or self.limits.call_timeout_s
        return await bounded(awaitable, t, what, self.limits.retry_after_s)

    async def run(self, req: dict) -> dict:
        """One session request (`serving.sessions.session_request`), batched with others;
        raises what failed its group (`Unavailable` for a dependency)."""
        reply = await self._sessions(req)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, max_concurrent_batches=BATCHES)
    async def _sessions(self, requests: list[dict]) -> list[dict | BaseException]:
        """Sessions that arrive together run RGR in lock-step: each round is one retrieval
        request and one generation request for all of them (which the retriever and generator
        batch again with other ingress replicas' rounds). A group that fails fails only its own
        requests (each gets the error), never the others batched with it."""
        out: list = [None] * len(requests)
        groups = list(session_groups(requests).values())
        got = await asyncio.gather(
            *(self._run_group([requests[i] for i in idx], idx, out) for idx in groups),
            return_exceptions=True,
        )
        for idx, err in zip(groups, got, strict=True):
            if isinstance(err, BaseException):
                if not isinstance(err, Unavailable):
                    logger.error("a session group failed", exc_info=err)
                for i in idx:
                    out[i] = err
        return out

    async def _rgr(self, reqs: list[dict], version: str) -> list:
        r0, n = reqs[0], reqs[0]["best_of"]
        s, t = self.cfg.serve, self.limits.call_timeout_s
        engine = RemoteEngine(self.generator, version, self.format, s.generator.max_batch_size, t)
        retriever = (
            None
            if r0["mode"] == "none"
            else RemoteRetriever(self.retriever, s.retriever.max_batch_size, t)
        )
        run = functools.partial(
            run_rgr,
            [r["question"] for r in reqs for _ in range(n)],
            engine,
            retriever,
            mode=r0["mode"],
            temperature=r0["temperature"],
            max_tokens=r0.get("max_tokens"),
            **self.cfg.rgr_options(top_k=r0["top_k"], max_steps=r0["max_steps"]),
        )
        try:
            return await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(self.pool, run),
                self.limits.session_timeout_s,
            )
        except (TimeoutError, asyncio.TimeoutError):
            # The thread goes on until its next bounded call ends; the client is told now.
            raise Unavailable(
                504,
                f"the session did not finish within {self.limits.session_timeout_s:g} s",
                self.limits.retry_after_s,
            ) from None

    async def _run_group(self, reqs: list[dict], idx: list[int], out: list) -> None:
        n = reqs[0]["best_of"]
        version = await self.call(self.generator.current_version.remote(), "the generator")
        started = time.time()
        trajs = await self._rgr(reqs, version)
        scored: list[dict | None] = [None] * len(trajs)
        if n > 1:  # the PRM picks each question's best sample
            trajs, scored = pick_best(trajs, await self._score(trajs), n)
        elif self.scorer is not None and any(r["score"] for r in reqs):
            scored = await self._score(trajs)  # asked for: stored and returned with the session
        sessions = session_records(trajs, scored, version, started, [r["owner"] for r in reqs])
        tokens = issue_tokens(sessions)
        # Acknowledged only once durable: the buffer fsyncs before it answers.
        await self.call(
            self.buffer.add_many.remote([x.model_dump() for x in sessions]), "the replay buffer"
        )
        _record_sessions(sessions, time.time() - started, version, reqs[0]["mode"])
        _record_scores([sc for sc in scored if sc is not None], version)
        if self.scorer is not None and scored[0] is None:
            # Off the critical path: the buffer gets the scores when they are ready.
            ids = [x.id for x in sessions]
            task = asyncio.create_task(self._score_and_store(trajs, ids, version))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        for i, tr, session, token in zip(idx, trajs, sessions, tokens, strict=True):
            out[i] = session_reply(tr, session, version, token)

    async def _score(self, trajs) -> list[dict]:
        calls = [
            self.scorer.score.remote({"question": q, "steps": st, "evidence": ev})
            for q, st, ev in trajectory_items(trajs)
        ]
        return await self.call(asyncio.gather(*calls), "the PRM scorer")

    async def _score_and_store(self, trajs, session_ids: list[str], version: str) -> None:
        """PRM scores for stored sessions, written to the buffer."""
        try:
            got = await self._score(trajs)
            _record_scores(got, version)
            writes = [
                self.buffer.set_scores.remote(sid, sc["scores"], sc["r_tau"], sc["prm"])
                for sid, sc in zip(session_ids, got, strict=True)
            ]
            await self.call(asyncio.gather(*writes), "the replay buffer")
        except Exception:  # noqa: BLE001 - scoring is best effort; the session is already safe
            logger.exception("scoring %d sessions failed", len(session_ids))


def _record_sessions(sessions, seconds: float, version: str, mode: str) -> None:
    """Each stored session: counted and timed (whole, and per step)."""
    for x in sessions:
        count(m.SESSIONS, version=version, mode=mode)
        observe(m.SESSION_SECONDS, seconds, version=version)
        observe(m.STEP_SECONDS, seconds / max(1, len(x.steps)), version=version)


def _record_scores(scored: list[dict], version: str) -> None:
    """The PRM's scores of sessions (`{"scores", "r_tau"}` each) into the score histograms."""
    for sc in scored:
        if sc.get("r_tau") is not None:
            observe(m.R_TAU, float(sc["r_tau"]), version=version)
        for v in sc.get("scores") or []:
            observe(m.STEP_SCORE, float(v), version=version)
