"""Shared fixtures: one encoder, one tiny world and one tiny trained model per test session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Set before any Ray worker starts, so Serve replicas inherit it: the test app's admin key.
ADMIN_KEY_ENV = "CLS_RAY_TEST_ADMIN_KEY"
os.environ.setdefault(ADMIN_KEY_ENV, "test-admin-key")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def embedder():
    from cls_ray.memory import Embedder

    return Embedder()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_milvus_server(data: Path, port: int) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("milvus-lite")
    proc = subprocess.Popen(
        [str(exe), "server", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.fail("milvus-lite server exited at start")
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("milvus-lite server did not open its port in 60 s")
    return proc


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A real Milvus Lite gRPC server on loopback: the server-URI path of the store."""
    port = free_port()
    proc = start_milvus_server(tmp_path_factory.mktemp("milvus-server"), port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster for the whole test session."""
    import ray

    if not ray.is_initialized():
        from cls_ray.cli import start_local_ray

        start_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def make_full_checkpoint(
    model_path, out, seed: int = 1, checksum: str | None = None, extra_layer: bool = False
) -> str:
    """A full checkpoint of the model at `model_path` with perturbed weights and the checksum a
    trainer records next to it, which it returns (`checksum` overrides it: a checkpoint whose
    files do not match; `extra_layer`: a deeper model, another architecture on the same
    tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM

    from cls_ray.model.loading import load_model_and_tokenizer, save_full_checkpoint

    torch.manual_seed(seed)
    model, tok = load_model_and_tokenizer(model_path)
    if extra_layer:
        model.config.num_hidden_layers += 1
        model = AutoModelForCausalLM.from_config(model.config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return save_full_checkpoint(model, out, tok, {"checksum": checksum} if checksum else None)


# A sleep whose gate lets every candidate through: the tiny PRM is weak, and the gate itself is
# tested on its own (tests/consolidate/test_gate_promotion.py); these check the path.
OPEN_GATE = [
    "consolidate.min_r_tau=0.0",
    "consolidate.min_step_score=0.0",
    "consolidate.retention_tolerance=1.0",
]

TINY_OVERRIDES = [
    "world.scale=0.02",
    "model.arch.hidden_size=64",
    "model.arch.num_layers=2",
    "model.arch.num_heads=4",
    "model.arch.intermediate_size=128",
    "model.arch.max_position=160",
    "model.bootstrap.steps=150",
    "model.bootstrap.batch_size=32",
    "model.bootstrap.warmup=20",
    "model.bootstrap.lr=0.003",
    "engine.batch_size=16",
    "bench.per_family=2",
    "store.collection_prefix=tiny",
]


@pytest.fixture(scope="session")
def tiny_state(tmp_path_factory):
    """A tiny embedded default built through the CLI: config file, bootstrap, world ingest."""
    from cls_ray.cli import main

    state = tmp_path_factory.mktemp("tiny-state")
    cfg_file = state / "tiny.yaml"
    lines = [f"state_dir: {state}"]
    cfg_file.write_text("\n".join(lines) + "\n")
    args = ["--config", str(cfg_file), "-q"] + [x for o in TINY_OVERRIDES for x in ("--set", o)]
    assert main(["bootstrap", *args]) == 0
    assert main(["ingest", "--world", "--no-ray", *args]) == 0
    return {"dir": state, "args": args}


@pytest.fixture(scope="session")
def tiny_cfg(tiny_state):
    from cls_ray.config import load_config

    return load_config(tiny_state["args"][1], TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_stack(tiny_cfg):
    from cls_ray.stack import Stack

    return Stack(tiny_cfg)


TINY_PRM_OVERRIDES = [
    "prm.num_layers=1",
    "prm.questions_per_family=6",
    "prm.samples_per_question=1",
    "prm.corruptions_per_question=3",
    "prm.steps=60",
    "prm.batch_size=8",
    "prm.lr=0.0003",
    "prm.warmup=6",
    "prm.log_every=10",
    "prm.cpus_per_worker=0.5",
    "prm.eval_per_family=2",
    "prm.eval_samples_per_question=1",
    "prm.best_of_n=[1,4]",
    "prm.best_of_n_per_family=1",
]


@pytest.fixture(scope="session")
def tiny_prm(tiny_state, tiny_stack, ray_local):
    """A tiny PRM trained through `cls-ray prm train`: Ray Train, 2 workers, DeepSpeed ZeRO-2."""
    from cls_ray.cli import main

    args = tiny_state["args"] + [x for o in TINY_PRM_OVERRIDES for x in ("--set", o)]
    assert main(["prm", "train", "--json", *args]) == 0
    path = tiny_state["dir"] / "prm" / "v1"
    assert (path / "prm.json").exists()
    return path


def buffer_sessions(stack, cfg, questions, **rgr) -> list:
    """RGR sessions of the base model on `questions`, stored in `cfg`'s replay buffer (what the
    serving stack would have written); returns their trajectories."""
    from cls_ray.replay.buffer import ReplayBuffer
    from cls_ray.rgr import run_rgr
    from cls_ray.session import Session

    trajs = run_rgr(
        [q.text for q in questions],
        stack.engine,
        stack.retriever,
        **{**cfg.rgr_options(), **rgr},
    )
    buf = ReplayBuffer(cfg.replay_path, segments=cfg.replay_segments)
    for tr in trajs:
        tr.model_version = "base"
        buf.add(Session.from_trajectory(tr))
    return trajs
