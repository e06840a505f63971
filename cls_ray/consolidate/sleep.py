"""One sleep, top to bottom: sessions → (scored, corrected) → f(τ) → PRM gate → pairs with replay
(`data`) → procedures into episodic memory at once (the fast path) → a candidate trained on Ray
Train (SFT, or PPO with step rewards) → measured against the version before it (`evaluate`) →
registered, and promoted only if it does not forget (`promotion`).

The services it needs (memory, registry, publisher, buffer) are passed in: the plain ones of
this process, or the Ray-backed ones of a running application (`actors.consolidation`).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cls_ray.answers import Accept
from cls_ray.consolidate.data import (
    KnownSkills,
    corrected_sessions,
    group_of,
    score_sessions,
    sessions_to_pairs,
    subplan_pairs,
)
from cls_ray.consolidate.dream import dream_questions, dream_round, reference_check
from cls_ray.consolidate.episodic import fold_patterns
from cls_ray.consolidate.evaluate import (
    evaluate_version,
    greedy_accuracy,
    kl_base_candidate,
    question_index,
    retention_episodes,
)
from cls_ray.consolidate.ppo import experience_rows, fresh_rollouts, train_ppo
from cls_ray.consolidate.promotion import SleepServices, conclude, decide
from cls_ray.consolidate.retention import RetentionSuite
from cls_ray.consolidate.sft import sleep_steps, train_sft
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
from cls_ray.task import QA

logger = logging.getLogger(__name__)

Method = Literal["sft", "ppo"]
Log = Callable[[str], None]


@dataclass
class SleepBatch:
    """What one sleep learns from and is measured on."""

    sessions: Sequence[dict]
    doc_texts: dict[str, str]
    new_questions: list[QA]
    retention_questions: list[QA]
    replayed: Sequence[dict] = field(default_factory=list)


def train_candidate(
    cfg,
    method: Method,
    batch: SleepBatch,
    pairs,
    out: Path,
    log: Log,
    known: KnownSkills,
    start: Start | None = None,
    accept: Accept | None = None,
):
    """The slow path: an adapter trained on the gated pairs (SFT) or on the scored sessions'
    step rewards with replay (PPO-ptx; a wrong answer by the reference `accept` rewarded as 0)."""
    if method == "ppo":
        c = cfg.consolidate
        accept = accept if c.reference_gate else None
        rows = experience_rows(
            batch.sessions, batch.doc_texts, known.format, c.ppo.reward_offset, cfg.grounded, accept
        )
        replay = known.take(4 * len(rows))
        log(f"ppo: {len(rows)} scored trajectories, {len(replay)} replayed pairs for ptx")
        return train_ppo(cfg, rows, out, replay=replay, start=start)
    steps = sleep_steps(cfg.consolidate, len(pairs))
    log(f"sleep: SFT on {len(pairs)} pairs, {steps} steps")
    return train_sft(cfg, pairs, out, steps=steps, start=start)


def train_with_dreams(
    stack: Stack,
    batch: SleepBatch,
    services: SleepServices,
    prm: Scorer | None,
    method: Method,
    pairs,
    out: Path,
    known: KnownSkills,
    start: Start,
    log: Log,
    a_good: int | None = None,
    accept: Accept | None = None,
) -> tuple[dict, list[dict], list[dict]]:
    """The candidate of a sleep, written to `out`: trained on the sessions' pairs; then, for
    each of `consolidate.dream_rounds` (SFT, with a PRM), the last candidate (the current
    version, where the gate trusts no session and nothing was trained) asks again the
    sessions' questions no trusted trajectory has solved yet, and the next trains from `start`
    on the sessions and every dream so far, gated alike; dreams end when one adds nothing the
    gate trusts (`accept`: the task's reference check). Returns the last training's metrics,
    one row per dream, and the dreams the last candidate trained on that the gate can trust
    (what later sleeps replay to keep what this one taught)."""
    cfg, c = stack.cfg, stack.cfg.consolidate
    rounds = c.dream_rounds if prm is not None and method == "sft" else 0
    until = c.min_r_tau if c.dream_until is None else c.dream_until
    trusted = a_good
    last: Path | None = out if not rounds else out.with_name(f"{out.name}.round0")
    if pairs or not rounds:
        train = train_candidate(cfg, method, batch, pairs, last, log, known, start, accept)
        log(f"sleep: trained {last.name}: loss {train['first_loss']:.3f} -> {train['loss']:.3f}")
    else:  # the gate trusts no session (refuted, or doubted by the PRM): the current version dreams
        last = None
        log("sleep: no session the gate trusts; the current version dreams first")
    docs, dreamt, rows, learned = dict(batch.doc_texts), [], [], []
    try:
        for r in range(1, rounds + 1):
            t0 = time.time()
            questions = dream_questions(
                [*batch.sessions, *dreamt], c.dream_questions, until, accept
            )
            if not questions:
                break  # every question has a trajectory the PRM trusts
            engine = build_engine(cfg, f"dream-{last.name}", last) if last else stack.engine
            # a dream the reference answer refutes teaches nothing (it is dropped)
            got, more, checked = dream_round(
                cfg, engine, services.memory, prm, questions, c.seed + r, accept
            )
            solved = sum((s.get("r_tau") or 0.0) >= until for s in got)
            docs.update(more)
            dreamt += got
            refs = {"replayed": batch.replayed, "check": stack.task.check, "accept": accept}
            new_pairs, data, _ = sessions_to_pairs(
                [*batch.sessions, *dreamt], docs, cfg, stack.task, known, **refs
            )
            rows.append(
                {
                    "round": r,
                    "questions": len(questions),
                    "solved": solved,
                    **checked,  # refuted, further, backtracked
                    "n": c.dream_n,
                    **data,
                    "trained": data["a_good"] != trusted,  # a candidate trained on this set
                }
            )
            if data["a_good"] == trusted:  # nothing new the gate trusts: the last candidate stands
                log(
                    f"sleep: dream {r}: {len(questions)} questions, nothing new trusted; dreams end"
                )
                break
            trusted = data["a_good"]
            log(
                f"sleep: dream {r}: {len(questions)} unsolved questions x {c.dream_n} in "
                f"{time.time() - t0:.0f} s, {solved} solved, {checked['refuted']} refuted by a reference "
                f"answer ({checked['further']} put right one step further, "
                f"{checked['backtracked']} by a retry before the step the PRM doubted); "
                f"with the sessions A_good {data['a_good']} -> {data['new_pairs']} pairs"
            )
            nxt = out.with_name(f"{out.name}.round{r}")
            del engine  # the dream's model, before the next one trains
            train = train_candidate(cfg, method, batch, new_pairs, nxt, log, known, start)
            log(f"sleep: trained {nxt.name}: loss {train['first_loss']:.3f} -> {train['loss']:.3f}")
            if last is not None:
                shutil.rmtree(last, ignore_errors=True)
            # kept for later replay: the dreams the gate can trust (R(τ) at its bar)
            learned = [d for d in dreamt if (d.get("r_tau") or 0.0) >= c.min_r_tau]
            last = nxt
    except BaseException:  # a failed or cancelled sleep leaves no round behind
        for r in range(rounds + 1):
            shutil.rmtree(out.with_name(f"{out.name}.round{r}"), ignore_errors=True)
        raise
    if last is None:
        raise ValueError("no supervised pairs: nothing passed the PRM gate, nor did any dream")
    if last != out:
        last.rename(out)
        train = {**train, "path": str(out)}
    return train, rows, learned


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
    current = services.registry.current()
    if stack.model_version.name != current.name:
        raise ValueError(
            f"a sleep consolidates the current version ({current.name}), not {stack.model_version.name}"
        )
    known = KnownSkills(task, memory, cfg, stack.engine.format)
    # A session whose answer the task's reference refutes teaches nothing, however the PRM
    # scored it (its question stays open for the dreams).
    accept = reference_check(task, [*batch.sessions, *batch.replayed])
    refs = {"replayed": batch.replayed, "check": task.check, "accept": accept}
    pairs, data, good = sessions_to_pairs(batch.sessions, batch.doc_texts, cfg, task, known, **refs)
    log(
        f"sleep: {data['sessions']} sessions ({data['refuted_sessions']} refuted by a reference "
        f"answer) -> {data['artifacts']} artifacts, A_good "
        f"{data['a_good']} -> {data['new_pairs']} pairs (+ replay: {data['pairs']})"
    )
    # Step-level retention: the world's episodes, else the frozen suite earlier sleeps taught.
    episodes = retention_episodes(task.world, k_docs=cfg.rgr.top_k) if task.world else None
    suite = RetentionSuite.of(cfg)
    trusted = [] if task.world else suite.steps()
    new_qs, retention_qs = batch.new_questions, batch.retention_questions
    # Every skill earlier sleeps taught is measured too, and bars a candidate at its best.
    ledger = SkillLedger.of(cfg)
    learned = ledger.skills()
    skill_qs = skill_questions(learned, question_index(task))
    measure = {"episodes": episodes, "check": task.check, "trusted": trusted, "skills": skill_qs}
    before = evaluate_version(cfg, stack.engine, memory, new_qs, retention_qs, **measure)
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
    )
    # The configured engine (HF, or vLLM on a GPU), under a name no other sleep used: vLLM
    # caches adapters and weights by name.
    cand = build_engine(cfg, f"candidate-{out.name}", out)
    after = evaluate_version(cfg, cand, memory, new_qs, retention_qs, **measure)
    # Teacher-forced logits need the model in this process (HF); vLLM keeps it in its workers.
    both_local = isinstance(stack.engine, HFEngine) and isinstance(cand, HFEngine)
    kl = kl_base_candidate(stack.engine, cand, pairs[:256]) if both_local and pairs else None
    # How far the candidate moved from the current version on the new skill's own prompts: an
    # early warning of forgetting (RL's Razor), recorded with every sleep.
    fresh = subplan_pairs(good, known.format)[:256]
    kl_new = kl_base_candidate(stack.engine, cand, fresh) if both_local and fresh else None
    rolled_back = {v["name"] for v in services.registry.list() if v["status"] == "rolled_back"}
    best = ledger.best(lambda version: version not in rolled_back, conditions)
    ok, reason = decide(before, after, cfg.consolidate.retention_tolerance, best)
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
