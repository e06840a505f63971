"""`VLLMEngine`: the same interface on vLLM, for GPUs (`pip install -e '.[gpu]'`).

Grounded decoding maps to vLLM's structured outputs (`choice`), behaviour log-probs to
`logprobs=0` (the sampled token's log-prob), and a model version that is a LoRA adapter to a
`LoRARequest` under a name that is never reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cls_ray.engine.base import Generation
from cls_ray.steps import StepTemplate, clean_step, render_prompt

_LLMS: dict[tuple, object] = {}


def _shared_llm(model_path: str, **kwargs):
    """One `LLM` per (model, options) in a process: versions that are LoRA adapters share it,
    each under its own `LoRARequest`."""
    from vllm import LLM

    key = (model_path, tuple(sorted(kwargs.items())))
    if key not in _LLMS:
        _LLMS[key] = LLM(model=model_path, **kwargs)
    return _LLMS[key]


class VLLMEngine:
    def __init__(
        self,
        model_path: str | Path,
        template: StepTemplate = "compact",
        max_new_tokens: int = 24,
        version: str = "base",
        lora_path: str | Path | None = None,
        lora_int_id: int = 1,
        **llm_kwargs,
    ):
        self.template: StepTemplate = template
        self.max_new_tokens = max_new_tokens
        self.version = version
        self.llm = _shared_llm(str(model_path), **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self._lora = None
        if lora_path is not None:
            from vllm.lora.request import LoRARequest

            # The name is the registry's version name, never reused, so vLLM's adapter cache
            # cannot serve an old adapter under a new version.
            self._lora = LoRARequest(f"cls-{version}", lora_int_id, str(lora_path))

    @classmethod
    def from_config(cls, cfg, version: str = "base", path=None) -> VLLMEngine:
        """The base model, a full checkpoint at `path`, or a LoRA adapter at `path` served on
        the shared base `LLM` (LoRA is enabled on it for that)."""
        common = {
            "dtype": cfg.engine.dtype,
            "gpu_memory_utilization": cfg.engine.gpu_memory_utilization,
            "enable_lora": True,
            "max_lora_rank": cfg.engine.max_lora_rank,
        }
        if path is not None and (Path(path) / "adapter_config.json").exists():
            return cls(
                cfg.model_path,
                cfg.model.template,
                cfg.engine.max_new_tokens,
                version,
                lora_path=path,
                lora_int_id=_lora_int_id(version),
                **common,
            )
        return cls(
            path or cfg.model_path,
            cfg.model.template,
            cfg.engine.max_new_tokens,
            version,
            **common,
        )

    def render(self, question: str, docs: Sequence[str], steps: Sequence[str]) -> str:
        return render_prompt(self.template, self.tokenizer, question, docs, steps)

    def generate(
        self,
        prompts: Sequence[str],
        temperature: float = 0.0,
        max_new_tokens: int | None = None,
        seed: int | None = None,
        choices: Sequence[Sequence[str]] | None = None,
    ) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = [
            SamplingParams(
                temperature=temperature,
                max_tokens=max_new_tokens or self.max_new_tokens,
                seed=None if seed is None else seed + i,
                logprobs=0,
                stop=["\n"],
                structured_outputs=(
                    StructuredOutputsParams(choice=list(choices[i])) if choices else None
                ),
            )
            for i in range(len(prompts))
        ]
        outs = self.llm.generate(list(prompts), params, lora_request=self._lora, use_tqdm=False)
        result = []
        for o in outs:
            c = o.outputs[0]
            ids = list(c.token_ids)
            lps = [float(d[t].logprob) for t, d in zip(ids, c.logprobs or [], strict=False)]
            result.append(Generation(clean_step(c.text), ids, lps))
        return result


def _lora_int_id(version: str) -> int:
    """vLLM keys adapters by a positive int: registry names are `v<id>`, other names hash."""
    import zlib

    if version.startswith("v") and version[1:].isdigit():
        return int(version[1:]) + 1
    return zlib.crc32(version.encode()) % (2**31 - 2) + 1
