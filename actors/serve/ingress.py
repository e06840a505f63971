"""The ingress deployment: the HTTP API (FastAPI), RGR sessions run in lock-step, stored durably
in the replay buffer before they are answered, and the admin routes."""

# No `from __future__ import annotations` here: FastAPI builds each route from its annotations,
# and under Serve's ingress postponed (string) annotations turned the body models into query
# parameters (every POST answered 422 "query: Field required").
import asyncio
import functools
import logging
import time
import uuid

import ray
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from actors.metrics import RequestMetrics
from actors.registry import RegistryClient, start_registry
from actors.replay_buffer import start_replay_buffer
from actors.serve.runner import SessionRunner
from cls_ray.config import Config
from cls_ray.serving.api import (
    ChatRequest,
    DocumentsRequest,
    FeedbackRequest,
    PromoteRequest,
    RGRRequest,
    SleepRequest,
)
from cls_ray.serving.health import probe
from cls_ray.serving.http import (
    RESPONSES,
    BodyLimit,
    access_error,
    http_error,
    install,
    unavailable_error,
)
from cls_ray.serving.keys import Access, AccessDenied, Principal
from cls_ray.serving.limits import Unavailable
from cls_ray.serving.names import NAMESPACE, buffer_actor_name, scheduler_actor_name
from cls_ray.serving.openai import Completion, model_list, question_of
from cls_ray.serving.sessions import (
    session_request,
)
from cls_ray.session import Feedback
from cls_ray.steps import step_format

logger = logging.getLogger(__name__)

api = install(FastAPI(title="cls-ray", version="0.1.0"))
api.add_middleware(RequestMetrics)  # requests by route, status and model version


@serve.ingress(api)
class Ingress:
    def __init__(self, cfg: dict, generator, retriever, scorer=None):
        self.cfg = Config.model_validate(cfg)
        s = self.cfg.serve
        self.limits = s.limits
        BodyLimit.max_body_bytes = s.max_body_bytes
        self.generator, self.retriever, self.scorer = generator, retriever, scorer
        self.access = Access(self.cfg)
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
        fmt = step_format(self.cfg)
        self.runner = SessionRunner(self.cfg, fmt, generator, retriever, scorer, self.buffer)
        self._call = self.runner.call
        self.pool = self.runner.pool

    def reconfigure(self, user_config: dict) -> None:
        """`{"session_batch_size": n}`: sessions that run RGR in lock-step together."""
        if user_config.get("session_batch_size"):
            self.runner.set_batch_size(int(user_config["session_batch_size"]))

    async def _session(self, req: dict, request: Request) -> dict:
        try:
            reply = await self.runner.run(req)
        except Unavailable as e:
            raise unavailable_error(e) from None
        request.state.model_version = reply.get("model_version", "")  # the request's metric
        return reply

    def _door(self, key: str | None, needed: str, request: Request) -> Principal:
        """The caller, if its role allows `needed` and it is within its rate (else
        401/403/429)."""
        try:
            client = request.client.host if request.client else "?"
            return self.access.require(key, needed, client)  # type: ignore[arg-type]
        except AccessDenied as e:
            raise access_error(e) from None

    def _charge(self, who: Principal, cost: int, request: Request) -> None:
        """The work a request asks for, from its caller's budget (429 beyond it)."""
        try:
            self.access.charge(who, cost, request.client.host if request.client else "?")
        except AccessDenied as e:
            raise access_error(e) from None

    # -- routes ------------------------------------------------------------------------------
    @api.get("/healthz", responses=RESPONSES)
    async def healthz(self):
        """Each dependency of the request path, probed at once within `health_timeout_s`;
        503 when any fails."""
        checks = {
            "generator": lambda: self.generator.current_version.remote(),
            "retriever": lambda: self.retriever.count.remote(),
            "replay_buffer": lambda: self.buffer.pid.remote(),
            "registry": lambda: self.registry.current.remote(),
        }
        if self.scorer is not None:
            checks["scorer"] = lambda: self.scorer.check_health.remote()
        got = await probe(checks, self.limits.health_timeout_s)
        try:
            got["model_version"] = await self._call(
                self.generator.current_version.remote(), "the generator", 1.0
            )
        except Unavailable:
            got["model_version"] = None
        return JSONResponse(got, status_code=200 if got["status"] == "ok" else 503)

    @api.get("/v1/models", responses=RESPONSES)
    async def models(self) -> dict:
        """What a chat request may name: the version the replicas serve, and `cls-ray`."""
        try:
            version = await self._call(self.generator.current_version.remote(), "the generator")
            return model_list(
                await self._call(self.registry.list.remote(), "the registry"), version
            )
        except Unavailable as e:
            raise unavailable_error(e) from None

    @api.post("/v1/rgr", responses=RESPONSES)
    async def rgr(
        self, body: RGRRequest, request: Request, x_api_key: str | None = Header(None)
    ) -> dict:
        who = self._door(x_api_key, "user", request)
        req = session_request(self.cfg, body, who.key_id, scorer=self.scorer is not None)
        self._charge(who, req["cost"], request)
        return await self._session(req, request)

    @api.post("/v1/chat/completions", responses=RESPONSES)
    async def chat(self, body: ChatRequest, request: Request, x_api_key: str | None = Header(None)):
        who = self._door(x_api_key, "user", request)
        try:
            current = await self._call(self.generator.current_version.remote(), "the generator")
        except Unavailable as e:
            raise unavailable_error(e) from None
        if body.model not in (None, "", current, "cls-ray"):
            raise HTTPException(404, f"model: unknown model version {body.model!r}")
        # built from a validated body: the question's length is checked by `session_request`
        ask = RGRRequest.model_construct(
            question=question_of(body),
            temperature=body.temperature or 0.0,
            mode="rgr",
            top_k=None,
            max_steps=None,
            best_of=1,
            score=False,
        )
        req = session_request(self.cfg, ask, who.key_id, max_tokens=body.max_tokens)
        self._charge(who, req["cost"], request)
        completion = Completion(await self._session(req, request), body.max_tokens)
        if not body.stream:
            return completion.message()
        return StreamingResponse(completion.events(), media_type="text/event-stream")

    @api.post("/v1/documents", responses=RESPONSES)
    async def documents(
        self, body: DocumentsRequest, request: Request, x_api_key: str | None = Header(None)
    ) -> dict:
        who = self._door(x_api_key, "curator", request)
        try:
            write = self.retriever.add_documents.remote(body.rows(who.name), body.replace)
            n = await self._call(write, "the retriever")
        except Unavailable as e:
            raise unavailable_error(e) from None
        except ray.exceptions.RayTaskError as e:  # DocumentConflict: ids holding another text
            raise http_error(e, {ValueError: 409}) from None
        return {"written": n}

    @api.post("/v1/sessions/{session_id}/feedback", responses=RESPONSES)
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
            store = self.buffer.add_feedback.remote(session_id, fb.model_dump(), x_session_token)
            await self._call(store, "the replay buffer")
        except Unavailable as e:
            raise unavailable_error(e) from None
        except ray.exceptions.RayTaskError as e:
            raise http_error(
                e, {KeyError: 404, PermissionError: 403}, "session not found: "
            ) from None
        return {"session_id": session_id, "stored": True}

    # -- admin -------------------------------------------------------------------------------
    def _admin(self, key: str | None, request: Request) -> None:
        self._door(key, "admin", request)

    @api.get("/admin/buffer", responses=RESPONSES)
    async def buffer_stats(self, request: Request, x_api_key: str | None = Header(None)) -> dict:
        self._admin(x_api_key, request)
        try:
            return await self._call(self.buffer.stats.remote(), "the replay buffer")
        except Unavailable as e:
            raise unavailable_error(e) from None

    async def _scheduler_call(self, method: str, *args):
        try:
            actor = ray.get_actor(scheduler_actor_name(self.cfg.serve.app_name), NAMESPACE)
            return await self._call(getattr(actor, method).remote(*args), "the sleep scheduler")
        except ValueError:
            raise HTTPException(503, "the sleep scheduler is not running") from None
        except Unavailable as e:
            raise unavailable_error(e) from None

    @api.post("/admin/sleep", responses=RESPONSES)
    async def sleep(
        self, body: SleepRequest, request: Request, x_api_key: str | None = Header(None)
    ) -> dict:
        """Starts a consolidation now (202-style: it runs in the background); refused while one
        runs. `GET /admin/sleep` shows the running one and the history."""
        self._admin(x_api_key, request)
        return await self._scheduler_call("trigger", "admin request", body.method)

    @api.get("/admin/sleep", responses=RESPONSES)
    async def sleep_status(self, request: Request, x_api_key: str | None = Header(None)) -> dict:
        self._admin(x_api_key, request)
        return await self._scheduler_call("status")

    async def _switch(self, op: str, request_id: str, *args) -> dict:
        """`promote` or `rollback` the way the CLI does it: the version reaches every replica
        first and the registry changes second; a deploy that fails puts the previous version
        back and leaves the registry as it was. `request_id` makes a retried call a no-op."""
        # Deploying pulls in the weight-stream machinery (torch, transformers): imported by the
        # admin request that needs it, not by every ingress replica at start.
        import actors.deploy as deploy

        registry = RegistryClient(self.registry, self.limits.call_timeout_s)
        run = functools.partial(
            getattr(deploy, op), self.cfg, *args, request_id=request_id, registry=registry
        )
        t0 = time.perf_counter()
        try:
            v = await asyncio.get_running_loop().run_in_executor(self.pool, run)
        except KeyError as e:
            raise HTTPException(404, f"version: {e.args[0] if e.args else e}") from None
        except ValueError as e:
            raise HTTPException(409, f"version: {e}") from None
        except deploy.DeployError as e:
            raise HTTPException(503, f"deploy failed, previous version kept: {e}") from None
        return {"version": v.name, "status": v.status, "swap_seconds": time.perf_counter() - t0}

    @api.post("/admin/promote", responses=RESPONSES)
    async def promote(
        self,
        body: PromoteRequest,
        request: Request,
        x_api_key: str | None = Header(None),
        idempotency_key: str | None = Header(None, max_length=128),
    ) -> dict:
        """Promotes a registered version once every generator replica serves it. A retry with
        the same `Idempotency-Key` does not apply it twice."""
        self._admin(x_api_key, request)
        rid = idempotency_key or uuid.uuid4().hex
        return await self._switch("promote", rid, body.version, body.reason)

    @api.post("/admin/rollback", responses=RESPONSES)
    async def rollback(
        self,
        request: Request,
        x_api_key: str | None = Header(None),
        idempotency_key: str | None = Header(None, max_length=128),
    ) -> dict:
        """Rolls back to the version promoted before the current one, once every replica
        serves that; a retry with the same `Idempotency-Key` does not roll back twice."""
        self._admin(x_api_key, request)
        return await self._switch("rollback", idempotency_key or uuid.uuid4().hex)
