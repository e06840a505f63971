"""`cls-ray sleep`: buffered sessions, scored by the PRM, one consolidation on Ray Train, a
registered version with its metrics and the gate's decision."""

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_sleep_consumes_buffered_sessions_into_a_gated_version(
    tiny_state, tiny_stack, tiny_prm, ray_local, tmp_path, capsys
):
    from cls_ray.cli import main
    from cls_ray.config import load_config
    from cls_ray.registry import ModelRegistry
    from cls_ray.replay.buffer import ReplayBuffer
    from tests.conftest import OPEN_GATE, TINY_OVERRIDES, buffer_sessions

    overrides = [
        *TINY_OVERRIDES,
        f"state_dir={tmp_path}",
        f"model.path={tiny_state['dir'] / 'models' / 'base'}",
        f"store.uri={tiny_state['dir'] / 'milvus.db'}",
        f"prm.path={tiny_prm}",
        "consolidate.steps=20",
        "consolidate.batch_size=8",
        "consolidate.cpus_per_worker=0.5",
        "consolidate.eval_per_family=2",
        *OPEN_GATE,
    ]
    cfg = load_config(None, overrides)
    world = tiny_stack.world
    qs = world.questions("train", world.held_back_families, per_family=3)
    buffer_sessions(tiny_stack, cfg, qs)
    args = [x for o in overrides for x in ("--set", o)]
    assert main(["sleep", "--json", "-q", *args]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["data"]["sessions"] == len(qs) and out["promoted"]
    assert out["families"] and all("rival" in f for f in out["families"])
    reg = ModelRegistry(cfg.state_path / "registry.json")
    v = reg.get(out["version"])
    assert reg.current().name == v.name and v.kind == "lora" and v.parent == "base"
    assert "new_family_after" in v.metrics and "retention_after" in v.metrics
    # consumed, and the consumed cache discarded but for the replay sample (all 6 fit in it)
    assert out["compaction"] == {"dropped": 0, "kept_replay": len(qs), "sessions": len(qs)}
    again = ReplayBuffer(cfg.replay_path)
    assert again.take(100) == []
    assert all(again.get(tr_id).r_tau is not None for tr_id in again.ids())  # scored on the way
    # Nothing left to consume: a clear message, not a crash.
    with pytest.raises(SystemExit, match="no unconsumed sessions"):
        main(["sleep", "-q", *args])


def test_ppo_learns_from_buffered_sessions_and_fresh_rollouts(
    tiny_state, tiny_stack, tiny_prm, ray_local, tmp_path, capsys
):
    """`cls-ray ppo`: stored sessions plus fresh rollouts on replayed questions, PPO on Ray
    Train, a registered version with its metrics."""
    from cls_ray.cli import main
    from cls_ray.config import load_config
    from cls_ray.registry import ModelRegistry
    from tests.conftest import TINY_OVERRIDES, buffer_sessions

    overrides = [
        *TINY_OVERRIDES,
        f"state_dir={tmp_path}",
        f"model.path={tiny_state['dir'] / 'models' / 'base'}",
        f"store.uri={tiny_state['dir'] / 'milvus.db'}",
        f"prm.path={tiny_prm}",
        "consolidate.ppo_steps=8",
        "consolidate.ppo_batch_size=4",
        "consolidate.ppo_fresh_per_family=2",
        "consolidate.cpus_per_worker=0.5",
        "consolidate.eval_per_family=2",
        "consolidate.retention_tolerance=1.0",
    ]
    cfg = load_config(None, overrides)
    world = tiny_stack.world
    qs = world.questions("train", world.held_back_families[:2], per_family=2)
    buffer_sessions(tiny_stack, cfg, qs, temperature=1.0, seed=1)
    args = [x for o in overrides for x in ("--set", o)]
    assert main(["ppo", "--json", "-q", *args]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["method"] == "ppo" and out["train"]["step"] == 8
    assert out["train"]["trajectories"] > len(qs)  # fresh rollouts joined the stored sessions
    v = ModelRegistry(cfg.state_path / "registry.json").get(out["version"])
    assert v.metrics["method"] == "ppo" and "kl_base_candidate" in v.metrics
    assert json.loads((cfg.state_path / "reports" / "ppo.json").read_text())["version"] == v.name


def test_bench_consolidation_prints_the_figures_and_every_ablation_arm(
    tiny_state, tiny_stack, tiny_prm, ray_local, tmp_path, capsys
):
    from cls_ray.cli import main
    from cls_ray.consolidate.sleep import _episodic_ids
    from tests.conftest import TINY_OVERRIDES

    before = set(_episodic_ids(tiny_stack.store))
    overrides = [
        *TINY_OVERRIDES,
        f"state_dir={tmp_path}",
        f"model.path={tiny_state['dir'] / 'models' / 'base'}",
        f"store.uri={tiny_state['dir'] / 'milvus.db'}",
        f"prm.path={tiny_prm}",
        "consolidate.steps=6",
        "consolidate.ppo_steps=4",
        "consolidate.batch_size=4",
        "consolidate.ppo_batch_size=2",
        "consolidate.new_per_family=2",
        "consolidate.sample_n=2",
        "consolidate.cpus_per_worker=0.5",
        "consolidate.eval_per_family=2",
        "consolidate.min_r_tau=0.0",
        "consolidate.min_step_score=0.0",
    ]
    args = [x for o in overrides for x in ("--set", o)]
    assert main(["bench", "consolidation", "--json", "-q", *args]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in (
        "new_family_before",
        "new_family_after",
        "retention_before",
        "retention_after",
        "kl_base_candidate",
    ):
        assert 0 <= out[key] <= (1 if key != "kl_base_candidate" else 100)
    arms = [r["arm"] for r in out["ablation"]]
    assert arms == [
        "sft_prm_gated",
        "sft_ungated",
        "sft_outcome_only",
        "ppo_step_rewards",
        "episodic_only",
    ]
    assert all(0 <= r["new_family_after"] <= 1 for r in out["ablation"])
    assert out["ablation"][-1]["procedures"] >= 1
    assert not out["promoted"]
    assert set(_episodic_ids(tiny_stack.store)) == before  # episodic memory left as it was
