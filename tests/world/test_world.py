import random

import pytest

from cls_ray.world import (
    WorldConfig,
    build_world,
    parse_fact,
    trajectory_correct,
    verify_trajectory,
)
from cls_ray.world.core import FAMILIES, NAME_PARTS, fact_text
from cls_ray.world.episodes import EpisodeSampler


@pytest.fixture(scope="module")
def world():
    return build_world()


def test_default_world_is_large_and_deterministic(world):
    assert len(world.documents) >= 10_000
    again = build_world()
    assert [d.id for d in again.documents] == [d.id for d in world.documents]
    other = build_world(WorldConfig(seed=1))
    assert {d.text for d in other.documents} != {d.text for d in world.documents}
    # One document per fact, ids unique.
    assert len({d.id for d in world.documents}) == len(world.documents)


def test_size_knob_makes_tiny_worlds():
    tiny = build_world(WorldConfig(scale=0.02))
    assert 50 <= len(tiny.documents) <= 400
    assert tiny.questions("heldout", per_family=2)


def test_distractors_share_names_and_relations(world):
    by_rel_subject = {(f.relation, f.subject) for (_, _), f in world.facts.items()}
    qs = world.questions("heldout", per_family=5)
    for q in qs:
        for fact in q.chain:
            first, last = fact.subject.split(" ")
            lookalikes = [
                s
                for (rel, s) in by_rel_subject
                if rel == fact.relation
                and s != fact.subject
                and (s.startswith(first + " ") or s.endswith(" " + last))
            ]
            assert lookalikes, f"no look-alike for {fact}"


def test_questions_have_gold_chains_in_families(world):
    qs = world.questions("heldout", per_family=5)
    fams = {q.family for q in qs}
    assert fams == set(FAMILIES)
    for q in qs:
        assert len(q.chain) == q.hops
        for a, b in zip(q.chain, q.chain[1:], strict=False):
            assert a.object == b.subject
        assert all(world.doc_by_id[i].fact in q.chain for i in q.support_ids)
        assert q.text.startswith("what is the ") and q.start in q.text


def test_split_by_entity_keeps_heldout_names_out_of_training(world):
    held = world.questions("heldout", per_family=10)
    train = world.questions("train", per_family=10)
    assert {q.start for q in held}.isdisjoint({q.start for q in train})
    assert all(world.split_of[q.start] == "heldout" for q in held)
    heldout_names = {e for e, s in world.split_of.items() if s == "heldout"}
    sampler = EpisodeSampler(world, world.trained_families)
    rng = random.Random(0)
    for _ in range(300):
        ep = sampler.sample(rng)
        text = " ".join([ep.question, *ep.docs, *ep.steps, ep.target])
        assert not any(name in text for name in heldout_names)
        assert ep.family in world.trained_families


def test_held_back_family_is_not_trained(world):
    assert world.held_back_families
    assert all("rival" in f for f in world.held_back_families)
    assert not any("rival" in f for f in world.trained_families)


def test_verifier_accepts_the_gold_chain(world):
    for q in world.questions("heldout", per_family=2):
        labels = verify_trajectory(q, q.gold_steps)
        assert all(x.correct for x in labels)
        assert trajectory_correct(q, q.gold_steps)


def test_verifier_labels_corruptions(world):
    q = next(q for q in world.questions("heldout", per_family=3) if q.hops == 3)
    gold = q.gold_steps
    wrong_entity = list(gold)
    f0 = q.chain[0]
    other = next(n for n in NAME_PARTS.first if n != f0.subject.split()[0])
    wrong_entity[0] = fact_text(other + " " + f0.subject.split()[1], f0.relation, f0.object)
    labels = verify_trajectory(q, wrong_entity)
    assert [x.correct for x in labels] == [False] * len(gold)
    assert labels[0].reason == "wrong entity"

    wrong_rel = list(gold)
    f1 = q.chain[1]
    rel = next(r for r in ("founder", "hq", "mentor", "employer") if r != f1.relation)
    wrong_rel[1] = fact_text(f1.subject, rel, f1.object)
    labels = verify_trajectory(q, wrong_rel)
    assert [x.correct for x in labels] == [True, False, False, False]

    skipped = [gold[0], gold[2], gold[3]]  # hop 2 skipped
    labels = verify_trajectory(q, skipped)
    assert labels[0].correct and not labels[1].correct
    assert not trajectory_correct(q, skipped)

    garbled = list(gold)
    garbled[2] = gold[2].replace(q.chain[2].object, q.chain[2].object.split()[0])
    assert not verify_trajectory(q, garbled)[2].correct

    early = [gold[0], f"the answer is {q.answer} ."]
    labels = verify_trajectory(q, early)
    assert labels[1].reason == "answered before the last hop" and not labels[1].correct


def test_parse_fact_round_trips(world):
    for d in world.documents[:200]:
        assert parse_fact(d.text) == d.fact
    assert parse_fact("something else entirely") is None
