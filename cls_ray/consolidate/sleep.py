"""One sleep, top to bottom: sessions → (scored, corrected) → f(τ) → PRM gate → pairs with replay
(`data`) → procedures into episodic memory at once (the fast path) → a candidate trained on Ray
Train (SFT, or PPO with step rewards; `candidate`) → measured against the version before it
(`evaluate`) → registered, and promoted only if it does not forget (`promotion`).

The services it needs (memory, registry, publisher, buffer) are passed in: the plain ones of
this process, or the Ray-backed ones of a running application (`actors.consolidation`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cls_ray.consolidate.candidate import Log, Method, SleepBatch, train_with_dreams
from cls_ray.consolidate.data import (
    KnownSkills,
    corrected_sessions,
    group_of,
    score_sessions,
    sessions_to_pairs,
    subplan_pairs,
)
from cls_ray.consolidate.dream import reference_check
from cls_ray.consolidate.episodic import fold_patterns
from cls_ray.consolidate.evaluate import (
    evaluate_version,
    greedy_accuracy,
    kl_base_candidate,
    question_index,
    retention_episodes,
)
from cls_ray.consolidate.ppo import fresh_rollouts
from cls_ray.consolidate.promotion import SleepServices, conclude, decide
from cls_ray.consolidate.retention import RetentionSuite
from cls_ray.consolidate.skills import (
    Skill,
    SkillLedger,
    measuring_conditions,
    new_skills,
    skill_questions,
)
from cls_ray.engine.factory import build_engine
from cls_ray.engine.hf import HFEngine
from cls_ray.model.lora import Start
from cls_ray.ports import Buffer, Scorer
from cls_ray.replay.data import read_leased
from cls_ray.replay.lease import kept
from cls_ray.stack import Stack
from cls_ray.storage import materialize

logger = logging.getLogger(__name__)


class Laps:
    """Seconds per phase: each call closes the phase that ran since the one before."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.at = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(now - self.at, 1)
        self.at = now


def start_of(cfg, version) -> Start:
    """Where a consolidation of `version` (the current one) starts: its files, fetched to this
    node, when `consolidate.compose` continues from it."""
    if version.kind == "base" or cfg.consolidate.compose != "continue":
        return Start(version.kind, None, version.name)
    local = materialize(version.artifact_uri, cfg.state_path / "cache" / "artifacts")
    return Start(version.kind, Path(local), version.name)


def sleep_once(
    stack: Stack,
    batch: SleepBatch,
    services: SleepServices,
    method: Method = "sft",
    promote: bool = True,
    index: bool = True,
    out: Path | None = None,
    log: Log = logger.info,
    prm: Scorer | None = None,
) -> dict:
    """Trains a candidate on `batch`, registers it with its metrics, promotes it if it keeps
    what the model knew. Returns the report, with `dream_sessions` (the trusted dreams the
    candidate learned from, as sessions) for the caller to keep and take out before printing.

    Before any weight changes, the procedures of A_good go to episodic memory (the fast path,
    `index`); the candidate is then measured on what its weights alone do. With `prm` and
    `consolidate.dream_rounds`, an SFT candidate dreams (`train_with_dreams`)."""
    cfg, memory, task = stack.cfg, services.memory, stack.task
    laps = Laps()
    current = services.registry.current()
    if stack.model_version.name != current.name:
        raise ValueError(
            f"a sleep consolidates the current version ({current.name}), not {stack.model_version.name}"
        )
    known = KnownSkills(task, memory, cfg, stack.engine.format)
    # A session whose answer the task's reference refutes teaches nothing, however the PRM
    # scored it (its question stays open for the dreams).
    # `consolidate.reference_gate` off (an incomplete reference): the PRM alone judges them, and
    # the dreams still check their answers.
    accept = reference_check(task, [*batch.sessions, *batch.replayed])
    trust = accept if cfg.consolidate.reference_gate else None
    refs = {"replayed": batch.replayed, "check": task.check, "accept": trust}
    pairs, data, good = sessions_to_pairs(batch.sessions, batch.doc_texts, cfg, task, known, **refs)
    log(
        f"sleep: {data['sessions']} sessions ({data['refuted_sessions']} refuted by a reference "
        f"answer) -> {data['artifacts']} artifacts, A_good "
        f"{data['a_good']} -> {data['new_pairs']} pairs (+ replay: {data['pairs']})"
    )
    laps("data")
    # Step-level retention: the world's episodes, else the frozen suite earlier sleeps taught.
    n_steps = cfg.consolidate.retention_episodes
    episodes = retention_episodes(task.world, n_steps, cfg.rgr.top_k) if task.world else None
    suite = RetentionSuite.of(cfg)
    trusted = [] if task.world else suite.steps()
    new_qs, retention_qs = batch.new_questions, batch.retention_questions
    # Every skill earlier sleeps taught is measured too, and bars a candidate at its best.
    ledger = SkillLedger.of(cfg)
    learned = ledger.skills()
    skill_qs = skill_questions(learned, question_index(task))
    measure = {"episodes": episodes, "check": task.check, "trusted": trusted, "skills": skill_qs}
    before = evaluate_version(cfg, stack.engine, memory, new_qs, retention_qs, **measure)
    laps("measure_before")
    # Scores are bars only among measurements taken alike (same retention questions, RGR
    # options and engine): when those change, the current version sets the bar again.
    conditions = measuring_conditions(cfg, retention_qs)
    if ledger.conditions(current.name) != conditions:
        ledger.record(current.name, before["skills"], conditions=conditions)
    fast, pats = None, []
    if index:
        pats = fold_patterns(good)
        memory.add_patterns(pats)
        fast = greedy_accuracy(
            stack.engine,
            memory,
            new_qs,
            check=task.check,
            **{**cfg.rgr_options(), "patterns": True},
        )
        log(f"sleep: {len(pats)} procedures indexed; new family with them {fast:.3f}")
        laps("fast_path")
    out = out or cfg.state_path / "adapters" / f"{method}-{int(time.time())}"
    train, dreams, dreamt = train_with_dreams(
        stack,
        batch,
        services,
        prm,
        method,
        pairs,
        out,
        known,
        start_of(cfg, current),
        log,
        a_good=data["a_good"],
        accept=accept,
        trust=trust,
    )
    laps("train_and_dream")
    # The configured engine (HF, or vLLM on a GPU), under a name no other sleep used: vLLM
    # caches adapters and weights by name.
    cand = build_engine(cfg, f"candidate-{out.name}", out)
    after = evaluate_version(cfg, cand, memory, new_qs, retention_qs, **measure)
    laps("measure_after")
    # Teacher-forced logits need the model in this process (HF); vLLM keeps it in its workers.
    both_local = isinstance(stack.engine, HFEngine) and isinstance(cand, HFEngine)
    kl = kl_base_candidate(stack.engine, cand, pairs[:256]) if both_local and pairs else None
    # How far the candidate moved from the current version on the new skill's own prompts: an
    # early warning of forgetting (RL's Razor), recorded with every sleep.
    fresh = subplan_pairs(good, known.format)[:256]
    kl_new = kl_base_candidate(stack.engine, cand, fresh) if both_local and fresh else None
    laps("kl")
    rolled_back = {v["name"] for v in services.registry.list() if v["status"] == "rolled_back"}
    best = ledger.best(lambda version: version not in rolled_back, conditions)
    c = cfg.consolidate
    ok, reason = decide(before, after, c.retention_tolerance, best, c.forgetting_tolerance)
    metrics = {
        "method": method,
        "new_family_before": before["new_family"],
        "new_family_after": after["new_family"],
        "new_family_fast_path": fast,
        "procedures": len(pats),
        "new_family_by_hops_before": before["new_family_by_hops"],
        "new_family_by_hops_after": after["new_family_by_hops"],
        "retention_before": before["retention"],
        "retention_after": after["retention"],
        "retention_steps_before": before.get("retention_steps"),
        "retention_steps_after": after.get("retention_steps"),
        "retention_questions": len(retention_qs),
        "retention_episodes": len(episodes or ()),
        "retention_suite_steps": len(trusted),
        "skills_before": before["skills"],
        "skills_after": after["skills"],
        "skills_best": {k: score for k, (score, _) in best.items()},
        "kl_base_candidate": kl,
        "kl_new_skill": kl_new,
        "train": train,
        "data": data,  # the sessions' data
        # what the candidate trained on: the sessions' data, or with the last trusted dream's
        "trained": next((d for d in reversed(dreams) if d["trained"]), data),
        "dreams": dreams,
        "seconds": laps.seconds,  # where the sleep's time went, phase by phase
    }
    v = conclude(cfg, services, out, method, current.name, metrics, (ok, reason), promote)
    log(f"sleep: {v.name} {'passes' if ok else 'fails'} the retention gate: {reason}")
    skills: list[Skill] = []
    if ok and promote:
        skills = new_skills(v.name, task, new_qs, ledger.learned_groups())
        scores = dict(after["skills"])
        for skill in skills:
            n = {g: sum(q.group == g for q in new_qs) for g in skill.groups}
            right = sum(after["new_family_by_group"][g] * n[g] for g in skill.groups)
            scores[skill.name] = right / sum(n.values())  # its accuracy on its own questions
            log(
                f"sleep: {skill.name} learned {len(skill.groups)} new group(s); their "
                f"{len(skill.questions)} held-out questions join what every later sleep measures"
            )
        ledger.record(v.name, scores, skills, conditions)
    if ok and promote and not task.world:
        joined = suite.add(good, v.name)
        log(f"sleep: {joined} trusted steps of {v.name} join the frozen retention suite")
    return {
        **metrics,
        "learned_skill": ", ".join(s.name for s in skills) or None,
        "version": v.name,
        "passes_gate": ok,
        "promoted": ok and promote,
        "reason": reason,
        # the dreams the candidate learned from, as sessions: a promoted sleep's buffer keeps
        # them for later sleeps' replay (callers take them out of what they print)
        "dream_sessions": dreamt,
    }


def sleep_from_buffer(
    stack: Stack,
    prm: Scorer,
    buffer: Buffer,
    services: SleepServices,
    limit: int,
    method: Method = "sft",
    log: Log = logger.info,
) -> dict:
    """`cls-ray sleep` / `cls-ray ppo`: the buffer's unconsumed sessions (scored by the PRM
    where the serving stack has not yet), one consolidation, promotion if the candidate keeps
    what the model knew. The sessions are acknowledged (consumed) only when the candidate is
    promoted. PPO adds fresh rollouts of the current model on the sessions' questions."""
    lease = buffer.lease(limit)
    if not lease["ids"]:
        raise ValueError(f"no unconsumed sessions in {stack.cfg.replay_path}")
    # Held while the sleep runs, however long its dreams take (`cls_ray.replay.lease`).
    with kept(buffer, lease["ids"], lease["holder"], lease["lease_s"]) as held:
        result = _sleep_on_lease(stack, prm, buffer, services, lease, method, log)
    result["lease"] = held
    return result


def _sleep_on_lease(
    stack: Stack,
    prm: Scorer,
    buffer: Buffer,
    services: SleepServices,
    lease: dict,
    method: Method,
    log: Log,
) -> dict:
    cfg, task = stack.cfg, stack.task
    taken = read_leased(lease)  # the sealed segments, read with Ray Data
    c = cfg.consolidate
    replayed = [s.model_dump() for s in buffer.replay_sample(c.replay_keep, c.seed)]
    ids = sorted({r["id"] for s in taken + replayed for st in s["steps"] for r in st["retrieved"]})
    doc_texts = services.memory.get_documents(ids)
    scored = score_sessions(prm, taken, doc_texts)
    for s in scored:
        buffer.set_scores(s["id"], s["prm_step_scores"], s["r_tau"], s["prm_version"])
    log(
        f"sleep: {len(taken)} sessions ({len(scored)} scored now), {len(replayed)} consumed "
        "earlier kept for replay"
    )
    index = question_index(task)
    groups = sorted({index[s["question"]].group for s in taken if s["question"] in index})
    new_qs = task.questions("eval", groups, per_group=c.eval_per_family) if groups else []
    retention_qs = task.questions("retention", per_group=c.eval_per_family)
    learn = list(taken)
    fixed, more = corrected_sessions(taken, services.memory, cfg.rgr.top_k)
    if fixed:
        doc_texts.update(more)
        judged = score_sessions(prm, fixed, doc_texts)  # users' corrections: the PRM judges
        learn += fixed
        log(
            f"sleep: {len(fixed) - len(judged)} curators' corrections join as trusted "
            f"trajectories, {len(judged)} users' corrections as PRM-scored ones"
        )
    if method == "ppo" and c.ppo.fresh_per_family:
        replay_qs = task.questions("train", groups, per_group=c.ppo.fresh_per_family)
        fresh, more = fresh_rollouts(
            stack, prm, [q.question for q in replay_qs], c.ppo.temperature, c.seed, services.memory
        )
        doc_texts.update(more)
        learn += fresh
        log(f"ppo: {len(fresh)} fresh rollouts on replayed questions")
    batch = SleepBatch(learn, doc_texts, new_qs, retention_qs, replayed)
    result = sleep_once(stack, batch, services, method=method, log=log, prm=prm)
    dreamt = result.pop("dream_sessions")
    if result["promoted"]:
        result["acknowledged"] = buffer.ack([s["id"] for s in taken])
        # What the dreams taught is replayed like what the sessions taught: kept, consumed.
        try:
            result["dreams_kept"] = len({buffer.add(s, consumed=True) for s in dreamt})
        except Exception as e:  # noqa: BLE001 - the version stands; replay lacks some dreams
            log(f"sleep: keeping the dreams for replay did not finish: {e}")
            result["dreams_kept"] = {"error": str(e)}
        # The consumed cache is discarded but for the replay sample: a share per skill.
        strata = group_of(task, [*taken, *replayed, *dreamt])
        try:
            result["compaction"] = buffer.compact(c.replay_keep, c.seed, strata)
        except Exception as e:  # noqa: BLE001 - housekeeping: the version stands, the next
            # compaction (or this one, still running in the buffer's process) catches up
            log(f"sleep: compacting the buffer did not finish: {e}")
            result["compaction"] = {"error": str(e)}
    result["families"] = groups
    return result
