"""The weight stream itself: a sender and receivers in separate processes over a real gloo
group on loopback, bucketed, hashed, landing in a model."""

import json
import multiprocessing as mp
import os
import time

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cls_ray.cli import main
from cls_ray.engine.hf import HFEngine
from cls_ray.model.loading import weights_checksum
from cls_ray.weight_sync import (
    Channel,
    Rendezvous,
    TensorSpec,
    copy_into,
    free_port,
    host_store,
    manifest_of,
    plan_buckets,
    receive,
    send,
)


def _model(seed: int):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


def _sender(rdv: dict, bucket_bytes: int, out):
    model = _model(1).to(torch.bfloat16)
    state = model.state_dict()
    ch = Channel(Rendezvous(**rdv), 0)
    out.put(("sender", send(ch, manifest_of(state), state.__getitem__, bucket_bytes)))
    ch.close()


def _receiver(rdv: dict, rank: int, manifest: list, bucket_bytes: int, out):
    model = _model(2).to(torch.bfloat16)  # other weights, same shapes
    ch = Channel(Rendezvous(**rdv), rank)
    specs = [TensorSpec.from_json(r) for r in manifest]
    digest = receive(ch, specs, copy_into(model), bucket_bytes)
    ch.close()
    out.put((rank, digest, weights_checksum(model)))


def test_a_model_streams_to_two_receivers_and_each_holds_the_senders_weights():
    sent_model = _model(1).to(torch.bfloat16)
    want = weights_checksum(sent_model)
    assert want != weights_checksum(_model(2).to(torch.bfloat16))
    manifest = [s.to_json() for s in manifest_of(sent_model.state_dict())]
    # Tied weights travel under each name, so the stream hash is the model's checksum.
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= {m[0] for m in manifest}
    bucket = 8 << 10  # small buckets: several tensors per bucket, and some alone
    assert (
        1 < len(plan_buckets([TensorSpec.from_json(m) for m in manifest], bucket)) < len(manifest)
    )
    rdv = Rendezvous("127.0.0.1", free_port("127.0.0.1"), 3, "gloo", timeout_s=60).to_json()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_sender, args=(rdv, bucket, out))]
    procs += [ctx.Process(target=_receiver, args=(rdv, r, manifest, bucket, out)) for r in (1, 2)]
    for p in procs:
        p.start()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    by = {g[0]: g[1:] for g in got}
    assert by["sender"] == (want,)
    assert by[1] == (want, want) and by[2] == (want, want)


def _dying_sender(rdv: dict):
    specs = [TensorSpec(f"t{i}", "float32", (1000,)) for i in range(10)]

    def progress(done: int, total: int) -> None:
        if done == 3:  # the sender's process dies part-way through the stream
            os._exit(3)

    send(Channel(Rendezvous(**rdv), 0), specs, lambda name: torch.ones(1000), 4000, progress)


def _patient_receiver(rdv: dict, rank: int, out):
    specs = [TensorSpec(f"t{i}", "float32", (1000,)) for i in range(10)]
    got = []
    t0 = time.perf_counter()
    try:
        receive(Channel(Rendezvous(**rdv), rank), specs, got.extend, 4000)
        out.put((rank, "complete", len(got), 0.0))
    except RuntimeError:
        out.put((rank, "failed", len(got), time.perf_counter() - t0))


def test_receivers_fail_at_once_when_the_sender_dies_mid_stream():
    """No receiver waits out the group's timeout (600 s by default) for a sender that is gone:
    the replicas report the failure and the promotion falls back to storage."""
    rdv = Rendezvous("127.0.0.1", free_port("127.0.0.1"), 3, "gloo", timeout_s=120).to_json()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_dying_sender, args=(rdv,))]
    procs += [ctx.Process(target=_patient_receiver, args=(rdv, r, out)) for r in (1, 2)]
    for p in procs:
        p.start()
    got = sorted(out.get(timeout=90) for _ in (1, 2))
    for p in procs:
        p.join(30)
    assert procs[0].exitcode == 3
    for rank, outcome, received, seconds in got:
        assert outcome == "failed" and received < 10 and seconds < 30, (rank, received, seconds)


def _joiner(rdv: dict, rank: int, out):
    t0 = time.perf_counter()
    try:
        Channel(Rendezvous(**rdv), rank)
        out.put((rank, "formed", 0.0))
    except Exception as e:  # noqa: BLE001 - torch raises DistStoreError or RuntimeError
        out.put((rank, type(e).__name__, time.perf_counter() - t0))


def test_a_group_missing_a_rank_fails_after_the_join_timeout_not_the_transfer_timeout():
    """A replica counted in the group that never joins (gone since): the others give up after
    `join_timeout_s` and the promotion falls back to storage, instead of waiting out the
    transfer's timeout."""
    store = host_store("127.0.0.1", 60)
    rdv = Rendezvous(
        "127.0.0.1", store.port, 3, "gloo", timeout_s=600, hosted=True, join_timeout_s=3
    ).to_json()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_joiner, args=(rdv, r, out)) for r in (0, 1)]  # rank 2 is gone
    for p in procs:
        p.start()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    for _, outcome, seconds in got:
        assert outcome != "formed" and 2 < seconds < 30, got


def test_buckets_keep_dtypes_apart_and_respect_the_size():
    specs = [
        TensorSpec("a", "float32", (10,)),
        TensorSpec("b", "float32", (10,)),
        TensorSpec("c", "bfloat16", (4,)),
        TensorSpec("d", "float32", (100,)),
        TensorSpec("e", "float32", (5,)),
    ]
    assert plan_buckets(specs, 100) == [[0, 1], [2], [3], [4]]
    assert plan_buckets(specs, 1 << 20) == [[0, 1], [2], [3, 4]]


def test_a_model_of_another_shape_refuses_the_stream_before_any_group_forms():
    class Tok:
        padding_side = "left"

    engine = HFEngine(_model(1), Tok())
    same = manifest_of(_model(3).state_dict())
    assert engine.refuses(same) is None
    other = manifest_of({**_model(3).state_dict(), "extra.weight": torch.zeros(2)})
    assert "extra.weight" in engine.refuses(other)
    shorter = [s for s in same if s.name != "lm_head.weight"]
    assert "lacks lm_head.weight" in engine.refuses(shorter)
    resized = [
        TensorSpec(s.name, s.dtype, (1, *s.shape)) if s.name.endswith("norm.weight") else s
        for s in same
    ]
    assert "in the stream" in engine.refuses(resized)


def test_an_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown weight-sync backend 'mpi'"):
        Channel(Rendezvous("127.0.0.1", free_port("127.0.0.1"), 1, "mpi", timeout_s=5), 0)


def test_bench_stream_prints_both_paths_and_every_receiver_holds_the_weights(tmp_path, capsys):
    args = ["bench", "stream", "--smoke", "--replicas", "2", "--set", f"state_dir={tmp_path}"]
    assert main(args) == 0
    r = json.loads((tmp_path / "reports" / "bench_stream.json").read_text())
    assert r["reload"]["checksums_match"] and r["stream"]["checksums_match"]
    # The stream reads the checkpoint once; each reloading replica reads it again.
    assert r["reload"]["storage_mb"] == 2 * r["stream"]["storage_mb"] > 0
    out = capsys.readouterr().out
    assert "reload" in out and "stream" in out
