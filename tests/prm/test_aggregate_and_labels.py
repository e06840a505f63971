"""R(τ) aggregation and step labels (verifier, corruptions, Monte Carlo, human, merging)."""

import math
import random

import pytest

from cls_ray.prm import aggregate_step_scores
from cls_ray.prm.evaluate import by_source
from cls_ray.prm.labels import (
    Corruptor,
    StepExample,
    evidence_for,
    gold_and_corrupted,
    human_examples,
    merge_labels,
    verifier_example,
)
from cls_ray.prm.mc import mc_labels


@pytest.mark.parametrize(
    "how,scores,expected",
    [
        ("min", [0.9, 0.2, 0.8], 0.2),
        ("product", [0.5, 0.5], 0.25),
        ("last", [0.1, 0.7], 0.7),
        ("mean", [0.2, 0.4], 0.3),
        ("min", [0.6], 0.6),
        ("product", [0.6], 0.6),
        ("last", [0.6], 0.6),
        ("mean", [0.6], 0.6),
    ],
)
def test_aggregations(how, scores, expected):
    assert math.isclose(aggregate_step_scores(scores, how), expected)


def test_aggregation_edge_cases():
    for how in ("min", "product", "last", "mean"):
        assert aggregate_step_scores([], how) == 0.0
    assert aggregate_step_scores([0.3, 0.9]) == 0.3  # min is the default
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_step_scores([0.5], "max")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        aggregate_step_scores([1.5])


def test_gold_chains_are_right_and_every_corruption_has_a_wrong_step(tiny_world):
    world = tiny_world
    qs = world.questions("train", per_family=3)
    examples = gold_and_corrupted(world, qs, per_question=3, seed=1)
    gold = [e for e in examples if e.source == "gold"]
    bad = [e for e in examples if e.source.startswith("corrupt:")]
    assert len(gold) == len(qs) and all(e.labels and min(e.labels) == 1.0 for e in gold)
    assert len(bad) >= 2 * len(qs)
    for e in bad:
        assert 0.0 in e.labels and not e.meta["correct"]
        first = e.labels.index(0.0)
        assert all(x == 0.0 for x in e.labels[first:])  # off the chain stays off
    kinds = {e.source.split(":")[1] for e in bad}
    assert {"wrong_entity", "wrong_relation", "wrong_object", "skipped_hop"} <= kinds


def test_a_wrong_object_reads_against_the_true_fact(tiny_world):
    world = tiny_world
    q = next(q for q in world.questions("train", per_family=3) if q.hops >= 2)
    steps = Corruptor(world).corrupt(q, "wrong_object", random.Random(0))
    ex = verifier_example(q, steps, world=world)
    wrong = ex.labels.index(0.0)
    # The evidence is the world's true fact for that subject and relation, not the step itself.
    assert ex.evidence[wrong] and ex.evidence[wrong] != ex.completions[wrong]
    assert ex.evidence[wrong] in {f.text for f in q.chain}


def test_evidence_is_the_document_a_step_restates():
    docs = ["the boss of Ann Lee is Bo Chan .", "the city of Bo Chan is Rome ."]
    assert evidence_for("the boss of Ann Lee is Bo Chan .", docs) == docs[0]
    assert evidence_for("the answer is Rome .", docs) == ""
    assert evidence_for("something unrelated entirely", docs) == ""


def test_a_curators_corrections_win_over_automatic_labels_and_a_users_do_not():
    steps = ["the boss of A is B .", "the city of B is C .", "the answer is C ."]
    fixed = ["the boss of A is B .", "the city of B is D .", "the answer is D ."]
    session = {
        "id": "s1",
        "question": "what is the city of the boss of A ?",
        "steps": [{"text": t} for t in steps],
        "feedback": [{"corrected_steps": fixed, "rating": None, "role": "curator"}],
    }
    # a user's (or anonymous) correction is evidence, not truth: it labels nothing
    for role in ("user", "anonymous"):
        untrusted = {**session, "feedback": [{"corrected_steps": fixed, "role": role}]}
        assert human_examples([untrusted]) == []
    human = human_examples([session])
    orig = next(e for e in human if e.completions == steps)
    assert orig.labels == [1.0, 0.0, 0.0]
    assert next(e for e in human if e.completions == fixed).labels == [1.0, 1.0, 1.0]
    auto = StepExample(session["question"], steps, [1.0, 1.0, 1.0], ["", "", ""], "verifier")
    merged = merge_labels([auto, *human])
    assert next(e for e in merged if e.completions == steps).labels == [1.0, 0.0, 0.0]


def test_consensus_keeps_only_steps_the_automatic_sources_agree_on():
    a = StepExample("q", ["s1", "s2", "s3"], [1.0, 1.0, 0.0], ["", "", ""], "verifier")
    b = StepExample("q", ["s1", "s2", "s3"], [0.75, 0.25, 0.0], ["", "", ""], "mc")
    assert merge_labels([a, b], consensus=True)[0].labels == [1.0, None, 0.0]
    assert merge_labels([a, b], consensus=False)[0].labels == [1.0, 1.0, 0.0]


def test_a_negative_rating_alone_labels_only_the_final_step():
    session = {
        "id": "s2",
        "question": "q",
        "steps": [{"text": "x ."}, {"text": "the answer is y ."}],
        "feedback": [{"rating": -1.0, "corrected_steps": None, "role": "curator"}],
    }
    assert human_examples([session])[0].labels == [None, 0.0]


def test_monte_carlo_labels_come_from_rollouts_to_the_known_answer(tiny_stack):
    world = tiny_stack.world
    q = next(q for q in world.questions("train", per_family=2) if q.hops >= 2)
    wrong = Corruptor(world).corrupt(q, "wrong_answer", random.Random(0))
    gold = verifier_example(q, q.gold_steps, world=world)
    bad = verifier_example(q, wrong, world=world)
    got = mc_labels(
        [gold, bad],
        [q.answer, q.answer],
        tiny_stack.engine,
        tiny_stack.retriever,
        rollouts=3,
        seed=0,
        **tiny_stack.cfg.rgr_options(),
    )
    assert [e.source for e in got] == ["mc", "mc"]
    assert all(lab is not None and 0.0 <= lab <= 1.0 for e in got for lab in e.labels)
    assert got[0].labels[-1] == 1.0 and got[1].labels[-1] == 0.0  # answer steps judge themselves
    # Every reasoning step's label is a share of 3 rollouts.
    assert all(round(lab * 3) == lab * 3 for e in got for lab in e.labels[:-1])


def test_relative_monte_carlo_labels_judge_the_progress_a_step_makes(tiny_stack):
    """Relative labels are right, wrong or unknown (no rollout succeeds before or after the
    step); the gold chain's steps keep the share of rollouts that succeed: labelled right."""
    world = tiny_stack.world
    qs = [q for q in world.questions("train", per_family=3) if q.hops == 2]
    c, rng = Corruptor(world), random.Random(0)
    pairs = [(q, c.corrupt(q, "wrong_entity", rng)) for q in qs]
    pairs = [(q, bad) for q, bad in pairs if bad and bad[0] != q.gold_steps[0]][:6]
    examples = [verifier_example(q, q.gold_steps, world=world) for q, _ in pairs]
    examples += [verifier_example(q, bad, world=world) for q, bad in pairs]
    answers = [q.answer for q, _ in pairs] * 2

    def relative(agree: bool, steps: bool = False):
        return mc_labels(
            examples,
            answers,
            tiny_stack.engine,
            tiny_stack.retriever,
            rollouts=4,
            seed=0,
            relative=True,
            agree=agree,
            steps=steps,
            **tiny_stack.cfg.rgr_options(),
        )

    got = relative(agree=False)
    n = len(pairs)
    assert all(lab in (0.0, 1.0, None) for e in got for lab in e.labels)
    assert [e.labels[-1] for e in got] == [1.0] * n + [
        float(q.answer == bad[-1].removeprefix("the answer is ").rstrip(" .")) for q, bad in pairs
    ]  # answer steps judge themselves
    gold_steps = [lab for e in got[:n] for lab in e.labels[:-1] if lab is not None]
    assert gold_steps and sum(x == 1.0 for x in gold_steps) >= 0.8 * len(gold_steps)
    # `agree` keeps a relative label only where the hard absolute label says the same
    both = relative(agree=True)
    # the same rollouts (same jobs, same seed): a label stays or is dropped, never flipped
    kept = [
        (lr, la)
        for r, a in zip(got, both, strict=True)
        for lr, la in zip(r.labels, a.labels, strict=True)
    ]
    assert all(la in (lr, None) for lr, la in kept)
    assert [e.labels[-1] for e in both] == [e.labels[-1] for e in got]
    # `steps` also asks a step to bring the answer nearer in steps, and labels first errors:
    # on the same rollouts a label only turns wrong (a detour; after a wrong step), never right
    firsts = relative(agree=False, steps=True)
    for r, f in zip(got, firsts, strict=True):
        assert all(lf in (lr, 0.0) for lr, lf in zip(r.labels, f.labels, strict=True))
        wrong_at = f.labels.index(0.0) if 0.0 in f.labels else len(f.labels)
        assert all(x == 0.0 for x in f.labels[wrong_at:])
    gold_first = [lab for e in firsts[:n] for lab in e.labels[:-1] if lab is not None]
    # the gold chain brings the answer nearer a step at a time: most of its steps stay right
    assert gold_first and sum(x == 1.0 for x in gold_first) >= 0.6 * len(gold_first)


def test_prm_eval_splits_its_errors_by_kind_of_trajectory():
    """`by_source`: accuracy per kind (kept through Monte Carlo labelling in `meta`), the new
    groups apart, so a report says which wrong chains a PRM misses."""
    gold = StepExample("q1", ["a", "b"], [1.0, 1.0], ["", ""], "mc", {"kind": "gold", "group": "x"})
    skip = StepExample(
        "q1", ["b", "c"], [0.0, 0.0], ["", ""], "mc", {"kind": "corrupt:skipped_hop", "group": "x"}
    )
    new = StepExample("q2", ["d"], [1.0], [""], "verifier", {"held_back": True})
    rows = by_source([gold, skip, new], [[0.9, 0.8], [0.9, 0.2], [0.4]], new_groups=())
    assert set(rows) == {"gold", "corrupt:skipped_hop", "verifier/held_back"}
    assert rows["gold"]["step_accuracy"] == 1.0
    assert rows["corrupt:skipped_hop"]["step_accuracy"] == 0.5
    assert rows["corrupt:skipped_hop"]["first_error_accuracy"] == 0.0  # flagged one step late
    assert rows["verifier/held_back"]["step_accuracy"] == 0.0
    assert set(by_source([gold], [[0.9, 0.8]], new_groups=["x"])) == {"gold/held_back"}
