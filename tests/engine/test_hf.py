"""The `Engine` contract, pinned for every engine: `HFEngine` everywhere, `VLLMEngine` where
vllm imports and CUDA is present (skipped elsewhere). RGR, the serve generator and the trainers
rely on exactly these properties."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from cls_ray.engine import Engine, Generation
from cls_ray.engine.factory import build_engine
from cls_ray.model.loading import load_model_and_tokenizer, save_version
from cls_ray.steps import compact_prompt, grounded_choices

pytestmark = pytest.mark.slow


def _vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.fixture(
    scope="module",
    params=[
        "hf",
        pytest.param(
            "vllm",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not _vllm_available(), reason="vLLM needs vllm and CUDA"),
            ],
        ),
    ],
)
def engine_cfg(request, tiny_cfg):
    return tiny_cfg.model_copy(
        update={"engine": tiny_cfg.engine.model_copy(update={"kind": request.param})}
    )


@pytest.fixture(scope="module")
def engine(engine_cfg, tiny_state):
    return build_engine(engine_cfg)


def _prompts(world, n=5):
    qs = world.questions("heldout", per_family=1)[:n]
    docs = [world.doc_by_id[q.support_ids[0]].text for q in qs]
    return qs, [compact_prompt(q.text, [d], []) for q, d in zip(qs, docs, strict=True)], docs


def test_generations_carry_token_ids_and_behaviour_logprobs(engine, tiny_stack):
    assert isinstance(engine, Engine) and engine.version == "base"
    _, prompts, _ = _prompts(tiny_stack.world)
    gens = engine.generate(prompts)
    assert len(gens) == len(prompts)
    for g in gens:
        assert isinstance(g, Generation) and g.text and "\n" not in g.text
        assert len(g.token_ids) == len(g.logprobs) > 0
        assert all(lp <= 1e-6 for lp in g.logprobs)


def test_batched_generation_equals_one_by_one(engine, tiny_stack):
    _, prompts, _ = _prompts(tiny_stack.world)
    batched = engine.generate(prompts)
    single = [engine.generate([p])[0] for p in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]


def test_grounded_decoding_stays_inside_the_choices(engine, tiny_stack):
    qs, prompts, docs = _prompts(tiny_stack.world)
    choices = [grounded_choices(q.text, [d], []) for q, d in zip(qs, docs, strict=True)]
    outs = engine.generate(prompts, temperature=1.0, seed=3, choices=choices)
    for o, c in zip(outs, choices, strict=True):
        assert o.text in c


def test_sampling_is_seeded(engine, tiny_stack):
    _, prompts, _ = _prompts(tiny_stack.world)
    a = engine.generate(prompts, temperature=1.0, seed=7)
    b = engine.generate(prompts, temperature=1.0, seed=7)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]


def test_render_is_the_configured_template(engine, tiny_stack):
    q = tiny_stack.world.questions("heldout", per_family=1)[0].text
    assert engine.render(q, ["doc one ."], ["step one ."]) == compact_prompt(
        q, ["doc one ."], ["step one ."]
    )


def test_a_lora_adapter_loads_as_a_named_version(engine_cfg, tiny_state, tmp_path, tiny_stack):
    torch.manual_seed(0)
    model, _ = load_model_and_tokenizer(engine_cfg.model_path)
    lora = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )
    save_version(lora, tmp_path / "adapter", {"method": "test"})
    eng = build_engine(engine_cfg, "v1", tmp_path / "adapter")
    assert eng.version == "v1"
    _, prompts, _ = _prompts(tiny_stack.world)
    gens = eng.generate(prompts)
    assert all(len(g.token_ids) == len(g.logprobs) > 0 for g in gens)
