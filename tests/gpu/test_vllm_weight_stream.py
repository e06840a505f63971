"""A full-weight version streamed into a running vLLM engine over NCCL, and loaded into it in
place from its files. Needs vllm and two GPUs (the sender and the engine cannot share one: NCCL
refuses two ranks on a device); skipped elsewhere."""

import multiprocessing as mp

import pytest

torch = pytest.importorskip("torch")
if torch.cuda.device_count() < 2:
    pytest.skip("a weight stream into vLLM needs two GPUs", allow_module_level=True)
pytest.importorskip("vllm")

pytestmark = pytest.mark.gpu


def _send(path, rdv, bucket_bytes, out):
    from cls_ray.weight_sync import Channel, CheckpointSource, Rendezvous, send

    torch.cuda.set_device(1)  # the engine has GPU 0
    src = CheckpointSource(str(path), "cuda:1")
    ch = Channel(Rendezvous(**rdv), 0, device="cuda:1")
    out.put(send(ch, src.manifest, src.tensor, bucket_bytes))


def _steps(engine, stack, qs):
    from cls_ray.rgr import run_rgr

    return [t.step_texts for t in run_rgr(qs, engine, stack.retriever, grounded=True)]


def test_a_streamed_version_serves_like_its_checkpoint_and_files_load_in_place(
    tiny_cfg, tiny_stack, tmp_path
):
    from cls_ray.engine.hf import HFEngine
    from cls_ray.engine.vllm import VLLMEngine
    from cls_ray.weight_sync import CheckpointSource, Rendezvous, free_port
    from tests.helpers import make_full_checkpoint

    cfg = tiny_cfg.model_copy(
        update={"engine": tiny_cfg.engine.model_copy(update={"kind": "vllm"})}
    )
    qs = [q.text for q in tiny_stack.world.questions("heldout", per_family=1)][:8]
    base = VLLMEngine.from_config(cfg)
    want = make_full_checkpoint(cfg.model_path, tmp_path / "v1", 1)
    manifest = CheckpointSource(str(tmp_path / "v1")).manifest

    rdv = Rendezvous("127.0.0.1", free_port("127.0.0.1"), 2, "pynccl", timeout_s=120)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    sender = ctx.Process(target=_send, args=(tmp_path / "v1", rdv.to_json(), 1 << 20, out))
    sender.start()
    v1, got = base.stream_in(rdv, 1, manifest, 1 << 20, "v1")
    assert out.get(timeout=120) == want
    sender.join(60)
    assert got["stream"] == [want]
    ref = HFEngine.from_config(
        cfg.model_copy(update={"engine": tiny_cfg.engine}), "v1", tmp_path / "v1"
    )
    assert _steps(v1, tiny_stack, qs) == _steps(ref, tiny_stack, qs)
    with pytest.raises(RuntimeError, match="now holds v1"):
        base.generate(["x"])  # the base engine's weights were overwritten

    # A full checkpoint loaded from its files goes into the same LLM, in place.
    make_full_checkpoint(cfg.model_path, tmp_path / "v2", 2)
    v2 = VLLMEngine.from_config(cfg, "v2", tmp_path / "v2")
    assert v2.llm is base.llm
    ref2 = HFEngine.from_config(
        cfg.model_copy(update={"engine": tiny_cfg.engine}), "v2", tmp_path / "v2"
    )
    assert _steps(v2, tiny_stack, qs) == _steps(ref2, tiny_stack, qs)
