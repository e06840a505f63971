"""The files path from the command line: the world exported, then ingested, searched, asked and
benchmarked as a files task, with the world never built."""

import pytest

import cls_ray.stack
from cls_ray.cli.main import main
from cls_ray.config import load_config
from cls_ray.registry import registry_for
from tests.cli.test_main import _last_json


@pytest.fixture
def files_args(tiny_state, tmp_path, monkeypatch):
    out = tmp_path / "task"
    assert main(["task", "export-world", str(out), "--json", *tiny_state["args"]]) == 0

    def no_world(*a, **k):
        raise AssertionError("the world was built on a files task")

    monkeypatch.setattr(cls_ray.stack, "build_world", no_world)
    model = tiny_state["dir"] / "models" / "base"
    return [
        *tiny_state["args"],
        "--set", "task.kind=files",
        "--set", f"task.path={out}",
        "--set", f"state_dir={tmp_path / 'state'}",
        "--set", f"model.path={model}",
    ]  # fmt: skip


def test_a_files_task_runs_without_the_world(files_args, capsys):
    assert main(["task", "show", "--json", *files_args]) == 0
    shown = _last_json(capsys.readouterr().out)
    assert shown["eval"]["questions"] > 0 and shown["new_groups"]

    assert main(["ingest", "--task", "--no-ray", "--json", *files_args]) == 0
    assert _last_json(capsys.readouterr().out)["total"] > 0

    assert main(["bench", "retrieval", "--json", "--per-group", "2", *files_args]) == 0
    res = _last_json(capsys.readouterr().out)
    assert res["hops"] == 3 and all(0 <= r["recall_all"] <= r["recall"] <= 1 for r in res["rows"])
    best = max(res["rows"], key=lambda r: r["recall"])
    assert best["recall"] > 0.5 and set(best["by_group"]) <= set(shown["eval"]["groups"])

    assert main(["bench", "rgr", "--json", "--per-group", "1", *files_args]) == 0
    rgr = _last_json(capsys.readouterr().out)
    assert {r["family"] for r in rgr["rows"]} == {"trained", "held_back"}
    # a files task has no verifier: chain accuracy is not claimed; support recall is measured
    assert all(r["chain_accuracy"] is None and r["support_recall"] is not None for r in rgr["rows"])

    assert main(["ask", "--local", "--json", *files_args]) == 0
    assert _last_json(capsys.readouterr().out)["steps"]


def test_a_command_that_needs_the_world_says_so_on_a_files_task(files_args, capsys):
    assert main(["bootstrap", *files_args]) == 1
    assert "needs the built-in world (task.kind=world)" in capsys.readouterr().err


def test_local_commands_run_the_registrys_current_version(tiny_state, tmp_path, capsys):
    model = tiny_state["dir"] / "models" / "base"
    args = [*tiny_state["args"], "--set", f"state_dir={tmp_path}", "--set", f"model.path={model}"]
    reg = registry_for(load_config(None, [f"state_dir={tmp_path}", f"model.path={model}"]))
    v = reg.register(str(model), "full")  # a full checkpoint: the same weights, a new name
    reg.promote(v.name, reason="test")
    assert main(["ask", "what is the employer of x ?", "--local", "--json", *args]) == 0
    assert _last_json(capsys.readouterr().out)["model_version"] == v.name
    assert (
        main(
            ["ask", "what is the employer of x ?", "--local", "--json", "--version", "base", *args]
        )
        == 0
    )
    assert _last_json(capsys.readouterr().out)["model_version"] == "base"
    assert main(["ask", "what ?", "--local", "--version", "v9", *args]) == 1
    assert "model.version 'v9' is not registered" in capsys.readouterr().err
