"""The ingress deployment: the HTTP API (FastAPI), RGR sessions run in lock-step, stored durably
in the replay buffer before they are answered, and the admin routes."""

# No `from __future__ import annotations` here: FastAPI builds each route from its annotations,
# and under Serve's ingress postponed (string) annotations turned the body models into query
# parameters (every POST answered 422 "query: Field required").
import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import ray
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import StreamingResponse
from ray import serve

from actors.registry import start_registry
from actors.replay_buffer import start_replay_buffer
from actors.serve.handles import RemoteEngine, RemoteRetriever
from cls_ray.config import Config
from cls_ray.prm.best_of_n import trajectory_items
from cls_ray.registry import ModelVersion
from cls_ray.rgr import run_rgr
from cls_ray.serving.api import (
    ChatRequest,
    DocumentsRequest,
    FeedbackRequest,
    PromoteRequest,
    RGRRequest,
    SleepRequest,
)
from cls_ray.serving.batching import session_groups
from cls_ray.serving.http import BodyLimit, access_error, http_error, install
from cls_ray.serving.keys import Access, AccessDenied, Principal
from cls_ray.serving.names import NAMESPACE, buffer_actor_name, scheduler_actor_name
from cls_ray.serving.openai import Completion, model_list, question_of
from cls_ray.serving.sessions import (
    issue_tokens,
    pick_best,
    session_records,
    session_reply,
    session_request,
)
from cls_ray.session import Feedback
from cls_ray.steps import step_format

logger = logging.getLogger(__name__)

api = install(FastAPI(title="cls-ray", version="0.1.0"))


@serve.ingress(api)
class Ingress:
    def __init__(self, cfg: dict, generator, retriever, scorer=None):
        self.cfg = Config.model_validate(cfg)
        s = self.cfg.serve
        BodyLimit.max_body_bytes = s.max_body_bytes
        self.generator, self.retriever, self.scorer = generator, retriever, scorer
        self.access = Access(self.cfg)
        self._background: set[asyncio.Task] = set()
        # Started by `deploy` on the node that holds the state directory; found here by name.
        self.buffer = start_replay_buffer(
            str(self.cfg.replay_path),
            buffer_actor_name(s.app_name),
            pin_here=False,
            segments=self.cfg.replay_segments,
        )
        self.registry = start_registry(
            str(self.cfg.state_path / "registry.json"), str(self.cfg.model_path), s.app_name
        )
        # transformers' tokenizers import torch (seconds, hundreds of MB): only a chat
        # template needs one in the ingress (`step_format` loads it then).
        self.format = step_format(self.cfg)
        # RGR is a blocking loop of handle calls; each running session batch holds one thread.
        self.pool = ThreadPoolExecutor(s.max_concurrent_sessions, thread_name_prefix="rgr")
        self._sessions.set_max_batch_size(s.session_batch_size)
        self._sessions.set_batch_wait_timeout_s(s.session_batch_wait_s)

    def reconfigure(self, user_config: dict) -> None:
        """`{"session_batch_size": n}`: sessions that run RGR in lock-step together."""
        if user_config.get("session_batch_size"):
            self._sessions.set_max_batch_size(int(user_config["session_batch_size"]))

    # -- sessions ----------------------------------------------------------------------------
    def _door(self, key: str | None, needed: str, request: Request) -> Principal:
        """The caller, if its role allows `needed` and it is within its rate (else 401/403/429)."""
        try:
            client = request.client.host if request.client else "?"
            return self.access.require(key, needed, client)  # type: ignore[arg-type]
        except AccessDenied as e:
            raise access_error(e) from None

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, max_concurrent_batches=8)
    async def _sessions(self, requests: list[dict]) -> list[dict]:
        """Sessions that arrive together run RGR in lock-step: each round is one retrieval
        request and one generation request for all of them (which the retriever and generator
        batch again with other ingress replicas' rounds). Several such batches run at once."""
        out: list[dict | None] = [None] * len(requests)
        await asyncio.gather(
            *(
                self._run_group([requests[i] for i in idx], idx, out)
                for idx in session_groups(requests).values()
            )
        )
        return out  # type: ignore[return-value]

    async def _run_group(self, reqs: list[dict], idx: list[int], out: list) -> None:
        r0, n = reqs[0], reqs[0]["best_of"]
        version = await self.generator.current_version.remote()
        s = self.cfg.serve
        engine = RemoteEngine(
            self.generator,
            version,
            self.format,
            s.generator.max_batch_size,
        )
        retriever = (
            None
            if r0["mode"] == "none"
            else RemoteRetriever(self.retriever, s.retriever.max_batch_size)
        )
        started = time.time()
        run = functools.partial(
            run_rgr,
            [r["question"] for r in reqs for _ in range(n)],
            engine,
            retriever,
            mode=r0["mode"],
            temperature=r0["temperature"],
            **self.cfg.rgr_options(top_k=r0["top_k"], max_steps=r0["max_steps"]),
        )
        trajs = await asyncio.get_running_loop().run_in_executor(self.pool, run)
        scored: list[dict | None] = [None] * len(trajs)
        if n > 1:  # the PRM picks each question's best sample
            trajs, scored = pick_best(trajs, await self._score(trajs), n)
        elif self.scorer is not None and any(r["score"] for r in reqs):
            scored = await self._score(trajs)  # asked for: stored and returned with the session
        sessions = session_records(trajs, scored, version, started, [r["owner"] for r in reqs])
        tokens = issue_tokens(sessions)
        # Acknowledged only once durable: the buffer fsyncs before it answers.
        await asyncio.gather(*(self.buffer.add.remote(x.model_dump()) for x in sessions))
        if self.scorer is not None and scored[0] is None:
            # Off the critical path: the buffer gets the scores when they are ready.
            task = asyncio.create_task(self._score_and_store(trajs, [x.id for x in sessions]))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        for i, tr, session, token in zip(idx, trajs, sessions, tokens, strict=True):
            out[i] = session_reply(tr, session, version, token)

    async def _score(self, trajs) -> list[dict]:
        return await asyncio.gather(
            *(
                self.scorer.score.remote({"question": q, "steps": st, "evidence": ev})
                for q, st, ev in trajectory_items(trajs)
            )
        )

    async def _score_and_store(self, trajs, session_ids: list[str]) -> None:
        """PRM scores for stored sessions, written to the buffer."""
        try:
            got = await self._score(trajs)
            await asyncio.gather(
                *(
                    self.buffer.set_scores.remote(sid, sc["scores"], sc["r_tau"], sc["prm"])
                    for sid, sc in zip(session_ids, got, strict=True)
                )
            )
        except Exception:  # noqa: BLE001 - scoring is best effort; the session is already safe
            logger.exception("scoring %d sessions failed", len(session_ids))

    # -- routes ------------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "model_version": await self.generator.current_version.remote()}

    @api.get("/v1/models")
    async def models(self) -> dict:
        """The version replicas serve now, and every registered version."""
        version = await self.generator.current_version.remote()
        return model_list(await self.registry.list.remote(), version)

    @api.post("/v1/rgr")
    async def rgr(
        self, body: RGRRequest, request: Request, x_api_key: str | None = Header(None)
    ) -> dict:
        who = self._door(x_api_key, "user", request)
        return await self._sessions(
            session_request(self.cfg, body, who.key_id, scorer=self.scorer is not None)
        )

    @api.post("/v1/chat/completions")
    async def chat(self, body: ChatRequest, request: Request, x_api_key: str | None = Header(None)):
        who = self._door(x_api_key, "user", request)
        current = await self.generator.current_version.remote()
        if body.model not in (None, "", current, "cls-ray"):
            raise HTTPException(404, f"model: unknown model version {body.model!r}")
        # built from a validated body: the question's length is checked by `session_request`
        ask = RGRRequest.model_construct(
            question=question_of(body), temperature=body.temperature or 0.0
        )
        reply = await self._sessions(session_request(self.cfg, ask, who.key_id))
        completion = Completion(reply)
        if not body.stream:
            return completion.message()
        return StreamingResponse(completion.events(), media_type="text/event-stream")

    @api.post("/v1/documents")
    async def documents(
        self, body: DocumentsRequest, request: Request, x_api_key: str | None = Header(None)
    ) -> dict:
        who = self._door(x_api_key, "curator", request)
        try:
            n = await self.retriever.add_documents.remote(body.rows(who.name), body.replace)
        except ray.exceptions.RayTaskError as e:  # DocumentConflict: ids holding another text
            raise http_error(e, {ValueError: 409}) from None
        return {"written": n}

    @api.post("/v1/sessions/{session_id}/feedback")
    async def feedback(
        self,
        session_id: str,
        body: FeedbackRequest,
        request: Request,
        x_api_key: str | None = Header(None),
        x_session_token: str | None = Header(None),
    ) -> dict:
        """From the session's owner (its key, or its feedback token) or a curator."""
        who = self._door(x_api_key, "user", request)
        if body.rating is None and not body.corrected_steps and not body.comment:
            raise HTTPException(422, "feedback: give a rating, corrected_steps or a comment")
        try:
            fb = Feedback(**body.model_dump(), by=who.key_id, role=who.role)
            await self.buffer.add_feedback.remote(session_id, fb.model_dump(), x_session_token)
        except ray.exceptions.RayTaskError as e:
            raise http_error(
                e, {KeyError: 404, PermissionError: 403}, "session not found: "
            ) from None
        return {"session_id": session_id, "stored": True}

    # -- admin -------------------------------------------------------------------------------
    def _admin(self, key: str | None, request: Request) -> None:
        self._door(key, "admin", request)

    @api.get("/admin/buffer")
    async def buffer_stats(self, request: Request, x_api_key: str | None = Header(None)) -> dict:
        self._admin(x_api_key, request)
        return await self.buffer.stats.remote()

    def _scheduler(self):
        try:
            return ray.get_actor(scheduler_actor_name(self.cfg.serve.app_name), NAMESPACE)
        except ValueError:
            raise HTTPException(503, "the sleep scheduler is not running") from None

    @api.post("/admin/sleep")
    async def sleep(
        self, body: SleepRequest, request: Request, x_api_key: str | None = Header(None)
    ) -> dict:
        """Starts a consolidation now (202-style: it runs in the background); refused while one
        runs. `GET /admin/sleep` shows the running one and the history."""
        self._admin(x_api_key, request)
        return await self._scheduler().trigger.remote("admin request", body.method)

    @api.get("/admin/sleep")
    async def sleep_status(self, request: Request, x_api_key: str | None = Header(None)) -> dict:
        self._admin(x_api_key, request)
        return await self._scheduler().status.remote()

    async def _switch(self, change) -> dict:
        """Applies a registry change, then pushes the resulting version to every replica."""
        try:
            v = ModelVersion.model_validate(await change())
        except ray.exceptions.RayTaskError as e:
            raise http_error(e, {KeyError: 404, ValueError: 409}, "version: ") from None
        # Deploying pulls in the weight-stream machinery (torch, transformers): imported by the
        # admin request that needs it, not by every ingress replica at start.
        from actors.deploy import deploy

        t0 = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(self.pool, deploy, self.cfg, v)
        return {"version": v.name, "status": v.status, "swap_seconds": time.perf_counter() - t0}

    @api.post("/admin/promote")
    async def promote(
        self, body: PromoteRequest, request: Request, x_api_key: str | None = Header(None)
    ) -> dict:
        """Promotes a registered version and waits until every generator replica serves it."""
        self._admin(x_api_key, request)
        return await self._switch(lambda: self.registry.promote.remote(body.version, body.reason))

    @api.post("/admin/rollback")
    async def rollback(self, request: Request, x_api_key: str | None = Header(None)) -> dict:
        """Rolls back to the version promoted before the current one."""
        self._admin(x_api_key, request)
        return await self._switch(lambda: self.registry.rollback.remote())
