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

from cls_ray.answers import EXACT, Accept, AnswerCheck
from cls_ray.consolidate.evaluate import question_index
from cls_ray.consolidate.extract import Artifact, extract, gate
from cls_ray.model.examples import episode_pair
from cls_ray.ports import Retriever, Scorer
from cls_ray.prm.labels import evidence_for
from cls_ray.replay.sampling import balanced
from cls_ray.rgr import step_query
from cls_ray.session import Feedback
from cls_ray.steps import StepFormat, answer_step, cite, parse_answer
from cls_ray.task import Task
from cls_ray.world.core import World
from cls_ray.world.episodes import EpisodeSampler


def subplan_pairs(artifacts: Sequence[Artifact], fmt: StepFormat):
    """(prompt, target) for each gated subplan, in the model's step format."""
    return [
        (
            fmt.render(a.content["question"], a.content["docs"], a.content["steps"]),
            a.content["next"],
        )
        for a in artifacts
        if a.kind == "subplan"
    ]


def replay_pairs(
    world: World, n: int, k_docs: int, seed: int = 0, fmt: StepFormat | None = None
) -> list[tuple[str, str]]:
    """`n` episodes of the families the model already knows, as bootstrap drew them, in the
    model's step format (the compact one by default)."""
    if n <= 0:
        return []
    sampler = EpisodeSampler(world, world.trained_families, k_docs)
    rng = random.Random(seed)
    if fmt is None or fmt.template == "compact":
        return [episode_pair(sampler.sample(rng)) for _ in range(n)]
    eps = [sampler.sample(rng) for _ in range(n)]
    return [(fmt.render(e.question, e.docs, e.steps), e.target) for e in eps]


class KnownSkills:
    """Replay of what the model already knows, `take(n)` pairs at a time: bootstrap episodes on
    the world; elsewhere the gold chains of the task's `train` questions outside its new groups
    (`gold_chain_pairs`: each gold step with the documents RGR retrieves before it)."""

    def __init__(
        self, task: Task, memory: Retriever | None, cfg, fmt: StepFormat, max_questions: int = 2000
    ):
        self.task, self.cfg, self.memory = task, cfg, memory
        self.format = fmt
        self.pool: list[tuple[str, str]] = []
        self._todo: list = []
        if task.world is not None or memory is None:
            return
        new = set(task.new_groups)
        qs = [q for q in task.questions("train") if q.group not in new]
        rng = random.Random(cfg.consolidate.seed)
        self._todo = rng.sample(qs, min(len(qs), max_questions))
        self._rng = rng

    def take(self, n: int) -> list[tuple[str, str]]:
        if self.task.world is not None:
            c = self.cfg.consolidate
            return replay_pairs(self.task.world, n, self.cfg.rgr.top_k, c.seed, self.format)
        # Built as far as asked, a chunk of questions at a time (one batched search per step).
        while len(self.pool) < n and self._todo:
            chunk, self._todo = self._todo[:256], self._todo[256:]
            more = gold_chain_pairs(
                chunk, self.memory, self.format, self.cfg.rgr.top_k, self.cfg.rgr.exclude_cited
            )
            self._rng.shuffle(more)
            self.pool.extend(more)
        return self.pool[: max(0, n)]


def gold_chain_pairs(
    questions: Sequence, retriever: Retriever, fmt: StepFormat, top_k: int, exclude_cited: bool
) -> list[tuple[str, str]]:
    """(prompt, next gold step) for every step of the questions' gold chains (their answer
    last), in the context serving gives that step: the documents RGR retrieves for the
    reasoning so far, among them the look-alikes it has to tell apart, not only the gold
    support. A step whose context does not hold what it restates is left out: RGR could not
    have taken it from there."""
    chains = [[*q.steps, answer_step(q.answer)] for q in questions]
    cited: list[set[str]] = [set() for _ in chains]
    out: list[tuple[str, str]] = []
    for i in range(max((len(c) for c in chains), default=0)):
        live = [j for j, c in enumerate(chains) if len(c) > i]
        queries = [step_query(questions[j].question, chains[j][:i]) for j in live]
        got = retriever.retrieve(
            queries, top_k, [cited[j] for j in live] if exclude_cited else None
        )
        for j, hits in zip(live, got, strict=True):
            texts, step = [d.text for d in hits], chains[j][i]
            found = cite(step, texts)
            cited[j] |= {hits[x].id for x in found}
            if found or parse_answer(step) is not None:
                out.append((fmt.render(questions[j].question, texts, chains[j][:i]), step))
    return out


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
    task: Task,
    known: KnownSkills,
    gate_mode: GateMode = "prm",
    gold: dict[str, Sequence[str]] | None = None,
    replayed: Sequence[dict] = (),
    check: AnswerCheck = EXACT,
    accept: Accept | None = None,
) -> tuple[list[tuple[str, str]], dict, list]:
    """Supervised pairs from sessions: f(τ), a gate, replay mixed in. Returns the pairs, their
    counts and A_good.

    `gate_mode` "prm" keeps what the PRM trusts (the system's gate); "none" keeps every step;
    "outcome" keeps every step of the sessions whose answer `check` accepts against `gold`
    (question → answers),
    ignoring the steps (the ablation's baselines). `replayed` sessions (consumed by earlier
    sleeps, kept by the buffer) replay what those sleeps taught, ahead of what the model was
    built on (`known`). Patterns type their entities where the task knows them (the world).
    `accept(question, answer)` (gate "prm"; the sleep passes it where
    `consolidate.reference_gate` is on): a session or replayed session whose answer it refutes
    is left out (the reference outranks the PRM)."""
    c = cfg.consolidate
    if gate_mode == "outcome":
        gold = gold or {}
        sessions = [
            s
            for s in sessions
            if s["question"] in gold and check(s.get("answer"), gold[s["question"]])
        ]
    asked = len(sessions)
    if gate_mode == "prm" and accept is not None:
        sessions = [s for s in sessions if accept(s["question"], s.get("answer"))]
        replayed = [s for s in replayed if accept(s["question"], s.get("answer"))]
    floor = c.min_step_score if gate_mode == "prm" else 0.0
    type_of = task.world.entities.get if task.world is not None else None
    arts = [a for s in sessions for a in extract(s, doc_texts, type_of, min_step_score=floor)]
    if gate_mode == "prm":
        good = gate(arts, c.min_r_tau, c.min_step_score)
    else:
        good = gate(arts, 0.0, 0.0)
    new = subplan_pairs(good, known.format)
    if c.balance_up_to > 1:
        new = balance_groups(good, group_of(task, sessions), known.format, c.balance_up_to, c.seed)
    replay_good = gate(
        [a for s in replayed for a in extract(s, doc_texts, type_of)],
        c.min_r_tau,
        c.min_step_score,
    )
    # What earlier sleeps taught, an equal share per group (family) of the replayed sessions:
    # the first skill learned stays in the replay however much later ones bring.
    group = group_of(task, replayed)
    tagged = [
        (group.get(a.session_id, ""), p)
        for a in replay_good
        for p in subplan_pairs([a], known.format)
    ]
    want = round(len(new) * c.replay_ratio / (1 - c.replay_ratio)) if c.replay_ratio else 0
    # at most half the replay: the built skills stay in it
    old = [p for _, p in balanced(tagged, lambda t: t[0], want // 2, c.seed)]
    random.Random(c.seed).shuffle(old)
    replay = old + known.take(len(new) * 4)
    pairs = mix(new, replay, c.replay_ratio, c.seed)
    stats = {
        "gate": gate_mode,
        "sessions": asked,
        "refuted_sessions": asked - len(sessions),
        "artifacts": len(arts),
        "a_good": len(good),
        "new_pairs": len(new),
        "pairs": len(pairs),
        "replayed_session_pairs": len(old),
        "patterns": sum(a.kind == "pattern" for a in good),
    }
    return pairs, stats, good


def balance_groups(
    good: Sequence[Artifact], group: dict[str, str], fmt: StepFormat, up_to: int, seed: int = 0
) -> list[tuple[str, str]]:
    """The subplan pairs of `good`, those of each group (the task's group of the session's
    question) repeated towards the largest group's count, each at most `up_to` times in all:
    the groups the sessions solved least (a multi-hop shape best of N rarely finds) are not
    drowned by those they solved most."""
    by: dict[str, list[tuple[str, str]]] = {}
    for a in good:
        by.setdefault(group.get(a.session_id, ""), []).extend(subplan_pairs([a], fmt))
    most = max((len(v) for v in by.values()), default=0)
    out: list[tuple[str, str]] = []
    for pairs in by.values():
        want = min(most, up_to * len(pairs))
        out += [pairs[i % len(pairs)] for i in range(want)]
    random.Random(seed).shuffle(out)
    return out


def group_of(task: Task, sessions: Sequence[dict]) -> dict[str, str]:
    """Session id → the task's group of its question ("" where the task does not know it)."""
    index = question_index(task)
    return {s["id"]: index[s["question"]].group if s["question"] in index else "" for s in sessions}


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
    """Corrected steps as sessions of their own, with the documents RGR retrieves for each step.
    A curator's (or admin's) correction is trusted: scored 1.0, it joins A_good as given. Any
    other correction is evidence, not truth: it comes unscored (`model_version` "user"), and
    the PRM scores and the gate judge it like any trajectory. Returns the sessions and the
    texts of what they retrieved."""
    out, docs = [], {}
    for s in sessions:
        fb = next((f for f in reversed(s.get("feedback") or []) if f.get("corrected_steps")), None)
        if fb is None:
            continue
        fixed, trusted = fb["corrected_steps"], Feedback.model_validate(fb).trusted
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
                "model_version": "human" if trusted else "user",
                "prm_step_scores": [1.0] * len(steps) if trusted else None,
                "r_tau": 1.0 if trusted else None,
                "prm_version": "human" if trusted else None,
                "feedback": [],
            }
        )
    return out, docs
