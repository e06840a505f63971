"""Generation engines behind one interface (`base`): `HFEngine` for CPU or GPU, `VLLMEngine` for
GPUs; `factory.build_engine` picks the one a config names."""

from cls_ray.engine.base import Engine, Generation, StreamableEngine

__all__ = ["Engine", "Generation", "StreamableEngine"]
