"""Corrected steps join a sleep grounded in what RGR retrieves for them: a curator's as a
trusted trajectory, a user's as evidence the PRM must score like any other."""

from cls_ray.consolidate.data import corrected_sessions
from cls_ray.consolidate.extract import extract, gate


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
