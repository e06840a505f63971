"""`cls-ray sleep`: buffered sessions, scored by the PRM, one consolidation on Ray Train, a
registered version with its metrics and the gate's decision."""

import json

import pytest

from cls_ray.cli import main
from cls_ray.config import load_config
from cls_ray.consolidate.skills import SkillLedger
from cls_ray.registry import ModelRegistry
from cls_ray.replay.buffer import ReplayBuffer
from tests.helpers import OPEN_GATE, TINY_OVERRIDES, buffer_sessions, set_args

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_sleep_consumes_buffered_sessions_into_a_gated_version(
    tiny_state, tiny_stack, tiny_prm, ray_local, tmp_path, capsys
):
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
        "consolidate.dream_rounds=1",
        "consolidate.dream_n=2",
        "consolidate.dream_until=1.0",
    ]
    cfg = load_config(None, overrides)
    world = tiny_stack.world
    qs = world.questions("train", world.held_back_families, per_family=3)
    buffer_sessions(tiny_stack, cfg, qs)
    args = set_args(overrides)
    assert main(["sleep", "--json", "-q", *args]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["data"]["sessions"] == len(qs) and out["promoted"]
    # where the sleep's time went, phase by phase, in the order they ran
    assert list(out["seconds"]) == [
        "data",
        "measure_before",
        "fast_path",
        "train_and_dream",
        "measure_after",
        "kl",
    ]
    assert all(s >= 0 for s in out["seconds"].values()) and out["seconds"]["train_and_dream"] > 0
    assert out["families"] and all("rival" in f for f in out["families"])
    reg = ModelRegistry(cfg.state_path / "registry.json")
    v = reg.get(out["version"])
    assert reg.current().name == v.name and v.kind == "lora" and v.parent == "base"
    assert "new_family_after" in v.metrics and "retention_after" in v.metrics
    # step retention measured on the frozen episodes the config asks for (TINY_OVERRIDES: 256)
    assert v.metrics["retention_episodes"] == 256 and 0 <= v.metrics["retention_steps_after"] <= 1
    # One dream: the first candidate asked again the questions none of whose sessions reached
    # R(τ) 1.0 (all of them here), the PRM scored its best of 2 and the gate took them with the
    # sessions; only the last candidate is kept.
    (dream,) = out["dreams"]
    scored = ReplayBuffer(cfg.replay_path, readonly=True)
    taus = [scored.get(i).r_tau for i in scored.ids()]
    assert dream["questions"] == len({q.text for q in qs}) and max(taus) < 1.0
    # the questions are the world's train questions: a dream whose answer their reference
    # refutes is dropped, the others join the sessions
    assert dream["sessions"] == len(qs) + dream["questions"] - dream["refuted"]
    assert (
        dream["a_good"] >= out["data"]["a_good"] and dream["new_pairs"] >= out["data"]["new_pairs"]
    )
    # The candidate kept trained on the dream's set if the dream added trusted artifacts.
    assert dream["trained"] == (dream["a_good"] > out["data"]["a_good"])
    assert out["trained"] == (dream if dream["trained"] else out["data"])
    assert not list((cfg.state_path / "adapters").glob("*.round*"))
    # The family it learned is a skill now: its held-out questions join what later sleeps
    # measure, and its score bars later candidates.
    (skill,) = SkillLedger.of(cfg).skills()
    assert out["learned_skill"] == skill.name == v.name
    assert set(skill.groups) == set(out["families"]) and skill.questions
    assert set(SkillLedger.of(cfg).scores()) == {"base", v.name}
    # The dreams the kept candidate learned from that the gate trusts join the buffer as
    # consumed sessions, so later sleeps replay what they taught.
    again = ReplayBuffer(cfg.replay_path, readonly=True)
    dreamt = [again.get(i) for i in again.ids() if again.get(i).model_version == "dream"]
    assert out["dreams_kept"] == len(dreamt) <= dream["sessions"] - len(qs)
    assert all(d.r_tau >= cfg.consolidate.min_r_tau for d in dreamt)
    assert bool(dreamt) == dream["trained"]  # what the gate trusted of them, or none
    # consumed, and the consumed cache discarded but for the replay sample (all fit in it)
    n = len(qs) + len(dreamt)
    assert out["compaction"] == {"dropped": 0, "kept_replay": n, "sessions": n}
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
    overrides = [
        *TINY_OVERRIDES,
        f"state_dir={tmp_path}",
        f"model.path={tiny_state['dir'] / 'models' / 'base'}",
        f"store.uri={tiny_state['dir'] / 'milvus.db'}",
        f"prm.path={tiny_prm}",
        "consolidate.ppo.steps=8",
        "consolidate.ppo.batch_size=4",
        "consolidate.ppo.fresh_per_family=2",
        "consolidate.cpus_per_worker=0.5",
        "consolidate.eval_per_family=2",
        "consolidate.retention_tolerance=1.0",
    ]
    cfg = load_config(None, overrides)
    world = tiny_stack.world
    qs = world.questions("train", world.held_back_families[:2], per_family=2)
    buffer_sessions(tiny_stack, cfg, qs, temperature=1.0, seed=1)
    args = set_args(overrides)
    assert main(["ppo", "--json", "-q", *args]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["method"] == "ppo" and out["train"]["step"] == 8
    assert out["train"]["trajectories"] > len(qs)  # fresh rollouts joined the stored sessions
    v = ModelRegistry(cfg.state_path / "registry.json").get(out["version"])
    assert v.metrics["method"] == "ppo" and "kl_base_candidate" in v.metrics
    assert json.loads((cfg.state_path / "reports" / "ppo.json").read_text())["version"] == v.name
