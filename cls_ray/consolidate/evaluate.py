"""How a version is measured before the gate decides: greedy RGR accuracy on the new families
and on retention questions, next-step accuracy on a frozen suite of episodes (more sensitive to
small losses), and how far a candidate moved from the base (KL on the new task's prompts)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import torch

from cls_ray.answers import EXACT, AnswerCheck
from cls_ray.consolidate.retention import TrustedStep, next_step_accuracy
from cls_ray.consolidate.skills import BASE
from cls_ray.engine.hf import HFEngine
from cls_ray.model.examples import encode_examples
from cls_ray.rgr import run_rgr
from cls_ray.task import QA, SPLITS, Task
from cls_ray.world.core import World
from cls_ray.world.episodes import EpisodeSampler, step_accuracy


def greedy_accuracy(
    engine,
    retriever,
    questions: Sequence[QA],
    by_hops: dict | None = None,
    check: AnswerCheck = EXACT,
    by_group: dict | None = None,
    **rgr_options,
):
    """Share of `questions` greedy RGR answers right by `check` (NaN for none); `by_hops` and
    `by_group`, when given, receive the share per number of hops and per group."""
    if not questions:
        return float("nan")
    trajs = run_rgr([q.question for q in questions], engine, retriever, **rgr_options)
    right = [check(t.answer, q.answers) for q, t in zip(questions, trajs, strict=True)]
    if by_hops is not None:
        for h in sorted({q.hops for q in questions}):
            got = [r for q, r in zip(questions, right, strict=True) if q.hops == h]
            by_hops[str(h)] = sum(got) / len(got)
    if by_group is not None:
        for g in sorted({q.group for q in questions}):
            got = [r for q, r in zip(questions, right, strict=True) if q.group == g]
            by_group[g] = sum(got) / len(got)
    return sum(right) / len(questions)


def kl_base_candidate(
    base: HFEngine, candidate: HFEngine, pairs: Sequence[tuple[str, str]]
) -> float:
    """Mean per-token KL(base ‖ candidate) over the target tokens of `pairs` (teacher-forced):
    how far the candidate moved on the new task's prompts."""
    if not pairs:
        return 0.0
    tok = base.tokenizer
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(pairs), 32):
            batch = encode_examples(tok, list(pairs[i : i + 32]), 10**6)
            keep = batch["labels"][:, 1:] != -100
            lp = torch.log_softmax(
                base.model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits[
                    :, :-1
                ],
                -1,
            )
            lq = torch.log_softmax(
                candidate.model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits[
                    :, :-1
                ],
                -1,
            )
            kl = (lp.exp() * (lp - lq)).sum(-1)
            total += float(kl[keep].sum())
            count += int(keep.sum())
    return total / max(1, count)


def question_index(task: Task) -> dict[str, QA]:
    """Question text → the task's question, over every split."""
    return {q.question: q for split in SPLITS for q in task.questions(split)}


def retention_episodes(world: World, n: int, k_docs: int = 5, seed: int = 12345):
    """The frozen step-level retention suite: `n` next-step episodes of the families the model
    was built on (`consolidate.retention_episodes`), always the same for a world and `n`."""
    sampler = EpisodeSampler(world, world.trained_families, k_docs)
    rng = random.Random(seed)
    return [sampler.sample(rng) for _ in range(n)]


def evaluate_version(
    cfg,
    engine,
    retriever,
    new_qs: Sequence[QA],
    retention_qs: Sequence[QA],
    episodes=None,
    patterns: bool = False,
    check: AnswerCheck = EXACT,
    trusted: Sequence[TrustedStep] = (),
    skills: Mapping[str, Sequence[QA]] | None = None,
) -> dict:
    """Greedy RGR accuracy on the new groups and on the retention questions (by the task's
    answer `check`), and, where the task has episodes (the world), grounded next-step accuracy
    on them (more sensitive to small losses); elsewhere, next-step accuracy on the `trusted`
    steps of the frozen suite, where it has any. `patterns` lets RGR follow episodic
    procedures (off: what the weights alone do). `skills` (skill → its frozen questions, from
    the skill ledger) adds `skills`: the accuracy on each skill earlier sleeps taught, and on
    `base` (the retention questions); `new_family_by_group` splits the new-family measure."""
    opts = {**cfg.rgr_options(), "patterns": patterns, "check": check}
    hops: dict = {}
    groups: dict = {}
    out = {
        "new_family": greedy_accuracy(engine, retriever, new_qs, hops, by_group=groups, **opts),
        "new_family_by_hops": hops,
        "new_family_by_group": groups,
        "retention": greedy_accuracy(engine, retriever, retention_qs, **opts),
        "retention_questions": len(retention_qs),
    }
    if skills is not None:
        out["skills"] = {BASE: out["retention"]} | {
            name: greedy_accuracy(engine, retriever, qs, **opts) for name, qs in skills.items()
        }
    if episodes:
        out["retention_steps"] = step_accuracy(engine, episodes, grounded=True)
    elif trusted:
        out["retention_steps"] = next_step_accuracy(engine, trusted, grounded=cfg.grounded)
    return out
