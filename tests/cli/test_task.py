"""The files path from the command line: the world exported, then ingested, searched, asked and
benchmarked as a files task, with the world never built."""

import shutil
from pathlib import Path

import pytest

import cls_ray.stack
from cls_ray.cli.main import main
from cls_ray.cli.parser import make_parser, resolve_config
from cls_ray.config import load_config
from cls_ray.consolidate.retention import RetentionSuite
from cls_ray.model.integrity import record_files_checksum
from cls_ray.prm.pipeline import off_chain
from cls_ray.registry import registry_for
from cls_ray.stack import Stack
from tests.cli.test_main import _last_json
from tests.helpers import OPEN_GATE, buffer_sessions, set_args


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

    # The PRM's off-chain wrong steps: statements of the corpus the retriever brings near a
    # gold step that support none of its question's hops.
    stack = Stack(resolve_config(make_parser().parse_args(["prm", "train", *files_args])))
    qs = [q for q in stack.task.questions("train", per_group=2) if q.hops > 1]
    near = off_chain(stack, qs)
    docs = stack.retriever.get_documents(sorted(stack.store.ids()))
    stack.release_store()
    assert set(near) == {(q.id, i) for q in qs for i in range(len(q.steps))}
    assert sum(map(len, near.values())) >= len(near)
    for q in qs:
        support = [docs[d] for d in q.support_ids]
        for i in range(len(q.steps)):
            for n in near[(q.id, i)]:
                assert any(n in doc for doc in docs.values())  # a sentence of the corpus
                assert not any(n in doc for doc in support)  # that supports no hop


def test_a_command_that_needs_the_world_says_so_on_a_files_task(files_args, capsys):
    assert main(["bootstrap", *files_args]) == 1
    assert "needs the built-in world (task.kind=world)" in capsys.readouterr().err


def test_local_commands_run_the_registrys_current_version(tiny_state, tmp_path, capsys):
    model = tiny_state["dir"] / "models" / "base"
    args = [*tiny_state["args"], "--set", f"state_dir={tmp_path}", "--set", f"model.path={model}"]
    reg = registry_for(load_config(None, [f"state_dir={tmp_path}", f"model.path={model}"]))
    # A full checkpoint: the same weights under a new name, its files' checksum recorded (an
    # engine refuses a version folder without one).
    full = tmp_path / "full"
    shutil.copytree(model, full)
    record_files_checksum(full)
    v = reg.register(str(full), "full")
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


@pytest.mark.slow
def test_sleep_on_a_files_task_needs_retention_evidence(files_args, tiny_prm, ray_local, capsys):
    """Sleep on a files task replays the task's train chains and measures its eval and
    retention sets; with no retention set to measure, the gate refuses and nothing is
    consumed; with it, the candidate is promoted."""
    sleep_set = [
        f"prm.path={tiny_prm}",
        "consolidate.steps=20",
        "consolidate.batch_size=8",
        "consolidate.cpus_per_worker=0.5",
        "consolidate.eval_per_family=4",
        *OPEN_GATE,
    ]
    args = [*files_args, *set_args(sleep_set)]
    assert main(["ingest", "--task", "--no-ray", *args]) == 0
    cfg = resolve_config(make_parser().parse_args(["sleep", *args]))
    stack = Stack(cfg)
    task = stack.task
    buffer_sessions(stack, cfg, task.questions("train", task.new_groups, per_group=2))
    stack.release_store()

    retention = Path(cfg.task.path) / "retention.jsonl"
    kept = retention.read_text()
    retention.write_text("")
    assert main(["sleep", "--json", *args]) == 0
    refused = _last_json(capsys.readouterr().out)
    assert not refused["promoted"] and "no retention evidence" in refused["reason"]
    assert registry_for(cfg).current().name == "base"

    retention.write_text(kept)
    assert main(["sleep", "--json", *args]) == 0
    done = _last_json(capsys.readouterr().out)
    assert done["promoted"], done["reason"]
    assert set(done["families"]) <= set(task.new_groups) and done["retention_questions"] > 0
    assert registry_for(cfg).current().name == done["version"]
    assert done["data"]["pairs"] > done["data"]["new_pairs"] > 0  # replay of the train chains
    # f(τ) on the files task's text: procedures with numbered variables, no world types
    assert done["procedures"] > 0
    # the promoted sleep's trusted steps are frozen as the next sleep's step-level evidence
    suite = RetentionSuite.of(cfg).steps()
    assert suite and {s.version for s in suite} == {done["version"]}
