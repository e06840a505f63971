"""f(τ) on a hand-built scored session, and the PRM gate."""

from cls_ray.consolidate.extract import abstract_chain, extract, gate, pattern_text
from cls_ray.session import Feedback, RetrievedRef, Session, SessionStep

TYPES = {"Ann Lee": "person", "Bolt Works": "org", "Oslo Port": "city", "Bolt Labs": "org"}


def session(scores, r_tau, feedback=()):
    steps = [
        SessionStep(
            text="the employer of Ann Lee is Bolt Works .",
            retrieved=[RetrievedRef(id="d1", score=0.9), RetrievedRef(id="d9", score=0.5)],
        ),
        SessionStep(
            text="the headquarters of Bolt Works is Oslo Port .",
            retrieved=[RetrievedRef(id="d2", score=0.8)],
        ),
        SessionStep(text="the answer is Oslo Port .", is_answer=True),
    ]
    return Session(
        id="s1",
        question="what is the headquarters of the employer of Ann Lee ?",
        steps=steps,
        answer="Oslo Port",
        model_version="base",
        prm_step_scores=scores,
        r_tau=r_tau,
        feedback=list(feedback),
    )


def test_a_pattern_abstracts_entities_to_typed_variables():
    p = abstract_chain(
        "what is the headquarters of the employer of Ann Lee ?",
        [
            "the employer of Ann Lee is Bolt Works .",
            "the headquarters of Bolt Works is Oslo Port .",
            "the answer is Oslo Port .",
        ],
        TYPES.get,
    )
    assert p == {
        "question": "what is the headquarters of the employer of {person_1} ?",
        "steps": [
            "the employer of {person_1} is {org_1} .",
            "the headquarters of {org_1} is {city_1} .",
            "the answer is {city_1} .",
        ],
        "relations": ["employer", "hq"],  # relation names, as the world calls them
    }
    assert abstract_chain("q ?", ["I think so ."]) is None


def test_extract_makes_patterns_subplans_and_failures_with_their_provenance():
    s = session(
        [0.95, 0.1, 0.2],
        0.1,
        [
            Feedback(
                corrected_steps=[
                    "the employer of Ann Lee is Bolt Works .",
                    "the headquarters of Bolt Works is Bergen Port .",
                ]
            )
        ],
    )
    arts = extract(s, {"d1": "the employer of Ann Lee is Bolt Works ."}, TYPES.get)
    kinds = [a.kind for a in arts]
    assert kinds == ["pattern", "subplan", "failure", "failure"]
    assert all(
        a.session_id == "s1" and a.r_tau == 0.1 and a.step_scores == [0.95, 0.1, 0.2] for a in arts
    )
    sub = arts[1].content
    assert sub["next"] == "the employer of Ann Lee is Bolt Works ." and sub["steps"] == []
    assert sub["docs"] == ["the employer of Ann Lee is Bolt Works .", "d9"]
    fail = arts[2].content
    assert fail["step"].startswith("the headquarters") and fail["instead"].endswith("Bergen Port .")
    assert fail["steps"] == ["the employer of Ann Lee is Bolt Works ."]
    assert arts[3].content["instead"] is None  # no correction for the answer step


def test_the_gate_keeps_only_what_the_prm_trusts():
    good = extract(session([0.9, 0.8, 0.95], 0.8), type_of=TYPES.get)
    bad = extract(session([0.9, 0.1, 0.95], 0.1), type_of=TYPES.get)
    unscored = extract(session(None, None), type_of=TYPES.get)
    kept = gate(good + bad + unscored, min_r_tau=0.5, min_step_score=0.5)
    assert {a.kind for a in kept} == {"pattern", "subplan"}
    assert all(a.r_tau == 0.8 for a in kept) and len(kept) == 4
    loose = gate(bad, min_r_tau=0.5, min_step_score=0.5, whole_trajectory=False)
    assert [a.meta["step"] for a in loose] == [0, 2]
    assert pattern_text(kept[0]).startswith("procedure for what is the headquarters of")


PARAGRAPHS = {
    "p1": "Christopher Nolan: Christopher Edward Nolan (born 30 July 1970) is an English "
    "film director.",
    "p2": "Sathish Kalathil: Sathish Kalathil is an Indian film director and producer.",
    "p3": "Greta Gerwig: Greta Celeste Gerwig (born 4 August 1983) is an Irish film director.",
    "p4": "Celine Song: Celine Song is an American film director and producer.",
}


def paragraph_session(sid, question, ids, answer):
    steps = [
        SessionStep(text=PARAGRAPHS[i], retrieved=[RetrievedRef(id=i, score=0.9)]) for i in ids
    ]
    steps.append(SessionStep(text=f"the answer is {answer} .", is_answer=True))
    return Session(
        id=sid,
        question=question,
        steps=steps,
        answer=answer,
        model_version="base",
        prm_step_scores=[0.9] * len(steps),
        r_tau=0.9,
    )


def test_patterns_form_on_any_text_with_numbered_variables():
    """Off the world, the names and numbers a step takes from the question or its documents
    become numbered variables: two sessions of one question shape fold into one procedure that
    binds a third question of that shape and guides its first retrieval."""
    from cls_ray.consolidate.episodic import fold_patterns
    from cls_ray.memory.procedures import bind, hint_query, parse_pattern

    a = paragraph_session(
        "s1", "Are Christopher Nolan and Sathish Kalathil both film directors?", ["p1", "p2"], "yes"
    )
    b = paragraph_session(
        "s2", "Are Greta Gerwig and Celine Song both film directors?", ["p3", "p4"], "yes"
    )
    arts = [x for s in (a, b) for x in extract(s, PARAGRAPHS)]
    pats = [x for x in arts if x.kind == "pattern"]
    assert len(pats) == 2
    assert pats[0].content["question"] == "Are {entity_1} and {entity_4} both film directors?"
    assert pats[0].content["steps"][-1] == "the answer is yes ."  # "yes" is in no document
    assert "{number_1}" in pats[0].content["steps"][0]  # the year, taken from the document
    (p,) = fold_patterns(gate(arts, 0.5, 0.5))
    assert p.support == 2  # support and R(τ) live in the source field, not the text
    assert (parse_pattern(p.text).question, parse_pattern(p.text).steps) == (p.question, p.steps)
    q = "Are Jane Campion and Sofia Coppola both film directors?"
    assert bind(p.question, q) == {"entity_1": "Jane Campion", "entity_4": "Sofia Coppola"}
    assert hint_query(p, q, []) == "Jane Campion:"
    # nothing taken from the question or a document: no pattern
    assert abstract_chain("what now?", ["I think so.", "the answer is maybe ."]) is None
