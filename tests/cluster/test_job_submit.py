"""A real Ray cluster started with `ray start --head` (dashboard on 127.0.0.1), the jobs a user
submits to it with `ray job submit --working-dir .`: ingest the corpus, then a smoke
consolidation of buffered sessions; the candidate version lands in the registry. The cluster is
stopped after (only its own processes: the test session's Ray keeps running)."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from cls_ray.config import load_config
from cls_ray.registry import ModelRegistry
from tests.helpers import OPEN_GATE, ROOT, TINY_OVERRIDES, buffer_sessions, free_port

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _ray(*args, env, timeout=600):
    exe = Path(sys.executable).parent / "ray"
    return subprocess.run(
        [str(exe), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def _stop_cluster(temp_dir: str) -> None:
    """Ends the processes of the cluster whose temp dir is `temp_dir` (`ray stop` would end
    every Ray on the machine, the test session's too)."""
    procs = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in p.info["cmdline"] or []):
                procs.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        p.kill()


@pytest.fixture
def head_node():
    temp_dir = tempfile.mkdtemp(prefix="clsr-", dir="/tmp")  # short: Ray's socket paths
    dash = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    started = _ray(
        "start",
        "--head",
        f"--port={free_port()}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        "--num-cpus=2",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        env=env,
        timeout=180,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield {"address": f"http://127.0.0.1:{dash}", "env": env}
    finally:
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(head, entrypoint: list[str], timeout: float) -> str:
    """`ray job submit --working-dir . -- <entrypoint>`; waits; returns the job's output."""
    done = _ray(
        "job",
        "submit",
        "--address",
        head["address"],
        "--working-dir",
        ".",
        "--",
        *entrypoint,
        env=head["env"],
        timeout=timeout,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "succeeded" in out, out[-4000:]
    return out


def test_a_smoke_consolidation_submitted_as_a_ray_job_registers_a_candidate(
    head_node, tiny_state, tiny_stack, tiny_prm, tmp_path
):
    overrides = [
        *TINY_OVERRIDES,
        f"state_dir={tmp_path}",
        f"model.path={tiny_state['dir'] / 'models' / 'base'}",
        f"prm.path={tiny_prm}",
        "consolidate.cpus_per_worker=0.5",
        *OPEN_GATE,
    ]
    cfg = load_config(None, overrides)
    world = tiny_stack.world
    qs = world.questions("train", world.held_back_families, per_family=2)
    buffer_sessions(tiny_stack, cfg, qs)
    sets = [x for o in overrides for x in ("--set", o)]

    cli = ["python", "-m", "cls_ray.cli"]
    _submit(head_node, [*cli, "ingest", "--world", "-q", *sets], timeout=600)
    out = _submit(head_node, [*cli, "sleep", "--smoke", "--json", "-q", *sets], timeout=900)

    reg = ModelRegistry(cfg.state_path / "registry.json")
    (v,) = [v for v in reg.list() if v["name"] != "base"]
    assert v["kind"] == "lora" and v["parent"] == "base"
    assert v["metrics"]["train"]["step"] == 10  # the smoke size
    assert Path(v["artifact_uri"], "adapter_model.safetensors").exists()
    assert f'"version": "{v["name"]}"' in out  # the job's JSON line names it
    report = cfg.state_path / "reports" / "sleep.json"
    assert report.exists() and time.time() - report.stat().st_mtime < 1200
