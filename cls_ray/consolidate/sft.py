"""Phase 2, sleep replay: supervised fine-tuning of a LoRA adapter on A_good, with replay.

The data are (prompt, next step) pairs (`cls_ray.consolidate.data`): the gated subplans of
trusted sessions, mixed with a replay sample of what the model was trained on before, so that
learning the new does not erase the old. The adapter (PEFT LoRA on every
linear layer, rank and alpha from the config) trains on Ray Train workers, each a DeepSpeed
engine; rank 0 writes the adapter folder atomically (a temporary name, then a rename), so a
killed job leaves no half-written version.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import ray.train

from cls_ray.distributed import deepspeed_steps, gathered, launch, trainer_options
from cls_ray.model.examples import encode_examples
from cls_ray.model.loading import (
    context_length,
    save_full_checkpoint,
    save_version,
)
from cls_ray.model.lora import Start, full_model, lora_model


def sft_loop_per_worker(config: dict) -> None:
    """Runs in every Ray Train worker: LoRA on the base model (or every weight, `weights:
    full`), DeepSpeed, save on rank 0."""
    full = config.get("weights", "lora") == "full"
    model, tok = full_model(config) if full else lora_model(config)
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


def start_point(cfg, start: Start | None) -> dict:
    """Where a run's weights start (`consolidate.compose`): from the base model, or from the
    current version `start` (kind, local folder, name): its adapter trained further (LoRA), or
    every weight of it (full: a checkpoint as it is, an adapter merged into the base first)."""
    c = cfg.consolidate
    if c.compose == "base" or start is None or start.kind == "base":
        return {}
    if c.weights == "full":
        if start.kind == "full":
            return {"base": str(start.path), "started_from": start.name}
        return {"merge_adapter": str(start.path), "started_from": start.name}
    if start.kind == "full":
        raise ValueError(
            f"the current version {start.name} is a full checkpoint: an adapter trained on it "
            "could not be served next to the base; set consolidate.weights=full, or "
            "consolidate.compose=base"
        )
    return {"init_adapter": str(start.path), "started_from": start.name}


def adapter_run(
    cfg, out: Path, steps: int, method: str, start: Start | None = None, **counts
) -> dict:
    """The worker config every adapter run (SFT, PPO) shares: the trainer options, the base,
    the LoRA shape, where to write, and the `meta` saved next to the adapter; `start`: the
    current version, where `consolidate.compose` continues from it (`start_point`)."""
    c = cfg.consolidate
    begin = start_point(cfg, start)
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
        "compose": c.compose,
        "started_from": begin.get("started_from", "base"),
    }
    return {
        **trainer_options(c),
        "base": str(cfg.model_path.resolve()),
        **begin,
        "lora_r": c.lora_r,
        "lora_alpha": c.lora_alpha,
        "max_len": context_length(cfg.model_path, cfg.consolidate.max_length),
        "steps": steps,
        "weights": c.weights,
        "out": str(out),
        "meta": meta,
    }


def launch_adapter_run(cfg, loop, config: dict, name: str) -> dict:
    """Runs `loop` on Ray Train and returns the metrics its rank 0 saved with the adapter."""
    seconds = launch(cfg.consolidate, loop, config, cfg.state_path, name)
    meta = json.loads((Path(config["out"]) / "consolidation.json").read_text())
    return {**meta["train"], "seconds": seconds, "path": config["out"]}


def sleep_steps(c, pairs: int) -> int:
    """A sleep's optimizer steps for `pairs` examples (`c`: the consolidate section): `epochs`
    passes at the global batch, within [`min_steps`, `steps`]; `steps` when `epochs` is null.
    A constant would see each pair three times as often when the PRM keeps a third of them."""
    if c.epochs is None:
        return c.steps
    wanted = math.ceil(c.epochs * pairs / (c.batch_size * c.num_workers))
    return min(c.steps, max(c.min_steps, wanted))


def train_sft(
    cfg,
    pairs: list[tuple[str, str]],
    out: str | Path,
    steps: int | None = None,
    start: Start | None = None,
):
    """LoRA SFT on `pairs` through Ray Train + DeepSpeed, from the base model or the current
    version `start` (`consolidate.compose`); writes the adapter to `out` and returns the
    training metrics."""
    if not pairs:
        raise ValueError("no supervised pairs: nothing passed the PRM gate")
    steps = steps or sleep_steps(cfg.consolidate, len(pairs))
    config = adapter_run(cfg, Path(out).resolve(), steps, "sft", start, pairs=len(pairs))
    config["pairs"] = list(pairs)
    return {
        **launch_adapter_run(cfg, sft_loop_per_worker, config, "sleep-sft"),
        "pairs": len(pairs),
    }
