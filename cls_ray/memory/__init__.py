"""Episodic and declarative memory: a sentence embedder and a Milvus store (`Embedder`,
`MilvusStore`, `Hit`), documents as retrieval hands them out, and the procedures of episodic
memory.

`from cls_ray.memory import Embedder, MilvusStore` imports them on first use: the light modules
of the package (`documents`, `procedures`, which RGR and every serving process read) must not
pay for torch and pymilvus.
"""

__all__ = ["Embedder", "Hit", "MilvusStore"]


def __getattr__(name: str):
    if name == "Embedder":
        from cls_ray.memory.embedder import Embedder  # torch, transformers: on first use

        return Embedder
    if name in ("Hit", "MilvusStore"):
        from cls_ray.memory import store  # pymilvus: on first use

        return getattr(store, name)
    raise AttributeError(f"module 'cls_ray.memory' has no attribute {name!r}")
