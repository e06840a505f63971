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


def _rank(doc_id: str, trajectory) -> int | None:
    """Where the first step's retrieval put a document (0 = top), or None if it missed it."""
    ids = [d.id for d in trajectory.steps[0].retrieved]
    return ids.index(doc_id) if doc_id in ids else None


def test_an_indexed_procedure_guides_the_next_request(tiny_stack):
    """Index the held-back family's procedures from gold chains: the next RGR run retrieves with
    them (no weight change) and ranks the first hop's fact higher."""
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
        # The hint asks for the first hop itself, so its fact ranks at least as high for every
        # question, and higher on the whole. (Later hops need the model to state the held-back
        # relation's fact, which no index can teach: those are the weights' job.)
        before_ranks = [_rank(q.support_ids[0], t) for q, t in zip(qs, before, strict=True)]
        after_ranks = [_rank(q.support_ids[0], t) for q, t in zip(qs, after, strict=True)]
        assert None not in after_ranks, after_ranks
        assert all(b is None or a <= b for a, b in zip(after_ranks, before_ranks, strict=True)), (
            before_ranks,
            after_ranks,
        )
        assert sum(after_ranks) < sum(
            r if r is not None else len(after[0].steps[0].retrieved) for r in before_ranks
        ), (
            before_ranks,
            after_ranks,
        )
    finally:
        store.delete([p.id for p in pats], "episodic")
