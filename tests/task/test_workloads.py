"""The demo's users and bench serve's load come from the configured task: the exported world
read as files gives what the world gives, and a real-text task gives its own questions."""

import pytest

from cls_ray.config import load_config
from cls_ray.demo import workload
from cls_ray.eval.bench_serve import serve_workload
from cls_ray.task import FilesTask, WorldTask, export_task
from tests.task.test_files import HOTPOT, needs_hotpot


def test_users_and_load_come_from_the_task(tiny_world, tmp_path):
    world = WorldTask(tiny_world)
    export_task(world, tmp_path)
    files = FilesTask(tmp_path)
    cfg = load_config(None, [])
    users = workload(cfg, files, 2, 1, best_of=4)
    train = {q.question for q in files.questions("train")}
    assert all(q.question in train and body["question"] == q.question for q, body in users)
    assert {q.group for q, _ in users} == {q.group for q, _ in workload(cfg, world, 2, 1, 4)}
    new = [q for q, body in users if "best_of" in body]
    assert new and {q.group for q in new} <= set(files.new_groups)
    assert {q.group for q, body in users if body.get("score")}.isdisjoint(files.new_groups)
    questions, queries = serve_workload(files, per_group=2)
    assert len(questions) == len(serve_workload(world, per_group=2)[0])
    evals = {q.question: q for q in files.questions("eval")}
    assert all(evals[q].group not in files.new_groups for q in questions)
    assert len(queries) == 2 * len(questions)  # the question, then after the gold first step


@needs_hotpot
def test_a_real_text_task_serves_its_own_questions():
    t = FilesTask(HOTPOT)
    questions, queries = serve_workload(t, per_group=3)
    assert len(questions) == 6 and set(questions) <= {q.question for q in t.questions("eval")}
    assert any(":" in q for q in queries[6:])  # the state after a `Title: sentence` step
    with pytest.raises(ValueError, match="no train questions"):
        workload(load_config(None, []), t, 2, 1, best_of=4)
