"""LoRA adapters: the shape consolidation trains (every linear layer, rank and alpha from the
config; alpha = 2r forgets least, see ANCHORS.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cls_ray.model.loading import load_model_and_tokenizer


@dataclass(frozen=True)
class Start:
    """The version a consolidation starts from: its kind, its local folder, its name."""

    kind: str
    path: Path | None
    name: str


def full_model(config: dict):
    """Every weight of `config["base"]` (a checkpoint), or of the base with the adapter
    `config["merge_adapter"]` merged in, to train; and the tokenizer."""
    model, tok = load_model_and_tokenizer(config["base"])
    if config.get("merge_adapter"):
        from peft import PeftModel  # seconds to import: the training workers that need it only

        model = PeftModel.from_pretrained(model, config["merge_adapter"]).merge_and_unload()
    return model.train(), tok


def lora_model(config: dict):
    """The base model (`config["base"]`) with a LoRA adapter on every linear layer: a fresh
    one, or `config["init_adapter"]` (the current version's) to train further; and the
    tokenizer."""
    # peft takes seconds to import: imported by the training workers that use it, not by every
    # process that imports the consolidation pipeline (the serving stack, the CLI).
    from peft import LoraConfig, PeftModel, get_peft_model

    base, tok = load_model_and_tokenizer(config["base"])
    if config.get("init_adapter"):
        return PeftModel.from_pretrained(base, config["init_adapter"], is_trainable=True), tok
    lora = LoraConfig(
        r=config["lora_r"],
        lora_alpha=config["lora_alpha"],
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora), tok
