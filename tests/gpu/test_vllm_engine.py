"""vLLM engine: runs where vllm imports and CUDA is present (a user's GPU box); skipped here."""

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("vLLM needs CUDA", allow_module_level=True)
pytest.importorskip("vllm")

pytestmark = pytest.mark.gpu


def test_vllm_engine_answers_through_rgr_like_the_hf_engine(tiny_cfg, tiny_stack):
    from cls_ray.engine.vllm import VLLMEngine
    from cls_ray.rgr import run_rgr

    eng = VLLMEngine(tiny_cfg.model_path, gpu_memory_utilization=0.3)
    qs = [q.text for q in tiny_stack.world.questions("heldout", per_family=1)][:8]
    got = run_rgr(qs, eng, tiny_stack.retriever, grounded=True)
    ref = run_rgr(qs, tiny_stack.engine, tiny_stack.retriever, grounded=True)
    assert [t.step_texts for t in got] == [t.step_texts for t in ref]
    assert all(len(s.token_ids) == len(s.logprobs) for t in got for s in t.steps)
