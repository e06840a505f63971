"""The console a person reads: a command's own lines and progress displays on it, every other
program's output in the log file it names, errors on it with that file's path."""

import io
import os
import subprocess
import sys

import pytest

from cls_ray import console
from tests.helpers import TINY_OVERRIDES, set_args


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cls_ray.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# A bootstrap of a few steps: these tests read the console, not the model.
SHORT = [*TINY_OVERRIDES, "model.bootstrap.steps=12", "model.bootstrap.warmup=2"]


def log_named_in(stderr: str):
    first = stderr.splitlines()[0]
    assert first.startswith("log: "), first
    from pathlib import Path

    return Path(first.split()[1])


def test_a_command_prints_its_own_lines_and_the_log_holds_the_rest(tmp_path):
    r = cli("bootstrap", *set_args([*SHORT, f"state_dir={tmp_path}"]))
    assert r.returncode == 0, r.stderr
    log = log_named_in(r.stderr)
    assert log.parent == tmp_path / "logs" and log.name.startswith("bootstrap-")
    printed = r.stdout + r.stderr
    assert "built " in printed and "bootstrap:" in printed  # its result and its progress
    assert len(printed.splitlines()) <= 14, printed  # the log line, a display, the result
    text = log.read_text()
    # what the console left out: transformers' shard writer, cls-ray's own INFO log
    assert "Writing model shards" in text and "bootstrap done" in text
    for line in text.splitlines():
        assert not line.startswith("built "), "the command's own lines are not in its log"


def test_verbose_puts_everything_on_the_console(tmp_path):
    r = cli("bootstrap", "--verbose", *set_args([*SHORT, f"state_dir={tmp_path}"]))
    assert r.returncode == 0, r.stderr
    assert "bootstrap done" in r.stdout + r.stderr and not (tmp_path / "logs").exists()


def test_an_error_reaches_the_console_with_the_log_path(tmp_path):
    r = cli("prm", "eval", *set_args([*TINY_OVERRIDES, f"state_dir={tmp_path}"]))
    assert r.returncode == 1
    assert "cls-ray prm eval:" in r.stderr and "its log: " in r.stderr
    assert log_named_in(r.stderr).exists()


def test_progress_off_a_terminal_writes_few_lines():
    out = io.StringIO()
    bar = console.Progress("stage", 1000, unit="step", out=out, every_s=3600)
    for _ in range(1000):
        bar.update()
    bar.set_postfix(loss="0.5")
    bar.close()
    lines = out.getvalue().splitlines()
    assert 10 <= len(lines) <= 12  # off a terminal: the first step, each tenth, the end
    assert lines[-1].startswith("stage:  1000/1000 step (100%)") and "loss 0.5" in lines[-1]


def test_training_steps_of_workers_become_the_stage_display(tmp_path):
    line = console.progress_text("sleep sft", 20, 150, 0.6582, 12.4)
    assert console.parse_progress(f"\x1b[36m(RayTrainWorker pid=7)\x1b[0m {line}") == (
        "sleep sft",
        20,
        150,
        "0.6582",
        12,
    )
    out, log = io.StringIO(), io.StringIO()
    c = console.Console(out, out, log, tmp_path / "x.log")
    c.worker_lines({"lines": ["hello", line], "pid": 7, "actor_name": "RayTrainWorker"})
    c.worker_lines({"lines": [console.progress_text("sleep sft", 150, 150, 0.5, 80)], "pid": 7})
    assert log.getvalue().startswith("(RayTrainWorker pid=7) hello\n")
    shown = out.getvalue().splitlines()
    assert shown[0].startswith("sleep sft:  20/150 step") and "ETA" in shown[0]
    assert shown[-1].startswith("sleep sft:  150/150 step (100%)") and "loss 0.5000" in shown[-1]


def test_the_console_gives_back_every_stream_even_after_an_error(tmp_path):
    before = (sys.stdout, sys.stderr, os.fstat(1).st_ino, os.fstat(2).st_ino)
    with pytest.raises(RuntimeError), console.quiet_console(tmp_path / "x.log"):
        os.write(2, b"written below Python\n")  # as C++ code or a child process would
        raise RuntimeError("boom")
    assert (sys.stdout, sys.stderr, os.fstat(1).st_ino, os.fstat(2).st_ino) == before
    assert console.active() is None
    assert "written below Python" in (tmp_path / "x.log").read_text()
