"""Wrong versions of gold chains on any task (no world): each kind goes wrong where it says, and
the steps it writes restate the documents a PRM reads next to them."""

import random

import pytest

from cls_ray.prm.trajectories import KINDS, corrupt, gold_and_corrupted, swap_last_span
from cls_ray.steps import answer_step
from cls_ray.task import QA

DOCS = {
    "a1": "the rival of Ada Park is Bo Lind .",
    "a2": "the employer of Bo Lind is Crane Works .",
    "b1": "the rival of Cy Moss is Di Van Vale .",
    "b2": "the employer of Di Van Vale is Elm Labs .",
    "n1": "the mentor of Ada Park is Fay Oak .",
}


def _qa(i: str, subject: str, a: str, b: str) -> QA:
    return QA(
        id=i,
        question=f"who employs the rival of {subject} ?",
        answers=(DOCS[b].split(" is ")[1].rstrip(" ."),),
        support_ids=(a, b),
        steps=(DOCS[a], DOCS[b]),
        group="rival.employer",
    )


ADA, CY = _qa("q1", "Ada Park", "a1", "a2"), _qa("q2", "Cy Moss", "b1", "b2")


def test_swap_last_span_makes_a_false_statement_about_the_right_thing():
    assert swap_last_span(DOCS["a1"], DOCS["b1"]) == "the rival of Ada Park is Di Van Vale ."
    assert swap_last_span(DOCS["a1"], DOCS["a1"]) is None
    # hops that differ only in their subject: the swap would be the other's true statement
    other = "the employer of Cy Moss is Crane Works ."
    assert swap_last_span(DOCS["a2"], other) is None


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_leaves_the_gold_chain_and_ends_in_an_answer(kind):
    near = {("q1", 0): [DOCS["n1"]], ("q1", 1): [DOCS["n1"]]}
    made = None
    for seed in range(20):  # kinds that pick a hop at random apply to some hops only
        made = corrupt(ADA, kind, [CY], random.Random(seed), near) or made
    assert made is not None, kind
    steps, _ = made
    gold = [*ADA.steps, answer_step(ADA.answer)]
    assert steps != gold
    assert steps[-1].startswith(answer_step("").split()[0])
    if kind == "swapped_span":
        assert "the rival of Ada Park is Di Van Vale ." in steps or (
            "the employer of Bo Lind is Elm Labs ." in steps
        )
    if kind == "off_chain":
        assert DOCS["n1"] in steps  # a true statement, off the question's chain


def test_off_chain_needs_retrieved_neighbours_and_its_step_has_its_own_evidence():
    assert corrupt(ADA, "off_chain", [CY], random.Random(0), None) is None
    near = {("q1", i): [DOCS["n1"]] for i in range(len(ADA.steps))}
    out = gold_and_corrupted([ADA, CY], DOCS, per_question=len(KINDS), seed=0, near=near)
    off = [e for e in out if e.source == "corrupt:off_chain"]
    assert off, "off_chain applies when the retriever found a neighbour"
    for e in off:
        i = e.completions.index(DOCS["n1"])
        assert e.evidence[i] == DOCS["n1"]
    swapped = [e for e in out if e.source == "corrupt:swapped_span"]
    assert swapped
    for e in swapped:  # the false statement is read next to the document it contradicts,
        # though the other question's document shares more of its words (Di Van Vale)
        own, theirs = (ADA, CY) if e.prompt == ADA.question else (CY, ADA)
        bad = next(s for s in e.completions if s not in DOCS.values())
        i = e.completions.index(bad)
        assert e.evidence[i] in own.steps
        for step, ev in zip(e.completions[i + 1 : -1], e.evidence[i + 1 : -1], strict=True):
            assert step in theirs.steps and ev == step  # the rest restates the other's
