"""One sleep: trusted sessions → f(τ) → PRM gate → LoRA SFT with replay → a candidate version,
evaluated on the new families and on a frozen retention suite, promoted only if it does not
forget.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from cls_ray.consolidate.extract import extract, gate
from cls_ray.consolidate.sft import mix, replay_pairs, subplan_pairs, train_sft

logger = logging.getLogger(__name__)


def greedy_accuracy(engine, retriever, questions, by_hops: dict | None = None, **rgr_options):
    """Share of `questions` greedy RGR answers right; `by_hops`, when given, receives the
    share per number of hops."""
    from cls_ray.rgr import run_rgr
    from cls_ray.world.verifier import normalize_answer

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


def kl_base_candidate(base, candidate, pairs: Sequence[tuple[str, str]]) -> float:
    """Mean per-token KL(base ‖ candidate) over the target tokens of `pairs` (teacher-forced):
    how far the candidate moved on the new task's prompts."""
    import torch

    from cls_ray.model.bootstrap import encode_examples

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


GateMode = Literal["prm", "none", "outcome"]


def sessions_to_pairs(
    sessions: Sequence[dict],
    doc_texts: dict[str, str],
    cfg,
    world,
    gate_mode: GateMode = "prm",
    gold: dict[str, str] | None = None,
    replayed: Sequence[dict] = (),
) -> tuple[list[tuple[str, str]], dict, list]:
    """Supervised pairs from sessions: f(τ), a gate, replay mixed in. Returns the pairs, their
    counts and A_good.

    `gate_mode` "prm" keeps what the PRM trusts (the system's gate); "none" keeps every step;
    "outcome" keeps every step of the sessions whose answer matched `gold` (question → answer),
    ignoring the steps (the ablation's baselines). `replayed` sessions (consumed by earlier
    sleeps, kept by the buffer) replay what those sleeps taught, ahead of the episodes the model
    was built on."""
    from cls_ray.world.verifier import normalize_answer

    c = cfg.consolidate
    if gate_mode == "outcome":
        gold = gold or {}
        sessions = [
            s
            for s in sessions
            if s["question"] in gold
            and normalize_answer(s.get("answer") or "") == normalize_answer(gold[s["question"]])
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


def score_sessions(prm, sessions: Sequence[dict], doc_texts: dict[str, str]) -> list[dict]:
    """Sets the PRM's step scores and R(τ) on every session that has none; returns those."""
    from cls_ray.prm.labels import evidence_for

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


def corrected_sessions(sessions: Sequence[dict], retriever, top_k: int):
    """Users' corrected steps as trusted sessions: each corrected chain, with the documents RGR
    retrieves for it step by step, scored 1.0 (a person vouched for it). Returns the sessions
    and the texts of what they retrieved."""
    from cls_ray.rgr import step_query
    from cls_ray.steps import parse_answer

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


def question_index(world) -> dict:
    """Question text → the world's question, for every family and split."""
    out = {q.text: q for q in world.questions("train", per_family=10**6)}
    out.update({q.text: q for q in world.questions("heldout", per_family=10**6)})
    return out


def retention_episodes(world, n: int = 256, k_docs: int = 5, seed: int = 12345):
    """The frozen step-level retention suite: `n` next-step episodes of the families the model
    was built on, always the same for a world."""
    import random

    from cls_ray.world.episodes import EpisodeSampler

    sampler = EpisodeSampler(world, world.trained_families, k_docs)
    rng = random.Random(seed)
    return [sampler.sample(rng) for _ in range(n)]


def evaluate_version(
    cfg, engine, retriever, new_qs, retention_qs, episodes=None, patterns: bool = False
) -> dict:
    """Greedy RGR accuracy on the new families and on the retention questions, and grounded
    next-step accuracy on the retention episodes (more sensitive to small losses). `patterns`
    lets RGR follow episodic procedures (off: what the weights alone do)."""
    from cls_ray.model.bootstrap import greedy_step_accuracy

    opts = {**cfg.rgr_options(), "patterns": patterns}
    hops: dict = {}
    out = {
        "new_family": greedy_accuracy(engine, retriever, new_qs, hops, **opts),
        "new_family_by_hops": hops,
        "retention": greedy_accuracy(engine, retriever, retention_qs, **opts),
    }
    if episodes:
        out["retention_steps"] = greedy_step_accuracy(
            engine.model, engine.tokenizer, episodes, grounded=True
        )
    return out


def decide(before: dict, after: dict, tolerance: float) -> tuple[bool, str]:
    """Promote only if no retention measure drops by more than `tolerance`."""
    for key in ("retention", "retention_steps"):
        if key in before and key in after:
            drop = before[key] - after[key]
            if drop > tolerance:
                return False, f"{key} fell {drop:.3f} (> {tolerance:.3f} allowed)"
    drop = before["retention"] - after["retention"]
    return True, f"retention change {-drop:+.3f}, new family {after['new_family']:.3f}"


Method = Literal["sft", "ppo"]


def train_candidate(cfg, method: Method, sessions, doc_texts, pairs, out: Path, log, world) -> dict:
    """The slow path: an adapter trained on the gated pairs (SFT) or on the scored sessions'
    step rewards with replay (PPO-ptx)."""
    if method == "ppo":
        from cls_ray.consolidate.ppo import experience_rows, train_ppo

        c = cfg.consolidate
        rows = experience_rows(
            sessions, doc_texts, cfg.model.template, c.ppo_reward_offset, cfg.rgr.grounded
        )
        replay = replay_pairs(world, 4 * len(rows), cfg.rgr.top_k, c.seed)
        log(f"ppo: {len(rows)} scored trajectories, {len(replay)} replayed pairs for ptx")
        return train_ppo(cfg, rows, out, replay=replay)
    return train_sft(cfg, pairs, out)


def fast_path(retriever, stack, good) -> list:
    """Indexes the procedures of A_good in the episodic collection (through the serving
    retriever when it is given, so the very next request follows them); returns them."""
    from cls_ray.consolidate.episodic import fold_patterns, index_patterns

    pats = fold_patterns(good)
    if hasattr(retriever, "add_patterns"):
        retriever.add_patterns([p.text for p in pats])
    else:
        index_patterns(stack.store, stack.embedder, pats)
    return pats


def publish(cfg, out: Path) -> str:
    """Where replicas load a trained version from: its folder, or (with `storage.uri`) a copy
    in the storage, uploaded whole before the version is registered."""
    store = cfg.artifacts
    return str(out) if store is None else store.put_dir(out, out.name)


def version_kind(cfg, method: str) -> str:
    """What a consolidation registers: a LoRA adapter, or a full checkpoint (SFT, `weights:
    full`)."""
    return "full" if method == "sft" and cfg.consolidate.weights == "full" else "lora"


def sleep_once(
    cfg,
    stack,
    sessions: Sequence[dict],
    doc_texts: dict[str, str],
    new_qs,
    retention_qs,
    out: Path | None = None,
    log: Callable[[str], None] = logger.info,
    promote: bool = True,
    method: Method = "sft",
    retriever=None,
    index: bool = True,
    broadcast: Callable[[str, str], object] | None = None,
    replayed: Sequence[dict] = (),
) -> dict:
    """Trains a candidate on `sessions`, registers it with its metrics, promotes it if it keeps
    what the model knew. Returns the report.

    Before any weight changes, the procedures of A_good go to the episodic collection (the fast
    path, `index`); the candidate is then measured on what its weights alone do. `retriever`
    (default: the stack's) is how memory is read, e.g. through the serving deployment;
    `broadcast(name, reason)`, when given, promotes by pushing the version to the replicas."""
    from actors.deploy import registry_for
    from cls_ray.engine.hf import HFEngine

    retriever = retriever or stack.retriever
    pairs, data, good = sessions_to_pairs(sessions, doc_texts, cfg, stack.world, replayed=replayed)
    log(
        f"sleep: {data['sessions']} sessions -> {data['artifacts']} artifacts, A_good "
        f"{data['a_good']} -> {data['new_pairs']} pairs (+ replay: {data['pairs']})"
    )
    reg = registry_for(cfg)
    current = reg.current()
    episodes = retention_episodes(stack.world, k_docs=cfg.rgr.top_k)
    before = evaluate_version(cfg, stack.engine, retriever, new_qs, retention_qs, episodes)
    fast = None
    if index:
        pats = fast_path(retriever, stack, good)
        fast = greedy_accuracy(
            stack.engine, retriever, new_qs, **{**cfg.rgr_options(), "patterns": True}
        )
        log(f"sleep: {len(pats)} procedures indexed; new family with them {fast:.3f}")
    out = out or cfg.state_path / "adapters" / f"{method}-{int(time.time())}"
    train = train_candidate(cfg, method, sessions, doc_texts, pairs, out, log, stack.world)
    log(f"sleep: trained {out.name}: loss {train['first_loss']:.3f} -> {train['loss']:.3f}")
    cand = HFEngine.from_config(cfg, "candidate", out)
    after = evaluate_version(cfg, cand, retriever, new_qs, retention_qs, episodes)
    kl = kl_base_candidate(stack.engine, cand, pairs[:256])
    ok, reason = decide(before, after, cfg.consolidate.retention_tolerance)
    metrics = {
        "method": method,
        "new_family_before": before["new_family"],
        "new_family_after": after["new_family"],
        "new_family_fast_path": fast,
        "new_family_by_hops_before": before["new_family_by_hops"],
        "new_family_by_hops_after": after["new_family_by_hops"],
        "retention_before": before["retention"],
        "retention_after": after["retention"],
        "retention_steps_before": before.get("retention_steps"),
        "retention_steps_after": after.get("retention_steps"),
        "kl_base_candidate": kl,
        "train": train,
        "data": data,
    }
    v = reg.register(
        publish(cfg, out), version_kind(cfg, method), parent=current.name, metrics=metrics
    )
    if ok and promote:
        if broadcast is not None:
            broadcast(v.name, reason)
        else:
            reg.promote(v.name, reason=reason)
    else:
        reg.annotate(v.name, reason if not ok else f"not promoted (measured only): {reason}")
    log(f"sleep: {v.name} {'passes' if ok else 'fails'} the retention gate: {reason}")
    return {
        **metrics,
        "version": v.name,
        "passes_gate": ok,
        "promoted": ok and promote,
        "reason": reason,
    }


def sessions_by_best_of_n(stack, prm, questions, n: int, seed: int = 0):
    """Simulated users' sessions on `questions`: the model samples `n` trajectories with RGR and
    the PRM keeps the best (the way to find good trajectories for a family the model cannot
    solve greedily). Returns session dicts (scored) and the texts of every retrieved document."""
    from cls_ray.prm.best_of_n import rgr_best_of_n
    from cls_ray.session import Session

    cfg = stack.cfg
    best = rgr_best_of_n(
        [q.text for q in questions],
        stack.engine,
        stack.retriever,
        prm.score_many,
        n,
        temperature=cfg.prm.sample_temperature,
        seed=seed,
        aggregation=cfg.prm.aggregation,
        **cfg.rgr_options(),
    )
    sessions, docs = [], {}
    for tr, scores, tau in best:
        s = Session.from_trajectory(tr)
        s.prm_step_scores, s.r_tau = list(scores), tau
        sessions.append(s.model_dump())
        for st in tr.steps:
            docs.update({d.id: d.text for d in st.retrieved})
    return sessions, docs


def corrupt_sessions(sessions: Sequence[dict], world, share: float, top_k: int, seed: int = 0):
    """Copies of `sessions` in which `share` of them follow a wrong chain that still reaches a
    plausible answer: half keep the right answer (right for the wrong reasons), half end on the
    wrong chain's answer. A wrong step that is a world fact retrieved its own document (it looks
    grounded). Corrupted sessions carry no scores and no behaviour log-probs. Returns the
    sessions, the texts of the documents added, and how many were corrupted."""
    import copy
    import random

    from cls_ray.prm.labels import Corruptor
    from cls_ray.steps import answer_step, parse_answer

    rng = random.Random(seed)
    index = question_index(world)
    corruptor = Corruptor(world)
    facts = {d.text: d for d in world.documents}
    out = [copy.deepcopy(s) for s in sessions]
    chosen = rng.sample(range(len(out)), round(share * len(out)))
    docs: dict[str, str] = {}
    n = 0
    for j in chosen:
        s, q = out[j], index.get(out[j]["question"])
        if q is None:
            continue
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


def ablation(stack, prm, sessions, docs, new_qs, retention_qs, log) -> list[dict]:
    """The five arms on the same sessions, `consolidate.corrupted_share` of them corrupted:
    SFT gated by the PRM, SFT on everything, SFT on the sessions whose answer was right, PPO
    with the PRM's step rewards, and the episodic path alone (procedures in Milvus, no weight
    change). Every candidate is registered with its metrics, none promoted."""
    from actors.deploy import registry_for
    from cls_ray.engine.hf import HFEngine

    cfg, world = stack.cfg, stack.world
    c = cfg.consolidate
    mixed, more, n_bad = corrupt_sessions(sessions, world, c.corrupted_share, cfg.rgr.top_k, c.seed)
    docs = {**docs, **more}
    score_sessions(prm, mixed, docs)
    gold = {q.text: q.answer for q in question_index(world).values()}
    log(f"ablation: {n_bad} of {len(mixed)} sessions corrupted and scored by the PRM")
    episodes = retention_episodes(world, k_docs=cfg.rgr.top_k)
    reg = registry_for(cfg)
    rows = []
    stamp = int(time.time())
    for arm, method, gate_mode in (
        ("sft_prm_gated", "sft", "prm"),
        ("sft_ungated", "sft", "none"),
        ("sft_outcome_only", "sft", "outcome"),
        ("ppo_step_rewards", "ppo", "prm"),
    ):
        pairs, data, _ = sessions_to_pairs(mixed, docs, cfg, world, gate_mode, gold)
        log(f"ablation {arm}: {data['new_pairs']} pairs from {data['sessions']} sessions")
        out = cfg.state_path / "adapters" / f"ablation-{stamp}-{arm}"
        train = train_candidate(cfg, method, mixed, docs, pairs, out, log, world)
        cand = HFEngine.from_config(cfg, arm, out)
        after = evaluate_version(cfg, cand, stack.retriever, new_qs, retention_qs, episodes)
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
    _, data, good = sessions_to_pairs(mixed, docs, cfg, world, "prm")
    with scratch_procedures(stack) as retriever:
        pats = fast_path(retriever, stack, good)
        after = evaluate_version(
            cfg, stack.engine, retriever, new_qs, retention_qs, episodes, patterns=True
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


class scratch_procedures:  # noqa: N801 (a context manager used like a function)
    """The episodic collection as it was before the block: procedures a measurement indexes
    are removed, and those it replaced come back."""

    def __init__(self, stack):
        self.stack = stack

    def __enter__(self):
        store = self.stack.store
        self.before = set(_episodic_ids(store))
        self.saved = store.get(sorted(self.before), "episodic") if self.before else {}
        return self.stack.retriever

    def __exit__(self, *exc):
        from cls_ray.consolidate.episodic import index_patterns, parse_pattern

        store = self.stack.store
        added = [i for i in _episodic_ids(store) if i not in self.before]
        store.delete(added, "episodic")
        pats = [p for p in map(parse_pattern, self.saved.values()) if p is not None]
        index_patterns(store, self.stack.embedder, pats)
        return False


def _episodic_ids(store) -> list[str]:
    rows = store._call("query", store.name("episodic"), filter='id != ""', output_fields=["id"])
    return [r["id"] for r in rows]


def bench_consolidation(
    stack, prm, log: Callable[[str], None] = logger.info, arms: bool = True
) -> dict:
    """One sleep on sessions of the held-back family, measured (not promoted), then the
    ablation arms on the same sessions with some corrupted. The episodic collection is left as
    it was."""
    cfg, world = stack.cfg, stack.world
    c = cfg.consolidate
    train_qs = world.questions("train", world.held_back_families, per_family=c.new_per_family)
    log(
        f"bench consolidation: {len(train_qs)} sessions of the held-back family, best of {c.sample_n}"
    )
    sessions, docs = sessions_by_best_of_n(stack, prm, train_qs, c.sample_n, c.seed)
    new_qs = world.questions("heldout", world.held_back_families, per_family=c.eval_per_family)
    retention_qs = world.questions("heldout", world.trained_families, per_family=c.eval_per_family)
    with scratch_procedures(stack):
        result = sleep_once(
            cfg, stack, sessions, docs, new_qs, retention_qs, log=log, promote=False
        )
    result["new_family_questions"] = len(new_qs)
    result["retention_questions"] = len(retention_qs)
    if arms:
        result["ablation"] = ablation(stack, prm, sessions, docs, new_qs, retention_qs, log)
    return result


def sleep_from_buffer(
    stack,
    prm,
    limit: int,
    log: Callable[[str], None] = logger.info,
    method: Method = "sft",
    retriever=None,
    buffer=None,
    broadcast: Callable[[str, str], object] | None = None,
) -> dict:
    """`cls-ray sleep` / `cls-ray ppo`: the buffer's unconsumed sessions (scored by the PRM
    where the serving stack has not yet), one consolidation, promotion if the candidate keeps
    what the model knew. The sessions are acknowledged (consumed) only when the candidate is
    promoted. PPO adds fresh rollouts of the current model on the sessions' questions."""
    from cls_ray.replay.buffer import ReplayBuffer
    from cls_ray.replay.data import read_leased

    cfg, world = stack.cfg, stack.world
    retriever = retriever or stack.retriever
    buf = buffer or ReplayBuffer(cfg.replay_path, segments=cfg.replay_segments)
    taken = read_leased(buf.lease(limit))  # the sealed segments, read with Ray Data
    if not taken:
        raise ValueError(f"no unconsumed sessions in {cfg.replay_path}")
    c = cfg.consolidate
    replayed = [s.model_dump() for s in buf.replay_sample(c.replay_keep, c.seed)]
    ids = sorted({r["id"] for s in taken + replayed for st in s["steps"] for r in st["retrieved"]})
    doc_texts = _doc_texts(stack, retriever, ids)
    scored = score_sessions(prm, taken, doc_texts)
    for s in scored:
        buf.set_scores(s["id"], s["prm_step_scores"], s["r_tau"], s["prm_version"])
    log(
        f"sleep: {len(taken)} sessions ({len(scored)} scored now), {len(replayed)} consumed "
        "earlier kept for replay"
    )
    index = question_index(world)
    families = sorted({index[s["question"]].family for s in taken if s["question"] in index})
    new_qs = world.questions("heldout", families, per_family=c.eval_per_family) if families else []
    retention_qs = world.questions("heldout", world.trained_families, per_family=c.eval_per_family)
    learn = list(taken)
    fixed, more = corrected_sessions(taken, retriever, cfg.rgr.top_k)
    if fixed:
        doc_texts.update(more)
        learn += fixed
        log(f"sleep: {len(fixed)} sessions corrected by users join as trusted trajectories")
    if method == "ppo" and c.ppo_fresh_per_family:
        from cls_ray.consolidate.ppo import fresh_rollouts

        replay_qs = world.questions("train", families, per_family=c.ppo_fresh_per_family)
        fresh, more = fresh_rollouts(
            stack, prm, [q.text for q in replay_qs], c.ppo_temperature, c.seed, retriever
        )
        doc_texts.update(more)
        learn += fresh
        log(f"ppo: {len(fresh)} fresh rollouts on replayed questions")
    result = sleep_once(
        cfg,
        stack,
        learn,
        doc_texts,
        new_qs,
        retention_qs,
        log=log,
        method=method,
        retriever=retriever,
        broadcast=broadcast,
        replayed=replayed,
    )
    if result["promoted"]:
        result["acknowledged"] = buf.ack([s["id"] for s in taken])
        # The consumed cache is discarded but for the replay sample.
        result["compaction"] = buf.compact(c.replay_keep, c.seed)
    result["families"] = ["-".join(f) for f in families]
    return result


def _doc_texts(stack, retriever, ids: list[str]) -> dict[str, str]:
    if hasattr(retriever, "get_documents"):
        return retriever.get_documents(ids)
    return stack.store.get(ids)
