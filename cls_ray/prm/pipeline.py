"""The PRM jobs behind `cls-ray prm train` and `cls-ray prm eval`: data from the world, the
model's own samples and user feedback; training; evaluation; where trained PRMs live."""

from __future__ import annotations

import logging
from pathlib import Path

from cls_ray.prm.labels import (
    StepExample,
    evidence_for,
    gold_and_corrupted,
    human_examples,
    mc_labels,
    merge_labels,
    sampled_examples,
    world_docs_for,
)

logger = logging.getLogger(__name__)


def prm_root(cfg) -> Path:
    return cfg.state_path / "prm"


def latest_prm(cfg) -> Path | None:
    """`prm.path` when set, else the newest `v<N>` under state_dir/prm."""
    if cfg.prm.path:
        return Path(cfg.prm.path)
    versions = sorted(
        (p for p in prm_root(cfg).glob("v*") if p.name[1:].isdigit() and (p / "prm.json").exists()),
        key=lambda p: int(p.name[1:]),
    )
    return versions[-1] if versions else None


def next_prm_path(cfg) -> Path:
    taken = [int(p.name[1:]) for p in prm_root(cfg).glob("v*") if p.name[1:].isdigit()]
    return prm_root(cfg) / f"v{max(taken, default=0) + 1}"


def feedback_sessions(cfg) -> list[dict]:
    """Sessions with feedback: from the running buffer actor, else from the buffer's files."""
    try:
        import ray

        if ray.is_initialized():
            from actors.replay_buffer import buffer_actor_name

            actor = ray.get_actor(buffer_actor_name(cfg.serve.app_name), namespace="cls-ray")
            return ray.get(actor.with_feedback.remote(), timeout=60)
    except (ValueError, ImportError):
        pass
    if not cfg.replay_path.exists():
        return []
    from cls_ray.replay.buffer import ReplayBuffer

    return ReplayBuffer(cfg.replay_path, segments=cfg.replay_segments).with_feedback()


def training_examples(stack, log=logger.info) -> tuple[list[StepExample], dict]:
    """Labelled trajectories on train-split entities of every family (the PRM must judge the
    held-back relation's steps too): gold chains, corruptions and the model's own samples,
    labelled by the configured sources, merged with human labels (which win)."""
    cfg, world = stack.cfg, stack.world
    p = cfg.prm
    qs = world.questions("train", per_family=p.questions_per_family, seed=p.seed)
    examples = gold_and_corrupted(world, qs, p.corruptions_per_question, seed=p.seed)
    log(f"prm data: {len(examples)} gold and corrupted chains from {len(qs)} questions")
    sampled: list[StepExample] = []
    if p.samples_per_question:
        sampled = sampled_examples(
            qs,
            stack.engine,
            stack.retriever,
            samples=p.samples_per_question,
            temperature=p.sample_temperature,
            seed=p.seed,
            **cfg.rgr_options(),
        )
        log(f"prm data: {len(sampled)} sampled trajectories")
    auto: list[StepExample] = []
    if "verifier" in p.label_sources:
        auto += examples + sampled
    if "mc" in p.label_sources:
        answers = {q.text: q.answer for q in qs}
        pool = examples + sampled
        auto += mc_labels(
            pool,
            [answers[e.prompt] for e in pool],
            stack.engine,
            stack.retriever,
            rollouts=p.mc_rollouts,
            temperature=p.sample_temperature,
            soft=p.mc_soft,
            seed=p.seed,
            **cfg.rgr_options(),
        )
        log(f"prm data: Monte Carlo labels for {len(pool)} trajectories ({p.mc_rollouts} rollouts)")
    human = human_examples(
        feedback_sessions(cfg), lambda step: evidence_for(step, world_docs_for(world, step))
    )
    merged = merge_labels(auto + human, consensus=p.consensus)
    steps = [lab for e in merged for lab in e.labels]
    stats = {
        "trajectories": len(merged),
        "human_trajectories": len(human),
        "labelled_steps": sum(lab is not None for lab in steps),
        "wrong_steps": sum(lab is not None and lab < 0.5 for lab in steps),
        "sources": sorted(p.label_sources),
        "consensus": p.consensus,
    }
    return merged, stats


def eval_examples(stack) -> list[StepExample]:
    """Held-out questions (entities never trained on), every family: gold chains, corruptions
    and the model's own samples, labelled by the verifier."""
    cfg, world = stack.cfg, stack.world
    p = cfg.prm
    qs = world.questions("heldout", per_family=p.eval_per_family, seed=p.seed + 1)
    examples = gold_and_corrupted(world, qs, p.corruptions_per_question, seed=p.seed + 1)
    if p.eval_samples_per_question:
        examples += sampled_examples(
            qs,
            stack.engine,
            stack.retriever,
            samples=p.eval_samples_per_question,
            temperature=p.sample_temperature,
            seed=p.seed + 1,
            **cfg.rgr_options(),
        )
    return examples
