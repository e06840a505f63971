"""The PRM's pick of the best sample, and the records and replies made of trajectories, without
Ray."""

import pytest

from cls_ray.prm.best_of_n import best_indices
from cls_ray.rgr import RetrievedDoc, StepRecord, Trajectory
from cls_ray.serving.sessions import pick_best, session_records, session_reply


def test_best_of_n_keeps_each_questions_highest_r_tau_first_on_ties():
    assert best_indices([0.1, 0.9, 0.5, 0.7, 0.7, 0.2], 3) == [1, 3]
    with pytest.raises(ValueError):
        best_indices([0.5], 0)
    trajs = [Trajectory(f"q{i // 2}", "rgr") for i in range(4)]
    scored = [{"scores": [t], "r_tau": t, "prm": "v1"} for t in (0.2, 0.8, 0.6, 0.1)]
    best, best_scores = pick_best(trajs, scored, 2)
    assert best == [trajs[1], trajs[2]] and [s["r_tau"] for s in best_scores] == [0.8, 0.6]


def _trajectory() -> Trajectory:
    docs = [
        RetrievedDoc("d1", 0.9, "the mentor of Ann Lee is Bo Ek ."),
        RetrievedDoc("d2", 0.3, "x"),
    ]
    return Trajectory(
        "what is the mentor of Ann Lee ?",
        "rgr",
        steps=[
            StepRecord("the mentor of Ann Lee is Bo Ek .", "q", docs, ["d1"], [4, 5], [-0.1, -0.2]),
            StepRecord("the answer is Bo Ek .", "q2", [], [], [6], [-0.3], is_answer=True),
        ],
        answer="Bo Ek",
    )


def test_a_session_record_keeps_the_version_and_the_prm_scores():
    tr = _trajectory()
    (scored,) = session_records(
        [tr], [{"scores": [0.9, 0.8], "r_tau": 0.8, "prm": "v1"}], "v3", 1.0
    )
    assert scored.model_version == "v3" and scored.r_tau == 0.8 and scored.prm_version == "v1"
    assert scored.steps[0].token_ids == [4, 5] and scored.created_at == 1.0
    (plain,) = session_records([tr], [None], "v3", 1.0)
    assert plain.r_tau is None and plain.prm_step_scores is None


def test_a_reply_cites_what_each_step_restates():
    tr = _trajectory()
    (session,) = session_records([tr], [None], "v3", 1.0)
    reply = session_reply(tr, session, "v3")
    assert reply["session_id"] == session.id and reply["answer"] == "Bo Ek"
    first, last = reply["steps"]
    assert [r["id"] for r in first["retrieved"]] == ["d1", "d2"]
    assert first["citations"] == [{"id": "d1", "text": "the mentor of Ann Lee is Bo Ek ."}]
    assert last["is_answer"] and last["citations"] == []
