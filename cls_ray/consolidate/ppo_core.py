"""PPO with step-level rewards: pure, typed functions over padded (batch, tokens) tensors.

Conventions: `mask` is 1 on response tokens that count and 0 elsewhere (prompt, padding);
log-probs are of the tokens actually taken. A step's reward sits on its last token; every other
token gets only the KL penalty to the reference model.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

KLKind = Literal["k1", "k2", "k3"]


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the masked entries (the mean is kept when `shift_mean` is False)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out if shift_mean else out + mean


def min_form(step_rewards: Tensor, step_mask: Tensor) -> Tensor:
    """PURE's min-form credit assignment: rewards r' whose sum from step t on equals the minimum
    of r from step t on, so every step's return is the worst step still ahead of it and one bad
    step cannot be paid for by many good ones. (batch, steps) -> (batch, steps)."""
    big = torch.finfo(step_rewards.dtype).max
    r = torch.where(step_mask.bool(), step_rewards, torch.full_like(step_rewards, big))
    suffix_min = torch.flip(torch.cummin(torch.flip(r, [1]), dim=1).values, [1])
    nxt = torch.cat([suffix_min[:, 1:], torch.full_like(suffix_min[:, :1], big)], dim=1)
    nxt = torch.where(nxt == big, torch.zeros_like(nxt), nxt)
    out = suffix_min - nxt
    return torch.where(step_mask.bool(), out, torch.zeros_like(out))


def place_step_rewards(step_rewards: Tensor, step_ends: Tensor, step_mask: Tensor, length: int):
    """Token rewards (batch, length): step i's reward on token `step_ends[:, i]` (its last
    token), zero elsewhere. Padded steps (`step_mask` 0) place nothing."""
    out = torch.zeros(step_rewards.shape[0], length, dtype=step_rewards.dtype)
    r = torch.where(step_mask.bool(), step_rewards, torch.zeros_like(step_rewards))
    idx = torch.where(step_mask.bool(), step_ends, torch.zeros_like(step_ends))
    return out.scatter_add(1, idx.long(), r)


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: KLKind = "k1") -> Tensor:
    """Per-token estimate of KL(policy ‖ reference) from the taken tokens' log-probs:
    k1 = log p - log q; k2 = (log p - log q)² / 2; k3 = q/p - 1 - log(q/p) (non-negative)."""
    d = logprobs - ref_logprobs
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d**2
    if kind == "k3":
        return torch.exp(-d) - 1 + d
    raise ValueError(f"unknown KL estimator {kind!r}")


def token_rewards(
    placed: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    beta: float,
    kind: KLKind = "k1",
) -> Tensor:
    """Step rewards on their last tokens minus `beta` times the per-token KL penalty."""
    return (placed - beta * kl_penalty(logprobs, ref_logprobs, kind)) * mask


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the masked tokens of each row; masked-out tokens
    (padding, or text the policy did not write between steps) are skipped, and the value after
    the last counted token is 0. Returns (advantages, returns = advantages + values), both 0
    where the mask is 0."""
    m = mask.to(rewards.dtype)
    adv = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], dtype=rewards.dtype)
    next_value = torch.zeros(rewards.shape[0], dtype=rewards.dtype)
    for i in reversed(range(rewards.shape[1])):
        on = m[:, i] > 0
        delta = rewards[:, i] + gamma * next_value - values[:, i]
        last = torch.where(on, delta + gamma * lam * last, last)
        next_value = torch.where(on, values[:, i], next_value)
        adv[:, i] = last * m[:, i]
    return adv, (adv + values) * m


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip: float = 0.2,
    behaviour_logprobs: Tensor | None = None,
    tis_cap: float = 2.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped surrogate: -E[min(ρA, clip(ρ, 1-ε, 1+ε)A)] with ρ = π/π_old per token.

    Experience from stored sessions was sampled by the serving engine, whose log-probs
    (`behaviour_logprobs`) differ from `old_logprobs` recomputed by the trainer (another version,
    another numeric path): each token's loss is then weighted by the truncated importance ratio
    min(π_old/μ, `tis_cap`), which corrects the mismatch without letting rare tokens blow up."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    per_token = torch.maximum(unclipped, clipped)
    if behaviour_logprobs is not None:
        w = torch.exp(old_logprobs - behaviour_logprobs).clamp(max=tis_cap).detach()
        per_token = per_token * w
    loss = masked_mean(per_token, mask)
    stats = {
        "clip_fraction": masked_mean((clipped > unclipped).to(logprobs.dtype), mask),
        "approx_kl": masked_mean(0.5 * (logprobs - old_logprobs) ** 2, mask),
    }
    return loss, stats


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float = 0.2
) -> Tensor:
    """0.5 · E[max((V - R)², (clip(V, V_old ± ε) - R)²)]."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)
