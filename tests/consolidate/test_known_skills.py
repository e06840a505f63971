"""On a files task a sleep replays the task's gold train chains in the context serving gives
each step: what RGR retrieves for the reasoning so far, look-alikes among it."""

import re

from cls_ray.consolidate.data import KnownSkills
from cls_ray.steps import cite, parse_answer
from cls_ray.task import FilesTask, WorldTask, export_task


def test_gold_chains_are_replayed_with_what_rgr_retrieves(tiny_stack, tiny_world, tmp_path):
    export_task(WorldTask(tiny_world), tmp_path)
    task = FilesTask(tmp_path)
    cfg = tiny_stack.cfg
    known = KnownSkills(task, tiny_stack.retriever, cfg, tiny_stack.engine.format)
    pairs = known.take(60)
    assert len(pairs) == 60
    assert known.take(60) == pairs  # built once, the same pairs again
    by_text = {q.question: q for q in task.questions("train")}
    texts = {d["id"]: d["text"] for d in task.documents()}
    new = set(task.new_groups)
    support_only, steps = 0, 0
    for prompt, target in pairs:
        q = next(q for t, q in by_text.items() if t in prompt)
        assert q.group not in new  # only what the model already knows is replayed
        in_context = re.findall(r"doc: (.*?)(?= doc: | step:)", prompt)  # the compact format
        assert 1 <= len(in_context) <= cfg.rgr.top_k
        assert set(in_context) <= set(texts.values())
        if parse_answer(target) is None:
            steps += 1
            # every replayed step restates a document of its own context
            assert cite(target, in_context)
            support_only += set(in_context) <= {texts[i] for i in q.support_ids}
    # the contexts are retrievals, not the gold support alone
    assert steps and support_only < steps / 2
