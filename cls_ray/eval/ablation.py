"""The consolidation ablation (`cls-ray bench consolidation`): the same sessions, some of them
corrupted into wrong chains that still reach a plausible answer, consolidated five ways (SFT gated
by the PRM, SFT on everything, SFT on right answers, PPO with step rewards, episodic memory
alone), each candidate measured and registered, none promoted."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Sequence

from cls_ray.consolidate.candidate import SleepBatch, train_candidate
from cls_ray.consolidate.data import KnownSkills, score_sessions, sessions_to_pairs
from cls_ray.consolidate.episodic import fold_patterns
from cls_ray.consolidate.evaluate import evaluate_version, question_index, retention_episodes
from cls_ray.consolidate.promotion import version_kind
from cls_ray.consolidate.sleep import start_of
from cls_ray.engine.hf import HFEngine
from cls_ray.eval.scratch import scratch_procedures
from cls_ray.ports import Scorer
from cls_ray.prm.labels import Corruptor
from cls_ray.registry import registry_for
from cls_ray.stack import Stack
from cls_ray.steps import answer_step, parse_answer
from cls_ray.task import QA, WorldTask


def corrupt_sessions(
    sessions: Sequence[dict], task: WorldTask, share: float, top_k: int, seed: int = 0
):
    """Copies of `sessions` in which `share` of them follow a wrong chain that still reaches a
    plausible answer: half keep the right answer (right for the wrong reasons), half end on the
    wrong chain's answer. A wrong step that is a world fact retrieved its own document (it looks
    grounded). Corrupted sessions carry no scores and no behaviour log-probs. Returns the
    sessions, the texts of the documents added, and how many were corrupted."""
    rng = random.Random(seed)
    world = task.world
    index = question_index(task)
    corruptor = Corruptor(world)
    facts = {d.text: d for d in world.documents}
    out = [copy.deepcopy(s) for s in sessions]
    chosen = rng.sample(range(len(out)), round(share * len(out)))
    docs: dict[str, str] = {}
    n = 0
    for j in chosen:
        s, qa = out[j], index.get(out[j]["question"])
        if qa is None:
            continue
        q = task.question_of(qa)
        kinds = ["wrong_entity", "wrong_relation", "wrong_object", "skipped_hop"]
        rng.shuffle(kinds)
        steps = next((x for k in kinds if (x := corruptor.corrupt(q, k, rng))), None)
        if steps is None:
            continue
        if n % 2 == 0:
            steps = steps[:-1] + [answer_step(q.answer)]
        n += 1
        old = s["steps"]
        new_steps = []
        for i, text in enumerate(steps):
            prior = old[min(i, len(old) - 1)]["retrieved"] if old else []
            doc = facts.get(text)
            retrieved = [{"id": doc.id, "score": 1.0}] if doc else []
            retrieved += [r for r in prior if not doc or r["id"] != doc.id]
            if doc:
                docs[doc.id] = doc.text
            new_steps.append(
                {
                    "text": text,
                    "query": None,
                    "retrieved": retrieved[:top_k] if parse_answer(text) is None else [],
                    "cited": [doc.id] if doc else [],
                    "token_ids": [],
                    "logprobs": [],
                    "is_answer": parse_answer(text) is not None,
                }
            )
        s.update(
            steps=new_steps,
            answer=parse_answer(steps[-1]),
            prm_step_scores=None,
            r_tau=None,
        )
    return out, docs, n


# The trained arms: (name, method, which sessions the gate keeps); `episodic_only` trains nothing.
TRAINED_ARMS = (
    ("sft_prm_gated", "sft", "prm"),
    ("sft_ungated", "sft", "none"),
    ("sft_outcome_only", "sft", "outcome"),
    ("ppo_step_rewards", "ppo", "prm"),
)
ABLATION_ARMS = (*(a for a, _, _ in TRAINED_ARMS), "episodic_only")


def check_arms(arms: Sequence[str]) -> None:
    """A ValueError naming the arms that are not ablation arms (before anything runs)."""
    unknown = [a for a in arms if a not in ABLATION_ARMS]
    if unknown:
        raise ValueError(
            f"unknown ablation arm(s) {', '.join(unknown)} (known: {', '.join(ABLATION_ARMS)})"
        )


def ablation(
    stack: Stack,
    prm: Scorer,
    sessions: Sequence[dict],
    docs: dict[str, str],
    new_qs: list[QA],
    retention_qs: list[QA],
    log: Callable[[str], None],
    arms: Sequence[str] = ABLATION_ARMS,
) -> list[dict]:
    """The five arms (or those `arms` names) on the same sessions,
    `consolidate.corrupted_share` of them corrupted: SFT gated by the PRM, SFT on everything,
    SFT on the sessions whose answer was right, PPO with the PRM's step rewards, and the
    episodic path alone (procedures in Milvus, no weight change). Every candidate is registered
    with its metrics, none promoted."""
    cfg, task = stack.cfg, stack.task
    world, check = stack.world, task.check  # corruptions need the world (its verifier's facts)
    c = cfg.consolidate
    mixed, more, n_bad = corrupt_sessions(sessions, task, c.corrupted_share, cfg.rgr.top_k, c.seed)
    docs = {**docs, **more}
    score_sessions(prm, mixed, docs)
    gold = {q.question: q.answers for q in question_index(task).values()}
    log(f"ablation: {n_bad} of {len(mixed)} sessions corrupted and scored by the PRM")
    episodes = retention_episodes(world, cfg.consolidate.retention_episodes, cfg.rgr.top_k)
    ev = {"episodes": episodes, "check": check}
    known = KnownSkills(task, None, cfg, stack.engine.format)  # the world's bootstrap episodes
    reg = registry_for(cfg)
    rows = []
    stamp = int(time.time())
    for arm, method, gate_mode in (a for a in TRAINED_ARMS if a[0] in arms):
        pairs, data, _ = sessions_to_pairs(
            mixed, docs, cfg, task, known, gate_mode, gold, check=check
        )
        log(f"ablation {arm}: {data['new_pairs']} pairs from {data['sessions']} sessions")
        out = cfg.state_path / "adapters" / f"ablation-{stamp}-{arm}"
        batch = SleepBatch(mixed, docs, new_qs, retention_qs)
        start = start_of(cfg, stack.model_version)  # as the measured sleep starts
        train = train_candidate(cfg, method, batch, pairs, out, log, known, start)
        cand = HFEngine.from_config(cfg, arm, out)
        after = evaluate_version(cfg, cand, stack.retriever, new_qs, retention_qs, **ev)
        row = {
            "arm": arm,
            "new_family_after": after["new_family"],
            "retention_after": after["retention"],
            "retention_steps_after": after.get("retention_steps"),
            "new_family_by_hops_after": after["new_family_by_hops"],
            "pairs": data["new_pairs"],
            "loss": train["loss"],
        }
        v = reg.register(
            str(out), version_kind(cfg, method), parent=reg.current().name, metrics=row
        )
        reg.annotate(v.name, f"ablation arm {arm} (measured only)")
        rows.append({**row, "version": v.name})
        log(
            f"ablation {arm}: new family {row['new_family_after']:.3f}, retention "
            f"{row['retention_after']:.3f}"
        )
    if "episodic_only" not in arms:
        return rows
    _, data, good = sessions_to_pairs(mixed, docs, cfg, task, known, "prm")
    with scratch_procedures(stack) as memory:
        pats = fold_patterns(good)
        memory.add_patterns(pats)
        after = evaluate_version(
            cfg, stack.engine, memory, new_qs, retention_qs, patterns=True, **ev
        )
    rows.append(
        {
            "arm": "episodic_only",
            "new_family_after": after["new_family"],
            "retention_after": after["retention"],
            "retention_steps_after": after.get("retention_steps"),
            "new_family_by_hops_after": after["new_family_by_hops"],
            "procedures": len(pats),
        }
    )
    log(f"ablation episodic_only: new family {after['new_family']:.3f}")
    return rows
