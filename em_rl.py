"""em_rl.py: EM-RL, reinforcement learning with the model's own negative entropy as the only reward (no labels).

Objective (PPO on leave-one-out advantages; the reward is computed by the policy itself):

    max_theta  E_{x, y ~ pi_theta}[r(y)] - kl_coef * KL(pi_theta || pi_ref),   with either
    r(y) = -(1/|y|) sum_t H(pi_theta(. | x, y_<t))        (--reward token: EM-RL-token)
    r(y) =  (1/|y|) sum_t log pi_theta(y_t | x, y_<t)     (--reward sequence: EM-RL-sequence)

optimized per mini-batch with the PPO clipped surrogate, a token mean over the response tokens:

    L = mean_{i,t} [ max(-A_i rho_it, -A_i clip(rho_it, 1 - 0.2, 1 + 0.2)) + kl_coef * k3_it - entropy_coef * H_it ]
    rho_it = pi_theta(y_it) / pi_old(y_it),   A_i = r_i - 1/(n-1) sum_{j != i} r_j  (RLOO over a prompt's n samples)

with H(p) = -sum_v p_v log p_v in nats. Paper: Agarwal et al., "The Unreasonable Effectiveness of
Entropy Minimization in LLM Reasoning", arXiv 2505.15134, Sec. 3.2. Each step samples --samples-per-prompt responses
for each of --batch-size prompts at --temperature (1; only the problem text is used), scores them with
the current policy without gradient (which also gives pi_old), and takes one AdamW step per
--mini-batch-size prompts for --ppo-epochs epochs. Entropies and log-probs come from the final hidden
states and the lm_head weight in chunks (entropy.response_entropy_logprob): the [B, T, V] logits never
exist, neither when scoring nor in the update.

Differences from the paper and the official code (shivamag125/EM_PT, a vendored verl fork, EM-RL/verl):
 1. Reward normalization: the paper writes both rewards as sums over the response tokens; the
    official reward managers (emrl_token_manager.py, emrl_sequence_manager.py) take the mean. We
    default to the mean (--reward-reduction mean) and offer the paper's sum.
 2. Entropy bonus: the official config (ppo_trainer.yaml, actor.entropy_coeff: 0.001) leaves verl's
    entropy BONUS on, which raises the entropy the reward lowers; the paper never mentions it. We
    default --entropy-coef to 0; pass 0.001 to reproduce the official runs (same sign as verl).
 3. Loss aggregation: verl takes a token mean per micro-batch, then averages the micro-batches (so
    the micro-batch size changes each token's weight); we divide by the response tokens of the whole
    mini-batch (all micro-batches and ranks), so every token weighs the same whatever the batching.
 4. k3 KL (--kl-coef, paper 0.001): we clamp r = log pi_ref - log pi_theta to [-10, 10] before
    exp(r) - r - 1; the vendored verl (low_var_kl) instead clamps the k3 value to at most 10 (zero
    gradient beyond). The two agree wherever k3 < 10, i.e. everywhere in a healthy run.
 5. Rollouts: our batched KV-cache loop (no vLLM), plain temperature sampling (official: top_p 1, no
    top-k), --rollout-batch-size rows decoded together with continuous batching (em_inf.py's loop: a
    finished response leaves the batch and the next one takes its row, as vLLM schedules a rollout), so
    the samples depend on the seed and --rollout-batch-size. Rewards and old log-probs come from a separate training-style forward, as in verl, not
    from the sampler's logits: the PPO ratio then starts at exactly 1 in float32. Rewards, old and
    reference log-probs and the update all use softmax(z / --temperature), the distribution the
    tokens were sampled from, as verl divides the logits by the rollout temperature (the paper's
    T = 1 changes nothing); we scale the final hidden states instead, (h / T) W^T = z / T.
 6. As em_ft.py (its differences 6 and 7): the label-free early stops (--stop-entropy, --stop-clipped) and LoRA
    (--lora-rank), whose KL reference is the policy with its adapters off.
 7. Precision, training data and schedule as em_ft.py: float32 master weights, the forward in --dtype
    (bf16 on CUDA); the paper trains on 35K NuminaMath prompts (--dataset defaults to math500 only
    because evaluate.py names it); constant learning rate; --steps is a fixed count. Training prompts
    are the official ones: the paper's system prompt and the problem followed by TRAIN_SUFFIX (verl's
    process_math.py); evaluation keeps the paper's prompt.

Under torchrun (FSDP2) only rank 0 reads the checkpoint and each rank receives its shards
(load_for_training). Rollouts and the --eval-dataset pass decode on weights all-gathered once per
phase, not once per token (gathered): each rank then holds one full copy in the compute dtype while
it decodes (7.6e9 params x 2 bytes = ~15 GB for Qwen2.5-Math-7B in bf16) and decodes its own
sequences at its own pace, --rollout-batch-size rows at a time, a finished row's place taken at once by
the rank's next sequence (continuous batching, as em_inf.py). metrics.jsonl splits each step's seconds
into time_rollout, time_score (rewards and old log-probs) and time_update (the slowest rank's).

This file holds only what RL adds to EM-FT: the rewards, the advantages, the PPO loss with its KL, their
flags and the loop. Rollouts, the chunked forward, FSDP2, checkpoints and metrics are em_ft.py's (imported);
the decode engine is em_inf.py's.

Commands:
  1 GPU (a 1.5B model fits 80 GB with fp32 AdamW; 7B needs FSDP, or LoRA: README "One GPU: LoRA"):
    python em_rl.py --model Qwen/Qwen2.5-Math-1.5B --dataset numina.jsonl --micro-batch-size 16 --out runs/em_rl_1p5b
    python em_rl.py --model Qwen/Qwen2.5-Math-7B --dataset numina.jsonl --lora-rank 16 --lr 1e-5 \
        --gradient-checkpointing --micro-batch-size 4 --rollout-batch-size 32 --track wandb --out runs/em_rl_7b_lora
  4 GPUs, FSDP2 (the paper's setup: 512 prompts x 4 rollouts per step, 4 PPO mini-batches):
    torchrun --nproc_per_node 4 em_rl.py --model Qwen/Qwen2.5-Math-7B --dataset numina.jsonl --reward token \
        --gradient-checkpointing --eval-dataset math500 --eval-every 10 --out runs/em_rl_token_7b
  CPU smoke (a few minutes on 2 cores):
    python em_rl.py --model local_models/smollm2 --dataset data/mini_math.jsonl --batch-size 2 --mini-batch-size 2 \
        --micro-batch-size 8 --steps 2 --max-new-tokens 16 --out runs/em_rl_smoke
Rerunning a command resumes from its --out folder; Ctrl-C finishes the step, saves and exits.
"""
import argparse
import os

import torch
from tqdm import tqdm

import evaluate
from em_inf import HelpFormatter, SOURCES, common_args, fail, setup, stop_token_ids
from em_ft import (RunLog, all_reduce_sum, autocast, check_training_args, clock, collapse_metrics, collapse_stop,
                   completion_rows, evaluate_accuracy, finish_run, forward_entropy_logprob, graceful_stop,
                   load_train_state, load_training, micro_batches, reference_logprob, rollout, save_checkpoint,
                   slowest_rank, step_prompts, stop_requested, training_args, training_prompts)


# ---- arguments ----
def parse_args(argv=None):
    p = argparse.ArgumentParser(description="EM-RL: RL with negative entropy as the only reward (arXiv 2505.15134 "
                                            "Sec. 3.2). " + SOURCES,
                                formatter_class=HelpFormatter)
    common_args(p, batch_size_default=512,
                batch_size_help="prompts per RL step, all ranks together (each rank takes batch-size / processes of "
                                "them, so it must be divisible by the number of processes), each sampled "
                                "--samples-per-prompt times (paper setup: 512, x 4 rollouts = 2048)")
    training_args(p, script="em_rl", steps_default=100,
                  steps_help="RL steps, each: rollouts, rewards, PPO updates (paper setup: ~100)")
    # ---- EM-RL flags ----
    # --samples-per-prompt is em_ft.py's name for the same number, so the shared code reads it unchanged;
    # --n is an alias for the paper's notation, but torchrun's own parser rejects it (an ambiguous abbreviation
    # of its --nnodes / --nproc-per-node), so the documented spelling is --samples-per-prompt
    p.add_argument("--samples-per-prompt", "--n", dest="samples_per_prompt", type=int, default=4,
                   help="rollouts per prompt, >= 2 for the leave-one-out baseline; --n is an alias that torchrun "
                        "does not pass on (paper / official rollout.n: 4)")
    p.add_argument("--reward", default="token", choices=["token", "sequence"],
                   help="token: minus the token entropy; sequence: log-prob of the sampled response (paper Sec. "
                        "3.2; token scores higher in Table 2)")
    p.add_argument("--reward-reduction", default="mean", choices=["mean", "sum"],
                   help="reduce the reward over the response tokens (official reward managers: mean; paper: sum)")
    p.add_argument("--advantage", default="rloo", choices=["rloo", "grpo"],
                   help="rloo: r_i minus the mean of the other samples; grpo: group mean/std (paper / official "
                        "adv_estimator: rloo)")
    p.add_argument("--mini-batch-size", type=int, default=None,
                   help="prompts per PPO optimizer step, all ranks together: must divide --batch-size and be "
                        "divisible by the number of processes (default: --batch-size / 4, or the nearest that fits: "
                        "the official ppo_mini_batch_size 128 of 512 prompts, i.e. 4 PPO updates per RL step)")
    p.add_argument("--ppo-epochs", type=int, default=1,
                   help="passes over each rollout batch (official ppo_epochs: 1)")
    p.add_argument("--clip", type=float, default=0.2,
                   help="PPO clip range: rho is clipped to [1 - clip, 1 + clip] (paper / official clip_ratio: 0.2)")
    p.add_argument("--kl-coef", type=float, default=0.001,
                   help="weight of the k3 KL to the frozen initial model, loaded only when > 0 (paper / official "
                        "kl_loss_coef: 0.001)")
    p.add_argument("--entropy-coef", type=float, default=0.0,
                   help="weight of an entropy BONUS in the loss, as verl's entropy_coeff (ours: 0; the official "
                        "config's 0.001 works against EM)")
    args = p.parse_args(argv)
    if args.samples_per_prompt < 2:
        fail(f"--samples-per-prompt must be >= 2 (the leave-one-out baseline needs another sample of the same prompt), got {args.samples_per_prompt}")
    check_training_args(args)
    if args.mini_batch_size is None:
        args.mini_batch_size = default_mini_batch_size(args.batch_size, int(os.environ.get("WORLD_SIZE", "1")))
    if args.kl_coef < 0:
        fail(f"--kl-coef must be >= 0, got {args.kl_coef}")
    if args.mini_batch_size < 1 or args.ppo_epochs < 1 or args.clip <= 0:
        fail("--mini-batch-size and --ppo-epochs must be >= 1 and --clip > 0")
    if args.batch_size % args.mini_batch_size:
        fail(f"--batch-size {args.batch_size} must be a multiple of --mini-batch-size {args.mini_batch_size}: pass a divisor "
             f"of it, or leave --mini-batch-size out (default: {default_mini_batch_size(args.batch_size, 1)})")
    return args


def default_mini_batch_size(batch_size, world):
    """Prompts per PPO update: batch / 4 as in the official config (128 of 512), else the nearest split into 3, 2
    or 1 updates that divides the batch evenly and gives each of the `world` ranks the same share."""
    for updates in (4, 3, 2, 1):
        if batch_size % updates == 0 and (batch_size // updates) % world == 0:
            return batch_size // updates
    return batch_size  # --batch-size not divisible by the ranks: main() says so


# ---- the method: rewards, advantages and the PPO loss (paper Sec. 3.2) ----
def token_entropy_reward(token_entropy, mask, reduction="mean"):
    """EM-RL-token reward: minus the policy's entropy at every response token.

    token_entropy, mask: [B, T] (entropy in nats, mask true on response tokens) -> [B].
    "sum" is the paper's r(y) = -sum_t H_t; "mean" divides by |y|, as the official code does.
    """
    # r(y) = -sum_t H(pi(. | x, y_<t))   (/ |y| for "mean")
    total = (token_entropy * mask).sum(dim=-1)
    return -(total / mask.sum(dim=-1).clamp_min(1) if reduction == "mean" else total)


def sequence_logprob_reward(token_logprob, mask, reduction="mean"):
    """EM-RL-sequence reward: the log-probability of the sampled response.

    token_logprob, mask: [B, T] (log pi(y_t | x, y_<t) of the sampled tokens) -> [B].
    E_y[-log pi(y | x)] is the entropy of the whole response, so log pi(y | x) is a one-sample
    estimate of minus the trajectory entropy. "sum" is the paper's form, "mean" the official code's.
    """
    # r(y) = sum_t log pi(y_t | x, y_<t)   (/ |y| for "mean")
    total = (token_logprob * mask).sum(dim=-1)
    return total / mask.sum(dim=-1).clamp_min(1) if reduction == "mean" else total


def rloo_advantages(rewards):
    """REINFORCE leave-one-out advantages, no std normalization (paper Sec. 3.2, official adv_estimator=rloo).

    rewards: [P, n], n >= 2 samples of each of P prompts -> [P, n].
    Each sample's baseline is the mean reward of the OTHER n - 1 samples of its prompt: it does not
    depend on the sample itself, so the policy gradient stays unbiased.
    """
    n = rewards.shape[-1]
    # A_i = r_i - 1/(n-1) sum_{j != i} r_j
    return rewards - (rewards.sum(dim=-1, keepdim=True) - rewards) / (n - 1)


def grpo_advantages(rewards, eps=1e-6):
    """GRPO advantages: rewards normalized within each prompt's group (the paper's labeled baseline).

    rewards: [P, n] -> [P, n]. eps keeps a group of equal rewards at 0 instead of 0/0.
    """
    # A_i = (r_i - mean_j r_j) / (std_j r_j + eps), std with Bessel's correction (as verl's torch.std)
    mean = rewards.mean(dim=-1, keepdim=True)
    return (rewards - mean) / (rewards.std(dim=-1, keepdim=True) + eps)


def ppo_clip_loss(logp, old_logp, advantages, clip=0.2):
    """Per-token PPO clipped surrogate (to minimize) and whether each token's ratio was clipped.

    logp, old_logp: [B, T] log pi_theta and log pi_old of the sampled tokens; advantages: [B], one
    per response, broadcast to its tokens (the reward is given once per response, gamma = 1).
    returns (loss [B, T], clipped [B, T] bool); reduce both with a masked mean over response tokens.
    """
    # rho_t = pi_theta(y_t) / pi_old(y_t), from log-probs for stability
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]  # [B, 1]
    # L_t = max(-A rho_t, -A clip(rho_t, 1 - eps, 1 + eps)): the pessimistic bound, no gain from
    # moving rho outside [1 - eps, 1 + eps] in the direction the advantage favours
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip, 1.0 + clip)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def k3_kl(logp, ref_logp):
    """Per-token k3 estimate of KL(pi_theta || pi_ref) on tokens sampled from pi_theta.

    logp, ref_logp: [B, T] -> [B, T], >= 0. Unbiased (E_pi_theta[exp(r)] = 1) and of low variance
    (Schulman, "Approximating KL divergence", 2020); verl calls it low_var_kl.
    """
    # r = log pi_ref(y_t) - log pi_theta(y_t), clamped so exp(r) stays finite
    r = (ref_logp - logp).clamp(-10.0, 10.0)
    # k3 = exp(r) - r - 1
    return torch.exp(r) - r - 1.0


@torch.no_grad()
def score_rollouts(model, ref_model, minibatches, args, device, dtype):
    """Rewards, pi_old log-probs and advantages of every rollout, from the current policy, no gradient.

    minibatches: lists of micro-batch dicts (from rollout()); each dict gains old_logp and ref_logp
    ([b, T-1]), reward and advantages ([b]). Rows are prompt-major (each prompt's n samples are
    adjacent and on the same rank), so the rewards of this rank reshape to [P, n].
    Returns sums for the step's metrics: entropy, KL, reward, their token / row counts.
    """
    model.eval()
    sums = torch.zeros(5, device=device)  # sum H, sum k3, sum r, response tokens, responses
    batches = [b for mb in minibatches for b in mb]
    for batch in batches:
        with autocast(device, dtype):
            # at the rollout temperature, as verl: pi_old is the distribution the tokens were sampled from
            h, batch["old_logp"], mask = forward_entropy_logprob(model, batch, args.temperature)  # [b, T-1] each
            if ref_model is not None:
                batch["ref_logp"] = reference_logprob(ref_model, batch, args.temperature)
        # the reward is a property of the policy's own distribution on its own sample, frozen here
        # (no gradient flows through it, as through any RL reward); the policy gradient does the rest
        # each response's mean token entropy [b], for the log only (completion_rows)
        batch["response_entropy"] = (h * mask).sum(-1) / mask.sum(-1).clamp_min(1)
        if args.reward == "token":
            batch["reward"] = token_entropy_reward(h, mask, args.reward_reduction)
        else:
            batch["reward"] = sequence_logprob_reward(batch["old_logp"], mask, args.reward_reduction)
        # KL_k3(pi_old || pi_ref) of the rollouts, for the log (the loss uses the current policy's)
        kl = k3_kl(batch["old_logp"], batch["ref_logp"]) if ref_model is not None else torch.zeros_like(h)
        sums += torch.stack([(h * mask).sum(), (kl * mask).sum(), batch["reward"].sum(), mask.sum().float(),
                             h.new_tensor(float(h.shape[0]))])
    model.train()
    # A: [P, n] per prompt, then back to the micro-batches' rows
    rewards = torch.cat([b["reward"] for b in batches]).view(-1, args.samples_per_prompt)
    advantages = (rloo_advantages if args.advantage == "rloo" else grpo_advantages)(rewards).flatten()
    for batch, adv in zip(batches, advantages.split([len(b["reward"]) for b in batches])):
        batch["advantages"] = adv
    return sums, torch.stack([advantages.sum(), advantages.square().sum()])


def ppo_loss_sums(model, batch, args):
    """Sums over one micro-batch's response tokens: (loss with gradient, clipped tokens, response tokens).

    Per token: PPO clipped surrogate + kl_coef * k3 - entropy_coef * H, with the state at position t
    predicting token t+1 (aligned inside entropy.py).
    """
    h, logp, mask = forward_entropy_logprob(model, batch, args.temperature)  # [b, T-1] each, zero off the response
    pg, clipped = ppo_clip_loss(logp, batch["old_logp"], batch["advantages"], args.clip)
    per_token = pg - args.entropy_coef * h
    if "ref_logp" in batch:
        per_token = per_token + args.kl_coef * k3_kl(logp, batch["ref_logp"])
    return (per_token * mask).sum(), (clipped & mask).sum(), mask.sum()


def ppo_update(model, optimizer, minibatches, args, world, device, dtype):
    """--ppo-epochs passes over the scored rollouts, one AdamW step per mini-batch.

    Each optimizer step minimizes the token mean of the per-token loss over the mini-batch's
    response tokens N on every rank and in every micro-batch, so accumulating micro-batch gradients
    gives exactly the gradient of the full mini-batch token mean.
    Returns (mean loss per token, fraction of clipped tokens, mean pre-clip gradient norm).
    """
    totals = torch.zeros(3, device=device)  # loss, clipped tokens, tokens, summed over all updates
    grad_norms = []
    for _ in range(args.ppo_epochs):
        for mb in minibatches:
            # N = response tokens of this mini-batch on all ranks: the token-mean denominator
            n_mb = all_reduce_sum(sum(b["response_mask"].sum() for b in mb).float())
            for batch in mb:
                with autocast(device, dtype):
                    loss_sum, clipped, tokens = ppo_loss_sums(model, batch, args)
                # FSDP averages gradients over the ranks; * world turns that average back into the global sum
                (loss_sum * world / n_mb.clamp_min(1.0)).backward()
                totals += torch.stack([loss_sum.detach(), clipped.float(), tokens.float()])
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)  # pre-clip global norm
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            grad_norms.append((grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm).item())
    loss_total, clipped_total, tokens_total = all_reduce_sum(totals).tolist()
    return loss_total / max(tokens_total, 1.0), clipped_total / max(tokens_total, 1.0), sum(grad_norms) / len(grad_norms)


def train_step(model, ref_model, optimizer, minibatches, args, world, device, dtype):
    """One RL step on the step's rollouts: rewards and advantages, then the PPO updates; the step's metrics."""
    t0 = clock(device)
    sums, adv_sums = score_rollouts(model, ref_model, minibatches, args, device, dtype)
    h_sum, kl_sum, r_sum, n_tokens, n_rows = all_reduce_sum(sums).tolist()
    adv_sum, adv_sq_sum = all_reduce_sum(adv_sums).tolist()
    t1 = clock(device)
    loss, clip_fraction, grad_norm = ppo_update(model, optimizer, minibatches, args, world, device, dtype)
    stats = {"loss": loss, "reward": r_sum / n_rows, "entropy": h_sum / max(n_tokens, 1.0)}
    if ref_model is not None:
        stats["kl"] = kl_sum / max(n_tokens, 1.0)
    stats["clip_fraction"] = clip_fraction
    # population std of the advantages over the global batch: 0 means no learning signal this step
    stats["advantage_std"] = max(adv_sq_sum / n_rows - (adv_sum / n_rows) ** 2, 0.0) ** 0.5
    stats["grad_norm"] = grad_norm
    stats["response_tokens"] = int(n_tokens)
    stats["time_score"], stats["time_update"] = t1 - t0, clock(device) - t1  # this rank's seconds
    return stats


# ---- main: rollouts, rewards, PPO updates, log, checkpoint ----
def main(argv=None):
    args = parse_args(argv)
    rank, world, device, dtype = setup(args)
    if args.batch_size % world:
        fail(f"--batch-size {args.batch_size} must be divisible by the number of processes ({world})")
    if args.mini_batch_size % world:
        fail(f"--mini-batch-size {args.mini_batch_size} must be divisible by the number of processes ({world}): pass a "
             f"multiple of {world} that divides --batch-size, or leave it out")
    try:
        problems = evaluate.load_problems(args.dataset, limit=args.limit, require_answer=False,  # unlabeled
                                          prompt_style=args.prompt_style)
        eval_problems = (evaluate.load_problems(args.eval_dataset, limit=args.eval_limit, prompt_style=args.prompt_style)
                         if args.eval_dataset else [])
    except evaluate.InputError as e:
        fail(str(e))
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
    state = load_train_state(args, rank, world)
    start = state["step"] if state else 0
    model, tokenizer, ref_model, optimizer = load_training(args, state, rank, world, device, dtype)
    stop_ids = stop_token_ids(model, tokenizer)
    prompts = training_prompts(problems, tokenizer, args, rank)
    run_log = RunLog(args, start, rank)

    interrupted = stopped = False
    with graceful_stop() as signal_flag:
        bar = tqdm(range(start + 1, args.steps + 1), initial=start, total=args.steps, disable=rank != 0, desc=os.path.basename(__file__)[:-3])
        for step in bar:
            t0 = clock(device)
            # this rank's prompts (each --samples-per-prompt times), all sampled before any update, then cut into PPO mini-batches
            texts = step_prompts(prompts, step, args, rank, world)
            samples = rollout(model, tokenizer, texts, args, stop_ids, device, dtype)
            t1 = clock(device)
            per_mb = len(samples) * args.mini_batch_size // args.batch_size  # rows of one PPO mini-batch on this rank
            minibatches = [micro_batches(samples[i:i + per_mb], args, tokenizer.pad_token_id) for i in range(0, len(samples), per_mb)]
            stats = train_step(model, ref_model, optimizer, minibatches, args, world, device, dtype)
            seconds = clock(device) - t0
            times = slowest_rank({"time_rollout": t1 - t0, "time_score": stats.pop("time_score"),
                                  "time_update": stats.pop("time_update")}, device)
            n_tokens = stats.pop("response_tokens")  # sampled and trained on, all ranks
            log = {"step": step, **stats, "response_length": n_tokens / (args.batch_size * args.samples_per_prompt),
                   **collapse_metrics(samples, args, stop_ids, device),
                   "lr": optimizer.param_groups[0]["lr"], "tokens_per_second": n_tokens / seconds, "seconds": seconds, **times}
            if eval_problems and (step == args.steps or (args.eval_every and step % args.eval_every == 0)):
                log["eval_accuracy"] = evaluate_accuracy(model, tokenizer, eval_problems, args, stop_ids, device, dtype, rank, world)
            stopped = collapse_stop(log, args)  # label-free: the step's own entropy and lengths
            if stopped:
                log["stopped"] = stopped
            if rank == 0:
                batches = [b for mb in minibatches for b in mb]  # in sample order, with reward and response_entropy
                run_log.write(log, completion_rows(step, texts, samples, batches, tokenizer, args, stop_ids))
                bar.set_postfix(reward=f"{log['reward']:.4f}", entropy=f"{log['entropy']:.4f}")
            interrupted = stop_requested(signal_flag, device)
            if step % args.save_every == 0 or step == args.steps or interrupted or stopped:
                save_checkpoint(model, optimizer, tokenizer, step, args, device, rank, world)
            if interrupted or stopped:
                break
    finish_run(run_log, args, step, interrupted, stopped, rank, world)

if __name__ == "__main__":
    main()
