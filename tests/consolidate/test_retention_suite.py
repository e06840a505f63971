"""The frozen suite of trusted steps: what promoted sleeps taught, kept as step-level retention
evidence on tasks without the world's episodes."""

import math

from cls_ray.consolidate.extract import Artifact
from cls_ray.consolidate.promotion import decide
from cls_ray.consolidate.retention import RetentionSuite, next_step_accuracy


def subplan(i: int, session="s1") -> Artifact:
    content = {
        "question": f"what is the mentor of Ann Lee {i} ?",
        "steps": [],
        "docs": [f"the mentor of Ann Lee {i} is Bo Chen ."],
        "next": f"the mentor of Ann Lee {i} is Bo Chen .",
    }
    return Artifact("subplan", content, session, [0.9], 0.9, {"step": 0, "score": 0.9})


def test_the_suite_is_written_once_and_never_changed(tmp_path):
    suite = RetentionSuite(tmp_path / "suite.jsonl", limit=5)
    assert suite.steps() == []
    pattern = Artifact("pattern", {"question": "q", "steps": []}, "s1", [], 0.9)
    assert suite.add([subplan(0), subplan(1), pattern], "v1") == 2
    first = suite.steps()
    assert [s.version for s in first] == ["v1", "v1"]
    # a later sleep adds only what is new, up to the limit; what is there stays as it was
    assert suite.add([subplan(1, "s9"), *(subplan(i, "s2") for i in range(2, 9))], "v2") == 3
    again = RetentionSuite(tmp_path / "suite.jsonl", limit=5).steps()
    assert again[:2] == first and len(again) == 5
    assert [s.session_id for s in again[2:]] == ["s2"] * 3
    assert not list(tmp_path.glob("*.tmp*"))  # no temporary file left behind


def test_next_step_accuracy_through_the_engine_interface(tiny_stack, tmp_path):
    """The suite is measured through the engine interface (any engine): a step the model
    writes from its documents counts, a step it cannot write does not."""
    world = tiny_stack.world
    q = world.questions("train", world.trained_families, per_family=4)
    suite = RetentionSuite(tmp_path / "suite.jsonl", limit=100)
    arts = []
    for x in q:
        step = x.gold_steps[0]
        doc = world.doc_by_id[x.support_ids[0]].text
        arts.append(
            Artifact(
                "subplan",
                {"question": x.text, "steps": [], "docs": [doc], "next": step},
                x.id,
                [1.0],
                1.0,
                {"step": 0, "score": 1.0},
            )
        )
    suite.add(arts, "base")
    right = next_step_accuracy(tiny_stack.engine, suite.steps(), grounded=True)
    wrong = [
        type(s)(s.question, s.docs, s.steps, s.target + " indeed", s.version, s.session_id)
        for s in suite.steps()
    ]
    assert right > 0.5 and next_step_accuracy(tiny_stack.engine, wrong, grounded=True) == 0.0
    assert math.isnan(next_step_accuracy(tiny_stack.engine, []))


def test_the_suite_is_evidence_when_the_retention_set_is_empty():
    nan = float("nan")
    ok, reason = decide({"retention": nan, "retention_steps": 0.8}, {"retention_steps": 0.7}, 0.02)
    assert not ok and "retention_steps fell 0.100" in reason
