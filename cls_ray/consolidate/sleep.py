"""One sleep: trusted sessions → f(τ) → PRM gate → LoRA SFT with replay → a candidate version,
evaluated on the new families and on a frozen retention suite, promoted only if it does not
forget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

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


def sessions_to_pairs(
    sessions: Sequence[dict],
    doc_texts: dict[str, str],
    cfg,
    world,
) -> tuple[list[tuple[str, str]], dict]:
    """Supervised pairs from sessions: f(τ), the PRM gate, replay mixed in."""
    arts = [a for s in sessions for a in extract(s, doc_texts, world.entities.get)]
    c = cfg.consolidate
    good = gate(arts, c.min_r_tau, c.min_step_score)
    new = subplan_pairs(good, cfg.model.template)
    pairs = mix(
        new, replay_pairs(world, len(new) * 4, cfg.rgr.top_k, c.seed), c.replay_ratio, c.seed
    )
    stats = {
        "sessions": len(sessions),
        "artifacts": len(arts),
        "a_good": len(good),
        "new_pairs": len(new),
        "pairs": len(pairs),
        "patterns": sum(a.kind == "pattern" for a in good),
    }
    return pairs, stats


def retention_episodes(world, n: int = 256, k_docs: int = 5, seed: int = 12345):
    """The frozen step-level retention suite: `n` next-step episodes of the families the model
    was built on, always the same for a world."""
    import random

    from cls_ray.world.episodes import EpisodeSampler

    sampler = EpisodeSampler(world, world.trained_families, k_docs)
    rng = random.Random(seed)
    return [sampler.sample(rng) for _ in range(n)]


def evaluate_version(cfg, engine, retriever, new_qs, retention_qs, episodes=None) -> dict:
    """Greedy RGR accuracy on the new families and on the retention questions, and grounded
    next-step accuracy on the retention episodes (more sensitive to small losses)."""
    from cls_ray.model.bootstrap import greedy_step_accuracy

    opts = cfg.rgr_options()
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
) -> dict:
    """Trains a candidate on `sessions`, registers it with its metrics, promotes it if it keeps
    what the model knew. Returns the report."""
    from actors.deploy import registry_for
    from cls_ray.engine.hf import HFEngine

    pairs, data = sessions_to_pairs(sessions, doc_texts, cfg, stack.world)
    log(
        f"sleep: {data['sessions']} sessions -> {data['artifacts']} artifacts, A_good "
        f"{data['a_good']} -> {data['new_pairs']} pairs (+ replay: {data['pairs']})"
    )
    reg = registry_for(cfg)
    current = reg.current()
    out = out or cfg.state_path / "adapters" / f"sleep-{int(time.time())}"
    train = train_sft(cfg, pairs, out)
    log(f"sleep: trained {out.name}: loss {train['first_loss']:.3f} -> {train['loss']:.3f}")
    episodes = retention_episodes(stack.world, k_docs=cfg.rgr.top_k)
    before = evaluate_version(cfg, stack.engine, stack.retriever, new_qs, retention_qs, episodes)
    cand = HFEngine.from_config(cfg, "candidate", out)
    after = evaluate_version(cfg, cand, stack.retriever, new_qs, retention_qs, episodes)
    kl = kl_base_candidate(stack.engine, cand, pairs[:256])
    ok, reason = decide(before, after, cfg.consolidate.retention_tolerance)
    metrics = {
        "new_family_before": before["new_family"],
        "new_family_after": after["new_family"],
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
    v = reg.register(str(out), "lora", parent=current.name, metrics=metrics)
    if ok and promote:
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


def bench_consolidation(stack, prm, log: Callable[[str], None] = logger.info) -> dict:
    """One sleep on sessions of the held-back family, measured (not promoted)."""
    cfg, world = stack.cfg, stack.world
    c = cfg.consolidate
    train_qs = world.questions("train", world.held_back_families, per_family=c.new_per_family)
    log(
        f"bench consolidation: {len(train_qs)} sessions of the held-back family, best of {c.sample_n}"
    )
    sessions, docs = sessions_by_best_of_n(stack, prm, train_qs, c.sample_n, c.seed)
    new_qs = world.questions("heldout", world.held_back_families, per_family=c.eval_per_family)
    retention_qs = world.questions("heldout", world.trained_families, per_family=c.eval_per_family)
    result = sleep_once(cfg, stack, sessions, docs, new_qs, retention_qs, log=log, promote=False)
    result["new_family_questions"] = len(new_qs)
    result["retention_questions"] = len(retention_qs)
    return result


def sleep_from_buffer(stack, prm, limit: int, log: Callable[[str], None] = logger.info) -> dict:
    """`cls-ray sleep`: the buffer's unconsumed sessions (scored by the PRM where the serving
    stack has not yet), one sleep, promotion if the candidate keeps what the model knew. The
    sessions are acknowledged (consumed) only when the candidate is promoted."""
    from cls_ray.prm.labels import evidence_for
    from cls_ray.replay.buffer import ReplayBuffer

    cfg, world = stack.cfg, stack.world
    buf = ReplayBuffer(cfg.replay_path)
    taken = [s.model_dump() for s in buf.take(limit)]
    if not taken:
        raise ValueError(f"no unconsumed sessions in {cfg.replay_path}")
    ids = sorted({r["id"] for s in taken for st in s["steps"] for r in st["retrieved"]})
    doc_texts = stack.store.get(ids)
    unscored = [s for s in taken if s.get("r_tau") is None]
    if unscored:
        items = []
        for s in unscored:
            steps = [st["text"] for st in s["steps"]]
            docs = [[doc_texts.get(r["id"], "") for r in st["retrieved"]] for st in s["steps"]]
            evidence = [evidence_for(x, d) for x, d in zip(steps, docs, strict=True)]
            items.append((s["question"], steps, evidence))
        for s, scores in zip(unscored, prm.score_many(items), strict=True):
            s["prm_step_scores"], s["r_tau"] = scores, prm.r_tau(scores)
            buf.set_scores(s["id"], scores, s["r_tau"], Path(prm.path or "prm").name)
    log(f"sleep: {len(taken)} sessions ({len(unscored)} scored now)")
    by_text = {q.text: q for q in world.questions("train", per_family=10**6)}
    by_text.update({q.text: q for q in world.questions("heldout", per_family=10**6)})
    families = sorted({by_text[s["question"]].family for s in taken if s["question"] in by_text})
    c = cfg.consolidate
    new_qs = world.questions("heldout", families, per_family=c.eval_per_family) if families else []
    retention_qs = world.questions("heldout", world.trained_families, per_family=c.eval_per_family)
    result = sleep_once(cfg, stack, taken, doc_texts, new_qs, retention_qs, log=log)
    if result["promoted"]:
        result["acknowledged"] = buf.ack([s["id"] for s in taken])
    result["families"] = ["-".join(f) for f in families]
    return result
