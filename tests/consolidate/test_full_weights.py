"""Full-weight consolidation (no adapter): every weight trains on Ray Train with DeepSpeed
ZeRO-3 over 2 CPU workers; rank 0 gathers the partitions and saves a whole checkpoint with the
checksum of its weights, which an engine loading it in another process reproduces."""

import json

import pytest
import torch
from safetensors.torch import load_file

from cls_ray.config import load_config
from cls_ray.consolidate.data import mix, replay_pairs
from cls_ray.consolidate.ppo import train_ppo
from cls_ray.consolidate.sft import train_sft
from cls_ray.engine.hf import HFEngine
from cls_ray.model.lora import Start
from tests.helpers import TINY_OVERRIDES

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_full_weight_sft_under_zero3_saves_a_checkpoint_an_engine_loads_bit_for_bit(
    tiny_cfg, tiny_stack, ray_local, tmp_path
):
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            f"state_dir={tiny_cfg.state_dir}",
            "consolidate.weights=full",
            "consolidate.zero_stage=3",
            "consolidate.steps=12",
            "consolidate.lr=0.001",
            "consolidate.batch_size=8",
            "consolidate.cpus_per_worker=0.5",
        ],
    )
    world = tiny_stack.world
    new = [
        (tiny_stack.engine.render(q.text, [f.text for f in q.chain], q.gold_steps[:i]), step)
        for q in world.questions("train", world.held_back_families, per_family=4)
        for i, step in enumerate(q.gold_steps)
    ]
    pairs = mix(new, replay_pairs(world, len(new), cfg.rgr.top_k), cfg.consolidate.replay_ratio)
    out = tmp_path / "full"
    metrics = train_sft(cfg, pairs, out)
    assert metrics["step"] == 12 and metrics["loss"] < metrics["first_loss"]
    assert not (out / "adapter_config.json").exists() and (out / "config.json").exists()
    meta = json.loads((out / "consolidation.json").read_text())
    assert meta["weights"] == "full" and meta["zero_stage"] == 3 and meta["workers"] == 2

    # Another process's view: the engine a replica builds from the folder holds exactly the
    # weights the trainer gathered, and they are not the base's.
    eng = HFEngine.from_config(cfg, "v9", out)
    assert eng.checksum() == meta["checksum"]
    assert tiny_stack.engine.checksum() != meta["checksum"]
    assert eng.generate([pairs[0][0]])[0].token_ids

    # The next sleep trains this checkpoint further (`consolidate.compose: continue`): with a
    # learning rate of ~0, what it saves is the checkpoint it started from (to float error:
    # a weight at 0 moves by the rate), not the base.
    still = cfg.model_copy(
        update={"consolidate": cfg.consolidate.model_copy(update={"lr": 1e-12, "warmup": 0})}
    )
    nxt = tmp_path / "full2"
    train_sft(still, pairs, nxt, steps=1, start=Start("full", out, "v9"))
    assert json.loads((nxt / "consolidation.json").read_text())["started_from"] == "v9"
    first, again = (load_file(d / "model.safetensors") for d in (out, nxt))
    assert again.keys() == first.keys()
    assert all(torch.allclose(again[k], first[k], atol=1e-6) for k in first)
    base = load_file(cfg.model_path / "model.safetensors")
    assert not all(torch.allclose(base[k], first[k], atol=1e-6) for k in first if k in base)


def test_ppo_refuses_full_weights_naming_the_field(tiny_cfg):
    cfg = load_config(None, [f"state_dir={tiny_cfg.state_dir}", "consolidate.weights=full"])
    with pytest.raises(ValueError, match="consolidate.weights=full"):
        train_ppo(cfg, [{"x": 1}], "/nonexistent")
