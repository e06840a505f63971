"""`cls-ray up / status / ask / promote / rollback / down` as separate processes against a
running Ray cluster (the test session's), over HTTP on loopback."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY_OVERRIDES, free_port, set_args

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _cli(args, env, timeout=300):
    exe = str(Path(sys.executable).with_name("cls-ray"))
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_up_status_ask_promote_rollback_down(tmp_path, tiny_cfg, tiny_state, ray_local):
    state = tmp_path / "state"
    shutil.copytree(tiny_cfg.model_path, state / "models" / "base")
    port = free_port()
    cfg = tmp_path / "stack.yaml"
    cfg.write_text(f"state_dir: {state}\nserve:\n  port: {port}\n  app_name: cls-ray-cli\n")
    common = ["--config", str(cfg), "-q", *set_args(TINY_OVERRIDES)]
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}

    r = _cli(["ingest", "--world", "--no-ray", *common], env)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _cli(["up", *common], env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"http://127.0.0.1:{port}" in r.stdout
    try:
        r = _cli(["status", "--json", *common], env)
        assert r.returncode == 0, r.stderr[-2000:]
        status = json.loads(r.stdout.strip().splitlines()[-1])
        assert status["up"] and status["health"]["model_version"] == "base"
        assert [v["name"] for v in status["versions"] if v["current"]] == ["base"]

        q = "what is the mentor of Nobody Here ?"
        r = _cli(["ask", q, "--json", *common], env)
        assert r.returncode == 0, r.stderr[-2000:]
        served = json.loads(r.stdout.strip().splitlines()[-1])
        assert served["session_id"] and served["model_version"] == "base"

        # The serve benchmark against the running stack: the last line is its JSON.
        r = _cli(
            ["bench", "serve", "--json", "--requests", "8", "--concurrency", "4", *common], env
        )
        assert r.returncode == 0, r.stderr[-2000:]
        bench = json.loads(r.stdout.strip().splitlines()[-1])
        assert bench["failed"] == 0 and bench["requests"] == 24
        assert bench["throughput_rps"] > 0 and bench["latency_p99_s"] >= bench["latency_p50_s"]
        assert bench["batched_generation_speedup"] > 0 and bench["batched_retrieval_speedup"] > 0
        assert 0 < bench["swap_seconds"] < 60 and bench["during_swap"]["failed"] == 0
        assert (state / "reports" / "bench_serve.json").exists()
        # The bench rolled its swap version back: the stack serves what it served before.
        r = _cli(["status", "--json", *common], env)
        assert json.loads(r.stdout.strip().splitlines()[-1])["health"]["model_version"] == "base"

        r = _cli(["promote", "v7", *common], env)
        assert r.returncode == 1 and "unknown model version 'v7'" in r.stderr
        r = _cli(["rollback", *common], env)
        assert r.returncode == 1 and "nothing to roll back" in r.stderr
    finally:
        r = _cli(["down", *common], env)
        assert r.returncode == 0, r.stderr[-2000:]
    r = _cli(["status", "--json", *common], env)
    assert json.loads(r.stdout.strip().splitlines()[-1])["up"] is False
