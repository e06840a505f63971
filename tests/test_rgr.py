import pytest
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from cls_ray.config import load_config
from cls_ray.engine.factory import build_engine
from cls_ray.rgr import run_rgr, step_query

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def questions(tiny_stack):
    return [q.text for q in tiny_stack.world.questions("heldout", per_family=1)]


def test_rgr_records_queries_retrievals_and_citations(tiny_stack, questions):
    trajs = run_rgr(
        questions, tiny_stack.engine, tiny_stack.retriever, top_k=3, max_steps=4, grounded=True
    )
    assert len(trajs) == len(questions)
    for tr in trajs:
        assert 1 <= len(tr.steps) <= 4
        cited_before: set[str] = set()
        for t, s in enumerate(tr.steps):
            assert s.query == step_query(tr.question, tr.step_texts[:t])
            ids = {d.id for d in s.retrieved}
            assert 0 < len(ids) <= 3
            assert set(s.cited) <= ids
            assert not (ids & cited_before), "a cited document came back at a later step"
            if not s.is_answer:
                # grounded: a reasoning step restates one of its documents, and cites it
                assert s.text in [d.text for d in s.retrieved]
                assert s.cited
            cited_before |= set(s.cited)
        assert tr.retrieval_s > 0 and tr.generation_s > 0 and tr.latency_s > 0
        if tr.steps[-1].is_answer:
            assert tr.answer is not None


def test_single_shot_retrieves_once_and_none_never(tiny_stack, questions):
    single = run_rgr(questions, tiny_stack.engine, tiny_stack.retriever, mode="single", top_k=3)
    for tr in single:
        assert tr.steps[0].query == tr.question
        assert all(s.query is None for s in tr.steps[1:])
        first = [d.id for d in tr.steps[0].retrieved]
        assert all([d.id for d in s.retrieved] == first for s in tr.steps)
    none = run_rgr(questions, tiny_stack.engine, None, mode="none")
    assert all(not s.retrieved and s.query is None for tr in none for s in tr.steps)
    assert all(tr.retrieval_s == 0 for tr in none)


def test_bad_mode_and_missing_retriever(tiny_stack):
    with pytest.raises(ValueError, match="unknown mode"):
        run_rgr(["q"], tiny_stack.engine, None, mode="sometimes")
    with pytest.raises(ValueError, match="needs a retriever"):
        run_rgr(["q"], tiny_stack.engine, None, mode="rgr")


def test_any_hf_checkpoint_with_a_chat_template_runs_rgr(tmp_path, tiny_stack, embedder):
    """model.path + template: chat take a checkpoint that is not ours (here: a random tiny Llama
    with the encoder's word-piece tokenizer and a chat template)."""
    tok = AutoTokenizer.from_pretrained(str(embedder.path))
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant> {% endif %}"
    )
    tok.eos_token = tok.sep_token
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=1024,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.sep_token_id,
        )
    )
    path = tmp_path / "other-model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    cfg = load_config(
        None, [f"model.path={path}", "model.template=chat", "engine.max_new_tokens=6"]
    )
    engine = build_engine(cfg)
    q = tiny_stack.world.questions("heldout", per_family=1)[0].text
    prompt = engine.render(q, ["a document ."], [])
    assert prompt.startswith("<system>") and "[1] a document ." in prompt
    assert prompt.endswith("<assistant> ")
    tr = run_rgr([q], engine, tiny_stack.retriever, max_steps=2)[0]
    assert 1 <= len(tr.steps) <= 2 and all(s.retrieved for s in tr.steps)


def test_max_tokens_stops_a_trajectory_after_the_step_that_reaches_it(tiny_stack, questions):
    free = run_rgr(questions, tiny_stack.engine, tiny_stack.retriever, max_steps=5)
    cut = run_rgr(questions, tiny_stack.engine, tiny_stack.retriever, max_steps=5, max_tokens=1)
    assert any(len(tr.steps) > 1 for tr in free)
    assert all(len(tr.steps) == 1 for tr in cut)


def test_min_steps_withholds_the_answer_until_that_many_steps(tiny_stack, questions):
    """A dream asked one step further (`consolidate.dream_further`): below `min_steps` the
    grammar offers no answer, so every trajectory takes that many reasoning steps first (or
    ends at `max_steps` without one); ungrounded decoding cannot withhold it and says so."""
    run = run_rgr(  # tiny model: without a floor it answers at once often
        questions, tiny_stack.engine, tiny_stack.retriever, max_steps=5, grounded=True
    )
    floors = [2 + i % 2 for i in range(len(questions))]
    held = run_rgr(
        questions,
        tiny_stack.engine,
        tiny_stack.retriever,
        max_steps=5,
        grounded=True,
        min_steps=floors,
    )
    assert any(s.is_answer for tr in run for s in tr.steps[:2])  # the floor changes something
    for tr, floor in zip(held, floors, strict=True):
        assert len(tr.steps) >= floor
        assert not any(s.is_answer for s in tr.steps[:floor])
    with pytest.raises(ValueError, match="min_steps needs grounded decoding"):
        run_rgr(questions, tiny_stack.engine, tiny_stack.retriever, min_steps=1)
    with pytest.raises(ValueError, match="below max_steps"):
        run_rgr(questions, tiny_stack.engine, tiny_stack.retriever, grounded=True, min_steps=5)
    with pytest.raises(ValueError, match="one per question"):
        run_rgr(questions, tiny_stack.engine, tiny_stack.retriever, grounded=True, min_steps=[1])


def test_a_retry_keeps_its_prefix_and_takes_another_step_where_one_is_withheld(
    tiny_stack, questions
):
    """A dream's retry (`consolidate.dream_backtrack`): the prefix's recorded steps stay as
    they were (what they retrieved and cited), and at the first step after it the grammar does
    not offer the withheld steps, though their documents stay in the context."""
    from cls_ray.rgr import StepRecord

    opts = {"top_k": 3, "max_steps": 5, "grounded": True}
    run = run_rgr(questions, tiny_stack.engine, tiny_stack.retriever, **opts)
    first = [tr.steps[0] for tr in run]
    again = run_rgr(
        questions,
        tiny_stack.engine,
        tiny_stack.retriever,
        avoid=[{s.text} for s in first],
        **opts,
    )
    for s, tr in zip(first, again, strict=True):
        assert tr.steps[0].text != s.text
        assert [d.id for d in tr.steps[0].retrieved] == [d.id for d in s.retrieved]
    prefixed = run_rgr(
        questions,
        tiny_stack.engine,
        tiny_stack.retriever,
        prefixes=[[s] for s in first],
        **opts,
    )
    reasoned = [i for i, s in enumerate(first) if not s.is_answer]
    assert reasoned
    for i in reasoned:
        assert isinstance(first[i], StepRecord) and prefixed[i].steps[0] is first[i]
        assert len(prefixed[i].steps) >= 2
        cited = set(first[i].cited)
        assert not (cited & {d.id for d in prefixed[i].steps[1].retrieved})
    with pytest.raises(ValueError, match="avoid: one set of steps per question"):
        run_rgr(questions, tiny_stack.engine, tiny_stack.retriever, avoid=[set()] * len(questions))
