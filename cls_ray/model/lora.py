"""LoRA adapters: the shape consolidation trains (every linear layer, rank and alpha from the
config; alpha = 2r forgets least, see ANCHORS.md)."""

from __future__ import annotations

from cls_ray.model.loading import load_model_and_tokenizer


def lora_model(config: dict):
    """The base model (`config["base"]`) with a fresh LoRA adapter on every linear layer, and
    its tokenizer."""
    # peft takes seconds to import: imported by the training workers that use it, not by every
    # process that imports the consolidation pipeline (the serving stack, the CLI).
    from peft import LoraConfig, get_peft_model

    base, tok = load_model_and_tokenizer(config["base"])
    lora = LoraConfig(
        r=config["lora_r"],
        lora_alpha=config["lora_alpha"],
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora), tok
