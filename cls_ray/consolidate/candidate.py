"""The slow path of a sleep: a candidate trained on Ray Train from the gated pairs (SFT) or
the scored sessions' step rewards (PPO), and, with a PRM, trained again on what its dreams
found (`train_with_dreams`). `sleep` decides what goes in and measures what comes out.
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
from cls_ray.consolidate.data import KnownSkills, sessions_to_pairs
from cls_ray.consolidate.dream import dream_questions, dream_round
from cls_ray.consolidate.ppo import experience_rows, train_ppo
from cls_ray.consolidate.promotion import SleepServices
from cls_ray.consolidate.sft import sleep_steps, train_sft
from cls_ray.engine.factory import build_engine
from cls_ray.model.lora import Start
from cls_ray.ports import Scorer
from cls_ray.stack import Stack
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
    trust: Accept | None = None,
):
    """The slow path: an adapter trained on the gated pairs (SFT) or on the scored sessions'
    step rewards with replay (PPO-ptx; an answer the reference check `trust` refutes is
    rewarded as 0)."""
    if method == "ppo":
        c = cfg.consolidate
        rows = experience_rows(
            batch.sessions, batch.doc_texts, known.format, c.ppo.reward_offset, cfg.grounded, trust
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
    *,
    accept: Accept | None,
    trust: Accept | None,
    a_good: int | None = None,
) -> tuple[dict, list[dict], list[dict]]:
    """The candidate of a sleep, written to `out`: trained on the sessions' pairs; then, for
    each of `consolidate.dream_rounds` (SFT, with a PRM), the last candidate (the current
    version, where the gate trusts no session and nothing was trained) asks again the
    sessions' questions no trusted trajectory has solved yet, and the next trains from `start`
    on the sessions and every dream so far, gated alike; dreams end when one adds nothing the
    gate trusts. Dreams are always checked against `accept`, the task's reference check;
    `trust` is the check the gate applies to sessions and dreams (`accept`, or none where
    `consolidate.reference_gate` is off). Returns the last training's metrics, one row per
    dream, and the dreams the last candidate trained on that the gate can trust (what later
    sleeps replay to keep what this one taught)."""
    cfg, c = stack.cfg, stack.cfg.consolidate
    rounds = c.dream_rounds if prm is not None and method == "sft" else 0
    until = c.min_r_tau if c.dream_until is None else c.dream_until
    trusted = a_good
    last: Path | None = out if not rounds else out.with_name(f"{out.name}.round0")
    if pairs or not rounds:
        train = train_candidate(cfg, method, batch, pairs, last, log, known, start, trust)
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
            refs = {"replayed": batch.replayed, "check": stack.task.check, "accept": trust}
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
