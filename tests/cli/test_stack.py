"""`cls-ray up / status / ask / promote / rollback / down` as separate processes against a
running Ray cluster (the test session's), over HTTP on loopback."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cls_ray.eval.bench_autoscale import format_autoscale
from cls_ray.replay.buffer import ReplayBuffer
from tests.helpers import TINY_OVERRIDES, free_port, set_args

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _cli(args, env, timeout=300):
    exe = str(Path(sys.executable).with_name("cls-ray"))
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _sessions(state: Path) -> int:
    return len(ReplayBuffer(state / "replay", readonly=True).ids())


@pytest.fixture(scope="module")
def cli(tmp_path_factory, tiny_cfg, ray_local):
    """A state directory with the tiny model and the world's documents, a config file naming it,
    and the environment that points the CLI at the test session's Ray cluster."""
    root = tmp_path_factory.mktemp("cli")
    state = root / "state"
    shutil.copytree(tiny_cfg.model_path, state / "models" / "base")
    port = free_port()
    cfg = root / "stack.yaml"
    cfg.write_text(f"state_dir: {state}\nserve:\n  port: {port}\n  app_name: cls-ray-cli\n")
    common = ["--config", str(cfg), "-q", *set_args(TINY_OVERRIDES)]
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    r = _cli(["ingest", "--world", "--no-ray", *common], env)
    assert r.returncode == 0, r.stderr[-2000:]
    return {"state": state, "port": port, "common": common, "env": env}


def test_up_status_ask_promote_rollback_down(cli):
    state, port, common, env = cli["state"], cli["port"], cli["common"], cli["env"]
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


def test_bench_chaos_loses_no_session_and_bounds_every_wait(cli):
    state, common, env = cli["state"], cli["common"], cli["env"]
    before = _sessions(state)
    # The chaos benchmark on its own copy of this state (the stack must be down, as it is now):
    # short faults, few clients. Every acknowledged session survives every fault; every failure
    # is a 503/504 naming its cause, none waits past the timeout, and the service recovers.
    r = _cli(
        [
            "bench", "chaos", "--json", "--concurrency", "2", "--fault-seconds", "2",
            "--after-seconds", "5", *common,
        ],
        env,
        timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    chaos = json.loads(r.stdout.strip().splitlines()[-1])
    faults = [row["fault"] for row in chaos["rows"]]
    assert len(faults) == 5 and faults[0] == "kill a generator replica", faults
    assert faults[-1] == "overload 4x"
    s = chaos["summary"]
    assert s["sessions_lost"] == 0 and s["every_wait_bounded"], chaos["rows"]
    assert s["failures_are_503_504"] and s["all_recovered"], chaos["rows"]
    for row in chaos["rows"]:
        assert row["ok"] > 0 and row["sessions_acked"] > 0, row
        assert all(c.split(":")[0] in {"503", "504"} and len(c) > 8 for c in row["causes"]), row
    # The bench's sessions went to its own buffer, none to the user's.
    assert _sessions(state) == before
    assert _sessions(state / "chaos") >= sum(row["sessions_acked"] for row in chaos["rows"])


def test_bench_autoscale_scales_up_under_load_and_down_after_it(cli):
    """On the test session's cluster (2 CPUs) the replicas take a share of a CPU each."""
    state, common, env = cli["state"], cli["common"], cli["env"]
    args = ["--replicas", "3", "--concurrency", "6", "--load-seconds", "30"]
    r = _cli(["bench", "autoscale", "--json", *args, *common], env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    auto = json.loads(r.stdout.strip().splitlines()[-1])
    shown = format_autoscale(auto)  # the changes of the timeline, and the load's figures
    assert auto["scaled_up"] and auto["peak_replicas"] >= 2, shown
    assert auto["scaled_down"] and auto["final_replicas"] == 1, shown
    assert auto["failed"] == 0 and auto["ok"] > 0, auto["statuses"]
    assert auto["decided_up_s"] is not None and auto["decided_up_s"] < 20, shown
    assert (state / "reports" / "bench_autoscale.png").stat().st_size > 1000
