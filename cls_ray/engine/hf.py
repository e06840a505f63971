"""`HFEngine`: batched generation with Hugging Face transformers (CPU by default)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch

from cls_ray.engine.base import Generation, StreamableEngine
from cls_ray.model.examples import left_pad
from cls_ray.model.integrity import verify_version
from cls_ray.model.loading import load_model_and_tokenizer, weights_checksum
from cls_ray.steps import CHAT_SYSTEM, StepFormat, StepTemplate, clean_step
from cls_ray.weight_sync import Channel, copy_into, receive


class HFEngine:
    """Generates the next step for many prompts in one `generate` call.

    Prompts are left-padded; the compact template starts with BOS. Each generation returns its
    token ids and their log-probs under the sampling distribution (the behaviour policy).
    """

    sync_ranks = 1  # ranks this engine joins a weight stream with
    shared_model = None  # it owns its weights: loading another version overwrites nothing

    def __init__(
        self,
        model,
        tokenizer,
        template: StepTemplate = "compact",
        max_new_tokens: int = 24,
        batch_size: int = 32,
        version: str = "base",
        system: str = CHAT_SYSTEM,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.template: StepTemplate = template
        self.format = StepFormat(template, tokenizer, system)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.version = version
        self._checksum: str | None = None

    def checksum(self) -> str:
        """SHA-256 of the weights this engine serves (see `weights_checksum`), computed once."""
        if self._checksum is None:
            self._checksum = weights_checksum(self.model)
        return self._checksum

    def refuses(self, manifest) -> str | None:
        """Why a weight stream with `manifest` cannot land in this model (None: it can): every
        tensor of the model, by name and shape, and no other."""
        state = self.model.state_dict()
        names = {s.name for s in manifest}
        for s in manifest:
            if s.name not in state:
                return f"this model has no tensor {s.name}"
            if tuple(state[s.name].shape) != s.shape:
                return f"{s.name} is {tuple(state[s.name].shape)} here, {s.shape} in the stream"
        missing = sorted(set(state) - names)
        return f"the stream lacks {missing[0]} (and {len(missing) - 1} more)" if missing else None

    def stream_in(
        self, rdv, rank: int, manifest, bucket_bytes: int, version: str
    ) -> tuple[StreamableEngine, dict]:
        """A new engine for `version` whose weights arrive over the weight-sync group (see
        `cls_ray.weight_sync`): they land in a copy of this model, so this engine keeps serving
        while they stream. Returns the engine and what it received (stream hash, checksum)."""
        model = copy.deepcopy(self.model)
        channel = Channel(rdv, rank, device=model.device)
        try:
            # The whole model's checksum below is the stricter check: no stream hash.
            receive(channel, manifest, copy_into(model), bucket_bytes, hash=False)
        finally:
            channel.close()
        engine = HFEngine(
            model,
            self.tokenizer,
            self.template,
            self.max_new_tokens,
            self.batch_size,
            version,
            self.format.system,
        )
        return engine, {"stream": [engine.checksum()], "checksum": engine.checksum()}

    @classmethod
    def from_config(cls, cfg, version: str = "base", path=None) -> HFEngine:
        """The base model, a full checkpoint at `path`, or a PEFT adapter at `path` merged
        into the base; a version's files are checked against their recorded checksum first."""
        if path is not None:
            verify_version(path, version)
        if path is not None and (Path(path) / "adapter_config.json").exists():
            # peft takes seconds to import: only an adapter version needs it.
            from peft import PeftModel

            base, tok = load_model_and_tokenizer(
                cfg.model_path, cfg.engine.device, cfg.engine.dtype
            )
            model = PeftModel.from_pretrained(base, str(path)).merge_and_unload().eval()
        else:
            model, tok = load_model_and_tokenizer(
                path or cfg.model_path, cfg.engine.device, cfg.engine.dtype
            )
        return cls(
            model,
            tok,
            cfg.model.template,
            cfg.engine.max_new_tokens,
            cfg.engine.batch_size,
            version,
            cfg.model.system_prompt or CHAT_SYSTEM,
        )

    def render(self, question: str, docs: Sequence[str], steps: Sequence[str]) -> str:
        return self.format.render(question, docs, steps)

    def _encode(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        ids = tok(list(prompts), add_special_tokens=False)["input_ids"]
        bos = tok.bos_token_id
        if bos is not None:  # one BOS, as in training (`encode_examples`): unless written
            ids = [x if x[:1] == [bos] else [bos] + x for x in ids]
        input_ids, attn = left_pad(ids, tok.pad_token_id)
        dev = self.model.device
        return {"input_ids": input_ids.to(dev), "attention_mask": attn.to(dev)}

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str],
        temperature: float = 0.0,
        max_new_tokens: int | None = None,
        seed: int | None = None,
        choices: Sequence[Sequence[str]] | None = None,
    ) -> list[Generation]:
        """`choices[i]`, when given, is the set of texts prompt i may produce (grounded
        decoding): tokens outside every remaining continuation are masked at each step."""
        out: list[Generation] = []
        for i in range(0, len(prompts), self.batch_size):
            out += self._generate_batch(
                prompts[i : i + self.batch_size],
                temperature,
                max_new_tokens,
                seed,
                None if choices is None else choices[i : i + self.batch_size],
            )
        return out

    def _tries(self, choices: Sequence[Sequence[str]]) -> list[dict]:
        eos = self.tokenizer.eos_token_id
        tries = []
        for opts in choices:
            root: dict = {}
            ids = self.tokenizer(list(opts), add_special_tokens=False)["input_ids"] if opts else []
            for seq in ids:
                node = root
                for t in [*seq, eos]:
                    node = node.setdefault(t, {})
            tries.append(root)
        return tries

    def _generate_batch(
        self, prompts, temperature, max_new_tokens, seed, choices=None
    ) -> list[Generation]:
        if not prompts:
            return []
        if seed is not None:
            torch.manual_seed(seed)
        enc = self._encode(prompts)
        sample = temperature > 0
        extra = {}
        if choices is not None:
            tries = self._tries(choices)
            n_prompt = enc["input_ids"].shape[1]
            eos = self.tokenizer.eos_token_id

            def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
                node = tries[batch_id]
                for t in input_ids[n_prompt:].tolist():
                    node = node.get(t)
                    if node is None:  # finished (EOS) or no choice given: anything
                        return [eos]
                return list(node) or [eos]

            extra["prefix_allowed_tokens_fn"] = allowed
        gen = self.model.generate(
            **enc,
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_k=None,
            top_p=None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            output_scores=True,
            return_dict_in_generate=True,
            **extra,
        )
        new = gen.sequences[:, enc["input_ids"].shape[1] :]  # (B, T_new)
        # Log-probs under the distribution the tokens were drawn from (temperature applied).
        logits = torch.stack(gen.scores, dim=1).float()  # (B, T_new, V)
        if sample:
            logits = logits / temperature
        logp = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        results = []
        for row, lp in zip(new.tolist(), logp.tolist(), strict=True):
            ids, lps = [], []
            for t, p in zip(row, lp, strict=True):
                if t == pad and t != eos:
                    break
                ids.append(t)
                lps.append(p)
                if t == eos:
                    break
            text = self.tokenizer.decode([t for t in ids if t != eos], skip_special_tokens=True)
            results.append(Generation(clean_step(text), ids, lps))
        return results
