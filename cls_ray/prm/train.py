"""Training the PRM as a Ray Train job: `TorchTrainer` workers (gloo on CPU, NCCL on GPUs), each
wrapping the model in a DeepSpeed engine with the ZeRO stage from the config.

The labelled trajectories are encoded once in the driver and handed to the workers in the train
config; each worker trains on its own slice (rank::world_size). Rank 0 prints progress; every
`log_every` steps all ranks report metrics (`ray.train.report` is collective); at the end the
full weights are gathered (ZeRO-3 partitions them) and rank 0 writes the PRM folder.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from pathlib import Path

from cls_ray.prm.labels import StepExample

logger = logging.getLogger(__name__)


def encode_examples(tokenizer, examples: list[StepExample], max_length: int) -> list[dict]:
    from cls_ray.prm.model import encode

    rows = []
    for ex in examples:
        ids, positions = encode(tokenizer, ex.prompt, ex.completions, ex.evidence, max_length)
        labels = ex.labels[: len(positions)]
        if any(lab is not None for lab in labels):
            rows.append({"input_ids": ids, "positions": positions, "labels": labels})
    return rows


def deepspeed_config(batch_size: int, lr: float, zero_stage: int, bf16: bool) -> dict:
    return {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "optimizer": {
            "type": "AdamW",
            # torch's AdamW: DeepSpeed's fused CPU Adam would need a compiled op.
            "params": {"lr": lr, "weight_decay": 0.01, "torch_adam": True},
        },
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def train_loop_per_worker(config: dict) -> None:
    """Runs in every Ray Train worker."""
    import deepspeed
    import ray.train
    import torch

    from cls_ray.prm.model import StepPRM, collate, save_prm, step_loss

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(config["seed"])
    torch.set_num_threads(max(1, config.get("threads_per_worker", 1)))
    if config.get("num_layers"):
        import transformers

        transformers.logging.set_verbosity_error()  # the dropped layers' weights are expected
    model = StepPRM.from_encoder(config["encoder"], config.get("num_layers"))
    ds = deepspeed_config(
        config["batch_size"], config["lr"], config["zero_stage"], config.get("bf16", False)
    )
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=ds
    )
    steps, warmup = config["steps"], config["warmup"]

    def lr_at(step: int) -> float:
        if step < warmup:
            return config["lr"] * (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return config["lr"] * 0.5 * (1 + math.cos(math.pi * frac))

    rows = config["rows"][rank::world]
    rng = random.Random(config["seed"] + rank)
    order: list[int] = []
    pad_id = config["pad_id"]
    losses: list[float] = []
    t0 = time.time()
    dtype = torch.bfloat16 if config.get("bf16") else torch.float32
    for step in range(steps):
        if len(order) < config["batch_size"]:
            fresh = list(range(len(rows)))
            rng.shuffle(fresh)
            order += fresh
        idx, order = order[: config["batch_size"]], order[config["batch_size"] :]
        batch = collate([rows[i] for i in idx], pad_id)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is torch.bfloat16):
            logits = engine(batch["input_ids"], batch["attention_mask"])
        loss = step_loss(logits.float(), batch["labels"])
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
        last = step == steps - 1
        if (step + 1) % config["log_every"] == 0 or last:
            window = losses[-config["log_every"] :]
            metrics = {
                "step": step + 1,
                "loss": sum(window) / len(window),
                "lr": lr_at(step),
                "elapsed_s": time.time() - t0,
            }
            if rank == 0:
                logger.info(
                    "prm train: step %d/%d  loss %.4f  %.0f s",
                    step + 1,
                    steps,
                    metrics["loss"],
                    metrics["elapsed_s"],
                )
            if not last:
                ray.train.report(metrics)
    # The full weights: ZeRO-3 holds them partitioned, so every rank takes part in gathering.
    if config["zero_stage"] == 3:
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = engine.module.state_dict()
    metrics["first_loss"] = sum(losses[:10]) / min(10, len(losses))
    if rank == 0:
        from transformers import AutoTokenizer

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
    progress: bool = True,
) -> dict:
    """Trains on `examples` with Ray Train + DeepSpeed and writes the PRM to `out`. Returns the
    final metrics (loss at the start and the end, steps, seconds)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from transformers import AutoTokenizer

    from cls_ray.memory.embedder import default_encoder_path

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
        "trajectories": len(rows),
        "steps": n_steps,
        "zero_stage": p.zero_stage,
        "workers": p.num_workers,
        "created_at": time.time(),
    }
    config = {
        "rows": rows,
        "encoder": encoder,
        "num_layers": p.num_layers,
        "pad_id": tok.pad_token_id or 0,
        "batch_size": p.batch_size,
        "lr": p.lr,
        "warmup": min(p.warmup, max(1, n_steps // 5)),
        "steps": n_steps,
        "zero_stage": p.zero_stage,
        "bf16": p.bf16,
        "seed": p.seed,
        "log_every": max(1, min(p.log_every, n_steps)),
        "threads_per_worker": p.threads_per_worker,
        "out": str(out),
        "meta": meta,
    }
    env = {"DS_ACCELERATOR": "cpu"} if not p.use_gpu else {}
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        env["TORCH_EXTENSIONS_DIR"] = os.environ["TORCH_EXTENSIONS_DIR"]
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=p.num_workers,
            use_gpu=p.use_gpu,
            resources_per_worker={"CPU": p.cpus_per_worker},
        ),
        torch_config=TorchConfig(backend="nccl" if p.use_gpu else "gloo"),
        run_config=RunConfig(
            name=f"prm-{int(time.time())}",
            storage_path=str((cfg.state_path / "ray_train").resolve()),
            worker_runtime_env={"env_vars": env} if env else None,
        ),
    )
    t0 = time.time()
    trainer.fit()
    import json

    metrics = json.loads((out / "prm.json").read_text())["train"]
    metrics["seconds"] = time.time() - t0
    metrics["trajectories"] = len(rows)
    metrics["path"] = str(out)
    return metrics
