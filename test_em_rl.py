"""Tests for em_rl.py: the method pieces against hand-computed values and independent references,
then the script end to end on the tiny fixture model (training signal, resume, torchrun, bad input)."""
import math
import statistics

import pytest
import torch

import em_rl


# ---- rewards ----
def test_token_entropy_reward_mean_and_sum():
    H = torch.tensor([[1.0, 2.0, 3.0, 9.0], [0.5, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)  # 9.0 is padding, ignored
    assert em_rl.token_entropy_reward(H, mask, "mean").tolist() == pytest.approx([-2.0, -0.5])
    assert em_rl.token_entropy_reward(H, mask, "sum").tolist() == pytest.approx([-6.0, -0.5])


def test_sequence_logprob_reward_mean_and_sum():
    lp = torch.tensor([[-1.0, -0.5, -7.0], [-2.0, -4.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    assert em_rl.sequence_logprob_reward(lp, mask, "mean").tolist() == pytest.approx([-0.75, -3.0])
    assert em_rl.sequence_logprob_reward(lp, mask, "sum").tolist() == pytest.approx([-1.5, -6.0])


# ---- advantages ----
def test_rloo_advantages_hand_computed():
    r = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.5, -0.5, 0.0, 0.0]])
    # row 0: baselines (2+3+6)/3, (1+3+6)/3, (1+2+6)/3, (1+2+3)/3
    expected = [[1 - 11 / 3, 2 - 10 / 3, 3 - 3.0, 6 - 2.0], [0.5 - (-0.5 / 3), -0.5 - (0.5 / 3), 0.0, 0.0]]
    got = em_rl.rloo_advantages(r)
    assert got.shape == (2, 4)
    for g, e in zip(got.tolist(), expected):
        assert g == pytest.approx(e)
    # n = 2: each sample's baseline is the other sample
    assert em_rl.rloo_advantages(torch.tensor([[0.5, -0.5]])).tolist() == [[1.0, -1.0]]


def test_rloo_advantages_no_std_normalization():
    r = torch.tensor([[10.0, 20.0, 30.0]])
    a = em_rl.rloo_advantages(r)
    # scaling rewards scales advantages: nothing divides by the spread
    assert torch.allclose(em_rl.rloo_advantages(r * 3), a * 3)
    assert a.tolist()[0] == pytest.approx([10 - 25, 20 - 20, 30 - 15])


def test_grpo_advantages_vs_statistics():
    rows = [[1.0, 2.0, 3.0, 6.0], [4.0, 4.0, 4.0, 4.0]]
    got = em_rl.grpo_advantages(torch.tensor(rows, dtype=torch.float64))
    m, s = statistics.mean(rows[0]), statistics.stdev(rows[0])
    assert got[0].tolist() == pytest.approx([(x - m) / (s + 1e-6) for x in rows[0]])
    assert got[1].tolist() == [0.0] * 4  # equal rewards: no signal, no NaN


# ---- PPO clipped surrogate ----
def test_ppo_clip_loss_hand_computed():
    ratio = torch.tensor([[1.5, 1.5, 0.5, 0.5, 1.1]])
    logp = torch.log(ratio)
    old = torch.zeros_like(logp)
    for adv, loss, clipped in [
        (1.0, [-1.2, -1.2, -0.5, -0.5, -1.1], [True, True, False, False, False]),
        (-1.0, [1.5, 1.5, 0.8, 0.8, 1.1], [False, False, True, True, False]),
    ]:
        got_loss, got_clip = em_rl.ppo_clip_loss(logp, old, torch.tensor([adv]), clip=0.2)
        assert got_loss[0].tolist() == pytest.approx(loss)
        assert got_clip[0].tolist() == clipped


def test_ppo_clip_loss_gradient_is_reinforce_at_ratio_one():
    # at pi_theta = pi_old (first PPO step) the surrogate's gradient is -A d log pi: REINFORCE
    logp = torch.tensor([[-1.0, -2.0], [-0.3, -0.7]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([0.7, -1.3], dtype=torch.float64)
    loss, _ = em_rl.ppo_clip_loss(logp, logp.detach(), adv)
    loss.sum().backward()
    assert torch.allclose(logp.grad, -adv[:, None].expand(2, 2))
    # and the clipped side has zero gradient
    logp2 = torch.tensor([[math.log(1.5)]], dtype=torch.float64, requires_grad=True)
    loss2, clipped = em_rl.ppo_clip_loss(logp2, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))
    loss2.sum().backward()
    assert clipped.item() and logp2.grad.item() == 0.0


# ---- k3 KL ----
def test_k3_kl_hand_computed():
    logp = torch.tensor([[-1.0, -2.0, -30.0, -0.5]])
    ref = torch.tensor([[-2.0, -1.0, 0.0, -0.5]])
    # r = ref - logp = -1, 1, 30 (clamped to 10), 0
    expected = [math.exp(-1) + 1 - 1, math.e - 1 - 1, math.exp(10) - 10 - 1, 0.0]
    assert em_rl.k3_kl(logp, ref)[0].tolist() == pytest.approx(expected, rel=1e-5)


def test_k3_kl_is_unbiased_estimate_of_kl():
    # E_{y ~ p}[k3] = KL(p || q): check against torch.distributions with many samples
    g = torch.Generator().manual_seed(0)
    p = torch.distributions.Categorical(logits=torch.randn(8, generator=g, dtype=torch.float64))
    q = torch.distributions.Categorical(logits=torch.randn(8, generator=g, dtype=torch.float64))
    torch.manual_seed(0)
    y = p.sample((200_000,))
    est = em_rl.k3_kl(p.log_prob(y), q.log_prob(y)).mean()
    assert est.item() == pytest.approx(torch.distributions.kl_divergence(p, q).item(), rel=0.02)
