"""Measuring with episodic memory without changing it: the procedures a measurement indexes are
removed afterwards, and those it replaced come back."""

from __future__ import annotations

from cls_ray.memory.procedures import index_patterns, parse_pattern
from cls_ray.memory.retriever import StoreRetriever
from cls_ray.stack import Stack


class scratch_procedures:  # noqa: N801 (a context manager used like a function)
    """The episodic collection as it was before the block; yields the stack's memory."""

    def __init__(self, stack: Stack):
        self.stack = stack

    def __enter__(self) -> StoreRetriever:
        store = self.stack.store
        self.before = set(store.ids("episodic"))
        self.saved = store.get(sorted(self.before), "episodic") if self.before else {}
        return self.stack.retriever

    def __exit__(self, *exc):
        store = self.stack.store
        added = [i for i in store.ids("episodic") if i not in self.before]
        store.delete(added, "episodic")
        pats = [p for p in map(parse_pattern, self.saved.values()) if p is not None]
        index_patterns(store, self.stack.embedder, pats)
        return False
