"""What a sleep learns from: supervised (prompt, next step) pairs built from sessions.

Sessions are scored by the PRM where serving has not yet; users' corrected steps become trusted
sessions; f(τ) extracts artifacts and the PRM gate keeps A_good; its subplans are rendered in the
model's step format and mixed with replay (sessions earlier sleeps consumed, and episodes of the
families the model was built on) so that learning the new does not erase the old.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from cls_ray.answers import EXACT, AnswerCheck
from cls_ray.consolidate.extract import Artifact, extract, gate
from cls_ray.model.examples import episode_pair
from cls_ray.ports import Retriever, Scorer
from cls_ray.prm.labels import evidence_for
from cls_ray.rgr import step_query
from cls_ray.steps import parse_answer, render_prompt
from cls_ray.world.core import World
from cls_ray.world.episodes import EpisodeSampler


def subplan_pairs(artifacts: Sequence[Artifact], template: str = "compact", tokenizer=None):
    """(prompt, target) for each gated subplan, in the model's step format."""
    return [
        (
            render_prompt(
                template, tokenizer, a.content["question"], a.content["docs"], a.content["steps"]
            ),
            a.content["next"],
        )
        for a in artifacts
        if a.kind == "subplan"
    ]


def replay_pairs(world: World, n: int, k_docs: int, seed: int = 0) -> list[tuple[str, str]]:
    """`n` episodes of the families the model already knows, as bootstrap drew them."""
    if n <= 0:
        return []
    sampler = EpisodeSampler(world, world.trained_families, k_docs)
    rng = random.Random(seed)
    return [episode_pair(sampler.sample(rng)) for _ in range(n)]


def mix(new: list, replay: list, replay_ratio: float, seed: int = 0) -> list:
    """`new` plus enough of `replay` that replay is `replay_ratio` of the result, shuffled."""
    if not 0 <= replay_ratio < 1:
        raise ValueError("replay_ratio must be in [0, 1)")
    want = round(len(new) * replay_ratio / (1 - replay_ratio))
    out = list(new) + list(replay[:want])
    random.Random(seed).shuffle(out)
    return out


GateMode = Literal["prm", "none", "outcome"]


def sessions_to_pairs(
    sessions: Sequence[dict],
    doc_texts: dict[str, str],
    cfg,
    world: World,
    gate_mode: GateMode = "prm",
    gold: dict[str, Sequence[str]] | None = None,
    replayed: Sequence[dict] = (),
    check: AnswerCheck = EXACT,
) -> tuple[list[tuple[str, str]], dict, list]:
    """Supervised pairs from sessions: f(τ), a gate, replay mixed in. Returns the pairs, their
    counts and A_good.

    `gate_mode` "prm" keeps what the PRM trusts (the system's gate); "none" keeps every step;
    "outcome" keeps every step of the sessions whose answer `check` accepts against `gold`
    (question → answers),
    ignoring the steps (the ablation's baselines). `replayed` sessions (consumed by earlier
    sleeps, kept by the buffer) replay what those sleeps taught, ahead of the episodes the model
    was built on."""
    c = cfg.consolidate
    if gate_mode == "outcome":
        gold = gold or {}
        sessions = [
            s
            for s in sessions
            if s["question"] in gold and check(s.get("answer"), gold[s["question"]])
        ]
    floor = c.min_step_score if gate_mode == "prm" else 0.0
    arts = [
        a for s in sessions for a in extract(s, doc_texts, world.entities.get, min_step_score=floor)
    ]
    if gate_mode == "prm":
        good = gate(arts, c.min_r_tau, c.min_step_score)
    else:
        good = gate(arts, 0.0, 0.0)
    new = subplan_pairs(good, cfg.model.template)
    old = subplan_pairs(
        gate(
            [a for s in replayed for a in extract(s, doc_texts, world.entities.get)],
            c.min_r_tau,
            c.min_step_score,
        ),
        cfg.model.template,
    )
    random.Random(c.seed).shuffle(old)
    want = round(len(new) * c.replay_ratio / (1 - c.replay_ratio)) if c.replay_ratio else 0
    old = old[: want // 2]  # at most half the replay: the built skills stay in it
    replay = old + replay_pairs(world, len(new) * 4, cfg.rgr.top_k, c.seed)
    pairs = mix(new, replay, c.replay_ratio, c.seed)
    stats = {
        "gate": gate_mode,
        "sessions": len(sessions),
        "artifacts": len(arts),
        "a_good": len(good),
        "new_pairs": len(new),
        "pairs": len(pairs),
        "replayed_session_pairs": len(old),
        "patterns": sum(a.kind == "pattern" for a in good),
    }
    return pairs, stats, good


def score_sessions(prm: Scorer, sessions: Sequence[dict], doc_texts: dict[str, str]) -> list[dict]:
    """Sets the PRM's step scores and R(τ) on every session that has none; returns those."""
    unscored = [s for s in sessions if s.get("r_tau") is None]
    if not unscored:
        return []
    items = []
    for s in unscored:
        steps = [st["text"] for st in s["steps"]]
        docs = [[doc_texts.get(r["id"], "") for r in st["retrieved"]] for st in s["steps"]]
        evidence = [evidence_for(x, d) for x, d in zip(steps, docs, strict=True)]
        items.append((s["question"], steps, evidence))
    for s, scores in zip(unscored, prm.score_many(items), strict=True):
        s["prm_step_scores"], s["r_tau"] = list(scores), prm.r_tau(scores)
        s["prm_version"] = Path(prm.path or "prm").name
    return unscored


def corrected_sessions(sessions: Sequence[dict], retriever: Retriever, top_k: int):
    """Users' corrected steps as trusted sessions: each corrected chain, with the documents RGR
    retrieves for it step by step, scored 1.0 (a person vouched for it). Returns the sessions
    and the texts of what they retrieved."""
    out, docs = [], {}
    for s in sessions:
        fixed = next(
            (
                fb["corrected_steps"]
                for fb in reversed(s.get("feedback") or [])
                if fb.get("corrected_steps")
            ),
            None,
        )
        if not fixed:
            continue
        queries = [step_query(s["question"], fixed[:i]) for i in range(len(fixed))]
        got = retriever.retrieve(queries, top_k)
        steps = []
        for text, q, hits in zip(fixed, queries, got, strict=True):
            answer = parse_answer(text) is not None
            docs.update({d.id: d.text for d in hits})
            steps.append(
                {
                    "text": text,
                    "query": q,
                    "retrieved": [] if answer else [{"id": d.id, "score": d.score} for d in hits],
                    "cited": [],
                    "token_ids": [],
                    "logprobs": [],
                    "is_answer": answer,
                }
            )
        out.append(
            {
                **s,
                "id": f"{s['id']}-corrected",
                "steps": steps,
                "answer": parse_answer(fixed[-1]),
                "model_version": "human",
                "prm_step_scores": [1.0] * len(steps),
                "r_tau": 1.0,
                "prm_version": "human",
                "feedback": [],
            }
        )
    return out, docs
