"""Episodic and declarative memory: a sentence embedder and a Milvus store."""

from cls_ray.memory.embedder import Embedder
from cls_ray.memory.store import Hit, MilvusStore

__all__ = ["Embedder", "Hit", "MilvusStore"]
