"""`cls-ray bench consolidation`: one measured sleep, then the ablation arms asked for; episodic
memory is left as it was."""

import json

import pytest

from cls_ray.cli import main
from tests.helpers import TINY_OVERRIDES, set_args

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_bench_consolidation_prints_the_figures_and_the_ablation_arms_asked_for(
    tiny_state, tiny_stack, tiny_prm, ray_local, tmp_path, capsys
):
    before = set(tiny_stack.store.ids("episodic"))
    overrides = [
        *TINY_OVERRIDES,
        f"state_dir={tmp_path}",
        f"model.path={tiny_state['dir'] / 'models' / 'base'}",
        f"store.uri={tiny_state['dir'] / 'milvus.db'}",
        f"prm.path={tiny_prm}",
        "consolidate.steps=6",
        "consolidate.ppo.steps=4",
        "consolidate.batch_size=4",
        "consolidate.ppo.batch_size=2",
        "consolidate.new_per_family=2",
        "consolidate.sample_n=2",
        "consolidate.cpus_per_worker=0.5",
        "consolidate.eval_per_family=2",
        "consolidate.min_r_tau=0.0",
        "consolidate.min_step_score=0.0",
    ]
    args = set_args(overrides)
    # Three of the five arms: one of each kind (SFT on a baseline's sessions, PPO, episodic);
    # which sessions each baseline keeps is tested on its own (test_replay_per_skill).
    arms = "sft_outcome_only,ppo_step_rewards,episodic_only"
    assert main(["bench", "consolidation", "--json", "-q", "--arms", arms, *args]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in (
        "new_family_before",
        "new_family_after",
        "retention_before",
        "retention_after",
        "kl_base_candidate",
    ):
        assert 0 <= out[key] <= (1 if key != "kl_base_candidate" else 100)
    assert [r["arm"] for r in out["ablation"]] == arms.split(",")
    assert all(0 <= r["new_family_after"] <= 1 for r in out["ablation"])
    assert out["ablation"][-1]["procedures"] >= 1
    assert not out["promoted"]
    assert set(tiny_stack.store.ids("episodic")) == before  # episodic memory left as it was


def test_an_unknown_ablation_arm_is_named_before_anything_runs(tmp_path):
    with pytest.raises(SystemExit, match="unknown ablation arm.*sft_gated.*known: sft_prm_gated"):
        main(["bench", "consolidation", "--arms", "sft_gated", "--set", f"state_dir={tmp_path}"])
