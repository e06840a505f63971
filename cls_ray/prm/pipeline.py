"""The PRM jobs behind `cls-ray prm train` and `cls-ray prm eval`: data from the world, the
model's own samples and user feedback; training; evaluation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from cls_ray.prm.evaluate import best_of_n, step_metrics
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
from cls_ray.prm.model import ProcessRewardModel
from cls_ray.prm.store import next_prm_path
from cls_ray.prm.train import train_prm
from cls_ray.stack import Stack

logger = logging.getLogger(__name__)


def training_examples(
    stack: Stack, feedback: Sequence[dict] = (), log: Callable[[str], None] = logger.info
) -> tuple[list[StepExample], dict]:
    """Labelled trajectories on train-split entities of every family (the PRM must judge the
    held-back relation's steps too): gold chains, corruptions and the model's own samples,
    labelled by the configured sources, merged with the human labels of the `feedback`
    sessions (which win)."""
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
    human = human_examples(feedback, lambda step: evidence_for(step, world_docs_for(world, step)))
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


def eval_examples(stack: Stack) -> list[StepExample]:
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


def prepare_training(
    stack: Stack, feedback: Sequence[dict] = (), log: Callable[[str], None] = logger.info
) -> tuple[list[StepExample], dict]:
    """`cls-ray prm train`, first half (no Ray): the labelled data (see `training_examples`).
    Needs documents in the store."""
    if stack.store.count() == 0:
        raise ValueError("the store is empty; run `cls-ray demo` first")
    examples, data = training_examples(stack, feedback, log)
    log(
        f"prm data: {data['trajectories']} trajectories, {data['labelled_steps']} labelled steps "
        f"({data['wrong_steps']} wrong), {data['human_trajectories']} from user feedback"
    )
    return examples, data


def train_new_prm(
    cfg,
    examples: list[StepExample],
    data: dict,
    steps: int | None = None,
    log: Callable[[str], None] = logger.info,
) -> tuple[Path, dict]:
    """`cls-ray prm train`, second half: a Ray Train + DeepSpeed run on `examples` (Ray
    initialised) into the next `v<N>` folder under state_dir/prm. Returns the folder and the
    report (training metrics and data counts)."""
    out = next_prm_path(cfg)
    log(
        f"== training the PRM on Ray Train: {cfg.prm.num_workers} workers, DeepSpeed ZeRO-"
        f"{cfg.prm.zero_stage}, {steps or cfg.prm.steps} steps"
    )
    metrics = train_prm(cfg, examples, out, steps=steps)
    return out, {**metrics, "data": data}


def evaluate_prm(stack: Stack, prm: ProcessRewardModel, log: Callable[[str], None] = logger.info):
    """`cls-ray prm eval`: step labels on held-out trajectories (step F1, first error, AUROC of
    R(τ)), then best-of-N with the PRM against greedy and majority vote."""
    cfg, world = stack.cfg, stack.world
    log(f"== PRM {prm.path}: step labels on held-out trajectories")
    examples = eval_examples(stack)
    scores = prm.score_many([(e.prompt, e.completions, e.evidence) for e in examples])
    result = {"prm": str(prm.path), "aggregation": cfg.prm.aggregation}
    result.update(step_metrics(examples, scores, cfg.prm.aggregation))
    log(
        f"step_f1 {result['step_f1']:.3f} (correct {result['step_f1_correct']:.3f}, wrong "
        f"{result['step_f1_wrong']:.3f}); first_error_accuracy "
        f"{result['first_error_accuracy']:.3f}; auroc_tau {result['auroc_tau']:.3f} on "
        f"{result['trajectories']} trajectories ({result['wrong_trajectories']} wrong)"
    )
    qs = world.questions("heldout", per_family=cfg.prm.best_of_n_per_family, seed=cfg.prm.seed + 2)
    log(f"== best-of-N on {len(qs)} held-out questions, N in {cfg.prm.best_of_n}")
    result["best_of_n"] = best_of_n(
        prm,
        qs,
        stack.engine,
        stack.retriever,
        ns=cfg.prm.best_of_n,
        temperature=cfg.prm.sample_temperature,
        seed=cfg.prm.seed,
        **cfg.rgr_options(),
    )
    return result


def describe_training(out: Path, result: dict) -> str:
    """One line about `train_new_prm`'s result."""
    return (
        f"PRM {out.name} saved at {out}: loss {result.get('first_loss', float('nan')):.4f} -> "
        f"{result.get('loss', float('nan')):.4f} in {result['seconds']:.0f} s"
    )
