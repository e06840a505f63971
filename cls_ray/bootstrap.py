"""`cls-ray bootstrap`: build the small default model once, on this machine, in minutes.

A Llama built in code is trained on re-drawn world episodes (question + retrieved documents +
steps so far -> next step) of the trained families only; the held-back families are left for
consolidation to teach. The result is saved with `save_pretrained` (atomically: a temporary
folder renamed into place) and every later run loads it with `from_pretrained`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path

import torch

from cls_ray import console
from cls_ray.engine.hf import HFEngine
from cls_ray.model.examples import encode_examples, episode_pair
from cls_ray.model.loading import build_small_model, is_checkpoint, weights_checksum
from cls_ray.model.tokenizer import build_world_tokenizer
from cls_ray.world.core import World
from cls_ray.world.episodes import EpisodeSampler, step_accuracy

logger = logging.getLogger(__name__)


def bootstrap(cfg, world: World, out_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Trains the default small model on `world` and saves it; returns its training metrics."""
    bc, arch = cfg.model.bootstrap, cfg.model.arch
    if bc.threads:
        torch.set_num_threads(bc.threads)
    torch.manual_seed(bc.seed)
    rng = random.Random(bc.seed)
    out_dir = Path(out_dir) if out_dir else cfg.model_path
    tokenizer = build_world_tokenizer(world.relations.values())
    model = build_small_model(arch, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    sampler = EpisodeSampler(world, world.trained_families, cfg.rgr.top_k)
    eval_rng = random.Random(bc.seed + 1)
    eval_eps = [sampler.sample(eval_rng) for _ in range(256)]

    opt = torch.optim.AdamW(model.parameters(), lr=bc.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < bc.warmup:
            return (step + 1) / max(1, bc.warmup)
        frac = (step - bc.warmup) / max(1, bc.steps - bc.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses: list[float] = []
    t0 = time.time()
    batches = length_buckets(lambda: episode_pair(sampler.sample(rng)), bc.batch_size, rng)
    bar = console.progress("bootstrap", iterable=range(bc.steps), unit="step", disable=not progress)
    for step in bar:
        batch = encode_examples(tokenizer, next(batches), arch.max_position)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bc.bf16):
            loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
    train_s = time.time() - t0
    model.eval()
    metrics = {
        "params": n_params,
        "steps": bc.steps,
        "batch_size": bc.batch_size,
        "train_seconds": round(train_s, 1),
        "loss_first": round(sum(losses[:20]) / max(1, len(losses[:20])), 4),
        "loss_last": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
        "trained_families": [".".join(f) for f in world.trained_families],
        "held_back_families": [".".join(f) for f in world.held_back_families],
        "world_seed": world.config.seed,
        # The same code and seed give other floats on another CPU: torch picks its kernels
        # (AVX2, AVX-512) by the machine, and their sums round differently. What the model
        # then knows by accident (the held-back family before any sleep) moves with them.
        "weights_sha256": weights_checksum(model),
        "machine": machine(),
    }
    save_atomically(model, tokenizer, out_dir, metrics)
    # Scored after the save: a failure here costs no training.
    engine = HFEngine(model, tokenizer)
    metrics["episode_step_accuracy"] = round(step_accuracy(engine, eval_eps), 4)
    metrics["episode_step_accuracy_grounded"] = round(
        step_accuracy(engine, eval_eps, grounded=True), 4
    )
    (out_dir / "bootstrap_metrics.json").write_text(json.dumps(metrics, indent=2))
    logger.info("bootstrap done: %s", metrics)
    return metrics


# Settings that choose torch's, MKL's and oneDNN's kernels, where the environment sets them.
KERNEL_SETTINGS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")


def machine() -> dict:
    """What decides a trained model's floats besides the code and the seed."""
    return {
        "kernels": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "settings": {k: os.environ[k] for k in KERNEL_SETTINGS if k in os.environ},
    }


def length_buckets(draw, batch_size: int, rng: random.Random, pool: int = 16):
    """Endless batches of `draw()` pairs in which the lengths are alike: `pool` batches' worth
    are drawn, sorted by length, cut into batches and given out in random order. A batch of
    random episodes is about a third padding (one- to three-hop prompts side by side); this
    leaves a few percent, and every episode is still drawn at random."""
    while True:
        pairs = sorted(
            (draw() for _ in range(batch_size * pool)), key=lambda p: len(p[0]) + len(p[1])
        )
        chunks = [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)]
        rng.shuffle(chunks)
        yield from chunks


def save_atomically(model, tokenizer, out_dir: Path, metrics: dict) -> None:
    """Writes into a sibling temporary folder, then renames: a crash leaves no half model."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{int(time.time() * 1000)}"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "bootstrap_metrics.json").write_text(json.dumps(metrics, indent=2))
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{int(time.time() * 1000)}"
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)


def ensure_model(cfg, world: World, force: bool = False, progress: bool = True) -> dict:
    """The default model's path and training metrics; it is built first when missing (or
    `force`). `built` says whether this call built it."""
    path = cfg.model_path
    if is_checkpoint(path) and not force:
        metrics_file = path / "bootstrap_metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        return {"path": str(path), "built": False, **metrics}
    metrics = bootstrap(cfg, world, progress=progress)
    return {"path": str(path), "built": True, **metrics}


def describe(result: dict) -> str:
    """One line about `ensure_model`'s result."""
    if not result["built"]:
        return f"model already built at {result['path']} (use --force to rebuild)"
    return (
        f"built {result['path']}: {result['params']:,} parameters, "
        f"{result['steps']} steps in {result['train_seconds']} s, loss "
        f"{result['loss_first']} -> {result['loss_last']}, next-step accuracy "
        f"{result['episode_step_accuracy']:.3f} (grounded "
        f"{result['episode_step_accuracy_grounded']:.3f}); weights {result['weights_sha256'][:12]} "
        f"({result['machine']['kernels']} kernels, {result['machine']['threads']} threads)"
    )
