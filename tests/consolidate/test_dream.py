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
