"""`cls-ray bench train`: the same SFT consolidation (model, data, steps, global batch) through
Ray Train with DeepSpeed ZeRO and through TRL's `SFTTrainer` in one plain process.

Throughput is samples per second of the training loop on each side (the trainer's own clock,
start-up excluded; the wall time with start-up is reported next to it). Memory is the peak
resident set of the Ray Train workers (the largest over ranks) for ZeRO stages 0, 2 and 3.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

from cls_ray.consolidate.data import mix, replay_pairs
from cls_ray.consolidate.sft import train_sft
from cls_ray.model.examples import episode_pair
from cls_ray.model.loading import load_model_and_tokenizer
from cls_ray.world.episodes import EpisodeSampler

logger = logging.getLogger(__name__)


def consolidation_pairs(world, n_new: int, replay_ratio: float, k_docs: int, seed: int = 0):
    """A sleep's data without a PRM: next-step pairs of the held-back families (what a sleep
    learns) mixed with replayed pairs of the trained families."""
    sampler = EpisodeSampler(world, world.held_back_families, k_docs)
    rng = random.Random(seed)
    new = [episode_pair(sampler.sample(rng)) for _ in range(n_new)]
    return mix(new, replay_pairs(world, n_new * 4, k_docs, seed), replay_ratio, seed)


def train_trl(cfg, pairs, steps: int, batch_size: int, out: Path) -> dict:
    """TRL's SFTTrainer with the same LoRA, optimiser settings and global batch, here."""
    c = cfg.consolidate
    torch.manual_seed(c.seed)
    model, tok = load_model_and_tokenizer(str(cfg.model_path))
    data = Dataset.from_list([{"prompt": p, "completion": " " + t} for p, t in pairs])
    args = SFTConfig(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=c.lr,
        lr_scheduler_type="cosine",
        warmup_steps=min(c.warmup, max(1, steps // 5)),
        weight_decay=0.01,
        max_grad_norm=1.0,
        logging_steps=max(1, steps // 5),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        max_length=cfg.model.arch.max_position,
        completion_only_loss=True,
        dataloader_num_workers=0,
        seed=c.seed,
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=c.lora_r,
        lora_alpha=c.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=data, processing_class=tok, peft_config=lora
    )
    t0 = time.perf_counter()
    res = trainer.train()
    seconds = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "samples": steps * batch_size,
        "seconds": seconds,
        "samples_per_s": steps * batch_size / seconds,
        "first_loss": losses[0] if losses else None,
        "loss": losses[-1] if losses else res.training_loss,  # the last logged window
        "mean_loss": res.training_loss,
        "threads": torch.get_num_threads(),
    }


def bench_train(
    stack,
    steps: int | None = None,
    stages: tuple[int, ...] = (0, 2, 3),
    log: Callable[[str], None] = logger.info,
) -> dict:
    cfg = stack.cfg
    c = cfg.consolidate
    steps = steps or c.steps
    pairs = consolidation_pairs(stack.world, 160, c.replay_ratio, cfg.rgr.top_k, c.seed)
    global_batch = c.batch_size * c.num_workers
    log(
        f"bench train: {len(pairs)} pairs, {steps} steps, global batch {global_batch} "
        f"({c.num_workers} workers x {c.batch_size})"
    )
    ray_runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for stage in stages:
            run_cfg = cfg.model_copy(
                update={"consolidate": c.model_copy(update={"zero_stage": stage})}
            )
            t0 = time.perf_counter()
            m = train_sft(run_cfg, pairs, Path(tmp) / f"zero{stage}", steps=steps)
            wall = time.perf_counter() - t0
            ray_runs[stage] = {
                "samples_per_s": m["samples"] / m["elapsed_s"],
                "loop_seconds": m["elapsed_s"],
                "wall_seconds": wall,
                "first_loss": m["first_loss"],
                "loss": m["loss"],
                "peak_rss_mb": m.get("peak_rss_mb"),
            }
            log(
                f"  ray + deepspeed zero-{stage}: {ray_runs[stage]['samples_per_s']:.1f} "
                f"samples/s, peak RSS {m.get('peak_rss_mb', 0):.0f} MB per worker, loss "
                f"{m['first_loss']:.3f} -> {m['loss']:.3f}"
            )
        trl = train_trl(cfg, pairs, steps, global_batch, Path(tmp) / "trl")
    log(
        f"  trl sft trainer: {trl['samples_per_s']:.1f} samples/s, loss "
        f"{trl['first_loss'] or float('nan'):.3f} -> {trl['loss']:.3f}"
    )
    main_stage = c.zero_stage if c.zero_stage in ray_runs else stages[-1]
    ray_sps = ray_runs[main_stage]["samples_per_s"]
    return {
        "pairs": len(pairs),
        "steps": steps,
        "global_batch": global_batch,
        "workers": c.num_workers,
        "zero_stage": main_stage,
        "ray": {str(k): v for k, v in ray_runs.items()},
        "trl": trl,
        "samples_per_s_ray": ray_sps,
        "samples_per_s_trl": trl["samples_per_s"],
        "ratio": ray_sps / trl["samples_per_s"],
        "peak_rss_mb_per_worker": {str(k): v["peak_rss_mb"] for k, v in ray_runs.items()},
    }
