"""Training on Ray Train with DeepSpeed, shared by every trainer in cls-ray (PRM, SFT, PPO).

The driver side (`launch`) starts a `TorchTrainer`: `num_workers` workers over gloo on CPU or
NCCL on GPUs. The worker side (`deepspeed_steps`) wraps a model in a DeepSpeed engine (ZeRO
stage from the config, torch's AdamW so no op needs compiling, bf16 optional), walks its own
slice of the rows (rank::world_size) in shuffled batches with warm-up and cosine decay, logs
progress from rank 0 and reports metrics through `ray.train.report` (a collective: every rank
reports). `full_state_dict` gathers ZeRO-3's partitioned weights (every rank must call it).
"""

from __future__ import annotations

import logging
import math
import os
import random
import resource
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import ray.train
import torch
import torch.distributed as dist
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from cls_ray.console import progress_text, quiet_worker

logger = logging.getLogger(__name__)


def deepspeed_config(
    batch_size: int,
    lr: float,
    zero_stage: int,
    bf16: bool,
    micro_batches: int = 1,
    fused_adam: bool = False,
) -> dict:
    adam = {"lr": lr, "weight_decay": 0.01, "torch_adam": True}
    if fused_adam:
        adam["fused"] = True  # passed on to torch.optim.AdamW
    return {
        "train_micro_batch_size_per_gpu": math.ceil(batch_size / micro_batches),
        "gradient_accumulation_steps": micro_batches,
        "gradient_clipping": 1.0,
        "optimizer": {
            "type": "AdamW",
            # torch's AdamW: DeepSpeed's fused CPU Adam would need a compiled op.
            "params": adam,
        },
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def trainer_options(t) -> dict:
    """The worker-side options of a training section of the config (`PRMConfig`, ...)."""
    return {
        "batch_size": t.batch_size,
        "lr": t.lr,
        "warmup": t.warmup,
        "zero_stage": t.zero_stage,
        "bf16": t.bf16,
        "seed": t.seed,
        "log_every": t.log_every,
        "threads_per_worker": t.threads_per_worker,
        "fused_adam": t.fused_adam,
    }


def without_shm_op(deepspeed) -> None:
    """Keeps DeepSpeed from building its shared-memory all-reduce op when its communication
    backend starts (on CPU: a C++ compile of about 25 s on 2 cores, the first time in every
    fresh environment). Only inference all-reduce uses that op; training's collectives go
    through torch.distributed (gloo), so an op marked incompatible is simply not built."""
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def deepspeed_steps(
    model,
    rows: list,
    collate: Callable[[list], dict],
    loss_fn: Callable[[object, dict], object],
    config: dict,
    name: str,
    length: Callable[[object], int] | None = None,
    weight: Callable[[dict], float] | None = None,
):
    """Trains `model` for `config["steps"]` steps inside a Ray Train worker, on random batches
    of its rank's share of `rows`. Returns the DeepSpeed engine and the final metrics (which
    the caller reports, after saving).

    With `config["micro_batches"]` > 1 and `length` (a row's length), each batch is sorted by
    length and cut into that many micro-batches (`accumulate`, with `weight`): the same step
    with less padding."""
    # DeepSpeed picks its accelerator when it is imported: here, in the worker, after
    # `launch` set DS_ACCELERATOR (a driver never needs it, and its import takes seconds).
    import deepspeed

    without_shm_op(deepspeed)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_worker()  # again: Ray Train configures its workers' logging after the setup hook
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(config["seed"])
    torch.set_num_threads(max(1, config.get("threads_per_worker", 1)))
    micro = min(max(1, int(config.get("micro_batches", 1))), config["batch_size"]) if length else 1
    ds = deepspeed_config(
        config["batch_size"],
        config["lr"],
        config["zero_stage"],
        config.get("bf16", False),
        micro,
        config.get("fused_adam", False),
    )
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=ds
    )
    steps, lr = config["steps"], config["lr"]
    warmup = min(config["warmup"], max(1, steps // 5))

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return lr * 0.5 * (1 + math.cos(math.pi * frac))

    mine = rows[rank::world]
    if not mine:
        raise ValueError(f"{name}: worker {rank} has no rows ({len(rows)} rows, {world} workers)")
    rng = random.Random(config["seed"] + rank)
    order: list[int] = []
    losses: list[float] = []
    t0 = time.time()
    bf16 = bool(config.get("bf16"))
    metrics: dict = {}
    log_every = max(1, min(config["log_every"], steps))
    for step in range(steps):
        while len(order) < config["batch_size"]:
            fresh = list(range(len(mine)))
            rng.shuffle(fresh)
            order += fresh
        idx, order = order[: config["batch_size"]], order[config["batch_size"] :]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        runs = length_parts([mine[i] for i in idx], micro, length)
        losses.append(accumulate(engine, runs, collate, loss_fn, weight, bf16))
        last = step == steps - 1
        if (step + 1) % log_every == 0 or last:
            window = losses[-log_every:]
            metrics = {
                "step": step + 1,
                "loss": sum(window) / len(window),
                "lr": lr_at(step),
                "elapsed_s": time.time() - t0,
            }
            if rank == 0:  # the driver's console shows these lines as the stage's progress
                logger.info(
                    progress_text(name, step + 1, steps, metrics["loss"], metrics["elapsed_s"])
                )
            if not last:
                ray.train.report(metrics)
    metrics["first_loss"] = sum(losses[:10]) / min(10, len(losses))
    metrics["samples"] = steps * config["batch_size"] * world
    metrics["peak_rss_mb"] = _peak_rss_mb()
    return engine, metrics


def accumulate(engine, runs: list[list], collate, loss_fn, weight=None, bf16=False) -> float:
    """One optimizer step over the micro-batches `runs`: each one's mean loss counts by its
    `weight` (what the mean is over: labelled positions, say; default its rows), so the
    gradients add up to the whole batch's; DeepSpeed steps the optimizer after the last one
    (its accumulation steps are len(runs)). Returns the batch's loss."""
    parts = [collate(r) for r in runs]
    weights = [
        float(weight(p)) if weight else float(len(r)) for p, r in zip(parts, runs, strict=True)
    ]
    total, batch_loss = sum(weights) or 1.0, 0.0
    for part, w in zip(parts, weights, strict=True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(engine, to_device(part, engine.device))
        engine.backward(loss * (w / total), scale_wrt_gas=False)
        engine.step()
        batch_loss += loss.item() * w / total
    return batch_loss


def length_parts(rows: list, parts: int, length: Callable[[object], int] | None) -> list[list]:
    """`rows` sorted by `length` and cut into `parts` runs of near-equal size (none empty);
    one part, unsorted, without `length`."""
    if parts <= 1 or length is None or len(rows) <= 1:
        return [rows]
    rows = sorted(rows, key=length)
    n = min(parts, len(rows))
    bounds = [round(i * len(rows) / n) for i in range(n + 1)]
    return [rows[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _peak_rss_mb() -> float:
    """This process's peak resident set, the largest over the ranks."""
    mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([mine], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())
    return mine


def to_device(batch, device):
    """Tensors of a (nested) batch moved to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def gathered(engine, zero_stage: int):
    """A context in which every rank sees whole parameters (ZeRO-3 partitions them); every
    rank must enter it."""
    if zero_stage != 3:
        return nullcontext()
    import deepspeed  # in the worker only (see `deepspeed_steps`)

    return deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)


def full_state_dict(engine, zero_stage: int) -> dict:
    """The whole model's weights on every rank (ZeRO-3 gathers its partitions)."""
    if zero_stage == 3:
        return engine._zero3_consolidated_16bit_state_dict()
    return engine.module.state_dict()


def launch(t, loop: Callable[[dict], None], config: dict, state_path: Path, name: str) -> float:
    """Runs `loop` on `t.num_workers` Ray Train workers (`t`: a training section of the config)
    and returns the wall-clock seconds."""
    env = {} if t.use_gpu else {"DS_ACCELERATOR": "cpu"}
    if os.environ.get("TORCH_EXTENSIONS_DIR"):  # where DeepSpeed caches its compiled ops
        env["TORCH_EXTENSIONS_DIR"] = os.environ["TORCH_EXTENSIONS_DIR"]
    trainer = TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=t.use_gpu,
            resources_per_worker={"CPU": t.cpus_per_worker, "GPU": t.gpus_per_worker}
            if t.use_gpu
            else {"CPU": t.cpus_per_worker},
        ),
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        run_config=RunConfig(
            name=f"{name}-{int(time.time())}",
            storage_path=str((state_path / "ray_train").resolve()),
            worker_runtime_env={"env_vars": env} if env else None,
        ),
    )
    t0 = time.time()
    trainer.fit()
    return time.time() - t0
