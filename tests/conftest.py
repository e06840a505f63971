"""Session fixtures: one encoder, one tiny world, one tiny trained model and PRM, one local Ray
cluster per test session. Shared helpers live in `tests/helpers.py`."""

from __future__ import annotations

import os

# Before anything imports transformers (it reads HF_HUB_OFFLINE once) or starts a Ray worker
# (Serve replicas inherit the environment, the test app's admin key with it).
os.environ.setdefault("CLS_RAY_TEST_ADMIN_KEY", "test-admin-key")  # helpers.ADMIN_KEY_ENV
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import subprocess

import pytest
import ray

from actors.ray_cluster import start_local_ray
from cls_ray.cli import main
from cls_ray.config import load_config
from cls_ray.memory import Embedder
from cls_ray.stack import Stack
from cls_ray.world import build_world
from tests.helpers import (
    TINY_OVERRIDES,
    TINY_PRM_OVERRIDES,
    free_port,
    set_args,
    start_milvus_server,
)


@pytest.fixture(scope="session")
def embedder():
    return Embedder()


@pytest.fixture(scope="session")
def tiny_world():
    """The tiny world (2% scale) with no model: for tests of the world, labels and extraction."""
    return build_world(load_config(None, TINY_OVERRIDES).world)


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
    if not ray.is_initialized():
        start_local_ray(num_cpus=2, log_to_driver=True)  # as a command runs it
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_state(tmp_path_factory):
    """A tiny embedded default built through the CLI: config file, bootstrap, world ingest."""
    state = tmp_path_factory.mktemp("tiny-state")
    cfg_file = state / "tiny.yaml"
    cfg_file.write_text(f"state_dir: {state}\n")
    args = ["--config", str(cfg_file), "-q", *set_args(TINY_OVERRIDES)]
    assert main(["bootstrap", *args]) == 0
    assert main(["ingest", "--world", "--no-ray", *args]) == 0
    return {"dir": state, "args": args}


@pytest.fixture(scope="session")
def tiny_cfg(tiny_state):
    return load_config(tiny_state["args"][1], TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_stack(tiny_cfg):
    return Stack(tiny_cfg)


@pytest.fixture(scope="session")
def tiny_prm(tiny_state, tiny_stack, ray_local):
    """A tiny PRM trained through `cls-ray prm train`: Ray Train, 2 workers, DeepSpeed ZeRO-2."""
    args = tiny_state["args"] + set_args(TINY_PRM_OVERRIDES)
    assert main(["prm", "train", "--json", *args]) == 0
    path = tiny_state["dir"] / "prm" / "v1"
    assert (path / "prm.json").exists()
    return path
