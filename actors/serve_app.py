"""The Serve application: an HTTP ingress that runs RGR, generator replicas that batch the next
step of concurrent sessions, and a retriever that batches their queries.

The deployments are ordinary classes around `cls_ray` objects; `build_app(cfg)` applies
`serve.deployment` options from the config. The engine is injected (`engine_factory`), so tests
can pass any engine with the `Engine` interface.
"""

import asyncio
import functools
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve

from cls_ray.config import Config
from cls_ray.engine.base import Generation
from cls_ray.rgr import RetrievedDoc, run_rgr
from cls_ray.session import Feedback, Session
from cls_ray.steps import render_prompt

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------
# Generator: holds engines by version, batches concurrent next-step calls.
# ------------------------------------------------------------------------------------------
def _check_weights(engine, version: str, path: str | None) -> None:
    """A full checkpoint carries the checksum its trainer computed; a replica refuses weights
    that differ (a partial copy on shared storage, the wrong folder) rather than serve them."""
    from cls_ray.model.loading import recorded_checksum

    if path is None or not hasattr(engine, "checksum"):
        return
    want = recorded_checksum(path)
    if want and engine.checksum() != want:
        raise RuntimeError(
            f"version {version}: the weights at {path} do not match the checksum its trainer "
            f"recorded ({engine.checksum()[:12]} != {want[:12]}); not serving them"
        )


class Generator:
    def __init__(self, cfg: dict, engine_factory: Callable | None = None):
        from cls_ray.engine import build_engine

        self.cfg = Config.model_validate(cfg)
        self.engine_factory = engine_factory or build_engine
        self.engines = {"base": self.engine_factory(self.cfg, "base", None)}
        self.paths: dict[str, str | None] = {"base": None}
        self.loaded_by: dict[str, str] = {"base": "storage"}  # or "stream"
        self.current = "base"
        self.generate.set_max_batch_size(self.cfg.serve.max_batch_size)
        self.generate.set_batch_wait_timeout_s(self.cfg.serve.batch_wait_timeout_s)

    def reconfigure(self, user_config: dict) -> None:
        """`{"version": name, "path": checkpoint or adapter folder, "max_batch_size": n}`: load
        the version and make it current; set the batch size.

        `"version": "current"` (what a cluster's RayService declares) serves the registry's
        current version, so a new or restarted cluster comes back on what was promoted.

        The previous engine stays loaded: sessions that started on it finish on it."""
        if user_config.get("max_batch_size"):
            self.generate.set_max_batch_size(int(user_config["max_batch_size"]))
        version, path = user_config.get("version", "base"), user_config.get("path")
        if version == "current":
            from actors.deploy import registry_for

            v = registry_for(self.cfg).current()
            version, path = v.name, None if v.kind == "base" else v.artifact_uri
        if version not in self.engines:
            self._load(version, path)
        self.current = version
        keep = {"base", version, *list(self.engines)[-2:]}
        for v in [v for v in self.engines if v not in keep]:
            del self.engines[v]

    def _load(self, version: str, path: str | None) -> None:
        from cls_ray.storage import materialize

        # A version published to object storage is copied to this node once.
        local = materialize(path, self.cfg.state_path / "cache" / "artifacts")
        engine = self.engine_factory(self.cfg, version, local)
        _check_weights(engine, version, local)
        self._drop_overwritten(engine)
        self.engines[version] = engine
        self.paths[version] = path
        self.loaded_by[version] = "storage"

    def _drop_overwritten(self, engine) -> None:
        """An engine that loads weights in place (vLLM: one `LLM` per GPU) overwrites what the
        engines sharing its model served: those are dropped, and load again when asked for."""
        model = getattr(engine, "shared_model", None)
        if model is None:
            return
        for v, other in list(self.engines.items()):
            if other is not engine and getattr(other, "shared_model", None) is model:
                del self.engines[v]

    def weight_sync_ranks(self, manifest: list | None = None, version: str | None = None) -> dict:
        """This replica's id, how many ranks it joins a weight stream with (one per engine
        worker: a vLLM engine with tensor parallelism has several; none when it holds `version`
        already) and, given the stream's manifest, why it cannot take it (another
        architecture), before any group forms."""
        from cls_ray.weight_sync import TensorSpec

        engine = self.engines[self.current]
        refuses = getattr(engine, "refuses", None)
        reason = None
        if manifest is not None and refuses is not None:
            reason = refuses([TensorSpec.from_json(r) for r in manifest])
        holds = version is not None and version in self.engines
        return {
            "replica": serve.get_replica_context().replica_id.unique_id,
            "ranks": 0 if holds else getattr(engine, "sync_ranks", 0),
            "holds": holds,
            "refuses": reason,
        }

    async def receive_weights(self, sync: dict) -> dict:
        """Joins a weight stream (`actors.weight_stream`): receives a full-weight version from
        the sender into a new engine (or in place, for vLLM) and checks what arrived against the
        checksum its trainer recorded. An HF replica receives into a copy and keeps serving the
        current version: the deploy that follows switches every replica, and these find the new
        one loaded. A vLLM replica's weights change in place: it serves the new version at once,
        or, if the stream fails or arrives altered, loads what it served again."""
        from cls_ray.weight_sync import Rendezvous, TensorSpec

        rid = serve.get_replica_context().replica_id.unique_id
        rank = sync["ranks"].get(rid)
        if rank is None:  # started after the group was formed: it loads from storage
            return {"replica": rid, "joined": False}
        version, want = sync["version"], sync["checksum"]
        engine = self.engines[self.current]
        in_place = getattr(engine, "shared_model", None) is not None
        t0 = time.perf_counter()
        new, got, ok = None, {}, False
        try:
            new, got = await asyncio.to_thread(
                engine.stream_in,
                Rendezvous(**sync["rendezvous"]),
                rank,
                [TensorSpec.from_json(r) for r in sync["manifest"]],
                sync["bucket_bytes"],
                version,
            )
            ok = all(d == want for d in got["stream"]) and got.get("checksum", want) == want
        finally:
            if not ok and in_place:
                # The weights were overwritten part-way or wrongly: serve what was served,
                # loaded again.
                current = self.current
                self.engines.pop(current, None)
                await asyncio.to_thread(self._load, current, self.paths.get(current))
        if ok:
            self._drop_overwritten(new)
            self.engines[version] = new
            self.paths[version] = sync.get("path")
            self.loaded_by[version] = "stream"
            if in_place:
                self.current = version  # it serves the new weights from now on
        return {
            "replica": rid,
            "joined": True,
            "ok": ok,
            "seconds": time.perf_counter() - t0,
            **got,
        }

    def current_version(self) -> str:
        return self.current

    def replica_version(self, checksum: bool = False) -> dict:
        """This replica's id and the version it serves (to check a broadcast reached all);
        with `checksum`, the SHA-256 of the weights it serves."""
        out = {
            "replica": serve.get_replica_context().replica_id.unique_id,
            "version": self.current,
            "loaded_by": self.loaded_by.get(self.current),
        }
        engine = self.engines[self.current]
        if checksum and hasattr(engine, "checksum"):
            out["checksum"] = engine.checksum()
        return out

    @serve.batch(
        max_batch_size=16,
        batch_wait_timeout_s=0.01,
        batch_size_fn=lambda groups: sum(len(g["prompts"]) for g in groups),
    )
    async def generate(self, groups: list[dict]) -> list[list[dict]]:
        """Each request is a group: the next step of the sessions one ingress batch runs
        together (`prompts`, `choices`, `temperature`, `version`). All groups that arrive
        together run in one engine call per (version, temperature, grounded); the batch size
        counts prompts."""
        flat = [(gi, pi) for gi, g in enumerate(groups) for pi in range(len(g["prompts"]))]
        out: list[list[dict | None]] = [[None] * len(g["prompts"]) for g in groups]
        keys: dict[tuple, list[tuple[int, int]]] = {}
        for gi, pi in flat:
            g = groups[gi]
            key = (g.get("version") or self.current, g.get("temperature", 0.0), bool(g["choices"]))
            keys.setdefault(key, []).append((gi, pi))
        for (version, temp, grounded), idx in keys.items():
            engine = self.engines.get(version) or self.engines[self.current]
            gens = await asyncio.to_thread(
                engine.generate,
                [groups[gi]["prompts"][pi] for gi, pi in idx],
                temperature=temp,
                choices=[groups[gi]["choices"][pi] for gi, pi in idx] if grounded else None,
            )
            for (gi, pi), g in zip(idx, gens, strict=True):
                out[gi][pi] = {
                    "text": g.text,
                    "token_ids": g.token_ids,
                    "logprobs": g.logprobs,
                    "version": engine.version,
                }
        return out  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------
# Retriever: owns the embedder and the Milvus client; batches concurrent queries.
# ------------------------------------------------------------------------------------------
class Retriever:
    def __init__(self, cfg: dict):
        from cls_ray.stack import Stack

        self.stack = Stack(Config.model_validate(cfg))
        self.stack.store.warm_up()
        self.retrieve.set_max_batch_size(self.stack.cfg.serve.retriever_max_batch_size)
        self.retrieve.set_batch_wait_timeout_s(self.stack.cfg.serve.retriever_batch_wait_s)

    def reconfigure(self, user_config: dict) -> None:
        """`{"max_batch_size": n}`: queries per embedding call and Milvus search."""
        if user_config.get("max_batch_size"):
            self.retrieve.set_max_batch_size(int(user_config["max_batch_size"]))

    @serve.batch(
        max_batch_size=32,
        batch_wait_timeout_s=0.02,
        batch_size_fn=lambda groups: sum(len(g["queries"]) for g in groups),
    )
    async def retrieve(self, groups: list[dict]) -> list[list[list[dict]]]:
        """Each request is a group of queries (`queries`, `k`, `exclude`); all groups that
        arrive together are embedded in one call and searched in one Milvus request."""
        queries = [q for g in groups for q in g["queries"]]
        excludes = [set(e) for g in groups for e in (g.get("exclude") or [[]] * len(g["queries"]))]
        k = max(g["k"] for g in groups)
        got = await asyncio.to_thread(self.stack.retriever.retrieve, queries, k, excludes)
        out, i = [], 0
        for g in groups:
            docs = got[i : i + len(g["queries"])]
            i += len(g["queries"])
            out.append(
                [
                    [{"id": d.id, "score": d.score, "text": d.text} for d in ds[: g["k"]]]
                    for ds in docs
                ]
            )
        return out

    async def plans(self, questions: list[str]) -> list[dict | None]:
        """The episodic procedure each question follows (see `cls_ray.consolidate.episodic`)."""
        got = await asyncio.to_thread(self.stack.retriever.plans, questions)
        return [None if p is None else {"text": p.text} for p in got]

    async def add_patterns(self, texts: list[str]) -> int:
        """Indexes procedures (their `Pattern.text`) in the episodic collection: the fast path
        a sleep takes while the retriever replica owns the Milvus Lite file."""
        from cls_ray.consolidate.episodic import index_patterns, parse_pattern

        pats = [p for p in map(parse_pattern, texts) if p is not None]
        return await asyncio.to_thread(index_patterns, self.stack.store, self.stack.embedder, pats)

    async def get_documents(self, ids: list[str]) -> dict[str, str]:
        return await asyncio.to_thread(self.stack.store.get, ids)

    async def add_documents(self, docs: list[dict]) -> int:
        def _add() -> int:
            from cls_ray.memory.ingest import doc_id_for

            texts = [d["text"] for d in docs]
            ids = [d.get("id") or doc_id_for(d["text"]) for d in docs]
            vecs = self.stack.embedder.embed(texts)
            n = self.stack.store.upsert(ids, texts, vecs, [d.get("source") or "api" for d in docs])
            self.stack.store.flush()
            return n

        return await asyncio.to_thread(_add)

    async def count(self) -> int:
        return await asyncio.to_thread(self.stack.store.count)


# ------------------------------------------------------------------------------------------
# Scorer: the PRM; batches the steps of finished sessions.
# ------------------------------------------------------------------------------------------
class Scorer:
    def __init__(self, cfg: dict, path: str):

        from cls_ray.prm.model import ProcessRewardModel

        c = Config.model_validate(cfg)
        self.prm = ProcessRewardModel.load(path, c.prm.aggregation)
        self.name = Path(path).name

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.05)
    async def score(self, items: list[dict]) -> list[dict]:
        """Each item is one trajectory: `question`, `steps`, `evidence` (one per step)."""
        got = await asyncio.to_thread(
            self.prm.score_many, [(i["question"], i["steps"], i["evidence"]) for i in items]
        )
        return [{"scores": s, "r_tau": self.prm.r_tau(s), "prm": self.name} for s in got]


# ------------------------------------------------------------------------------------------
# Adapters that let the pure RGR loop (run in a worker thread) call the deployments.
# ------------------------------------------------------------------------------------------
def _in_groups(method, n: int, max_group: int | None, body) -> list:
    """Calls a deployment `method` once per group of at most `max_group` of the `n` items
    (`body(slice)` builds a group's request; all groups are in flight together) and returns the
    results in order: a call larger than the deployment batches at once would be refused."""
    step = max_group or max(1, n)
    calls = [method.remote(body(slice(i, i + step))) for i in range(0, n, step)]
    return [x for call in calls for x in call.result()]


class RemoteEngine:
    """`Engine` over the generator deployment, pinned to the version the session started on."""

    def __init__(
        self,
        handle,
        version: str,
        template: str = "compact",
        tokenizer=None,
        max_group: int | None = None,
    ):
        self.handle = handle
        self.version = version
        self.template = template
        self.tokenizer = tokenizer
        self.max_group = max_group

    def render(self, question, docs, steps) -> str:
        # Rendering is string formatting (or the tokenizer's chat template): done here, it
        # saves the generator a round trip per step.
        return render_prompt(self.template, self.tokenizer, question, docs, steps)

    def generate(self, prompts, temperature=0.0, max_new_tokens=None, seed=None, choices=None):
        """One request for all prompts of a round (the sessions of one ingress batch); a round
        larger than the generator batches at once (best-of-N) goes as several requests."""
        prompts = list(prompts)
        got = _in_groups(
            self.handle.generate,
            len(prompts),
            self.max_group,
            lambda g: {
                "prompts": prompts[g],
                "temperature": temperature,
                "version": self.version,
                "choices": None if choices is None else [list(c) for c in choices[g]],
            },
        )
        if got:
            self.version = got[0]["version"]
        return [Generation(g["text"], g["token_ids"], g["logprobs"]) for g in got]


class RemoteRetriever:
    """`Retriever` over the retriever deployment. A call with more queries than the deployment
    batches at once (`max_group`) is split into groups sent together."""

    def __init__(self, handle, max_group: int | None = None):
        self.handle = handle
        self.max_group = max_group

    def retrieve(self, queries, k, exclude=None):
        queries = list(queries)
        got = _in_groups(
            self.handle.retrieve,
            len(queries),
            self.max_group,
            lambda g: {
                "queries": queries[g],
                "k": k,
                "exclude": [sorted(e) for e in exclude[g]] if exclude else None,
            },
        )
        return [[RetrievedDoc(d["id"], d["score"], d["text"]) for d in docs] for docs in got]

    def plans(self, questions):
        from cls_ray.consolidate.episodic import parse_pattern

        got = self.handle.plans.remote(list(questions)).result()
        return [None if p is None else parse_pattern(p["text"]) for p in got]


# ------------------------------------------------------------------------------------------
# HTTP API
# ------------------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RGRRequest(_Body):
    question: str = Field(min_length=1)
    mode: str = Field("rgr", pattern="^(rgr|single|none)$")
    top_k: int | None = Field(None, ge=1, le=50)
    max_steps: int | None = Field(None, ge=1, le=32)
    temperature: float = Field(0.0, ge=0, le=5)
    best_of: int = Field(1, ge=1, le=32, description="Sample N, return the PRM's best.")
    score: bool = Field(False, description="Wait for the PRM and return the step scores.")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question is empty")
        return v


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str = Field(pattern="^(system|user|assistant|tool|developer)$")
    content: str | list | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send many optional fields
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=5)
    max_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=1)


class DocumentIn(_Body):
    id: str | None = Field(None, min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=4096)
    source: str | None = Field(None, max_length=512)


class DocumentsRequest(_Body):
    documents: list[DocumentIn] = Field(min_length=1, max_length=1000)


class FeedbackRequest(_Body):
    rating: float | None = Field(None, ge=-1, le=1)
    corrected_steps: list[str] | None = Field(None, max_length=32)
    comment: str | None = Field(None, max_length=4000)


class SleepRequest(_Body):
    method: Literal["sft", "ppo"] | None = Field(None, description="default: the config's")


class PromoteRequest(_Body):
    version: str = Field(min_length=1, max_length=128)
    reason: str = Field("", max_length=1000)


api = FastAPI(title="cls-ray", version="0.1.0")


_LIMITS = {"max_body_bytes": 1_000_000}


class BodyLimit:
    """Refuses bodies over `max_body_bytes` with 413 before anything parses them: at once when
    `Content-Length` says so, and while reading when a chunked body grows past the limit."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = _LIMITS["max_body_bytes"]
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await self._refuse(send, limit)
        seen = 0
        refused = False

        async def limited_receive():
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Answer now; the app sees the client go away and its reply is dropped.
                    refused = True
                    await self._refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    @staticmethod
    async def _refuse(send, limit: int) -> None:
        body = json.dumps({"detail": f"body larger than {limit} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


api.add_middleware(BodyLimit)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError):
    """400 for a body that is not JSON; 422 naming each bad field otherwise."""
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "JSON decode error")
            return JSONResponse(status_code=400, content={"detail": f"malformed JSON: {reason}"})
    message = "; ".join(
        f"{'.'.join(str(x) for x in e['loc'] if x != 'body') or 'body'}: {e['msg']}" for e in errors
    )
    return JSONResponse(
        status_code=422,
        content={"detail": message, "errors": jsonable_encoder(errors, exclude={"input"})},
    )


def check_admin_key(env_name: str, key: str | None) -> None:
    """Admin routes need the key held in the environment variable `env_name`; with no key
    configured they are disabled (403), never open."""
    expected = os.environ.get(env_name)
    if not expected:
        raise HTTPException(403, f"admin endpoints are disabled: {env_name} is not set")
    if key is None or not hmac.compare_digest(key.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong admin key (header X-API-Key)")


def _question_of(req: ChatRequest) -> str:
    for m in reversed(req.messages):
        if m.role == "user":
            content = m.content
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            if isinstance(content, str) and content.strip():
                return content.strip()
    raise HTTPException(422, "messages: no user message with text content")


@serve.ingress(api)
class Ingress:
    def __init__(self, cfg: dict, generator, retriever, scorer=None):
        import ray

        from actors.registry import start_registry
        from actors.replay_buffer import buffer_actor_name, start_replay_buffer

        self.cfg = Config.model_validate(cfg)
        s = self.cfg.serve
        _LIMITS["max_body_bytes"] = s.max_body_bytes
        self.generator = generator
        self.retriever = retriever
        self.scorer = scorer
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
        self.tokenizer = None
        if self.cfg.model.template == "chat":
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(self.cfg.model_path))
        # RGR is a blocking loop of handle calls; each running session batch holds one thread.
        self.pool = ThreadPoolExecutor(s.max_concurrent_sessions, thread_name_prefix="rgr")
        self._sessions.set_max_batch_size(s.session_batch_size)
        self._sessions.set_batch_wait_timeout_s(s.session_batch_wait_s)
        self._ray = ray

    # -- helpers ---------------------------------------------------------------------------
    def reconfigure(self, user_config: dict) -> None:
        """`{"session_batch_size": n}`: sessions that run RGR in lock-step together."""
        if user_config.get("session_batch_size"):
            self._sessions.set_max_batch_size(int(user_config["session_batch_size"]))

    async def _run(
        self, question: str, mode: str, top_k, max_steps, temperature, best_of=1, score=False
    ) -> dict:
        if len(question) > self.cfg.serve.max_question_chars:
            raise HTTPException(
                422, f"question: longer than {self.cfg.serve.max_question_chars} characters"
            )
        if (best_of > 1 or score) and self.scorer is None:
            raise HTTPException(
                422, "best_of/score: no PRM is deployed (run `cls-ray prm train`, then redeploy)"
            )
        return await self._sessions(
            {
                "question": question,
                "mode": mode,
                "top_k": top_k,
                "max_steps": max_steps,
                # Best-of-N samples; greedy decoding would give N copies of one trajectory.
                "temperature": temperature or (1.0 if best_of > 1 else 0.0),
                "best_of": best_of,
                "score": score,
            }
        )

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, max_concurrent_batches=8)
    async def _sessions(self, requests: list[dict]) -> list[dict]:
        """Sessions that arrive together run RGR in lock-step: each round is one retrieval
        request and one generation request for all of them (which the retriever and generator
        batch again with other ingress replicas' rounds). Several such batches run at once."""
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            key = (r["mode"], r["top_k"], r["max_steps"], r["temperature"], r["best_of"])
            groups.setdefault(key, []).append(i)
        out: list[dict | None] = [None] * len(requests)
        await asyncio.gather(
            *(self._run_group([requests[i] for i in idx], idx, out) for idx in groups.values())
        )
        return out  # type: ignore[return-value]

    async def _run_group(self, reqs: list[dict], idx: list[int], out: list) -> None:
        r0 = reqs[0]
        version = await self.generator.current_version.remote()
        engine = RemoteEngine(
            self.generator,
            version,
            self.cfg.model.template,
            self.tokenizer,
            self.cfg.serve.max_batch_size,
        )
        retriever = (
            None
            if r0["mode"] == "none"
            else RemoteRetriever(self.retriever, self.cfg.serve.retriever_max_batch_size)
        )
        started = time.time()
        n = r0["best_of"]
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
            scored = await self._score(trajs)
            best = [
                max(range(i * n, (i + 1) * n), key=lambda j: scored[j]["r_tau"])
                for i in range(len(reqs))
            ]
            trajs, scored = [trajs[j] for j in best], [scored[j] for j in best]
        elif self.scorer is not None and any(r["score"] for r in reqs):
            scored = await self._score(trajs)  # asked for: stored and returned with the session
        sessions = []
        for tr, sc in zip(trajs, scored, strict=True):
            tr.model_version = version
            session = Session.from_trajectory(tr, started_at=started)
            if sc is not None:
                session.prm_step_scores, session.r_tau = sc["scores"], sc["r_tau"]
                session.prm_version = sc["prm"]
            sessions.append(session)
        # Acknowledged only once durable: the buffer fsyncs before it answers.
        await asyncio.gather(*(self.buffer.add.remote(s.model_dump()) for s in sessions))
        if self.scorer is not None and scored[0] is None:
            # Off the critical path: the buffer gets the scores when they are ready.
            task = asyncio.create_task(self._score_and_store(trajs, [s.id for s in sessions]))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        for i, tr, session in zip(idx, trajs, sessions, strict=True):
            out[i] = {
                "session_id": session.id,
                "question": tr.question,
                "answer": tr.answer,
                "model_version": version,
                "prm_step_scores": session.prm_step_scores,
                "r_tau": session.r_tau,
                "steps": [
                    {
                        "text": s.text,
                        "query": s.query,
                        "retrieved": [{"id": d.id, "score": d.score} for d in s.retrieved],
                        "citations": [
                            {"id": d.id, "text": d.text} for d in s.retrieved if d.id in s.cited
                        ],
                        "is_answer": s.is_answer,
                    }
                    for s in tr.steps
                ],
            }

    async def _score(self, trajs) -> list[dict]:
        from cls_ray.prm.best_of_n import trajectory_items

        items = trajectory_items(trajs)
        return await asyncio.gather(
            *(
                self.scorer.score.remote({"question": q, "steps": st, "evidence": ev})
                for q, st, ev in items
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

    def _admin(self, key: str | None) -> None:
        check_admin_key(self.cfg.serve.admin_key_env, key)

    # -- routes ----------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "model_version": await self.generator.current_version.remote()}

    @api.get("/v1/models")
    async def models(self) -> dict:
        """The version replicas serve now, and every registered version."""
        version = await self.generator.current_version.remote()
        listed = await self.registry.list.remote()
        data = [
            {
                "id": v["name"],
                "object": "model",
                "owned_by": "cls-ray",
                "created": int(v["created_at"]),
                "status": v["status"],
                "kind": v["kind"],
                "parent": v["parent"],
                "current": v["name"] == version,
            }
            for v in listed
        ]
        return {"object": "list", "data": data}

    @api.post("/v1/rgr")
    async def rgr(self, body: RGRRequest) -> dict:
        return await self._run(
            body.question,
            body.mode,
            body.top_k,
            body.max_steps,
            body.temperature,
            body.best_of,
            body.score,
        )

    @api.post("/v1/chat/completions")
    async def chat(self, body: ChatRequest):
        current = await self.generator.current_version.remote()
        if body.model not in (None, "", current, "cls-ray"):
            raise HTTPException(404, f"model: unknown model version {body.model!r}")
        question = _question_of(body)
        res = await self._run(question, "rgr", None, None, body.temperature or 0.0)
        content = (
            res["answer"] if res["answer"] is not None else "(no answer within the step limit)"
        )
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        extra = {k: res[k] for k in ("session_id", "model_version", "steps")}
        if not body.stream:
            return {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": res["model_version"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                "cls_ray": extra,
            }

        def chunk(delta: dict, finish: str | None = None, more: dict | None = None) -> str:
            obj = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": res["model_version"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if more:
                obj["cls_ray"] = more
            return f"data: {json.dumps(obj)}\n\n"

        async def events():
            yield chunk({"role": "assistant", "content": ""})
            yield chunk({"content": content})
            yield chunk({}, "stop", extra)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.post("/v1/documents")
    async def documents(self, body: DocumentsRequest) -> dict:
        n = await self.retriever.add_documents.remote([d.model_dump() for d in body.documents])
        return {"written": n}

    @api.post("/v1/sessions/{session_id}/feedback")
    async def feedback(self, session_id: str, body: FeedbackRequest) -> dict:
        if body.rating is None and not body.corrected_steps and not body.comment:
            raise HTTPException(422, "feedback: give a rating, corrected_steps or a comment")
        try:
            await self.buffer.add_feedback.remote(
                session_id, Feedback(**body.model_dump()).model_dump()
            )
        except self._ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, KeyError):
                raise HTTPException(404, f"session {session_id!r} not found") from None
            raise
        return {"session_id": session_id, "stored": True}

    @api.get("/admin/buffer")
    async def buffer_stats(self, x_api_key: str | None = Header(None)) -> dict:
        self._admin(x_api_key)
        return await self.buffer.stats.remote()

    def _scheduler(self):
        from actors.scheduler import scheduler_actor_name

        try:
            return self._ray.get_actor(scheduler_actor_name(self.cfg.serve.app_name), "cls-ray")
        except ValueError:
            raise HTTPException(503, "the sleep scheduler is not running") from None

    @api.post("/admin/sleep")
    async def sleep(self, body: SleepRequest, x_api_key: str | None = Header(None)) -> dict:
        """Starts a consolidation now (202-style: it runs in the background); refused while one
        runs. `GET /admin/sleep` shows the running one and the history."""
        self._admin(x_api_key)
        return await self._scheduler().trigger.remote("admin request", body.method)

    @api.get("/admin/sleep")
    async def sleep_status(self, x_api_key: str | None = Header(None)) -> dict:
        self._admin(x_api_key)
        return await self._scheduler().status.remote()

    async def _switch(self, change) -> dict:
        """Applies a registry change, then pushes the resulting version to every replica."""
        from actors.deploy import deploy
        from cls_ray.registry import ModelVersion

        try:
            v = ModelVersion.model_validate(await change())
        except self._ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, KeyError):
                raise HTTPException(404, f"version: {e.cause.args[0]}") from None
            if isinstance(e.cause, ValueError):
                raise HTTPException(409, str(e.cause)) from None
            raise
        t0 = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(self.pool, deploy, self.cfg, v)
        return {"version": v.name, "status": v.status, "swap_seconds": time.perf_counter() - t0}

    @api.post("/admin/promote")
    async def promote(self, body: PromoteRequest, x_api_key: str | None = Header(None)) -> dict:
        """Promotes a registered version and waits until every generator replica serves it."""
        self._admin(x_api_key)
        return await self._switch(lambda: self.registry.promote.remote(body.version, body.reason))

    @api.post("/admin/rollback")
    async def rollback(self, x_api_key: str | None = Header(None)) -> dict:
        """Rolls back to the version promoted before the current one."""
        self._admin(x_api_key)
        return await self._switch(lambda: self.registry.rollback.remote())


def generator_user_config(
    cfg: Config, version: str = "base", path: str | None = None, max_batch_size: int | None = None
) -> dict:
    """The generator's `user_config`: the version to serve (its folder or URI), the batch size."""
    return {
        "version": version,
        "path": path,
        "max_batch_size": max_batch_size or cfg.serve.max_batch_size,
    }


def generator_options(cfg: Config) -> dict:
    """The generator's deployment options (autoscaling, load, resources): bound here and
    written into a Serve config by `actors.deploy.app_spec`, so both agree."""
    s = cfg.serve
    resources = {"num_cpus": s.generator_num_cpus}
    if s.generator_num_gpus:
        resources["num_gpus"] = s.generator_num_gpus
    return {
        # The config section has exactly Serve's autoscaling fields.
        "autoscaling_config": s.generator_autoscaling.model_dump(),
        "max_ongoing_requests": s.generator_max_ongoing_requests,
        "ray_actor_options": resources,
    }


def build_app(cfg: Config, engine_factory: Callable | None = None, user_config: dict | None = None):
    """The application graph with deployment options from `cfg`; `user_config` names the
    model version the generator replicas serve."""
    s = cfg.serve
    data = cfg.model_dump(mode="json")
    gen = serve.deployment(
        Generator,
        name="generator",
        **generator_options(cfg),
        user_config=user_config or generator_user_config(cfg),
    ).bind(data, engine_factory)
    # Milvus Lite allows one process per file: one retriever replica owns it. Against a Milvus
    # server every replica connects on its own, so more replicas are fine there.
    ret = serve.deployment(
        Retriever,
        name="retriever",
        num_replicas=1 if cfg.store_uri.endswith(".db") else 2,
        max_ongoing_requests=s.retriever_max_ongoing_requests,
        ray_actor_options={"num_cpus": 0.25},
        user_config={"max_batch_size": s.retriever_max_batch_size},
    ).bind(data)
    scorer = None
    from cls_ray.prm.pipeline import latest_prm

    prm_path = latest_prm(cfg)
    if prm_path is not None:
        scorer = serve.deployment(Scorer, name="scorer", ray_actor_options={"num_cpus": 0.25}).bind(
            data, str(prm_path.resolve())
        )
    return serve.deployment(
        Ingress,
        name="ingress",
        max_ongoing_requests=s.max_concurrent_sessions,
        ray_actor_options={"num_cpus": 0.25},
        user_config={"session_batch_size": s.session_batch_size},
    ).bind(data, gen, ret, scorer)


def app_from_args(args: dict):
    """Serve's application builder (`import_path: actors.serve_app:app_from_args`): `config` is
    the cls-ray config; `engine_factory`, optional, an importable `module:callable`."""
    factory = None
    if args.get("engine_factory"):
        import importlib

        module, _, attr = args["engine_factory"].partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return build_app(Config.model_validate(args["config"]), factory)
