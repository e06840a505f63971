"""`cls-ray bench consolidation`: one sleep on sessions of the held-back family (found by best of
N with the PRM, as users asking for it would), measured and registered but not promoted, then
the ablation arms (`cls_ray.eval.ablation`) on the same sessions. Episodic memory is left as it
was."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from cls_ray.consolidate.candidate import SleepBatch
from cls_ray.consolidate.dream import best_of_n_sessions
from cls_ray.consolidate.promotion import SleepServices
from cls_ray.consolidate.sleep import sleep_once
from cls_ray.eval.ablation import ABLATION_ARMS, ablation, check_arms
from cls_ray.eval.scratch import scratch_procedures
from cls_ray.ports import Scorer
from cls_ray.stack import Stack
from cls_ray.task import QA

logger = logging.getLogger(__name__)


def sessions_by_best_of_n(
    stack: Stack, prm: Scorer, questions: Sequence[QA], n: int, seed: int = 0
) -> tuple[list[dict], dict[str, str]]:
    """Simulated users' sessions on `questions`: the model samples `n` trajectories with RGR and
    the PRM keeps the best (the way to find good trajectories for a family the model cannot
    solve greedily). Returns session dicts (scored) and the texts of every retrieved document."""
    texts = [q.question for q in questions]
    return best_of_n_sessions(stack.cfg, stack.engine, stack.retriever, prm, texts, n, seed)


def bench_consolidation(
    stack: Stack,
    prm: Scorer,
    log: Callable[[str], None] = logger.info,
    arms: Sequence[str] = ABLATION_ARMS,
) -> dict:
    """One sleep on sessions of the held-back family, measured (not promoted), then the
    ablation `arms` on the same sessions with some corrupted. The episodic collection is left as
    it was."""
    check_arms(arms)
    cfg, task = stack.cfg, stack.task
    c = cfg.consolidate
    if not task.new_groups:
        raise ValueError(f"task {task.name} names no new_groups (task.yaml) to consolidate")
    train_qs = task.questions("train", task.new_groups, per_group=c.new_per_family)
    log(
        f"bench consolidation: {len(train_qs)} sessions of the held-back family, best of {c.sample_n}"
    )
    sessions, docs = sessions_by_best_of_n(stack, prm, train_qs, c.sample_n, c.seed)
    new_qs = task.questions("eval", task.new_groups, per_group=c.eval_per_family)
    retention_qs = task.questions("retention", per_group=c.eval_per_family)
    batch = SleepBatch(sessions, docs, new_qs, retention_qs)
    with scratch_procedures(stack) as memory:
        services = SleepServices.local(cfg, memory)
        result = sleep_once(stack, batch, services, promote=False, log=log, prm=prm)
        result.pop("dream_sessions")
    result["new_family_questions"] = len(new_qs)
    result["retention_questions"] = len(retention_qs)
    if arms and task.world is None:
        log(
            "bench consolidation: the ablation arms corrupt sessions with the world's facts: skipped"
        )
    elif arms:
        result["ablation"] = ablation(stack, prm, sessions, docs, new_qs, retention_qs, log, arms)
    return result
