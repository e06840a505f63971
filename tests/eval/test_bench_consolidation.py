"""`cls-ray bench consolidation`: one measured sleep, then every ablation arm; episodic memory
is left as it was."""

import json

import pytest

from cls_ray.cli import main
from tests.helpers import TINY_OVERRIDES, set_args

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_bench_consolidation_prints_the_figures_and_every_ablation_arm(
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
    assert set(tiny_stack.store.ids("episodic")) == before  # episodic memory left as it was
