"""Building the small Llama in code and loading any causal LM by path."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from cls_ray.model.integrity import FILES_KEY, RECORD, files_checksum
from cls_ray.weight_sync import StreamHash

logger = logging.getLogger(__name__)


def build_small_model(arch, tokenizer):
    """A fresh Llama shaped by `arch` (an `ArchConfig`), sized to `tokenizer`."""
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_heads,
        max_position_embeddings=arch.max_position,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        rope_theta=10000.0,
    )
    return LlamaForCausalLM(cfg)


def weights_checksum(model) -> str:
    """SHA-256 of a model's weights (every tensor of its state dict, by name, as float32): the
    same on the trainer that saved a checkpoint and on a replica that loaded it."""
    h = StreamHash()
    for name, t in sorted(model.state_dict().items()):
        h.update(name, t)
    return h.hexdigest()


def save_version(model, out: Path, meta: dict, tokenizer=None) -> Path:
    """A version's folder (an adapter, or with its tokenizer a full checkpoint) and its
    `consolidation.json` with the checksum of its files (what an engine checks before it loads
    the version), appearing whole or not at all."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    meta = {**meta, FILES_KEY: files_checksum(tmp)}
    (tmp / RECORD).write_text(json.dumps(meta, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def save_full_checkpoint(model, out: Path, tokenizer=None, meta: dict | None = None) -> str:
    """A full checkpoint with the checksum of its weights recorded next to it (what a replica
    that loads or receives it must hold); returns the checksum. `meta` adds to the record."""
    meta = {"weights": "full", "checksum": weights_checksum(model), **(meta or {})}
    save_version(model, out, meta, tokenizer)
    return meta["checksum"]


def recorded_checksum(path: str | Path) -> str | None:
    """The checksum of the weights the trainer recorded next to a full checkpoint (None: an
    adapter, or none; every version records the checksum of its files, see `integrity`)."""
    meta = Path(path) / RECORD
    return json.loads(meta.read_text()).get("checksum") if meta.exists() else None


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` holds a model checkpoint (`config.json`)."""
    return (Path(path) / "config.json").exists()


def context_length(path: str | Path, cap: int | None = None) -> int:
    """The longest sequence the checkpoint at `path` takes (its `max_position_embeddings`),
    at most `cap`: the length SFT and PPO cut their examples to."""
    n = int(
        json.loads((Path(path) / "config.json").read_text()).get("max_position_embeddings", 2048)
    )
    return min(n, cap) if cap else n


def load_model_and_tokenizer(path: str | Path, device: str = "cpu", dtype: str = "float32"):
    """`from_pretrained` on a local checkpoint: the built default or any Hugging Face model."""
    path = Path(path)
    if not is_checkpoint(path):
        raise FileNotFoundError(
            f"no model at {path}: run `cls-ray bootstrap` or set model.path to a checkpoint"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    return model.to(device).eval(), tokenizer
