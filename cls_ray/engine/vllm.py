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
        from vllm import LLM

        self.template: StepTemplate = template
        self.max_new_tokens = max_new_tokens
        self.version = version
        self.llm = LLM(model=str(model_path), enable_lora=lora_path is not None, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self._lora = None
        if lora_path is not None:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest(f"cls-{version}", lora_int_id, str(lora_path))

    @classmethod
    def from_config(cls, cfg, version: str = "base") -> VLLMEngine:
        return cls(
            cfg.model_path,
            cfg.model.template,
            cfg.engine.max_new_tokens,
            version,
            dtype=cfg.engine.dtype,
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
