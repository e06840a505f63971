"""Phase 1, PPO with step-level rewards, on Ray Train workers running DeepSpeed.

Experience is scored trajectories, from two sources in one format: stored sessions (the serving
engine's behaviour log-probs kept with each step) and fresh RGR rollouts of the current model on
replayed questions. RGR writes every step from its own prompt (the documents change between
steps), so a trajectory is a list of (prompt, step) sequences. The worker runs each sequence
through the actor (the base with a LoRA adapter) and a value head, then lays the step tokens of
a trajectory end to end: the PRM's step reward sits on each step's last token, every token pays
the KL penalty to the reference (the same model with the adapter disabled), and GAE runs along
that stream, so a step's advantage sees the steps after it. The clipped policy loss weights
stored-session tokens by the truncated importance ratio to the behaviour policy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import ray.train
import torch

from cls_ray.answers import Accept
from cls_ray.consolidate.ppo_core import (
    gae,
    masked_mean,
    masked_whiten,
    min_form,
    place_step_rewards,
    policy_loss,
    token_rewards,
    value_loss,
)
from cls_ray.consolidate.sft import adapter_run, launch_adapter_run
from cls_ray.distributed import deepspeed_steps, gathered
from cls_ray.model.examples import encode_examples
from cls_ray.model.loading import save_version
from cls_ray.model.lora import Start, lora_model
from cls_ray.ports import Retriever, Scorer
from cls_ray.prm.labels import evidence_for
from cls_ray.rgr import run_rgr
from cls_ray.session import Session
from cls_ray.stack import Stack
from cls_ray.steps import StepFormat, grounded_choices


class ActorCritic(torch.nn.Module):
    """The policy (a PEFT model) and a scalar value head on its last hidden state."""

    def __init__(self, policy, hidden_size: int):
        super().__init__()
        self.policy = policy
        self.value_head = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask):
        out = self.policy(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        # The critic reads the actor's features but does not train them: value gradients
        # through a small shared trunk wreck the language model.
        hidden = out.hidden_states[-1].detach().to(self.value_head.weight.dtype)
        values = self.value_head(hidden)
        return out.logits, values.squeeze(-1)


def experience_rows(
    sessions: Sequence[dict],
    doc_texts: dict[str, str],
    fmt: StepFormat,
    reward_offset: float = 0.5,
    grounded: bool = True,
    accept: Accept | None = None,
) -> list[dict]:
    """One row per scored session: (prompt, step) pairs, the step rewards (PRM score minus
    `reward_offset`, so a step the PRM doubts is penalised), the behaviour log-probs of each
    step where the session kept them, and, for `grounded` decoding, the steps the grammar
    allowed at each point (the policy being trained is the constrained one). Where `accept`
    (the task's reference check) refutes a session's answer, its answer step is rewarded as
    a step the PRM scores 0: the reference outranks the PRM, and the session stays a
    negative example."""
    rows = []
    for s in sessions:
        scores = list(s.get("prm_step_scores") or [])
        steps = [st["text"] for st in s["steps"]]
        if not steps or len(scores) != len(steps):
            continue
        if accept is not None and s["steps"][-1]["is_answer"]:
            if not accept(s["question"], s.get("answer")):
                scores[-1] = 0.0
        pairs, choices = [], []
        for i, st in enumerate(s["steps"]):
            docs = [doc_texts.get(r["id"], "") for r in st.get("retrieved") or []]
            pairs.append((fmt.render(s["question"], docs, steps[:i]), steps[i]))
            if grounded:
                choices.append(grounded_choices(s["question"], docs, steps[:i]))
        rows.append(
            {
                "pairs": pairs,
                "choices": choices,
                "rewards": [float(x) - reward_offset for x in scores],
                "behaviour": [list(st.get("logprobs") or []) for st in s["steps"]],
            }
        )
    return rows


def _streams(resp: torch.Tensor, owners: list[tuple[int, int]], n_traj: int):
    """Index tensors that lay each trajectory's step tokens end to end.

    `resp` (sequences, positions) marks step tokens; `owners[n]` = (trajectory, step) of
    sequence n. Returns seq/pos index tensors (trajectories, stream length), the stream mask,
    each step's last stream position (trajectories, steps) and the step mask."""
    per: list[list[tuple[int, int]]] = [[] for _ in range(n_traj)]
    ends: list[dict[int, int]] = [{} for _ in range(n_traj)]
    for n, (j, i) in enumerate(owners):
        for p in resp[n].nonzero().flatten().tolist():
            per[j].append((n, p))
        if per[j]:
            ends[j][i] = len(per[j]) - 1
    length = max(1, max(len(p) for p in per))
    n_steps = max(1, max((max(e) + 1 for e in ends if e), default=1))
    seq = torch.zeros(n_traj, length, dtype=torch.long)
    pos = torch.zeros(n_traj, length, dtype=torch.long)
    mask = torch.zeros(n_traj, length)
    step_ends = torch.zeros(n_traj, n_steps, dtype=torch.long)
    step_mask = torch.zeros(n_traj, n_steps)
    for j, items in enumerate(per):
        for t, (n, p) in enumerate(items):
            seq[j, t], pos[j, t], mask[j, t] = n, p, 1.0
        for i, e in ends[j].items():
            step_ends[j, i], step_mask[j, i] = e, 1.0
    return seq, pos, mask, step_ends, step_mask


def ppo_loss(model, batch: dict, config: dict) -> tuple[torch.Tensor, dict]:
    """One PPO update's loss on a batch of trajectories (experience computed here, on-policy
    for this batch: π_old is the actor before this update)."""
    ids, attn, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    tgt = labels[:, 1:].clamp(min=0)
    module = model.module if hasattr(model, "module") else model
    allowed, temp = batch.get("allowed"), config.get("temperature", 1.0)
    with torch.no_grad(), module.policy.disable_adapter():
        ref_logits = module.policy(input_ids=ids, attention_mask=attn).logits[:, :-1]
        ref_lp = _logprobs(ref_logits, tgt, allowed, temp)
    logits, values = model(ids, attn)
    lp = _logprobs(logits[:, :-1], tgt, allowed, temp)
    values = values[:, :-1].float()
    seq, pos, mask, step_ends, step_mask = batch["streams"]
    s_lp, s_ref, s_v = lp[seq, pos], ref_lp[seq, pos], values[seq, pos]
    s_beh = batch["behaviour"][seq, pos]
    rewards = batch["step_rewards"][:, : step_mask.shape[1]]
    if config.get("credit") == "min":
        rewards = min_form(rewards, step_mask)
    placed = place_step_rewards(rewards, step_ends, step_mask, mask.shape[1])
    with torch.no_grad():
        old_lp, old_v = s_lp.detach(), s_v.detach()
        tok_r = token_rewards(placed, old_lp, s_ref, mask, config["kl_beta"], config["kl_kind"])
        adv, ret = gae(tok_r, old_v, mask, config["gamma"], config["lam"])
        whiten = config.get("whiten", "full")
        if whiten == "full":
            adv = masked_whiten(adv, mask)
        elif whiten == "scale":  # unit spread, each advantage keeps its sign
            mean = masked_mean(adv, mask)
            adv = adv * torch.rsqrt(masked_mean((adv - mean) ** 2, mask) + 1e-8)
        adv = adv * mask
    has_beh = batch["has_behaviour"][seq, pos] * mask
    beh = torch.where(has_beh > 0, s_beh, old_lp)
    pl, stats = policy_loss(s_lp, old_lp, adv, mask, config["clip"], beh, config["tis_cap"])
    vl = value_loss(s_v, old_v, ret, mask, config["clip"])
    loss = pl + config["vf_coef"] * vl
    ptx = None
    if "ptx" in batch and config.get("ptx_coef", 0) > 0:
        # PPO-ptx: next-step NLL on replayed episodes of what the model knew keeps the policy
        # from drifting on prompts the KL penalty never sees.
        p = batch["ptx"]
        p_logits, _ = model(p["input_ids"], p["attention_mask"])
        ptx = torch.nn.functional.cross_entropy(
            p_logits[:, :-1].float().reshape(-1, p_logits.shape[-1]),
            p["labels"][:, 1:].reshape(-1),
            ignore_index=-100,
        )
        loss = loss + config["ptx_coef"] * ptx
    stats = {
        "policy_loss": float(pl.detach()),
        "value_loss": float(vl.detach()),
        "kl_ref": float(masked_mean(old_lp - s_ref, mask)),
        **({"ptx_loss": float(ptx.detach())} if ptx is not None else {}),
        **{k: float(v) for k, v in stats.items()},
    }
    return loss, stats


def _allowed(tokenizer, rows, owners, labels) -> torch.Tensor:
    """(sequences, positions, vocab) masks of the tokens grounded decoding allowed where each
    step token was predicted: the trie of the step's choices, as the engine walks it. Where a
    step leaves the trie (a step the grammar could not have produced) every token is allowed."""
    eos = tokenizer.eos_token_id
    tgt = labels[:, 1:]
    vocab = len(tokenizer)
    mask = torch.ones(tgt.shape[0], tgt.shape[1], vocab, dtype=torch.bool)
    for n, (j, i) in enumerate(owners):
        opts = rows[j].get("choices") or []
        if i >= len(opts) or not opts[i]:
            continue
        root: dict = {}
        for seq in tokenizer(list(opts[i]), add_special_tokens=False)["input_ids"]:
            node = root
            for t in [*seq, eos]:
                node = node.setdefault(t, {})
        node = root
        for p in (tgt[n] != -100).nonzero().flatten().tolist():
            token = int(tgt[n, p])
            if token not in node:
                break
            mask[n, p] = False
            mask[n, p, list(node)] = True
            node = node[token]
    return mask


def _logprobs(logits: torch.Tensor, tgt: torch.Tensor, allowed, temperature: float):
    """Log-probs of the taken tokens under the (constrained, tempered) sampling distribution."""
    x = logits.float() / temperature
    if allowed is not None:
        x = x.masked_fill(~allowed, float("-inf"))
    return torch.log_softmax(x, -1).gather(-1, tgt[..., None])[..., 0]


def collate(tokenizer, rows: list[dict], max_len: int) -> dict:
    """Trajectory rows → the padded sequences of all their steps plus the stream layout."""
    pairs, owners = [], []
    for j, r in enumerate(rows):
        for i, p in enumerate(r["pairs"]):
            pairs.append(tuple(p))
            owners.append((j, i))
    batch = encode_examples(tokenizer, pairs, max_len)
    resp = batch["labels"][:, 1:] != -100
    behaviour = torch.zeros(resp.shape)
    has = torch.zeros(resp.shape)
    for n, (j, i) in enumerate(owners):
        beh = rows[j]["behaviour"][i] if rows[j].get("behaviour") else []
        where = resp[n].nonzero().flatten()
        if beh and len(beh) == len(where):  # kept log-probs line up with the step's tokens
            behaviour[n, where] = torch.tensor(beh, dtype=behaviour.dtype)
            has[n, where] = 1.0
    allowed = (
        _allowed(tokenizer, rows, owners, batch["labels"])
        if any(r.get("choices") for r in rows)
        else None
    )
    n_steps = max(len(r["rewards"]) for r in rows)
    step_rewards = torch.zeros(len(rows), n_steps)
    for j, r in enumerate(rows):
        step_rewards[j, : len(r["rewards"])] = torch.tensor(r["rewards"])
    return {
        **batch,
        **({"allowed": allowed} if allowed is not None else {}),
        "streams": _streams(resp, owners, len(rows)),
        "behaviour": behaviour,
        "has_behaviour": has,
        "step_rewards": step_rewards,
    }


def ppo_loop_per_worker(config: dict) -> None:
    """Runs in every Ray Train worker: actor (LoRA) + value head on DeepSpeed, PPO updates."""
    policy, tok = lora_model(config)
    model = ActorCritic(policy, policy.config.hidden_size)
    last: dict = {}
    replay = config.get("replay") or []
    rng = random.Random(config["seed"] + ray.train.get_context().get_world_rank())

    def collate_with_replay(rows):
        batch = collate(tok, rows, config["max_len"])
        if replay and config.get("ptx_coef", 0) > 0:
            picks = [replay[rng.randrange(len(replay))] for _ in range(config["ptx_batch"])]
            batch["ptx"] = encode_examples(tok, picks, config["max_len"])
        return batch

    def loss_fn(engine, batch):
        loss, stats = ppo_loss(engine, batch, config)
        last.update(stats)
        return loss

    engine, metrics = deepspeed_steps(
        model,
        config["rows"],
        collate_with_replay,
        loss_fn,
        config,
        "ppo",
    )
    metrics.update(last)
    with gathered(engine, config["zero_stage"]):
        if ray.train.get_context().get_world_rank() == 0:
            out = Path(config["out"])
            save_version(engine.module.policy, out, {**config["meta"], "train": metrics})
    ray.train.report(metrics)


def train_ppo(
    cfg,
    rows: list[dict],
    out: str | Path,
    steps: int | None = None,
    replay: list | None = None,
    start: Start | None = None,
) -> dict:
    """PPO of a LoRA adapter on `rows` (see `experience_rows`) through Ray Train + DeepSpeed,
    with `replay` (prompt, step) pairs for the ptx term; writes the adapter to `out` and returns
    the training metrics. With `start` (`consolidate.compose: continue`) the current version's
    adapter trains further; the KL reference stays the base (the adapter disabled)."""
    c = cfg.consolidate
    if not rows:
        raise ValueError("no scored trajectories: nothing to learn from")
    if c.weights != "lora":
        raise ValueError(
            "consolidate.weights=full: PPO trains a LoRA adapter (its KL reference is the base "
            "with the adapter disabled); use sleep (SFT) for full weights"
        )
    steps = steps or c.ppo.steps
    config = adapter_run(cfg, Path(out).resolve(), steps, "ppo", start, trajectories=len(rows))
    config.update(
        lr=c.ppo.lr,
        batch_size=c.ppo.batch_size,
        rows=list(rows),
        kl_beta=c.ppo.kl_beta,
        kl_kind=c.ppo.kl_kind,
        clip=c.ppo.clip,
        vf_coef=c.ppo.vf_coef,
        gamma=1.0,
        lam=c.ppo.lam,
        tis_cap=c.ppo.tis_cap,
        credit=c.ppo.credit,
        whiten=c.ppo.whiten,
        temperature=c.ppo.temperature,
        replay=list(replay or []),
        ptx_coef=c.ppo.ptx_coef,
        ptx_batch=c.ppo.ptx_batch,
    )
    metrics = launch_adapter_run(cfg, ppo_loop_per_worker, config, "ppo")
    return {**metrics, "trajectories": len(rows)}


def fresh_rollouts(
    stack: Stack,
    prm: Scorer,
    questions: Sequence[str],
    temperature: float,
    seed: int = 0,
    retriever: Retriever | None = None,
):
    """Scored RGR rollouts of the current model on `questions` (texts; the behaviour log-probs
    kept): session dicts and the texts of what they retrieved."""
    cfg = stack.cfg
    trajs = run_rgr(
        list(questions),
        stack.engine,
        retriever or stack.retriever,
        temperature=temperature,
        seed=seed,
        **cfg.rgr_options(),
    )
    items = [
        (
            t.question,
            t.step_texts,
            [evidence_for(s.text, [d.text for d in s.retrieved]) for s in t.steps],
        )
        for t in trajs
    ]
    sessions, docs = [], {}
    for t, scores in zip(trajs, prm.score_many(items), strict=True):
        s = Session.from_trajectory(t).model_dump()
        s["prm_step_scores"], s["r_tau"] = list(scores), prm.r_tau(scores)
        sessions.append(s)
        for st in t.steps:
            docs.update({d.id: d.text for d in st.retrieved})
    return sessions, docs
