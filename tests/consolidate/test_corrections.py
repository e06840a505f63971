"""Corrected steps join a sleep grounded in what RGR retrieves for them: a curator's as a
trusted trajectory, a user's as evidence the PRM must score like any other."""

import copy

import pytest

from cls_ray.consolidate.data import (
    KnownSkills,
    corrected_sessions,
    score_sessions,
    sessions_to_pairs,
)
from cls_ray.consolidate.extract import extract, gate
from cls_ray.prm.model import ProcessRewardModel
from cls_ray.rgr import run_rgr
from cls_ray.session import Session


def test_a_corrected_session_becomes_a_trusted_grounded_trajectory(tiny_stack):
    world = tiny_stack.world
    q = next(q for q in world.questions("train", world.held_back_families) if q.hops == 2)
    wrong = {
        "id": "s1",
        "question": q.text,
        "steps": [{"text": "the answer is nobody .", "retrieved": [], "is_answer": True}],
        "answer": "nobody",
        "model_version": "base",
        "feedback": [{"corrected_steps": q.gold_steps, "rating": -1, "role": "curator"}],
    }
    untouched = {**wrong, "id": "s2", "feedback": [{"rating": 1, "role": "curator"}]}
    by_user = {
        **wrong,
        "id": "s3",
        "feedback": [{"corrected_steps": q.gold_steps, "by": "k1", "role": "user"}],
    }
    out, docs = corrected_sessions([wrong, untouched, by_user], tiny_stack.retriever, 5)
    assert len(out) == 2
    s, u = out
    # a user's correction is evidence: unscored, so the PRM scores it and the gate decides
    assert u["id"] == "s3-corrected" and u["model_version"] == "user"
    assert u["prm_step_scores"] is None and u["r_tau"] is None
    assert gate(extract(u, docs, world.entities.get), 0.5, 0.5) == []
    assert s["id"] == "s1-corrected" and s["model_version"] == "human"
    assert [st["text"] for st in s["steps"]] == q.gold_steps and s["answer"] == q.answer
    assert s["prm_step_scores"] == [1.0] * len(q.gold_steps) and s["r_tau"] == 1.0
    found = [
        fact.doc_id in {r["id"] for r in st["retrieved"]}
        for fact, st in zip(q.chain, s["steps"], strict=False)
    ]
    assert found[0]  # the question alone finds the first fact
    assert all(r["id"] in docs for st in s["steps"] for r in st["retrieved"])
    good = gate(extract(s, docs, world.entities.get), 0.5, 0.5)
    assert {a.kind for a in good} == {"pattern", "subplan"}


@pytest.mark.slow
@pytest.mark.ray
def test_many_anonymous_wrong_corrections_change_neither_a_good_nor_the_training_set(
    tiny_stack, tiny_prm
):
    """Each asker "corrects" their own session (they hold its feedback token) with a false
    chain and a bad rating, many times over. Their words are evidence the real PRM scores: the
    sleep's A_good and its training pairs stay exactly what they were without them."""
    cfg, world, memory = tiny_stack.cfg, tiny_stack.world, tiny_stack.retriever
    prm = ProcessRewardModel.load(tiny_prm, cfg.prm.aggregation)
    qs = [q for q in world.questions("train", world.held_back_families) if q.hops == 2][:8]
    trajs = run_rgr([q.text for q in qs], tiny_stack.engine, memory, **cfg.rgr_options())
    sessions = [Session.from_trajectory(t).model_dump() for t in trajs]
    ids = sorted({r["id"] for s in sessions for st in s["steps"] for r in st["retrieved"]})
    docs = memory.get_documents(ids)
    score_sessions(prm, sessions, docs)
    known = KnownSkills(tiny_stack.task, memory, cfg, tiny_stack.engine.format)
    pairs, _, good = sessions_to_pairs(sessions, docs, cfg, tiny_stack.task, known)

    people = sorted(e for e, t in world.entities.items() if t == "person")
    attacked = copy.deepcopy(sessions)
    for s, q in zip(attacked, qs, strict=True):
        for n in range(4):  # many wrong corrections per session, from its anonymous asker
            liar = next(p for p in people[n:] if p != q.answer)
            lie = [step.replace(q.answer, liar) for step in q.gold_steps]
            s["feedback"].append({"corrected_steps": lie, "rating": -1.0, "role": "anonymous"})
    fixed, more = corrected_sessions(attacked, memory, cfg.rgr.top_k)
    assert len(fixed) == len(attacked)  # each became a trajectory to judge, none trusted
    docs2 = {**docs, **more}
    judged = score_sessions(prm, fixed, docs2)
    assert len(judged) == len(fixed)
    pairs2, _, good2 = sessions_to_pairs(attacked + fixed, docs2, cfg, tiny_stack.task, known)
    assert [repr(a) for a in good2] == [repr(a) for a in good]
    assert pairs2 == pairs
