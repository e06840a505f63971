"""Generation engines behind one interface: `HFEngine` (CPU or GPU), `VLLMEngine` (GPU)."""

from cls_ray.engine.base import Engine, Generation, build_engine

__all__ = ["Engine", "Generation", "build_engine"]
