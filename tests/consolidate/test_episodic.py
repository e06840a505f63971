"""The episodic fast path of a sleep: procedures folded from gated patterns, indexed in Milvus
and followed by the very next RGR request."""

from cls_ray.consolidate.episodic import fold_patterns
from cls_ray.consolidate.extract import Artifact, abstract_chain
from cls_ray.memory.procedures import bind, hint_query, index_patterns
from cls_ray.rgr import run_rgr
from tests.helpers import PROCEDURE as P


def test_fold_keeps_the_best_supported_procedure_per_question_shape():
    good = {"question": P.question, "steps": list(P.steps)}
    bad = {"question": P.question, "steps": ["the rival of {person_1} is {person_2} ."]}
    arts = [Artifact("pattern", good, f"s{i}", [], 0.9) for i in range(2)]
    arts += [Artifact("pattern", bad, "s9", [], 1.0)]
    arts += [Artifact("subplan", {}, "s1", [], 0.9)]
    (p,) = fold_patterns(arts)
    assert (p.steps, p.support) == (P.steps, 2)
    assert abs(p.r_tau - 0.9) < 1e-9


def test_an_indexed_procedure_guides_the_next_request(tiny_stack):
    """Index the held-back family's procedures from gold chains: the next RGR run retrieves with
    them (no weight change) and finds at least as many of the facts the questions need."""
    world, store = tiny_stack.world, tiny_stack.store
    seen = world.questions("train", world.held_back_families, per_family=3)
    arts = [
        Artifact("pattern", abstract_chain(q.text, q.gold_steps, world.entities.get), q.id, [], 1)
        for q in seen
    ]
    pats = fold_patterns(arts)
    qs = world.questions("heldout", world.held_back_families, per_family=3)
    qs = [q for q in qs if q.hops > 1]
    assert qs and pats
    opts = {**tiny_stack.cfg.rgr_options(), "patterns": True}
    try:
        before = run_rgr(
            [q.text for q in qs],
            tiny_stack.engine,
            tiny_stack.retriever,
            **{**opts, "patterns": False},
        )
        assert [t.steps[0].query for t in before] == [q.text for q in qs]  # the question itself
        assert index_patterns(store, tiny_stack.embedder, pats) == len(pats)
        plans = tiny_stack.retriever.plans([q.text for q in qs])
        assert all(
            p is not None and bind(p.question, q.text) for p, q in zip(plans, qs, strict=True)
        )
        after = run_rgr([q.text for q in qs], tiny_stack.engine, tiny_stack.retriever, **opts)
        for q, t, p in zip(qs, after, plans, strict=True):
            assert t.steps[0].query == hint_query(p, q.text, [])
        hits_before = sum(
            len(set(q.support_ids) & t.retrieved_ids) for q, t in zip(qs, before, strict=True)
        )
        hits_after = sum(
            len(set(q.support_ids) & t.retrieved_ids) for q, t in zip(qs, after, strict=True)
        )
        assert hits_after >= hits_before
    finally:
        store.delete([p.id for p in pats], "episodic")
