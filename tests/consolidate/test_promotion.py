"""Gated promotion: a candidate that forgets stays a candidate, with its reason."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from cls_ray.consolidate.evaluate import evaluate_version, retention_episodes
from cls_ray.consolidate.promotion import decide
from cls_ray.engine.hf import HFEngine
from cls_ray.model.loading import load_model_and_tokenizer, save_version
from cls_ray.registry import ModelRegistry

pytestmark = pytest.mark.slow


def test_a_candidate_that_forgets_is_refused_promotion(tiny_cfg, tiny_stack, tmp_path):
    # An adapter with large random weights: it has forgotten how to read.
    torch.manual_seed(0)
    model, _ = load_model_and_tokenizer(tiny_cfg.model_path)
    lora = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False)
    )
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.5)
    save_version(lora, tmp_path / "forgetful", {"method": "test"})
    task = tiny_stack.task
    new_qs = task.questions("eval", task.new_groups, per_group=2)
    old_qs = task.questions("retention", per_group=2)
    episodes = retention_episodes(task.world, n=64)
    engine, retriever = tiny_stack.engine, tiny_stack.retriever
    before = evaluate_version(tiny_cfg, engine, retriever, new_qs, old_qs, episodes)
    cand = HFEngine.from_config(tiny_cfg, "cand", tmp_path / "forgetful")
    after = evaluate_version(tiny_cfg, cand, retriever, new_qs, old_qs, episodes)
    assert before["retention_steps"] > 0.3
    assert after["retention_steps"] < before["retention_steps"] - 0.02
    ok, reason = decide(before, after, tolerance=0.02)
    assert not ok and "fell" in reason

    reg = ModelRegistry(tmp_path / "registry.json", base_uri=str(tiny_cfg.model_path))
    v = reg.register(str(tmp_path / "forgetful"), "lora", metrics={"retention_after": after})
    reg.annotate(v.name, reason)
    again = ModelRegistry(tmp_path / "registry.json")
    assert again.current().name == "base"
    assert again.get(v.name).status == "candidate" and "fell" in again.get(v.name).reason
    # Within tolerance it passes.
    assert decide({"retention": 0.9}, {"retention": 0.885, "new_family": 0.8}, 0.02)[0]


def test_a_gate_with_nothing_to_measure_refuses():
    nan = float("nan")
    # An empty retention set (NaN), or one the current version answers none of, is no evidence.
    for before, after in (
        ({"retention": nan, "new_family": 0.1}, {"retention": nan, "new_family": 0.9}),
        ({"retention": 0.0, "new_family": 0.1}, {"retention": 0.0, "new_family": 0.9}),
        ({}, {"new_family": 1.0}),
    ):
        ok, reason = decide(before, after, tolerance=1.0)
        assert not ok and "no retention evidence" in reason
    # The step-level suite alone is evidence, and a NaN after counts as everything lost.
    assert decide({"retention": nan, "retention_steps": 0.8}, {"retention_steps": 0.79}, 0.02)[0]
    ok, reason = decide({"retention": 0.9}, {"retention": nan}, 0.02)
    assert not ok and "retention fell 0.900" in reason
