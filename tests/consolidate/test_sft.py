"""A tiny real sleep consolidation: gated subplans plus replay, LoRA SFT on Ray Train with
DeepSpeed ZeRO-2 over 2 CPU workers."""

import json

import pytest
import torch
from safetensors.torch import load_file

from cls_ray.config import load_config
from cls_ray.consolidate.data import mix, replay_pairs, subplan_pairs
from cls_ray.consolidate.extract import extract, gate
from cls_ray.consolidate.sft import sleep_steps, train_sft
from cls_ray.engine.hf import HFEngine
from cls_ray.model.lora import Start
from cls_ray.rgr import run_rgr
from cls_ray.session import Session
from cls_ray.steps import StepFormat
from cls_ray.world.verifier import verify_trajectory
from tests.helpers import TINY_OVERRIDES

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_sleep_sft_lowers_the_loss_and_changes_the_adapter(
    tiny_cfg, tiny_stack, ray_local, tmp_path
):
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            f"state_dir={tiny_cfg.state_dir}",
            "consolidate.steps=30",
            "consolidate.batch_size=8",
            "consolidate.cpus_per_worker=0.5",
            "consolidate.log_every=10",
        ],
    )
    world = tiny_stack.world
    qs = world.questions("train", world.held_back_families, per_family=4)
    trajs = run_rgr(
        [q.text for q in qs],
        tiny_stack.engine,
        tiny_stack.retriever,
        temperature=1.0,
        seed=0,
        **cfg.rgr_options(),
    )
    docs = {d.id: d.text for d in world.documents}
    artifacts = []
    for q, tr in zip(qs, trajs, strict=True):
        s = Session.from_trajectory(tr)
        # The verifier stands in for the PRM here: the gate is what is under test.
        s.prm_step_scores = [
            0.9 if lab.correct else 0.1 for lab in verify_trajectory(q, tr.step_texts)
        ]
        s.r_tau = min(s.prm_step_scores) if s.prm_step_scores else None
        artifacts += extract(s, docs)
    good = gate(artifacts, cfg.consolidate.min_r_tau, cfg.consolidate.min_step_score)
    new = subplan_pairs(good, StepFormat())
    # Gold chains as trusted sessions too, so the gate always passes something.
    for q in qs:
        for i, step in enumerate(q.gold_steps):
            new.append(
                (
                    tiny_stack.engine.render(q.text, [f.text for f in q.chain], q.gold_steps[:i]),
                    step,
                )
            )
    pairs = mix(new, replay_pairs(world, len(new), cfg.rgr.top_k), cfg.consolidate.replay_ratio)
    assert len(pairs) == pytest.approx(2 * len(new), abs=1)

    out = tmp_path / "adapter"
    metrics = train_sft(cfg, pairs, out)
    # The schedule follows the data (`consolidate.epochs`), within min_steps..steps (30).
    assert metrics["step"] == sleep_steps(cfg.consolidate, len(pairs)) <= 30
    assert metrics["loss"] < metrics["first_loss"]
    meta = json.loads((out / "consolidation.json").read_text())
    assert meta["workers"] == 2 and meta["zero_stage"] == 2
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(torch.count_nonzero(v) > 0 for v in lora_b)  # B starts at zero
    eng = HFEngine.from_config(cfg, "v1", out)
    assert eng.version == "v1" and eng.generate([pairs[0][0]])[0].token_ids
    assert not (tmp_path / "adapter.tmp").exists()
    assert meta["compose"] == "continue" and meta["started_from"] == "base"

    # The next sleep starts from this version (`consolidate.compose: continue`): its adapter
    # trains further. With a learning rate of ~0, what it saves is what it started from.
    still = cfg.model_copy(
        update={"consolidate": cfg.consolidate.model_copy(update={"lr": 1e-12, "warmup": 0})}
    )
    nxt = tmp_path / "adapter2"
    train_sft(still, pairs, nxt, steps=1, start=Start("lora", out, "v1"))
    assert json.loads((nxt / "consolidation.json").read_text())["started_from"] == "v1"
    again = load_file(nxt / "adapter_model.safetensors")
    assert again.keys() == weights.keys()
    assert all(torch.allclose(again[k], weights[k], atol=1e-6) for k in weights)
    with pytest.raises(ValueError, match="full checkpoint"):  # an adapter needs the base
        train_sft(cfg, pairs, tmp_path / "x", start=Start("full", out, "v2"))
