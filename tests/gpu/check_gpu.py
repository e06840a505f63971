"""GPU checks for a machine with one GPU: `python tests/gpu/check_gpu.py`.

Runs what one GPU can run without Ray, vLLM or Milvus (see issue 6): the HF engine on the GPU
answering through RGR with a LoRA version swapped in; a DeepSpeed ZeRO-3 SFT step on the GPU;
and the full-weight path: the ZeRO-3 partitions gathered, saved as a checkpoint with its
checksum, loaded by an engine in another process, the checksums compared. Prints a table;
exits 1 if a check failed, 0 (skipped) without CUDA. `--cpu` runs the same checks on the CPU
(gloo, fp32): a rehearsal of the script where no GPU is at hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TINY = [
    "world.scale=0.02",
    "model.arch.hidden_size=64",
    "model.arch.num_layers=2",
    "model.arch.num_heads=4",
    "model.arch.intermediate_size=128",
    "model.arch.max_position=160",
    "model.bootstrap.steps=300",
    "model.bootstrap.batch_size=32",
    "model.bootstrap.warmup=20",
    "model.bootstrap.lr=0.003",
]


class LexicalRetriever:
    """Word-overlap retrieval over the world's documents: RGR's retriever without Milvus."""

    def __init__(self, documents):
        self.docs = list(documents)
        self.words = [set(d.text.lower().split()) for d in self.docs]

    def retrieve(self, queries, k, exclude=None):
        from cls_ray.rgr import RetrievedDoc

        out = []
        for i, q in enumerate(queries):
            qw = set(q.lower().split())
            skip = exclude[i] if exclude else set()
            scored = sorted(
                ((len(qw & w), d) for d, w in zip(self.docs, self.words, strict=True)),
                key=lambda x: -x[0],
            )
            top = [d for s, d in scored if d.id not in skip][:k]
            out.append([RetrievedDoc(d.id, 1.0, d.text) for d in top])
        return out


def _accuracy(world, questions, trajs) -> float:
    from cls_ray.answers import EXACT

    ok = sum(EXACT(t.answer, [q.answer]) for q, t in zip(questions, trajs, strict=True))
    return ok / max(1, len(questions))


def check_engine_and_lora(cfg, world, work: Path) -> str:
    import torch
    from peft import LoraConfig, get_peft_model

    from cls_ray.engine.hf import HFEngine
    from cls_ray.model.loading import load_model_and_tokenizer, save_version
    from cls_ray.rgr import run_rgr

    base = HFEngine.from_config(cfg)
    on = next(base.model.parameters()).device.type
    assert on == cfg.engine.device, f"the engine is on {on}, not {cfg.engine.device}"
    qs = world.questions("heldout", world.trained_families, per_family=4)
    retriever = LexicalRetriever(world.documents)
    t0 = time.time()
    got = run_rgr([q.text for q in qs], base, retriever, top_k=5, max_steps=5, grounded=True)
    base_s = time.time() - t0
    assert all(t.steps for t in got), "a trajectory has no step"
    torch.manual_seed(0)
    model, _ = load_model_and_tokenizer(cfg.model_path)
    lora = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )
    save_version(lora, work / "lora", {"method": "gpu check"})
    swapped = HFEngine.from_config(cfg, "v1", work / "lora")
    got2 = run_rgr([q.text for q in qs], swapped, retriever, top_k=5, max_steps=5, grounded=True)
    changed = sum(a.step_texts != b.step_texts for a, b in zip(got, got2, strict=True))
    assert changed, "the LoRA version answers exactly like the base"
    return (
        f"{len(qs)} questions in {base_s:.2f} s, accuracy base {_accuracy(world, qs, got):.2f}; "
        f"LoRA v1 swapped in: {changed}/{len(qs)} trajectories differ"
    )


def _pairs(world, engine_render) -> list[tuple[str, str]]:
    return [
        (engine_render(q.text, [f.text for f in q.chain], q.gold_steps[:i]), step)
        for q in world.questions("train", world.held_back_families, per_family=4)
        for i, step in enumerate(q.gold_steps)
    ]


def check_zero3_and_full_weights(cfg, world, work: Path) -> tuple[str, str]:
    import deepspeed
    import torch

    from cls_ray.engine.hf import HFEngine
    from cls_ray.model.examples import encode_examples
    from cls_ray.model.loading import load_model_and_tokenizer, save_full_checkpoint

    os.environ.setdefault("MASTER_PORT", "29533")
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK="0", WORLD_SIZE="1")
    os.environ.setdefault("LOCAL_RANK", "0")
    gpu = cfg.engine.device == "cuda"
    deepspeed.init_distributed(dist_backend="nccl" if gpu else "gloo")
    model, tok = load_model_and_tokenizer(cfg.model_path)
    model.train()
    ds_config = {
        "train_micro_batch_size_per_gpu": 8,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 3},
        "bf16": {"enabled": gpu},
        # torch's fused AdamW, as the cluster's PRM runs it (`prm.fused_adam`)
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True, "fused": True}},
    }
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=ds_config
    )
    pairs = _pairs(world, HFEngine(model, tok).render)
    losses = []
    t0 = time.time()
    for step in range(12):
        batch = pairs[(step * 8) % len(pairs) :][:8] or pairs[:8]
        b = {k: v.to(engine.device) for k, v in encode_examples(tok, batch, 160).items()}
        loss = engine(**b).loss
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
    train_s = time.time() - t0
    assert losses[-1] < losses[0], f"loss did not go down: {losses[0]:.3f} -> {losses[-1]:.3f}"
    peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else 0.0
    zero = f"12 steps in {train_s:.1f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}, peak {peak:.0f} MiB"

    out = work / "full"
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
        checksum = save_full_checkpoint(engine.module, out, tok)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from cls_ray.config import load_config; from cls_ray.engine.hf import HFEngine;"
        "cfg = load_config(None, ['engine.device=' + sys.argv[3]]);"
        "e = HFEngine.from_config(cfg, 'v2', sys.argv[2]); print(e.checksum())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), str(out), cfg.engine.device],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert other.returncode == 0, other.stderr[-2000:]
    loaded = other.stdout.strip().splitlines()[-1]
    assert loaded == checksum, f"checksum {loaded[:12]} != {checksum[:12]}"
    full = f"gathered, saved, reloaded in another process: sha256 {checksum[:12]} matches"
    return zero, full


def main() -> int:
    import torch

    device = "cpu" if "--cpu" in sys.argv else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA on this machine")
        return 0
    if device == "cpu":
        os.environ["DS_ACCELERATOR"] = "cpu"
    from cls_ray.bootstrap import bootstrap
    from cls_ray.config import load_config
    from cls_ray.world import build_world

    work = Path(tempfile.mkdtemp(prefix="cls-ray-gpu-"))
    cfg = load_config(None, [*TINY, f"state_dir={work}", f"engine.device={device}"])
    world = build_world(cfg.world)
    rows: list[tuple[str, bool, float, str]] = []

    def run(name, fn):
        t0 = time.time()
        try:
            detail = fn()
            rows.append((name, True, time.time() - t0, detail))
            return detail
        except Exception as e:  # noqa: BLE001 - every check reports, none stops the others
            traceback.print_exc()
            rows.append((name, False, time.time() - t0, f"{type(e).__name__}: {e}"[:200]))
            return None

    run("bootstrap (CPU)", lambda: json.dumps(bootstrap(cfg, world, progress=False))[:120])
    run("HF engine on GPU, RGR, LoRA swap", lambda: check_engine_and_lora(cfg, world, work))
    both = run(
        "ZeRO-3 SFT on GPU + full weights", lambda: check_zero3_and_full_weights(cfg, world, work)
    )
    if both:
        name, ok, secs, _ = rows.pop()
        rows.append(("DeepSpeed ZeRO-3 SFT step on GPU", ok, secs, both[0]))
        rows.append(("full-weight gather -> other process", ok, 0.0, both[1]))
    name = torch.cuda.get_device_name(0) if device == "cuda" else "none (--cpu rehearsal)"
    print(f"\nGPU: {name}, torch {torch.__version__}")
    print(f"{'check':40s} {'ok':4s} {'s':>6s}  detail")
    for name, ok, secs, detail in rows:
        print(f"{name:40s} {'yes' if ok else 'NO':4s} {secs:6.1f}  {detail}")
    return 0 if all(ok for _, ok, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
