import pytest

from cls_ray.engine import Engine
from cls_ray.engine.hf import HFEngine
from cls_ray.steps import compact_prompt, grounded_choices

pytestmark = pytest.mark.slow


def _prompts(world, n=5):
    qs = world.questions("heldout", per_family=1)[:n]
    docs = [world.doc_by_id[q.support_ids[0]].text for q in qs]
    return qs, [compact_prompt(q.text, [d], []) for q, d in zip(qs, docs, strict=True)], docs


def test_batched_generation_equals_one_by_one(tiny_stack):
    eng = tiny_stack.engine
    assert isinstance(eng, Engine)
    _, prompts, _ = _prompts(tiny_stack.world)
    batched = eng.generate(prompts)
    single = [eng.generate([p])[0] for p in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    for g in batched:
        assert len(g.token_ids) == len(g.logprobs) > 0
        assert all(lp <= 1e-6 for lp in g.logprobs)


def test_grounded_decoding_stays_inside_the_choices(tiny_stack):
    eng: HFEngine = tiny_stack.engine
    qs, prompts, docs = _prompts(tiny_stack.world)
    choices = [grounded_choices(q.text, [d], []) for q, d in zip(qs, docs, strict=True)]
    outs = eng.generate(prompts, temperature=1.0, seed=3, choices=choices)
    for o, c in zip(outs, choices, strict=True):
        assert o.text in c


def test_sampling_is_seeded(tiny_stack):
    eng = tiny_stack.engine
    _, prompts, _ = _prompts(tiny_stack.world)
    a = eng.generate(prompts, temperature=1.0, seed=7)
    b = eng.generate(prompts, temperature=1.0, seed=7)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
