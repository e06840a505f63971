"""Procedures in episodic memory: their text round-trips, their variables bind consistently to a
question and its steps, and the next step's query follows them while the steps do."""

from cls_ray.memory.procedures import bind, hint_query, parse_pattern
from tests.helpers import PROCEDURE

P = PROCEDURE
Q = "what is the rival of the mentor of Ann Lee ?"


def test_pattern_text_round_trips_and_binding_is_consistent():
    assert parse_pattern(P.text) == P
    assert parse_pattern("the mentor of Ann Lee is Bo Ek .") is None
    assert bind(P.question, Q) == {"person_1": "Ann Lee"}
    assert bind(P.question, "what is the mentor of Ann Lee ?") is None
    # the same variable must bind the same entity everywhere
    assert bind(P.steps[0], "the mentor of Bo Ek is Cy Do .", {"person_1": "Ann Lee"}) is None


def test_hint_follows_the_procedure_and_stops_when_the_steps_leave_it():
    assert hint_query(P, Q, []) == "the mentor of Ann Lee is"
    assert hint_query(P, Q, ["the mentor of Ann Lee is Bo Ek ."]) == "the rival of Bo Ek is"
    done = ["the mentor of Ann Lee is Bo Ek .", "the rival of Bo Ek is Cy Do ."]
    assert hint_query(P, Q, done) is None  # the answer step needs no retrieval
    assert hint_query(P, Q, ["the employer of Ann Lee is Bolt Works ."]) is None
    assert hint_query(P, "what is the mentor of Ann Lee ?", []) is None
    assert hint_query(None, Q, []) is None
