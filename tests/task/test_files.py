"""A files task: the format of DESIGN.md read with errors that name file and line, the world
exported into it and read back, and the real HotpotQA sample."""

import json
from pathlib import Path

import pytest

from cls_ray.task import FilesTask, TaskError, WorldTask, export_task

HOTPOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hotpotqa-100"
needs_hotpot = pytest.mark.skipif(
    not HOTPOT.exists(), reason="the HotpotQA sample lives in ../shared next to the checkout"
)


def _task(tmp_path, eval_lines, task_yaml=None):
    (tmp_path / "corpus.jsonl").write_text('{"id": "d1", "text": "Ada wrote the first program."}\n')
    (tmp_path / "eval.jsonl").write_text("".join(line + "\n" for line in eval_lines))
    if task_yaml is not None:
        (tmp_path / "task.yaml").write_text(task_yaml)
    return FilesTask(tmp_path)


def test_questions_need_only_question_and_answers(tmp_path):
    t = _task(tmp_path, ['{"question": "Who wrote it?", "answers": ["Ada", "Ada Lovelace"]}'])
    (q,) = t.questions("eval")
    assert q.answers == ("Ada", "Ada Lovelace") and q.group == "" and q.hops == 1
    assert t.questions("train") == [] and t.questions("retention") == []
    assert t.is_right("ada lovelace", q) and not t.is_right("Charles", q)
    assert list(t.documents()) == [{"id": "d1", "text": "Ada wrote the first program."}]
    assert t.verify is None and t.world is None and t.check.kind == "em"


@pytest.mark.parametrize(
    "line, says",
    [
        ('{"question": "x?"}', "'answers' must be a list"),
        ('{"question": "x?", "answers": []}', "at least one answer"),
        ('{"question": "", "answers": ["a"]}', "'question' must be a non-empty string"),
        ('{"question": "x?", "answers": ["a"], "hint": 1}', "unknown field(s) ['hint']"),
        ('{"question": "x?", "answers": ["a"], "support_ids": "d1"}', "'support_ids' must be"),
        ("not json", "not valid JSON"),
    ],
)
def test_a_bad_question_line_is_named_by_file_and_line(tmp_path, line, says):
    good = '{"id": "a", "question": "ok?", "answers": ["y"]}'
    with pytest.raises(TaskError) as e:
        _task(tmp_path, [good, line])
    assert f"{tmp_path / 'eval.jsonl'}:2:" in str(e.value) and says in str(e.value)


def test_repeated_ids_and_a_bad_task_yaml_are_refused(tmp_path):
    q = '{"id": "a", "question": "ok?", "answers": ["y"]}'
    with pytest.raises(TaskError, match="eval.jsonl:2: id 'a' repeats line 1"):
        _task(tmp_path, [q, q])
    with pytest.raises(TaskError, match="answer_check must be em or f1"):
        _task(tmp_path, [q], "answer_check: judge-me\n")
    with pytest.raises(TaskError, match="f1_threshold must be in"):
        _task(tmp_path, [q], "answer_check: f1\nf1_threshold: 2\n")
    assert _task(tmp_path, [q], "answer_check: null\nf1_threshold: null\n").check.kind == "em"
    with pytest.raises(TaskError, match=r"unknown key\(s\) \['newgroups'\]"):
        _task(tmp_path, [q], "newgroups: [x]\n")
    with pytest.raises(TaskError, match="no such folder"):
        FilesTask(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskError, match="needs corpus.jsonl"):
        FilesTask(tmp_path / "empty")


def test_task_yaml_sets_the_check_and_the_new_groups(tmp_path):
    t = _task(
        tmp_path,
        ['{"question": "x?", "answers": ["Falcon Labs"], "group": "g2"}'],
        "name: mine\nanswer_check: f1\nf1_threshold: 0.6\nnew_groups: [g2]\n",
    )
    (q,) = t.questions("eval", groups=["g2"])
    assert t.name == "mine" and t.new_groups == ("g2",) and t.check.kind == "f1"
    assert t.is_right("Falcon Labs Inc", q)  # F1 0.8 >= 0.6
    assert t.questions("eval", groups=["g1"]) == []


def test_the_exported_world_reads_back_as_the_same_task(tiny_world, tmp_path):
    world = WorldTask(tiny_world)
    counts = export_task(world, tmp_path)
    files = FilesTask(tmp_path)
    assert counts["corpus"] == len(tiny_world.documents) and counts["eval"] > 0
    assert files.new_groups == world.new_groups and files.new_groups
    for split in ("train", "eval", "retention"):
        assert files.questions(split) == world.questions(split)
    # per group: the first ones of each, which is the world's own sample over all families
    assert files.questions("eval", per_group=2) == world.questions("eval", per_group=2)
    assert {q.group for q in files.questions("retention")}.isdisjoint(world.new_groups)
    q = next(q for q in files.questions("eval") if q.hops == 3)
    assert len(q.support_ids) == len(q.steps) == 3
    meta = (tmp_path / "task.yaml").read_text()
    assert "answer_check: em" in meta


@needs_hotpot
def test_the_hotpotqa_sample_reads_as_a_files_task():
    t = FilesTask(HOTPOT)
    qs = t.questions("eval")
    assert len(qs) == 100 and set(t.groups("eval")) == {"bridge", "comparison"}
    assert all(len(q.support_ids) == 2 for q in qs)
    ids = {json.loads(line)["id"] for line in (HOTPOT / "corpus.jsonl").open()}
    assert all(set(q.support_ids) <= ids for q in qs)
