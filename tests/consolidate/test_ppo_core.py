"""The PPO core functions against values computed by hand."""

import math

import pytest
import torch

from cls_ray.consolidate.ppo_core import (
    gae,
    kl_penalty,
    masked_mean,
    masked_whiten,
    min_form,
    place_step_rewards,
    policy_loss,
    token_rewards,
    value_loss,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_step_rewards_sit_on_each_steps_last_token():
    placed = place_step_rewards(
        t([0.9, 0.2, 0.0]), torch.tensor([[1, 4, 0]]), torch.tensor([[1, 1, 0]]), 6
    )
    assert placed.tolist() == [[0.0, pytest.approx(0.9), 0.0, 0.0, pytest.approx(0.2), 0.0]]


def test_min_form_returns_are_the_worst_step_ahead():
    r = t([0.9, 0.2, 0.7, 0.0])
    m = torch.tensor([[1, 1, 1, 0]])
    out = min_form(r, m)
    # suffix minima: 0.2, 0.2, 0.7 -> rewards 0.2-0.2, 0.2-0.7, 0.7
    assert out.tolist()[0] == pytest.approx([0.0, -0.5, 0.7, 0.0])
    returns = torch.flip(torch.cumsum(torch.flip(out, [1]), 1), [1])
    assert returns.tolist()[0][:3] == pytest.approx([0.2, 0.2, 0.7])


def test_kl_estimators():
    lp, ref = t([math.log(0.5)]), t([math.log(0.25)])
    d = math.log(2)
    assert kl_penalty(lp, ref, "k1").item() == pytest.approx(d)
    assert kl_penalty(lp, ref, "k2").item() == pytest.approx(0.5 * d * d)
    assert kl_penalty(lp, ref, "k3").item() == pytest.approx(0.5 - 1 + d)
    with pytest.raises(ValueError):
        kl_penalty(lp, ref, "k9")


def test_token_rewards_subtract_the_kl_penalty_on_response_tokens_only():
    placed = t([0.0, 1.0, 0.0])
    lp, ref = t([-1.0, -1.0, -1.0]), t([-1.5, -1.0, -2.0])
    out = token_rewards(placed, lp, ref, torch.tensor([[1, 1, 0]]), beta=0.1)
    assert out.tolist()[0] == pytest.approx([-0.05, 1.0, 0.0])


def test_gae_by_hand():
    # Two tokens, gamma 1, lambda 0.5: delta1 = 1 + 0 - 0.5 = 0.5; A1 = 0.5
    # delta0 = 0 + 0.5 - 0.2 = 0.3; A0 = 0.3 + 0.5 * 0.5 = 0.55
    adv, ret = gae(t([0.0, 1.0, 9.0]), t([0.2, 0.5, 7.0]), torch.tensor([[1, 1, 0]]), 1.0, 0.5)
    assert adv.tolist()[0] == pytest.approx([0.55, 0.5, 0.0])
    assert ret.tolist()[0] == pytest.approx([0.75, 1.0, 0.0])


def test_gae_skips_tokens_the_policy_did_not_write():
    # Token 1 is masked (a retrieved document between steps): it neither adds reward nor
    # breaks the chain. delta2 = 1 - 0.5 = 0.5; delta0 = 0 + 0.5 - 0.2 = 0.3; A0 = 0.3 + 0.5
    adv, _ = gae(t([0.0, 5.0, 1.0]), t([0.2, 3.0, 0.5]), torch.tensor([[1, 0, 1]]), 1.0, 1.0)
    assert adv.tolist()[0] == pytest.approx([0.8, 0.0, 0.5])


def test_clipped_policy_loss_by_hand():
    old = t([0.0, 0.0])
    new = t([math.log(1.5), math.log(0.5)])  # ratios 1.5 and 0.5
    adv = t([1.0, -1.0])
    loss, stats = policy_loss(new, old, adv, torch.tensor([[1, 1]]), clip=0.2)
    # token 0: max(-1.5, -1.2) = -1.2; token 1: max(0.5, 0.8) = 0.8; mean = -0.2
    assert loss.item() == pytest.approx(-0.2)
    assert stats["clip_fraction"].item() == pytest.approx(1.0)


def test_truncated_importance_weights_cap_the_behaviour_mismatch():
    old, new, adv = t([0.0, 0.0]), t([0.0, 0.0]), t([1.0, 1.0])
    behaviour = t([math.log(0.25), math.log(2.0)])  # π_old/μ = 4 (capped at 2) and 0.5
    loss, _ = policy_loss(new, old, adv, torch.tensor([[1, 1]]), behaviour_logprobs=behaviour)
    assert loss.item() == pytest.approx((-1.0 * 2.0 + -1.0 * 0.5) / 2)


def test_value_loss_by_hand():
    v, old, ret = t([1.0, 0.0]), t([0.5, 0.0]), t([0.0, 1.0])
    # token 0: clipped v = 0.7; max(1.0, 0.49) = 1.0; token 1: 1.0 either way
    assert value_loss(v, old, ret, torch.tensor([[1, 1]]), clip=0.2).item() == pytest.approx(0.5)


def test_masked_statistics():
    x, m = t([1.0, 3.0, 100.0]), torch.tensor([[1, 1, 0]])
    assert masked_mean(x, m).item() == pytest.approx(2.0)
    w = masked_whiten(x, m)
    assert w[0, :2].tolist() == pytest.approx([-1.0, 1.0], abs=1e-4)
