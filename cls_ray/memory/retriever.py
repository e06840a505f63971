"""Memory as RGR and sleep read and write it: retrieval over the documents, the procedures of
episodic memory, and the texts of documents by id. `StoreRetriever` does it in this process
(an embedder and a Milvus store); a serving replica wraps the same object, and the Ray-backed
`actors.serve.handles.RemoteRetriever` reaches it from elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

from cls_ray.memory.documents import RetrievedDoc, doc_id_for
from cls_ray.memory.embedder import Embedder
from cls_ray.memory.procedures import Pattern, index_patterns, lookup
from cls_ray.memory.store import MilvusStore


class DocumentConflict(ValueError):
    """A write would replace documents without `replace`."""


class StoreRetriever:
    """Embedder + Milvus store: one embedding call and one search call per batch of queries."""

    def __init__(self, embedder: Embedder, store: MilvusStore, kind: str = "documents"):
        self.embedder = embedder
        self.store = store
        self.kind = kind

    def retrieve(
        self, queries: Sequence[str], k: int, exclude: Sequence[set[str]] | None = None
    ) -> list[list[RetrievedDoc]]:
        if not queries:
            return []
        vectors = self.embedder.embed(list(queries)) if self.store.search_mode != "bm25" else None
        hits = self.store.search(vectors, list(queries), k, exclude=exclude, kind=self.kind)
        return [[RetrievedDoc(h.id, h.score, h.text) for h in row] for row in hits]

    def plans(self, questions: Sequence[str]) -> list[Pattern | None]:
        """The episodic procedure each question has the shape of, or None."""
        return lookup(self.store, self.embedder, questions)

    def add_patterns(self, patterns: Sequence[Pattern]) -> int:
        """Indexes procedures in the episodic collection (a later sleep replaces each)."""
        return index_patterns(self.store, self.embedder, patterns)

    def get_documents(self, ids: Sequence[str]) -> dict[str, str]:
        return self.store.get(list(ids))

    def add_documents(self, docs: Sequence[dict], replace: bool = False) -> int:
        """Upserts `{"text", "id"?, "source"?}` documents (id: a hash of the text). A document
        whose id holds another text already is refused (`DocumentConflict`) unless `replace`:
        nothing overwrites what others retrieve by accident."""
        texts = [d["text"] for d in docs]
        ids = [d.get("id") or doc_id_for(d["text"]) for d in docs]
        if not replace:
            have = self.store.get(ids)
            taken = [i for i, t in zip(ids, texts, strict=True) if i in have and have[i] != t]
            if taken:
                raise DocumentConflict(
                    f"documents: {len(taken)} id(s) already hold another text ({', '.join(taken[:5])}"
                    f"{', ...' if len(taken) > 5 else ''}); send replace: true to overwrite them"
                )
        n = self.store.upsert(
            ids, texts, self.embedder.embed(texts), [d.get("source") or "api" for d in docs]
        )
        self.store.flush()
        return n

    def count(self) -> int:
        return self.store.count()
