"""em_rl.py: EM-RL, reinforcement learning with negative entropy as the only reward (draft: method first)."""
import torch

import entropy


# ---- the method: rewards, advantages, PPO loss (paper Sec. 3.2) ----
def token_entropy_reward(token_entropy, mask, reduction="mean"):
    """EM-RL-token reward: minus the entropy of the policy at every response token.

    token_entropy, mask: [B, T] (entropy in nats, mask true on response tokens) -> [B].
    reduction "sum" is the paper's r(y) = -sum_t H_t; "mean" is the official code's -mean_t H_t.
    """
    # r(y) = - sum_t H(pi(. | x, y_<t))   (divided by the response length for "mean")
    total = (token_entropy * mask).sum(dim=-1)
    return -(total / mask.sum(dim=-1).clamp_min(1) if reduction == "mean" else total)


def sequence_logprob_reward(token_logprob, mask, reduction="mean"):
    """EM-RL-sequence reward: the log-probability of the sampled response (trajectory entropy estimate).

    token_logprob, mask: [B, T] (log pi(y_t | x, y_<t) of the sampled tokens) -> [B].
    E_y[-log pi(y)] is the entropy of the whole response, so -(-log pi(y)) is a one-sample
    estimate of minus that entropy. "sum" is the paper's form, "mean" the official code's.
    """
    # r(y) = sum_t log pi(y_t | x, y_<t)
    total = (token_logprob * mask).sum(dim=-1)
    return total / mask.sum(dim=-1).clamp_min(1) if reduction == "mean" else total


def rloo_advantages(rewards):
    """REINFORCE leave-one-out advantages, no std normalization (paper Sec. 3.2, official adv_estimator=rloo).

    rewards: [P, n], n >= 2 samples of each of P prompts -> [P, n].
    Each sample's baseline is the mean reward of the OTHER n - 1 samples of its prompt, so the
    baseline does not depend on the sample itself and the policy gradient stays unbiased.
    """
    n = rewards.shape[-1]
    # A_i = r_i - 1/(n-1) sum_{j != i} r_j
    return rewards - (rewards.sum(dim=-1, keepdim=True) - rewards) / (n - 1)


def grpo_advantages(rewards, eps=1e-6):
    """GRPO advantages: group-normalized rewards, the alternative the paper compares to (Table 2).

    rewards: [P, n] -> [P, n]. eps keeps a group of equal rewards at 0 instead of 0/0.
    """
    # A_i = (r_i - mean_j r_j) / (std_j r_j + eps), std with Bessel's correction (as verl's torch.std)
    mean = rewards.mean(dim=-1, keepdim=True)
    std = rewards.std(dim=-1, keepdim=True)
    return (rewards - mean) / (std + eps)


def ppo_clip_loss(logp, old_logp, advantages, clip=0.2):
    """Per-token PPO clipped surrogate (to minimize) and whether each token was clipped.

    logp, old_logp: [B, T] log pi_theta and log pi_old of the sampled tokens; advantages: [B]
    (one per response, broadcast to every token: the reward is given once per response).
    returns (loss [B, T], clipped [B, T] bool); reduce both with a masked mean over tokens.
    """
    # ratio_t = pi_theta(y_t) / pi_old(y_t), in log space for stability
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    # L_t = max(-A ratio_t, -A clip(ratio_t, 1 - eps, 1 + eps))   (the pessimistic bound)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip, 1.0 + clip)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def k3_kl(logp, ref_logp):
    """Per-token k3 estimate of KL(pi_theta || pi_ref) from the sampled tokens (verl's "low_var_kl").

    logp, ref_logp: [B, T] -> [B, T], >= 0. Unbiased, non-negative and of low variance for
    samples drawn from pi_theta (Schulman, "Approximating KL divergence", 2020).
    """
    # r = log pi_ref(y_t) - log pi_theta(y_t), clamped so exp(r) cannot overflow early in training
    r = (ref_logp - logp).clamp(-10.0, 10.0)
    # k3 = exp(r) - r - 1   (E_pi_theta[exp(r)] = 1, so E[k3] = E[-r] = KL(pi_theta || pi_ref))
    return torch.exp(r) - r - 1.0
