"""Phase 2, sleep replay: supervised fine-tuning of a LoRA adapter on A_good, with replay.

The data are (prompt, next step) pairs: the gated subplans of trusted sessions, mixed with a
replay sample of what the model was trained on before (bootstrap episodes of the families it
already knows) so that learning the new does not erase the old. The adapter (PEFT LoRA on every
linear layer, rank and alpha from the config) trains on Ray Train workers, each a DeepSpeed
engine; rank 0 writes the adapter folder atomically (a temporary name, then a rename), so a
killed job leaves no half-written version.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

from cls_ray.consolidate.extract import Artifact


def subplan_pairs(artifacts: Sequence[Artifact], template: str = "compact", tokenizer=None):
    """(prompt, target) for each gated subplan, in the model's step format."""
    from cls_ray.steps import render_prompt

    return [
        (
            render_prompt(
                template, tokenizer, a.content["question"], a.content["docs"], a.content["steps"]
            ),
            a.content["next"],
        )
        for a in artifacts
        if a.kind == "subplan"
    ]


def replay_pairs(world, n: int, k_docs: int, seed: int = 0) -> list[tuple[str, str]]:
    """`n` episodes of the families the model already knows, as bootstrap drew them."""
    from cls_ray.model.bootstrap import episode_pair
    from cls_ray.world.episodes import EpisodeSampler

    if n <= 0:
        return []
    sampler = EpisodeSampler(world, world.trained_families, k_docs)
    rng = random.Random(seed)
    return [episode_pair(sampler.sample(rng)) for _ in range(n)]


def mix(new: list, replay: list, replay_ratio: float, seed: int = 0) -> list:
    """`new` plus enough of `replay` that replay is `replay_ratio` of the result, shuffled."""
    if not 0 <= replay_ratio < 1:
        raise ValueError("replay_ratio must be in [0, 1)")
    want = round(len(new) * replay_ratio / (1 - replay_ratio))
    out = list(new) + list(replay[:want])
    random.Random(seed).shuffle(out)
    return out


def lora_model(config: dict):
    """The base model (`config["base"]`) with a fresh LoRA adapter on every linear layer, and
    its tokenizer."""
    from peft import LoraConfig, get_peft_model

    from cls_ray.model.loading import load_model_and_tokenizer

    base, tok = load_model_and_tokenizer(config["base"])
    lora = LoraConfig(
        r=config["lora_r"],
        lora_alpha=config["lora_alpha"],
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora), tok


def sft_loop_per_worker(config: dict) -> None:
    """Runs in every Ray Train worker: LoRA on the base model (or every weight, `weights:
    full`), DeepSpeed, save on rank 0."""
    import ray.train

    from cls_ray.distributed import deepspeed_steps, gathered
    from cls_ray.model.bootstrap import encode_examples
    from cls_ray.model.loading import load_model_and_tokenizer, save_full_checkpoint, save_version

    full = config.get("weights", "lora") == "full"
    model, tok = load_model_and_tokenizer(config["base"]) if full else lora_model(config)
    if full:
        model.train()
    engine, metrics = deepspeed_steps(
        model,
        config["pairs"],
        lambda pairs: encode_examples(tok, pairs, config["max_len"]),
        lambda eng, b: eng(**b).loss,
        config,
        "sleep sft",
    )
    with gathered(engine, config["zero_stage"]):
        if ray.train.get_context().get_world_rank() == 0:
            meta, out = {**config["meta"], "train": metrics}, Path(config["out"])
            if full:  # with the checksum a replica that loads it must reproduce
                save_full_checkpoint(engine.module, out, tok, meta)
            else:
                save_version(engine.module, out, meta)
    ray.train.report(metrics)


def adapter_run(cfg, out: Path, steps: int, method: str, **counts) -> dict:
    """The worker config every adapter run (SFT, PPO) shares: the trainer options, the base,
    the LoRA shape, where to write, and the `meta` saved next to the adapter."""
    from cls_ray.distributed import trainer_options

    c = cfg.consolidate
    meta = {
        "method": method,
        "base": str(cfg.model_path),
        **counts,
        "steps": steps,
        "weights": c.weights,
        "lora_r": c.lora_r,
        "lora_alpha": c.lora_alpha,
        "zero_stage": c.zero_stage,
        "workers": c.num_workers,
        "created_at": time.time(),
    }
    return {
        **trainer_options(c),
        "base": str(cfg.model_path.resolve()),
        "lora_r": c.lora_r,
        "lora_alpha": c.lora_alpha,
        "max_len": cfg.model.arch.max_position,
        "steps": steps,
        "weights": c.weights,
        "out": str(out),
        "meta": meta,
    }


def launch_adapter_run(cfg, loop, config: dict, name: str) -> dict:
    """Runs `loop` on Ray Train and returns the metrics its rank 0 saved with the adapter."""
    from cls_ray.distributed import launch

    seconds = launch(cfg.consolidate, loop, config, cfg.state_path, name)
    meta = json.loads((Path(config["out"]) / "consolidation.json").read_text())
    return {**meta["train"], "seconds": seconds, "path": config["out"]}


def train_sft(cfg, pairs: list[tuple[str, str]], out: str | Path, steps: int | None = None):
    """LoRA SFT of the base model on `pairs` through Ray Train + DeepSpeed; writes the adapter
    to `out` and returns the training metrics."""
    if not pairs:
        raise ValueError("no supervised pairs: nothing passed the PRM gate")
    steps = steps or cfg.consolidate.steps
    config = adapter_run(cfg, Path(out).resolve(), steps, "sft", pairs=len(pairs))
    config["pairs"] = list(pairs)
    return {
        **launch_adapter_run(cfg, sft_loop_per_worker, config, "sleep-sft"),
        "pairs": len(pairs),
    }
