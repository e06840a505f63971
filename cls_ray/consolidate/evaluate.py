"""How a version is measured before the gate decides: greedy RGR accuracy on the new families
and on retention questions, next-step accuracy on a frozen suite of episodes (more sensitive to
small losses), and how far a candidate moved from the base (KL on the new task's prompts)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from cls_ray.engine.hf import HFEngine
from cls_ray.model.examples import encode_examples
from cls_ray.rgr import run_rgr
from cls_ray.world.core import Question, World
from cls_ray.world.episodes import EpisodeSampler, step_accuracy
from cls_ray.world.verifier import normalize_answer


def greedy_accuracy(engine, retriever, questions, by_hops: dict | None = None, **rgr_options):
    """Share of `questions` greedy RGR answers right; `by_hops`, when given, receives the
    share per number of hops."""
    if not questions:
        return float("nan")
    trajs = run_rgr([q.text for q in questions], engine, retriever, **rgr_options)
    right = [
        normalize_answer(t.answer) == normalize_answer(q.answer)
        for q, t in zip(questions, trajs, strict=True)
    ]
    if by_hops is not None:
        for h in sorted({q.hops for q in questions}):
            got = [r for q, r in zip(questions, right, strict=True) if q.hops == h]
            by_hops[str(h)] = sum(got) / len(got)
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


def question_index(world: World) -> dict[str, Question]:
    """Question text → the world's question, for every family and split."""
    out = {q.text: q for q in world.questions("train", per_family=10**6)}
    out.update({q.text: q for q in world.questions("heldout", per_family=10**6)})
    return out


def retention_episodes(world: World, n: int = 256, k_docs: int = 5, seed: int = 12345):
    """The frozen step-level retention suite: `n` next-step episodes of the families the model
    was built on, always the same for a world."""
    sampler = EpisodeSampler(world, world.trained_families, k_docs)
    rng = random.Random(seed)
    return [sampler.sample(rng) for _ in range(n)]


def evaluate_version(
    cfg, engine, retriever, new_qs, retention_qs, episodes=None, patterns: bool = False
) -> dict:
    """Greedy RGR accuracy on the new families and on the retention questions, and grounded
    next-step accuracy on the retention episodes (more sensitive to small losses). `patterns`
    lets RGR follow episodic procedures (off: what the weights alone do)."""
    opts = {**cfg.rgr_options(), "patterns": patterns}
    hops: dict = {}
    out = {
        "new_family": greedy_accuracy(engine, retriever, new_qs, hops, **opts),
        "new_family_by_hops": hops,
        "retention": greedy_accuracy(engine, retriever, retention_qs, **opts),
    }
    if episodes:
        out["retention_steps"] = step_accuracy(engine, episodes, grounded=True)
    return out
