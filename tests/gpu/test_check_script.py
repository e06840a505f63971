"""The GPU check script (`tests/gpu/check_gpu.py`), rehearsed on the CPU (`--cpu`): the same
checks, gloo instead of NCCL, fp32 instead of bf16, so the script a GPU machine runs is known
to work before one is at hand."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

SCRIPT = Path(__file__).with_name("check_gpu.py")


def test_the_gpu_script_passes_its_checks_on_the_cpu():
    from tests.helpers import free_port

    env = {**os.environ, "MASTER_PORT": str(free_port()), "DS_ACCELERATOR": "cpu"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    out = done.stdout
    assert done.returncode == 0, (out + done.stderr)[-3000:]
    rows = [line for line in out.splitlines() if line[:1].isalpha() and " yes " in line]
    names = " | ".join(rows)
    for check in ("RGR, LoRA swap", "ZeRO-3 SFT step", "full-weight gather"):
        assert check in names, out
    assert "matches" in names and " NO " not in out
