"""A stream of skills in the world: `world.held_back_sequence` holds back a sequence of
relations, each with its 1- to 3-hop families, none seen by the bootstrap; the base world stays
as it is."""

import random

import pytest
from pydantic import ValidationError

from cls_ray.model.tokenizer import build_world_tokenizer
from cls_ray.task import WorldTask
from cls_ray.world import WorldConfig, build_world, parse_fact, verify_trajectory
from cls_ray.world.core import FAMILIES, STREAM_RELATIONS
from cls_ray.world.episodes import EpisodeSampler

SEQUENCE = ["rival", "spouse", "partner", "twin"]


@pytest.fixture(scope="module")
def worlds():
    base = build_world(WorldConfig(scale=0.05))
    stream = build_world(WorldConfig(scale=0.05, held_back_sequence=SEQUENCE))
    return base, stream


def test_the_stream_adds_its_relations_without_changing_the_base_world(worlds):
    base, stream = worlds
    assert base.families == FAMILIES and set(base.relations) == set(base.relations) - set(
        STREAM_RELATIONS
    )
    # Every base fact is the same; the stream only adds facts of its own relations.
    assert {k: f for k, f in stream.facts.items() if k in base.facts} == base.facts
    added = {f.relation for k, f in stream.facts.items() if k not in base.facts}
    assert added == {"spouse", "partner", "twin"}
    for rel in ("spouse", "partner", "twin"):
        domain = STREAM_RELATIONS[rel].domain
        subjects = [e for e, t in stream.entities.items() if t == domain]
        assert all((s, rel) in stream.facts for s in subjects)


def test_each_skill_of_the_sequence_has_its_families_and_none_is_trained(worlds):
    _, stream = worlds
    skills = stream.skill_families()
    assert [name for name, _ in skills] == SEQUENCE
    for name, fams in skills:
        assert fams and all(name in f for f in fams)
        assert {len(f) for f in fams} == {1, 2, 3}, (name, fams)
        for f in fams:  # questions on both sides of the entity split
            assert stream.questions("train", [f], per_family=3)
            assert stream.questions("heldout", [f], per_family=3)
    held = {f for _, fams in skills for f in fams}
    assert held == set(stream.held_back_families)
    trained = set(stream.trained_families)
    assert not trained & held
    assert not any(r in f for f in trained for r in SEQUENCE)
    task = WorldTask(stream)
    assert set(task.new_groups) == {".".join(f) for f in held}


def test_the_bootstrap_never_sees_a_skill_of_the_stream(worlds):
    _, stream = worlds
    sampler = EpisodeSampler(stream, stream.trained_families)
    rng = random.Random(0)
    stream_nouns = {"spouse", "partner", "twin"}
    for _ in range(300):
        ep = sampler.sample(rng)
        asked = set(" ".join([ep.question, *ep.steps, ep.target]).split())
        assert not asked & {*stream_nouns, "rival"}  # never asked, never a step
        # The stream's facts are not even in the contexts. (The base world's held-back
        # relation, rival, may be: its facts are among the distractors any document meets.)
        assert not stream_nouns & set(" ".join(ep.docs).split())


def test_the_stream_speaks_words_the_model_has_and_the_verifier_reads(worlds):
    _, stream = worlds
    tok = build_world_tokenizer(stream.relations.values())
    q = stream.questions("train", [("birthplace", "twin", "mayor")], per_family=1)[0]
    ids = tok(" ".join([q.text, *q.gold_steps]))["input_ids"]
    assert tok.unk_token_id not in ids
    assert parse_fact(q.gold_steps[1]) == q.chain[1]  # "the twin city of X is Y ."
    assert all(lab.correct for lab in verify_trajectory(q, q.gold_steps))


def test_a_sequence_must_name_known_relations_once():
    with pytest.raises(ValidationError, match="unknown relation"):
        WorldConfig(held_back_sequence=["rival", "cousin"])
    with pytest.raises(ValidationError, match="twice"):
        WorldConfig(held_back_sequence=["spouse", "spouse"])
