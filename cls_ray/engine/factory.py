"""The engine a config names: `HFEngine` (CPU or GPU), or `VLLMEngine` (GPU, optional extra)."""

from __future__ import annotations

from cls_ray.engine.base import StreamableEngine
from cls_ray.engine.hf import HFEngine


def build_engine(cfg, version: str = "base", path=None) -> StreamableEngine:
    """The engine the config names for `version`: the base model (`path` None), a full
    checkpoint at `path`, or a PEFT LoRA adapter at `path` on the base."""
    if cfg.engine.kind == "vllm":
        # vLLM is the optional `gpu` extra: imported only when a config asks for it.
        from cls_ray.engine.vllm import VLLMEngine

        return VLLMEngine.from_config(cfg, version=version, path=path)
    return HFEngine.from_config(cfg, version=version, path=path)
