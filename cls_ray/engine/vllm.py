"""`VLLMEngine`: the same interface on vLLM, for GPUs (`pip install -e '.[gpu]'`).

Grounded decoding maps to vLLM's structured outputs (`choice`), behaviour log-probs to
`logprobs=0` (the sampled token's log-prob), and a model version that is a LoRA adapter to a
`LoRARequest` under a name that is never reused.

A process holds one `LLM` per base model: a full-weight version is loaded into it in place
(from its checkpoint's files, or streamed in over the weight-sync group), never as a second
`LLM` beside it, which a GPU sized for one would not hold. Engines that share the `LLM` name
the weights they need (`weights`); `shared_model` tells the generator that loading one version
overwrites what the others served.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from pathlib import Path

from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest
from vllm.sampling_params import StructuredOutputsParams

from cls_ray.engine.base import Generation, StreamableEngine
from cls_ray.model.integrity import verify_version
from cls_ray.steps import CHAT_SYSTEM, StepFormat, StepTemplate, clean_step

_LLMS: dict[tuple, object] = {}
_HOLDS: dict[int, str] = {}  # id(LLM) -> the version whose weights it holds
_LOCKS: dict[int, threading.Lock] = {}  # one caller at a time per LLM


def _shared_llm(model_path: str, **kwargs):
    """One `LLM` per (model, options) in a process: versions that are LoRA adapters share it,
    each under its own `LoRARequest`."""
    key = (model_path, tuple(sorted(kwargs.items())))
    if key not in _LLMS:
        llm = LLM(model=model_path, **kwargs)
        _LLMS[key], _HOLDS[id(llm)], _LOCKS[id(llm)] = llm, "base", threading.Lock()
    return _LLMS[key]


def _hold(llm, weights: str, path: str | Path) -> None:
    """Makes `llm` hold the weights of version `weights` (the checkpoint at `path`)."""
    with _LOCKS[id(llm)]:
        if _HOLDS[id(llm)] != weights:
            llm.collective_rpc("cls_load_checkpoint", args=(str(path),))
            _HOLDS[id(llm)] = weights


class VLLMEngine:
    def __init__(
        self,
        model_path: str | Path,
        template: StepTemplate = "compact",
        max_new_tokens: int = 24,
        version: str = "base",
        lora_path: str | Path | None = None,
        lora_int_id: int = 1,
        weights_path: str | Path | None = None,
        system: str = CHAT_SYSTEM,
        **llm_kwargs,
    ):
        self.template: StepTemplate = template
        self.max_new_tokens = max_new_tokens
        self.version = version
        self.llm = _shared_llm(str(model_path), **llm_kwargs)
        self.shared_model = self.llm
        # A full checkpoint's weights go into the shared LLM; base and adapters need the base's.
        self.weights = version if weights_path is not None else "base"
        _hold(self.llm, self.weights, weights_path or model_path)
        self.tokenizer = self.llm.get_tokenizer()
        self.format = StepFormat(template, self.tokenizer, system)
        try:
            self.sync_ranks = int(self.llm.llm_engine.vllm_config.parallel_config.world_size)
        except AttributeError:
            self.sync_ranks = 1
        self._lora = None
        if lora_path is not None:
            # The name is the registry's version name, never reused, so vLLM's adapter cache
            # cannot serve an old adapter under a new version.
            self._lora = LoRARequest(f"cls-{version}", lora_int_id, str(lora_path))

    @classmethod
    def from_config(cls, cfg, version: str = "base", path=None) -> VLLMEngine:
        """The base model, a full checkpoint at `path`, or a LoRA adapter at `path` served on
        the shared base `LLM` (LoRA is enabled on it for that). A version's files are checked
        against their recorded checksum first."""
        if path is not None:
            verify_version(path, version)
        common = {
            "dtype": cfg.engine.dtype,
            "gpu_memory_utilization": cfg.engine.gpu_memory_utilization,
            "enable_lora": True,
            "max_lora_rank": cfg.engine.max_lora_rank,
            "worker_extension_cls": "cls_ray.engine.vllm_worker.WeightSyncExtension",
        }
        if path is not None and (Path(path) / "adapter_config.json").exists():
            return cls(
                cfg.model_path,
                cfg.model.template,
                cfg.engine.max_new_tokens,
                version,
                lora_path=path,
                lora_int_id=_lora_int_id(version),
                system=cfg.model.system_prompt or CHAT_SYSTEM,
                **common,
            )
        return cls(
            cfg.model_path,
            cfg.model.template,
            cfg.engine.max_new_tokens,
            version,
            weights_path=path,
            system=cfg.model.system_prompt or CHAT_SYSTEM,
            **common,
        )

    def checksum(self) -> str | None:
        """None: the weights live in vLLM's workers; a stream is checked there, per worker."""
        return None

    def refuses(self, manifest) -> str | None:
        """None: vLLM's `load_weights` maps the stream's names onto its own layout."""
        return None

    def stream_in(
        self, rdv, rank: int, manifest, bucket_bytes: int, version: str
    ) -> tuple[StreamableEngine, dict]:
        """Receives `version`'s weights over the weight-sync group into the shared `LLM`, in
        place (every worker of a tensor-parallel engine joins, from rank `rank` on). Returns an
        engine for it and the hash each worker computed of what arrived."""
        with _LOCKS[id(self.llm)]:
            _HOLDS[id(self.llm)] = f"{version} (incomplete)"
            digests = self.llm.collective_rpc(
                "cls_stream_in",
                args=(rdv.to_json(), rank, [s.to_json() for s in manifest], bucket_bytes),
            )
            _HOLDS[id(self.llm)] = version
        engine = object.__new__(VLLMEngine)
        engine.__dict__.update(self.__dict__)
        engine.version, engine.weights, engine._lora = version, version, None
        return engine, {"stream": list(digests)}

    def render(self, question: str, docs: Sequence[str], steps: Sequence[str]) -> str:
        return self.format.render(question, docs, steps)

    def generate(
        self,
        prompts: Sequence[str],
        temperature: float = 0.0,
        max_new_tokens: int | None = None,
        seed: int | None = None,
        choices: Sequence[Sequence[str]] | None = None,
    ) -> list[Generation]:
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
        with _LOCKS[id(self.llm)]:
            if _HOLDS[id(self.llm)] != self.weights:
                raise RuntimeError(
                    f"engine {self.version}: its LLM now holds {_HOLDS[id(self.llm)]}'s weights"
                )
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
    if version.startswith("v") and version[1:].isdigit():
        return int(version[1:]) + 1
    return zlib.crc32(version.encode()) % (2**31 - 2) + 1
