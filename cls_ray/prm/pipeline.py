"""The PRM jobs behind `cls-ray prm train` and `cls-ray prm eval`: data from the world, the
model's own samples and user feedback; training; evaluation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from cls_ray.prm.evaluate import best_of_n, by_source, step_metrics
from cls_ray.prm.judge import judge_client, judge_labels
from cls_ray.prm.labels import (
    StepExample,
    evidence_for,
    gold_and_corrupted,
    human_examples,
    merge_labels,
    sampled_examples,
    world_docs_for,
)
from cls_ray.prm.mc import mc_labels
from cls_ray.prm.model import ProcessRewardModel
from cls_ray.prm.store import next_prm_path
from cls_ray.prm.train import train_prm
from cls_ray.prm.trajectories import gold_and_corrupted as task_gold_and_corrupted
from cls_ray.prm.trajectories import sampled
from cls_ray.stack import Stack
from cls_ray.steps import overlap_f1, sentences
from cls_ray.task import QA
from cls_ray.task.world_task import world_qa

logger = logging.getLogger(__name__)


def label_sources(stack: Stack) -> list[str]:
    """`prm.label_sources`, or where unset the verifier where the task has one, else Monte
    Carlo rollouts; the verifier on a task without one is a config error."""
    task, sources = stack.task, stack.cfg.prm.label_sources
    if sources is None:
        return ["verifier"] if task.verify is not None else ["mc"]
    if "verifier" in sources and task.verify is None:
        raise ValueError(f"prm.label_sources names verifier, but task {task.name} has none; use mc")
    return sorted(set(sources))


def _support_texts(stack: Stack, questions: Sequence[QA]) -> dict[str, str]:
    ids = sorted({d for q in questions for d in q.support_ids})
    return stack.retriever.get_documents(ids) if ids else {}


def _new_words(text: str, earlier: Sequence[str]) -> str:
    """The words of `text` that none of `earlier` has: what a step brought to the reasoning."""
    seen = {w.lower() for e in earlier for w in e.split()}
    return " ".join(w for w in text.split() if w.lower() not in seen) or text


def off_chain(
    stack: Stack, questions: Sequence[QA], k: int = 5
) -> dict[tuple[str, int], list[str]]:
    """For each gold step (question id, hop): what the retriever brings for what the step
    before it brought (other statements about the thing the step is about; the question for
    the first) and for the question with the step (look-alikes), that supports none of the
    question's hops, each as the sentence nearest the step: true statements off the chain."""
    pairs = [(q, i) for q in questions for i in range(len(q.steps))]
    if not pairs:
        return {}
    before = [
        _new_words(q.steps[i - 1], [q.question, *q.steps[: i - 1]]) if i else q.question
        for q, i in pairs
    ]
    at = [f"{q.question} {q.steps[i]}" for q, i in pairs]
    hits = stack.retriever.retrieve(before + at, k)
    near: dict[tuple[str, int], list[str]] = {}
    for n, (q, i) in enumerate(pairs):
        step, support = q.steps[i], set(q.support_ids)
        found = near.setdefault((q.id, i), [])
        for d in hits[n] + hits[len(pairs) + n]:
            if d.id in support:
                continue
            best = max(sentences(d.text) or [d.text], key=lambda x: overlap_f1(step, x))
            if best not in q.steps and best not in found:
                found.append(best)
    return near


def task_trajectories(
    stack: Stack, questions: Sequence[QA], per_question: int, samples: int, seed: int
) -> list[StepExample]:
    """Unlabelled trajectories on any task: gold chains and their wrong versions (where the
    questions have gold steps) and the model's own samples."""
    cfg = stack.cfg
    pool = task_gold_and_corrupted(
        questions,
        _support_texts(stack, questions),
        per_question,
        seed,
        near=off_chain(stack, questions),
    )
    if samples:
        pool += sampled(
            questions,
            stack.engine,
            stack.retriever,
            samples=samples,
            temperature=cfg.prm.sample_temperature,
            seed=seed,
            **cfg.rgr_options(),
        )
    return pool


def mc_labelled(
    stack: Stack, pool: Sequence[StepExample], answers: dict[str, tuple], progress: bool = True
) -> list:
    cfg, p = stack.cfg, stack.cfg.prm
    out = mc_labels(
        pool,
        [answers[e.prompt] for e in pool],
        stack.engine,
        stack.retriever,
        rollouts=p.mc_rollouts,
        temperature=p.sample_temperature,
        soft=p.mc_soft,
        seed=p.seed,
        check=stack.task.check,
        progress=progress,
        relative=p.mc_relative,
        tolerance=p.mc_tolerance,
        agree=p.mc_agree,
        steps=p.mc_steps,
        **cfg.rgr_options(),
    )
    for e in out:
        known = [x for x in e.labels if x is not None]  # relative labels may be unknown
        e.meta = {**e.meta, "correct": bool(known) and all(x >= 0.5 for x in known)}
    return out


def session_evidence(stack: Stack, sessions: Sequence[dict]):
    """`evidence_of(step, session)` for human labels: the document the step restates best among
    those its session retrieved (and, on the world, the stated fact's own document)."""
    ids = sorted(
        {r["id"] for s in sessions for st in s.get("steps") or [] for r in st["retrieved"]}
    )
    texts = stack.retriever.get_documents(ids) if ids else {}
    world = stack.task.world

    def evidence_of(step: str, session: dict) -> str:
        docs = [
            texts[r["id"]]
            for st in session.get("steps") or []
            for r in st["retrieved"]
            if r["id"] in texts
        ]
        if world is not None:
            docs += world_docs_for(world, step)
        return evidence_for(step, docs)

    return evidence_of


def judged_labels(stack: Stack, pool: Sequence[StepExample], answers: dict[str, tuple]):
    """`pool` labelled by the judge of `prm.judge` (an OpenAI-compatible endpoint)."""
    j = stack.cfg.prm.judge
    return judge_labels(
        pool,
        [answers[ex.prompt] for ex in pool],
        judge_client(stack.cfg),
        j.model,
        max_requests=j.max_requests,
        concurrency=j.concurrency,
    )


def training_examples(
    stack: Stack, feedback: Sequence[dict] = (), log: Callable[[str], None] = logger.info
) -> tuple[list[StepExample], dict]:
    """Labelled trajectories on the task's `train` questions of every group (the PRM must judge
    the new groups' steps too): gold chains, wrong versions of them and the model's own samples,
    labelled by the sources (`label_sources`), merged with the human labels of the `feedback`
    sessions (which win). The world makes its wrong chains from its own facts."""
    cfg, task = stack.cfg, stack.task
    p = cfg.prm
    sources = label_sources(stack)
    if task.world is not None:
        world = task.world
        wqs = world.questions("train", per_family=p.questions_per_family, seed=p.seed)
        examples = gold_and_corrupted(world, wqs, p.corruptions_per_question, seed=p.seed)
        qs = [world_qa(q) for q in wqs]
        log(f"prm data: {len(examples)} gold and corrupted chains from {len(qs)} questions")
        sampled_ = []
        if p.samples_per_question:
            sampled_ = sampled_examples(
                wqs,
                stack.engine,
                stack.retriever,
                samples=p.samples_per_question,
                temperature=p.sample_temperature,
                seed=p.seed,
                **cfg.rgr_options(),
            )
            log(f"prm data: {len(sampled_)} sampled trajectories")
        pool = examples + sampled_
    else:
        qs = task.questions("train", per_group=p.questions_per_family, seed=p.seed)
        if not qs:
            raise ValueError(f"task {task.name} has no train questions to label")
        pool = task_trajectories(
            stack, qs, p.corruptions_per_question, p.samples_per_question, p.seed
        )
        log(
            f"prm data: {len(pool)} trajectories (gold, wrong versions, samples) from {len(qs)} questions"
        )
    auto: list[StepExample] = []
    if "verifier" in sources:
        auto += pool
    answers = {q.question: q.answers for q in qs}
    if "mc" in sources:
        auto += mc_labelled(stack, pool, answers)
        log(f"prm data: Monte Carlo labels for {len(pool)} trajectories ({p.mc_rollouts} rollouts)")
    if "judge" in sources:
        judged, js = judged_labels(stack, pool, answers)
        auto += judged
        log(
            f"prm data: the judge labelled {js.labelled_steps} steps in {js.requests} requests "
            f"({js.failed} failed, {js.skipped} over prm.judge.max_requests)"
        )
    human = human_examples(feedback, session_evidence(stack, feedback))
    merged = merge_labels(auto + human, consensus=p.consensus)
    steps = [lab for e in merged for lab in e.labels]
    stats = {
        "trajectories": len(merged),
        "human_trajectories": len(human),
        "labelled_steps": sum(lab is not None for lab in steps),
        "wrong_steps": sum(lab is not None and lab < 0.5 for lab in steps),
        "sources": sources,
        "consensus": p.consensus,
        "task": task.name,
    }
    return merged, stats


def eval_examples(stack: Stack) -> list[StepExample]:
    """Held-out trajectories labelled by the task's verifier where it has one (the world:
    held-out entities, every family, its own wrong chains), else by Monte Carlo rollouts on
    the task's `eval` questions."""
    cfg, task = stack.cfg, stack.task
    p = cfg.prm
    if task.world is None:
        qs = task.questions("eval", per_group=p.eval_per_family, seed=p.seed + 1)
        pool = task_trajectories(
            stack, qs, p.corruptions_per_question, p.eval_samples_per_question, p.seed + 1
        )
        return mc_labelled(stack, pool, {q.question: q.answers for q in qs})
    world = task.world
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
    cfg, task = stack.cfg, stack.task
    how = "the verifier" if task.world is not None else "Monte Carlo rollouts"
    log(f"== PRM {prm.path}: step labels on held-out trajectories (labelled by {how})")
    examples = eval_examples(stack)
    scores = prm.score_many([(e.prompt, e.completions, e.evidence) for e in examples])
    result = {"prm": str(prm.path), "aggregation": cfg.prm.aggregation, "labels": how}
    result.update(step_metrics(examples, scores, cfg.prm.aggregation))
    result["by_source"] = by_source(examples, scores, task.new_groups)
    log(
        f"step_f1 {result['step_f1']:.3f} (correct {result['step_f1_correct']:.3f}, wrong "
        f"{result['step_f1_wrong']:.3f}); first_error_accuracy "
        f"{result['first_error_accuracy']:.3f}; auroc_tau {result['auroc_tau']:.3f} on "
        f"{result['trajectories']} trajectories ({result['wrong_trajectories']} wrong)"
    )
    qs = task.questions("eval", per_group=cfg.prm.best_of_n_per_family, seed=cfg.prm.seed + 2)
    log(f"== best-of-N on {len(qs)} held-out questions, N in {cfg.prm.best_of_n}")
    result["best_of_n"] = best_of_n(
        prm,
        qs,
        task,
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
