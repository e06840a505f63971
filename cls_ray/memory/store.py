"""Milvus collections for declarative documents and episodic artifacts.

One `MilvusClient` per process: Milvus Lite (a local .db file) on the embedded default, a server
URI (and token) in a cluster, the same code for both. Every row keeps its text, so BM25 full-text
search (Milvus's built-in analyzer feeding a sparse field) works beside the dense MiniLM vectors,
and `search_mode` picks dense, bm25 or hybrid (reciprocal-rank fusion) per query.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from milvus_lite.server_manager import server_manager_instance
from pymilvus import (
    AnnSearchRequest,
    DataType,
    Function,
    FunctionType,
    MilvusClient,
    RRFRanker,
)

from cls_ray.config import expand_env

logger = logging.getLogger(__name__)

SearchMode = Literal["dense", "bm25", "hybrid"]
COLLECTIONS = ("documents", "episodic")
ID_BYTES = 64  # Milvus counts a VARCHAR's max_length in bytes (UTF-8), not characters
SOURCE_BYTES = 512


def clip_bytes(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never inside a character."""
    raw = text.encode()
    return text if len(raw) <= max_bytes else raw[:max_bytes].decode(errors="ignore")


def _connection_lost(e: BaseException) -> bool:
    text = str(e)
    return any(m in text for m in ("UNAVAILABLE", "Fail connecting", "pings"))


# Stop words drop out of the BM25 analyzer: they carry no match signal, and every posting of
# "the" is work for each query (Milvus Lite scores postings in Python). An explicit list works
# on Milvus Lite and on a server alike.
ENGLISH_STOP_WORDS = (
    "a an and are as at be but by for from has have he her his i if in into is it its me my no "
    "not of on or our she so than that the their them then there these they this to was we "
    "were what when where which who whom whose why will with you your"
).split()


@dataclass(frozen=True)
class Hit:
    id: str
    text: str
    score: float
    source: str = ""


class MilvusStore:
    """Declarative (`documents`) and episodic (`episodic`) collections over pymilvus."""

    def __init__(
        self,
        uri: str,
        dim: int,
        token: str = "",
        prefix: str = "cls",
        index_type: str = "AUTOINDEX",
        index_params: dict | None = None,
        search_mode: SearchMode = "dense",
        rrf_k: int = 60,
        max_text_length: int = 4096,
        stop_words: Sequence[str] | None = None,
        timeout_s: float | None = 30.0,
    ):
        """`timeout_s`: every Milvus call, at most (a server that hangs without refusing
        connections raises instead of holding the caller forever)."""
        self.uri = uri
        self.timeout_s = timeout_s
        self.dim = dim
        self.prefix = prefix
        self.index_type = index_type
        self.index_params = dict(index_params or {})
        self.search_mode: SearchMode = search_mode
        self.rrf_k = rrf_k
        self.max_text_length = max_text_length
        self.stop_words = list(ENGLISH_STOP_WORDS if stop_words is None else stop_words)
        if uri.endswith(".db"):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self._token = token
        self.client = self._connect()
        for kind in COLLECTIONS:
            self._ensure(self.name(kind))

    def _connect(self, attempts: int = 4):
        """Open a client. Milvus Lite serves gRPC inside this process and, like any gRPC server,
        answers keep-alive pings on an idle channel with GOAWAY "too_many_pings"; pymilvus pings
        every 10 s, so a Lite channel left idle through a long job (training, a test fixture)
        came back dead. Lite channels do not ping when idle; any connect still refused is retried
        with back-off."""
        kwargs: dict = {"uri": self.uri}
        if self._token:
            kwargs["token"] = self._token
        if self.uri.endswith(".db"):
            kwargs["grpc_options"] = {
                "grpc.keepalive_permit_without_calls": 0,
                "grpc.keepalive_time_ms": 300_000,
            }
        for attempt in range(attempts):
            try:
                return MilvusClient(**kwargs)
            except Exception as e:  # noqa: BLE001 - pymilvus wraps gRPC errors in several types
                if attempt == attempts - 1 or not _connection_lost(e):
                    raise
                logger.warning("Milvus connect failed (%s): retrying", str(e).splitlines()[0][:200])
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def _call(self, method: str, *args, **kwargs):
        """A client call that recovers once from a dropped connection (a server restart, or an
        idle channel closed by the server's keep-alive policy) and from collections a restarted
        server holds released."""
        kwargs.setdefault("timeout", self.timeout_s)
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - pymilvus wraps gRPC errors in several types
            text = str(e)
            lost = _connection_lost(e)
            released = "call load()" in text
            if not (lost or released):
                raise
            logger.warning("Milvus call failed (%s): recovering", text.splitlines()[0][:200])
            if lost:
                try:
                    self.client.close()
                except Exception:  # noqa: BLE001
                    pass
                self.client = self._connect()
            for kind in COLLECTIONS:
                self._ensure(self.name(kind))
            return getattr(self.client, method)(*args, **kwargs)

    @classmethod
    def from_config(cls, cfg, dim: int) -> MilvusStore:
        s = cfg.store
        return cls(
            expand_env(cfg.store_uri, "store.uri"),
            dim,
            token=expand_env(s.token, "store.token"),
            prefix=s.collection_prefix,
            index_type=s.index_type,
            index_params=s.index_params,
            search_mode=s.search_mode,
            rrf_k=s.rrf_k,
            max_text_length=s.max_text_length,
            stop_words=s.stop_words,
            timeout_s=s.timeout_s,
        )

    def name(self, kind: str = "documents") -> str:
        if kind not in COLLECTIONS:
            raise ValueError(f"unknown collection kind {kind!r}; expected one of {COLLECTIONS}")
        return f"{self.prefix}_{kind}"

    def _ensure(self, name: str) -> None:
        if self.client.has_collection(name, timeout=self.timeout_s):
            self.client.load_collection(name, timeout=self.timeout_s)
            return
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_BYTES)
        analyzer = {"tokenizer": "standard", "filter": ["lowercase"]}
        if self.stop_words:
            analyzer["filter"].append({"type": "stop", "stop_words": self.stop_words})
        schema.add_field(
            "text",
            DataType.VARCHAR,
            max_length=self.max_text_length,
            enable_analyzer=True,
            analyzer_params=analyzer,
        )
        schema.add_field("source", DataType.VARCHAR, max_length=SOURCE_BYTES)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="text_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
        index = self.client.prepare_index_params()
        index.add_index(
            field_name="dense",
            index_type=self.index_type,
            metric_type="IP",
            params=self.index_params,
        )
        index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        self.client.create_collection(name, schema=schema, index_params=index)
        self.client.load_collection(name)
        logger.info("created collection %s (dim %d, %s)", name, self.dim, self.index_type)

    def upsert(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        vectors: np.ndarray,
        sources: Sequence[str] | None = None,
        kind: str = "documents",
    ) -> int:
        """Inserts or replaces rows by id: ingesting the same documents twice adds nothing."""
        if not (len(ids) == len(texts) == len(vectors)):
            raise ValueError("ids, texts and vectors differ in length")
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {vectors.shape}")
        sources = sources or [""] * len(ids)
        for i in ids:
            if len(i.encode()) > ID_BYTES:
                raise ValueError(f"id {i[:80]!r}: longer than {ID_BYTES} bytes (UTF-8)")
        rows = [
            {
                "id": i,
                "text": clip_bytes(t, self.max_text_length),
                "source": clip_bytes(s, SOURCE_BYTES),
                "dense": v.tolist(),
            }
            for i, t, s, v in zip(ids, texts, sources, vectors, strict=True)
        ]
        if rows:
            self._call("upsert", self.name(kind), rows)
        return len(rows)

    def delete(self, ids: Sequence[str], kind: str = "documents") -> None:
        if ids:
            self._call("delete", self.name(kind), ids=list(ids))

    def count(self, kind: str = "documents") -> int:
        res = self._call("query", self.name(kind), filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def ids(self, kind: str = "documents") -> list[str]:
        """Every id in the collection."""
        rows = self._call("query", self.name(kind), filter='id != ""', output_fields=["id"])
        return [r["id"] for r in rows]

    def get(self, ids: Sequence[str], kind: str = "documents") -> dict[str, str]:
        if not ids:
            return {}
        rows = self._call("get", self.name(kind), ids=list(ids), output_fields=["text"])
        return {r["id"]: r["text"] for r in rows}

    def search(
        self,
        vectors: np.ndarray | None,
        texts: Sequence[str] | None,
        k: int,
        exclude: Sequence[set[str]] | None = None,
        kind: str = "documents",
        mode: SearchMode | None = None,
    ) -> list[list[Hit]]:
        """Top-`k` hits for each query, in one Milvus call for all of them.

        `vectors` (n, d) serve dense and hybrid mode, `texts` bm25 and hybrid mode. `exclude[i]`
        holds ids query i must not return (documents earlier steps already cited).
        """
        mode = mode or self.search_mode
        n = len(vectors) if vectors is not None else len(texts or [])
        if n == 0:
            return []
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        limit = k + extra
        out_fields = ["text", "source"]
        name = self.name(kind)
        if mode == "dense":
            if vectors is None:
                raise ValueError("dense search needs query vectors")
            raw = self._call(
                "search",
                name,
                data=[v.tolist() for v in vectors],
                anns_field="dense",
                limit=limit,
                output_fields=out_fields,
                search_params={"metric_type": "IP", "params": self._search_params()},
            )
        elif mode == "bm25":
            if texts is None:
                raise ValueError("bm25 search needs query texts")
            raw = self._call(
                "search",
                name,
                data=list(texts),
                anns_field="sparse",
                limit=limit,
                output_fields=out_fields,
                search_params={"metric_type": "BM25"},
            )
        else:
            if vectors is None or texts is None:
                raise ValueError("hybrid search needs query vectors and texts")
            reqs = [
                AnnSearchRequest(
                    [v.tolist() for v in vectors],
                    "dense",
                    {"metric_type": "IP", "params": self._search_params()},
                    limit,
                ),
                AnnSearchRequest(list(texts), "sparse", {"metric_type": "BM25"}, limit),
            ]
            raw = self._call(
                "hybrid_search",
                name,
                reqs,
                RRFRanker(self.rrf_k),
                limit=limit,
                output_fields=out_fields,
            )
        results: list[list[Hit]] = []
        for i, hits in enumerate(raw):
            skip = exclude[i] if exclude else set()
            row = []
            for h in hits:
                ent = h.get("entity", h)
                hid = h.get("id", ent.get("id"))
                if hid in skip:
                    continue
                row.append(
                    Hit(str(hid), ent.get("text", ""), float(h["distance"]), ent.get("source", ""))
                )
                if len(row) == k:
                    break
            results.append(row)
        return results

    def flush(self, kind: str = "documents") -> None:
        self._call("flush", self.name(kind))

    def warm_up(self) -> None:
        """One search per non-empty collection, so the first timed query pays no index load."""
        for kind in COLLECTIONS:
            if self.count(kind):
                v = np.zeros((1, self.dim), dtype=np.float32)
                v[0, 0] = 1.0
                self.search(v, ["warm up"], 1, kind=kind)

    def _search_params(self) -> dict:
        if self.index_type == "HNSW":
            return {"ef": max(64, int(self.index_params.get("ef", 64)))}
        if self.index_type == "IVF_FLAT":
            return {"nprobe": int(self.index_params.get("nprobe", 16))}
        return {}

    def drop(self) -> None:
        for kind in COLLECTIONS:
            if self.client.has_collection(self.name(kind)):
                self.client.drop_collection(self.name(kind))

    def close(self, release: bool = False) -> None:
        """Closes the client; `release` also stops this process's Milvus Lite server for the
        file, so another process (a Serve replica) can open it."""
        self.client.close()
        if release and self.uri.endswith(".db"):
            server_manager_instance.release_server(self.uri)
