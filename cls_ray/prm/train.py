"""Training the PRM as a Ray Train job (`cls_ray.distributed`): DeepSpeed workers, ZeRO stage
from the config. The labelled trajectories are encoded once in the driver and handed to the
workers in the train config; at the end the full weights are gathered and rank 0 writes the PRM
folder, with the training metrics in its `prm.json`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import ray.train
import transformers
from transformers import AutoTokenizer

from cls_ray.distributed import deepspeed_steps, full_state_dict, launch, trainer_options
from cls_ray.memory.embedder import default_encoder_path
from cls_ray.prm.labels import StepExample
from cls_ray.prm.model import StepPRM, collate, encode, labelled, save_prm, step_loss

logger = logging.getLogger(__name__)


def encode_examples(tokenizer, examples: list[StepExample], max_length: int) -> list[dict]:
    rows = []
    for ex in examples:
        ids, positions = encode(tokenizer, ex.prompt, ex.completions, ex.evidence, max_length)
        labels = ex.labels[: len(positions)]
        if any(lab is not None for lab in labels):
            rows.append({"input_ids": ids, "positions": positions, "labels": labels})
    return rows


def train_loop_per_worker(config: dict) -> None:
    """Runs in every Ray Train worker."""
    if config.get("num_layers"):
        transformers.logging.set_verbosity_error()  # the dropped layers' weights are expected
    model = StepPRM.from_encoder(config["encoder"], config.get("num_layers"))
    if config.get("freeze_embeddings"):
        model.encoder.get_input_embeddings().weight.requires_grad_(False)
    engine, metrics = deepspeed_steps(
        model,
        config["rows"],
        lambda rows: collate(rows, config["pad_id"]),
        lambda eng, b: step_loss(eng(b["input_ids"], b["attention_mask"]).float(), b["labels"]),
        config,
        "prm train",
        length=lambda row: len(row["input_ids"]),
        weight=lambda batch: int(labelled(batch["labels"]).sum()),  # step_loss's mean is over these
    )  # random batches (like lengths made a tiny PRM learn worse); micro-batches within one
    state = full_state_dict(engine, config["zero_stage"])
    if ray.train.get_context().get_world_rank() == 0:
        final = StepPRM.from_encoder(config["encoder"], config.get("num_layers"))
        final.load_state_dict({k: v.float() for k, v in state.items()})
        tok = AutoTokenizer.from_pretrained(config["encoder"])
        save_prm(final, tok, config["out"], {**config["meta"], "train": metrics})
    ray.train.report(metrics)


def train_prm(
    cfg,
    examples: list[StepExample],
    out: str | Path,
    steps: int | None = None,
) -> dict:
    """Trains on `examples` with Ray Train + DeepSpeed and writes the PRM to `out`. Returns the
    final metrics (loss at the start and the end, steps, seconds)."""
    p = cfg.prm
    encoder = p.encoder or str(default_encoder_path())
    tok = AutoTokenizer.from_pretrained(encoder)
    rows = encode_examples(tok, examples, p.max_length)
    if not rows:
        raise ValueError("no labelled steps to train the PRM on")
    n_steps = steps or p.steps
    out = Path(out).resolve()
    meta = {
        "max_length": p.max_length,
        "encoder": encoder,
        "num_layers": p.num_layers,
        "freeze_embeddings": p.freeze_embeddings,
        "trajectories": len(rows),
        "steps": n_steps,
        "zero_stage": p.zero_stage,
        "workers": p.num_workers,
        "created_at": time.time(),
    }
    config = {
        **trainer_options(p),
        "rows": rows,
        "encoder": encoder,
        "num_layers": p.num_layers,
        "freeze_embeddings": p.freeze_embeddings,
        "pad_id": tok.pad_token_id or 0,
        "micro_batches": p.micro_batches,
        "steps": n_steps,
        "out": str(out),
        "meta": meta,
    }
    seconds = launch(p, train_loop_per_worker, config, cfg.state_path, "prm")
    metrics = json.loads((out / "prm.json").read_text())["train"]
    metrics["seconds"] = seconds
    metrics["trajectories"] = len(rows)
    metrics["path"] = str(out)
    return metrics
