"""Dreams ask again only what no trusted trajectory has solved."""

from cls_ray.consolidate.dream import dream_questions


def _s(question, r_tau):
    return {"question": question, "r_tau": r_tau}


def test_a_dream_asks_the_unsolved_questions_once_each_in_order():
    sessions = [
        _s("q1", 0.2),
        _s("q2", 0.9),  # solved: the PRM trusts this trajectory
        _s("q3", None),  # unscored: not solved
        _s("q1", 0.4),
        _s("q2", 0.1),
        _s("q4", 0.49),
    ]
    assert dream_questions(sessions, 10, solved_at=0.5) == ["q1", "q3", "q4"]
    assert dream_questions(sessions, 2, solved_at=0.5) == ["q1", "q3"]
    assert dream_questions(sessions, 10, solved_at=0.05) == ["q3"]
    assert dream_questions([_s("q1", 0.7)], 10, solved_at=0.5) == []


def _subplan(session_id, n):
    from cls_ray.consolidate.extract import Artifact

    content = {"question": f"q{n}", "docs": [], "steps": [], "next": f"step {session_id} {n}"}
    return Artifact("subplan", content, session_id, [0.9], 0.9)


def test_balance_repeats_the_least_solved_groups_up_to_a_bound():
    from cls_ray.consolidate.data import balance_groups
    from cls_ray.steps import StepFormat

    good = [_subplan("a", i) for i in range(12)]  # group "one hop": solved often
    good += [_subplan("b", i) for i in range(2)]  # group "two hops": solved twice
    good += [_subplan("c", i) for i in range(5)]  # group "three hops"
    group = {"a": "one hop", "b": "two hops", "c": "three hops"}
    pairs = balance_groups(good, group, StepFormat(), up_to=4)
    targets = [t for _, t in pairs]
    count = {g: sum(t.startswith(f"step {s} ") for t in targets) for s, g in group.items()}
    # the largest group as it was; the others towards it, each pair at most 4 times
    assert count == {"one hop": 12, "two hops": 8, "three hops": 12}
    assert all(targets.count(f"step b {i}") == 4 for i in range(2))
    assert set(targets) == {a.content["next"] for a in good}  # nothing dropped
    once = [t for _, t in balance_groups(good, group, StepFormat(), up_to=1)]
    assert sorted(once) == sorted(a.content["next"] for a in good)  # 1: as they come


def test_a_dream_is_checked_against_train_answers_only(tmp_path):
    """A reference answer judges a dream only for a question of the task's `train` split (the
    questions training may draw on): an `eval` question's answer never becomes a training
    signal, and a question the task does not know passes on the PRM alone."""
    import json

    from cls_ray.consolidate.dream import reference_check
    from cls_ray.task import FilesTask

    def lines(rows):
        return "".join(json.dumps(r) + "\n" for r in rows)

    (tmp_path / "corpus.jsonl").write_text(lines([{"id": "d1", "text": "Ada wrote code."}]))
    (tmp_path / "train.jsonl").write_text(
        lines([{"id": "t1", "question": "Who wrote code?", "answers": ["Ada", "Ada Lovelace"]}])
    )
    (tmp_path / "eval.jsonl").write_text(
        lines([{"id": "e1", "question": "Who wrote the first program?", "answers": ["Ada"]}])
    )
    task = FilesTask(tmp_path)
    asked = [_s("Who wrote code?", 0.9), _s("Who wrote the first program?", 0.9), _s("Why?", 0.1)]
    accept = reference_check(task, asked)
    assert accept("Who wrote code?", "ada lovelace") and accept("Who wrote code?", "Ada")
    assert not accept("Who wrote code?", "Babbage") and not accept("Who wrote code?", None)
    assert accept("Who wrote the first program?", "anyone")  # eval: never a reference
    assert accept("Why?", "because")  # unknown to the task: the PRM alone
    assert reference_check(task, [_s("Why?", 0.1)]) is None
