"""PPO with step-level rewards: the stream layout a trajectory's steps take, and a tiny real PPO
run on Ray Train with DeepSpeed ZeRO-2 over 2 CPU workers."""

import json

import pytest
import torch
from safetensors.torch import load_file

from cls_ray.config import load_config
from cls_ray.consolidate.ppo import _streams, experience_rows, train_ppo
from cls_ray.engine.hf import HFEngine
from cls_ray.model.examples import encode_examples
from cls_ray.rgr import run_rgr
from cls_ray.session import Session
from cls_ray.steps import StepFormat
from cls_ray.world.verifier import verify_trajectory
from tests.helpers import TINY_OVERRIDES


def test_steps_of_a_trajectory_are_laid_end_to_end_with_rewards_on_their_last_tokens():
    # two sequences of trajectory 0 (steps 0 and 1) and one of trajectory 1
    resp = torch.tensor(
        [
            [0, 0, 1, 1, 1],  # 3 step tokens
            [0, 0, 0, 1, 1],  # 2
            [0, 1, 1, 1, 1],  # 4
        ],
        dtype=torch.bool,
    )
    seq, pos, mask, ends, step_mask = _streams(resp, [(0, 0), (0, 1), (1, 0)], 2)
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert seq[0].tolist() == [0, 0, 0, 1, 1] and pos[0].tolist() == [2, 3, 4, 3, 4]
    assert seq[1, :4].tolist() == [2, 2, 2, 2] and pos[1, :4].tolist() == [1, 2, 3, 4]
    assert ends.tolist() == [[2, 4], [3, 0]] and step_mask.tolist() == [[1, 1], [1, 0]]


def _mean_step_logprob(model, tok, pairs):
    b = encode_examples(tok, pairs, 10**6)
    with torch.inference_mode():
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    tgt = b["labels"][:, 1:]
    keep = tgt != -100
    lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, tgt.clamp(min=0)[..., None])[..., 0]
    return ((lp * keep).sum(1) / keep.sum(1)).tolist()


@pytest.mark.slow
@pytest.mark.ray
def test_a_ppo_run_lowers_the_loss_changes_the_adapter_and_favours_rewarded_steps(
    tiny_cfg, tiny_stack, ray_local, tmp_path
):
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            f"state_dir={tiny_cfg.state_dir}",
            "consolidate.ppo.steps=24",
            "consolidate.ppo.batch_size=4",
            "consolidate.ppo.lr=0.001",
            "consolidate.cpus_per_worker=0.5",
            "consolidate.log_every=6",
        ],
    )
    world = tiny_stack.world
    qs = world.questions("train", world.trained_families[:6], per_family=2)
    trajs = run_rgr(
        [q.text for q in qs],
        tiny_stack.engine,
        tiny_stack.retriever,
        temperature=1.0,
        seed=0,
        **cfg.rgr_options(),
    )
    sessions = []
    for q, tr in zip(qs, trajs, strict=True):
        s = Session.from_trajectory(tr).model_dump()
        # The verifier stands in for the PRM: the learning signal is what is under test.
        s["prm_step_scores"] = [
            1.0 if lab.correct else 0.0 for lab in verify_trajectory(q, tr.step_texts)
        ]
        sessions.append(s)
    docs = {d.id: d.text for d in world.documents}
    rows = experience_rows(sessions, docs, StepFormat())
    assert len(rows) == len(sessions)
    assert any(b for r in rows for b in r["behaviour"])  # the engine's log-probs were kept
    good = [p for r in rows for p, x in zip(r["pairs"], r["rewards"], strict=True) if x > 0]
    bad = [p for r in rows for p, x in zip(r["pairs"], r["rewards"], strict=True) if x < 0]
    assert good and bad

    out = tmp_path / "ppo"
    metrics = train_ppo(cfg, rows, out)
    assert metrics["step"] == 24 and metrics["loss"] < metrics["first_loss"]
    assert {"policy_loss", "value_loss", "kl_ref", "clip_fraction"} <= set(metrics)
    meta = json.loads((out / "consolidation.json").read_text())
    assert meta["method"] == "ppo" and meta["workers"] == 2
    lora_b = [v for k, v in load_file(out / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and any(torch.count_nonzero(v) > 0 for v in lora_b)

    base = tiny_stack.engine
    cand = HFEngine.from_config(cfg, "ppo", out)
    gain = [
        a - b
        for a, b in zip(
            _mean_step_logprob(cand.model, cand.tokenizer, good + bad),
            _mean_step_logprob(base.model, base.tokenizer, good + bad),
            strict=True,
        )
    ]
    good_gain = sum(gain[: len(good)]) / len(good)
    bad_gain = sum(gain[len(good) :]) / len(bad)
    assert good_gain > bad_gain  # rewarded steps became likelier than penalised ones


def test_a_wrong_answer_by_the_reference_is_rewarded_as_the_prm_scoring_it_zero():
    """A session the PRM trusted whose answer the task's reference refutes stays a PPO row (a
    negative example): its answer step's reward is the PRM's 0 less the offset; its reasoning
    steps keep theirs, and a session the reference accepts is unchanged."""
    from cls_ray.steps import StepFormat

    def session(q, answer):
        steps = [
            {"text": "the employer of X is E .", "retrieved": [], "is_answer": False},
            {"text": f"the answer is {answer} .", "retrieved": [], "is_answer": True},
        ]
        return {"question": q, "answer": answer, "steps": steps, "prm_step_scores": [0.9, 0.8]}

    sessions = [session("q1", "E"), session("q2", "F")]
    rows = experience_rows(sessions, {}, StepFormat(), 0.5, False, lambda q, a: a == "E")
    assert [r["rewards"] for r in rows] == [pytest.approx([0.4, 0.3]), pytest.approx([0.4, -0.5])]
    plain = experience_rows(sessions, {}, StepFormat(), 0.5, False)
    assert [r["rewards"] for r in plain] == [pytest.approx([0.4, 0.3])] * 2
