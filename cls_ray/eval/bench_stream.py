"""`cls-ray bench stream`: a full-weight version reaching N serving processes, reloaded from
storage by each or streamed from one sender (`cls_ray.weight_sync`), on this machine.

Each receiver is a process that already holds a model of the same shape (a replica serving
the previous version). Reload: every receiver loads the checkpoint with `from_pretrained` and
computes its checksum (what a replica does on reload). Stream: a sender loads it once, checks
its checksum and broadcasts it; every receiver copies it into a copy of its model and
checksums that. The clock starts when every process is up (in cls-ray the sender is an actor
started per promotion; its start-up, a few seconds of imports, comes on top). Both end with every receiver holding weights whose checksum is the trainer's;
the figures are the wall time until the last receiver is done and the bytes read from
storage. The checkpoint is a Llama built in code at the size asked for.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import queue
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from cls_ray.model.loading import recorded_checksum, save_full_checkpoint, weights_checksum
from cls_ray.weight_sync import (
    Channel,
    CheckpointSource,
    Rendezvous,
    TensorSpec,
    copy_into,
    host_store,
    manifest_of,
    receive,
    send,
)


def _llama(hidden: int, layers: int, vocab: int, seed: int):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


def _reload(path: str, shape: dict, ready, go, out) -> None:
    torch.set_num_threads(1)
    _llama(**shape, seed=0)  # what the replica served before
    ready.put(1)
    go.wait()
    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    out.put(("reload", weights_checksum(model), time.perf_counter()))


def _receive(rdv: dict, rank: int, manifest: list, bucket: int, shape: dict, ready, go, out):
    torch.set_num_threads(1)
    serving = _llama(**shape, seed=0)
    ready.put(1)
    go.wait()
    model = copy.deepcopy(serving)
    ch = Channel(Rendezvous(**rdv), rank)
    receive(ch, [TensorSpec.from_json(r) for r in manifest], copy_into(model), bucket, hash=False)
    ch.close()
    out.put(("stream", weights_checksum(model), time.perf_counter()))


def _send(path: str, rdv: dict, bucket: int, ready, go, out) -> None:
    torch.set_num_threads(1)
    _llama(hidden=64, layers=1, vocab=128, seed=0)  # transformers' model code, imported
    ready.put(1)  # a started sender process
    go.wait()
    src = CheckpointSource(path)
    recorded = recorded_checksum(path)
    if weights_checksum(src.model) != recorded:
        raise RuntimeError("the checkpoint is not what its trainer recorded")
    ch = Channel(Rendezvous(**rdv), 0)
    send(ch, src.manifest, src.tensor, bucket, hash=False)
    ch.close()
    out.put(("sent", recorded, time.perf_counter()))


def _get(q, procs, timeout_s: float):
    """The next item of `q`, or an error naming a process that died without putting it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return q.get(timeout=1)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"{dead[0].name} exited with {dead[0].exitcode}") from None
    raise TimeoutError(f"no result in {timeout_s:.0f} s")


def _run(ctx, procs, ready_n: int, ready, go, out, n_out: int) -> tuple[float, list]:
    for p in procs:
        p.start()
    for _ in range(ready_n):
        _get(ready, procs, 600)
    t0 = time.perf_counter()
    go.set()
    got = [_get(out, procs, 900) for _ in range(n_out)]
    for p in procs:
        p.join(60)
        if p.exitcode != 0:
            raise RuntimeError(f"{p.name} exited with {p.exitcode}")
    return t0, got


def bench_stream(
    replicas: int = 2,
    hidden: int = 512,
    layers: int = 8,
    vocab: int = 32000,
    bucket_mb: int = 64,
    workdir: str | Path | None = None,
    progress=print,
) -> dict:
    shape = {"hidden": hidden, "layers": layers, "vocab": vocab}
    tmp = tempfile.TemporaryDirectory(dir=workdir)
    path = Path(tmp.name) / "v1"
    model = _llama(**shape, seed=1)
    want = save_full_checkpoint(model, path)
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    manifest = [s.to_json() for s in manifest_of(model.state_dict())]
    params = sum(p.numel() for p in model.parameters())
    del model
    progress(
        f"checkpoint: {params / 1e6:.1f}M parameters, {size / 1e6:.0f} MB; {replicas} replicas"
    )
    ctx = mp.get_context("spawn")
    bucket = bucket_mb << 20
    result: dict = {"replicas": replicas, "parameters": params, "checkpoint_mb": size / 1e6}

    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_reload, args=(str(path), shape, ready, go, out), name=f"reload-{i}")
        for i in range(replicas)
    ]
    t0, got = _run(ctx, procs, replicas, ready, go, out, replicas)
    ok = all(g[1] == want for g in got)
    result["reload"] = {
        "seconds": max(g[2] for g in got) - t0,
        "storage_mb": replicas * size / 1e6,
        "checksums_match": ok,
    }
    progress(f"reload: {result['reload']['seconds']:.2f} s, checksums match: {ok}")

    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    store = host_store("127.0.0.1", 600)  # the sender actor serves it in cls-ray
    rdv = Rendezvous("127.0.0.1", store.port, replicas + 1, "gloo", 600, hosted=True).to_json()
    procs = [
        ctx.Process(target=_send, args=(str(path), rdv, bucket, ready, go, out), name="sender")
    ]
    procs += [
        ctx.Process(
            target=_receive,
            args=(rdv, r, manifest, bucket, shape, ready, go, out),
            name=f"receiver-{r}",
        )
        for r in range(1, replicas + 1)
    ]
    t0, got = _run(ctx, procs, replicas + 1, ready, go, out, replicas + 1)
    recv = [g for g in got if g[0] == "stream"]
    ok = all(g[1] == want for g in recv)
    result["stream"] = {
        "seconds": max(g[2] for g in recv) - t0,
        "storage_mb": size / 1e6,
        "checksums_match": ok,
    }
    progress(f"stream: {result['stream']['seconds']:.2f} s, checksums match: {ok}")
    tmp.cleanup()
    return result


def format_stream(r: dict) -> str:
    rows = [
        f"full-weight version to {r['replicas']} replicas: {r['parameters'] / 1e6:.1f}M "
        f"parameters, {r['checkpoint_mb']:.0f} MB checkpoint",
        f"{'path':<8} {'seconds':>8} {'read from storage MB':>21} {'checksums match':>16}",
    ]
    for name in ("reload", "stream"):
        x = r[name]
        rows.append(
            f"{name:<8} {x['seconds']:>8.2f} {x['storage_mb']:>21.0f} "
            f"{str(x['checksums_match']):>16}"
        )
    return "\n".join(rows)
