"""The `Engine` interface the RGR loop talks to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cls_ray.steps import StepTemplate


@dataclass
class Generation:
    """One generated step: its text, token ids and the behaviour log-prob of each token."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


@runtime_checkable
class Engine(Protocol):
    template: StepTemplate
    version: str

    def render(self, question: str, docs: Sequence[str], steps: Sequence[str]) -> str:
        """The prompt for the next step, in this engine's template."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        temperature: float = 0.0,
        max_new_tokens: int | None = None,
        seed: int | None = None,
        choices: Sequence[Sequence[str]] | None = None,
    ) -> list[Generation]:
        """One next step per prompt, all prompts in one batched call; `choices[i]`, when
        given, constrains prompt i to one of those texts (grounded decoding)."""
        ...


def build_engine(cfg, version: str = "base", path=None) -> Engine:
    """The engine the config names for `version`: the base model (`path` None), a full
    checkpoint at `path`, or a PEFT LoRA adapter at `path` on the base."""
    if cfg.engine.kind == "vllm":
        from cls_ray.engine.vllm import VLLMEngine

        return VLLMEngine.from_config(cfg, version=version, path=path)
    from cls_ray.engine.hf import HFEngine

    return HFEngine.from_config(cfg, version=version, path=path)
