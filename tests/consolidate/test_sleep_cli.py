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
    from cls_ray.rgr import run_rgr
    from cls_ray.session import Session
    from tests.conftest import TINY_OVERRIDES

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
        "consolidate.min_r_tau=0.0",  # the tiny PRM is weak; the gate itself is tested elsewhere
        "consolidate.min_step_score=0.0",
        "consolidate.retention_tolerance=1.0",
    ]
    cfg = load_config(None, overrides)
    world = tiny_stack.world
    qs = world.questions("train", world.held_back_families, per_family=3)
    trajs = run_rgr(
        [q.text for q in qs], tiny_stack.engine, tiny_stack.retriever, **cfg.rgr_options()
    )
    buf = ReplayBuffer(cfg.replay_path)
    for tr in trajs:
        tr.model_version = "base"
        buf.add(Session.from_trajectory(tr))
    args = [x for o in overrides for x in ("--set", o)]
    assert main(["sleep", "--json", "-q", *args]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["data"]["sessions"] == len(qs) and out["promoted"]
    assert out["families"] and all("rival" in f for f in out["families"])
    reg = ModelRegistry(cfg.state_path / "registry.json")
    v = reg.get(out["version"])
    assert reg.current().name == v.name and v.kind == "lora" and v.parent == "base"
    assert "new_family_after" in v.metrics and "retention_after" in v.metrics
    again = ReplayBuffer(cfg.replay_path)
    assert again.take(100) == []  # consumed
    assert all(again.get(tr_id).r_tau is not None for tr_id in again.ids())  # scored on the way
    # Nothing left to consume: a clear message, not a crash.
    with pytest.raises(SystemExit, match="no unconsumed sessions"):
        main(["sleep", "-q", *args])
