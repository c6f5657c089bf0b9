"""em_ft.py: EM-FT, fine-tuning a model to minimize the token entropy of its own samples (no labels).

Objective (ours: a token mean over every response token of the step, see difference 1):

    L(theta) = sum_{i,t} H(pi_theta(. | x_i, y_i,<t)) / sum_i |y_i|  [+ kl_coef * KL_k3(pi_theta || pi_ref)],
    y_i ~ pi_theta(. | x_i) at --temperature (1), sampled without gradient and held fixed,

with H(p) = -sum_v p_v log p_v in nats. Paper: Agarwal et al., "The Unreasonable Effectiveness of
Entropy Minimization in LLM Reasoning", arXiv 2505.15134, Sec. 3.1, Eq. 2. Each step samples
--samples-per-prompt responses for --batch-size unlabeled prompts (only the problem text is used),
then takes one AdamW step on L. The entropy is computed from the final hidden states and the lm_head
weight in chunks (entropy.response_entropy_logprob), so the [B, T, V] logits never exist.

Differences from the paper (the official repo, shivamag125/EM_PT, has no EM-FT code at all: the
optimizer settings below follow its EM-RL verl config):
 1. Normalization: Eq. 2 sums H over the tokens of each response and averages over the N samples,
    so a response's weight grows with its length and the loss scale with the response length. We
    divide by the number of response tokens in the whole step (all prompts, samples, ranks and
    micro-batches), so every token weighs the same. The gradient direction differs by per-response
    length weights; the two agree up to a constant factor only when all responses have equal length.
 2. KL (--kl-coef, paper variant 0.001): the paper does not name an estimator; we use k3 on the
    sampled tokens, exp(r) - r - 1 with r = log pi_ref(y_t) - log pi_theta(y_t) clamped to [-10, 10]
    (verl's low_var_kl, as in the official EM-RL), token-mean like the entropy term.
 3. Training data: the paper uses 35K NuminaMath prompts (25K Eurus-2 code prompts for coding);
    --dataset defaults to math500 only because evaluate.py names it; pass your own .jsonl. The
    training prompt is the official EM-RL one (no EM-FT code exists): the paper's system prompt and
    the problem followed by TRAIN_SUFFIX (verl's process_math.py); evaluation keeps the paper's prompt.
 4. Sampling: our batched KV-cache loop (no vLLM), plain temperature sampling (no top-k/top-p and
    none of the model's generation_config), --rollout-batch-size rows decoded together with continuous
    batching (em_inf.py's loop: a finished response leaves the batch and the next one takes its row, as
    vLLM schedules a rollout), so the samples depend on the seed and --rollout-batch-size. The loss
    is the entropy of the model itself (T = 1) whatever --temperature sampled the responses: EM-FT
    lowers the model's entropy, and the temperature only picks the responses it is measured on.
 5. Precision: float32 master weights; the forward runs in --dtype (bf16 on CUDA) under autocast in
    one process and through FSDP2's MixedPrecisionPolicy (fp32 gradient reduction) under torchrun.
 6. Stopping: the paper early-stops around 40 steps; --steps is a fixed count (default 40), with
    --eval-dataset/--eval-every to watch accuracy. The learning rate is constant (no warmup), as in
    the official config. Two label-free stops of ours, off by default: --stop-entropy (the step's sample
    entropy fell below X) and --stop-clipped (more than F of its responses hit --max-new-tokens: the collapse
    into answers that never end); either saves and ends the run cleanly. metrics.jsonl logs clipped_ratio and
    repeat_4gram (repeated 4-grams within a response) every step to watch for it.
 7. LoRA (--lora-rank, ours; the paper fine-tunes every weight): peft adapters on every linear layer of the
    decoder (not lm_head: the entropy reads its weight directly), the base frozen in --dtype, the adapters in
    float32 and alone in AdamW. The KL reference is the same model with the adapters switched off, so it costs no
    second copy. The run folder holds the merged model (a plain transformers folder, float32) and the adapter.

Under torchrun (FSDP2) only rank 0 reads the checkpoint and each rank receives its shards
(load_for_training). Rollouts and the --eval-dataset pass decode on weights all-gathered once per
phase, not once per token (gathered): each rank then holds one full copy in the compute dtype while
it decodes (7.6e9 params x 2 bytes = ~15 GB for Qwen2.5-Math-7B in bf16) and decodes its own
sequences at its own pace, --rollout-batch-size rows at a time, a finished row's place taken at once by
the rank's next sequence (continuous batching, as em_inf.py). metrics.jsonl splits each step's seconds
into time_rollout and time_update (the slowest rank's).

The file reads top to bottom as: arguments; the method (entropy_loss_sums, train_step); main; then the
training plumbing that em_rl.py imports from here: the training flags, FSDP2 loading and sharding, gathered
rollouts, the model to train (load_training: full fine-tuning or LoRA, with its KL reference), micro-batches,
the chunked entropy / log-prob forward, the eval pass, the collapse metrics and early stops, checkpoints,
resume, metrics with the experiment trackers (RunLog) and the torchrun exit. The decode engine (sample), model loading and setup come from em_inf.py.

Commands:
  1 GPU (a 1.5B model fits 80 GB with fp32 AdamW; 7B needs FSDP, or LoRA: ~24 GB, README "One GPU: LoRA"):
    python em_ft.py --model Qwen/Qwen2.5-Math-1.5B --dataset numina.jsonl --micro-batch-size 16 --out runs/em_ft_1p5b
    python em_ft.py --model Qwen/Qwen2.5-Math-7B --dataset numina.jsonl --lora-rank 16 --lr 1e-5 \
        --gradient-checkpointing --micro-batch-size 4 --rollout-batch-size 32 --track wandb --out runs/em_ft_7b_lora
  8 GPUs, FSDP2 (the paper's setup):
    torchrun --nproc_per_node 8 em_ft.py --model Qwen/Qwen2.5-Math-7B --dataset numina.jsonl \
        --gradient-checkpointing --eval-dataset math500 --eval-every 10 --out runs/em_ft_7b
  CPU smoke (a few minutes on 2 cores):
    python em_ft.py --model local_models/smollm2 --dataset data/mini_math.jsonl --batch-size 2 \
        --micro-batch-size 2 --steps 2 --max-new-tokens 16 --out runs/em_ft_smoke
Rerunning a command resumes from its --out folder; Ctrl-C finishes the step, saves and exits.
"""
import argparse
import contextlib
import copy
import importlib.util
import json
import os
import shutil
import signal
import sys
import time
import uuid

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from tqdm import tqdm
from transformers import AutoModelForCausalLM

import entropy
import evaluate
from em_inf import HelpFormatter, SOURCES, common_args, fail, load_model, sample, setup, stop_token_ids


# ---- arguments (the training flags shared with em_rl.py, training_args, are below main) ----
def parse_args(argv=None):
    p = argparse.ArgumentParser(description="EM-FT: minimize the token entropy of the model's own samples (arXiv "
                                            "2505.15134 Sec. 3.1). " + SOURCES,
                                formatter_class=HelpFormatter)
    common_args(p, batch_size_default=512,
                batch_size_help="prompts per optimizer step, all ranks together (each rank takes batch-size / "
                                "processes of them, so it must be divisible by the number of processes), each "
                                "sampled --samples-per-prompt times (paper setup: 512)")
    training_args(p, script="em_ft", steps_default=40,
                  steps_help="optimizer steps (paper setup: ~40 for EM-FT, early stopped)")
    # ---- EM-FT flags ----
    p.add_argument("--samples-per-prompt", type=int, default=1,
                   help="responses sampled per prompt, N in Eq. 2 (paper: 1 in the main result; variant: 4)")
    p.add_argument("--kl-coef", type=float, default=0.0,
                   help="weight of the k3 KL to the frozen initial model, loaded only when > 0 (paper: 0; variant: "
                        "0.001)")
    args = p.parse_args(argv)
    check_training_args(args)
    if args.kl_coef < 0:
        fail(f"--kl-coef must be >= 0, got {args.kl_coef}")
    return args


# ---- the method: token-entropy loss on the sampled responses (paper Sec. 3.1, Eq. 2) ----
def entropy_loss_sums(model, ref_model, batch):
    """Sums over one micro-batch's response tokens: (sum_t H_t, sum_t KL_t, with gradient).

    H_t = H(pi_theta(. | x, y_<t)) at every response token (shift-by-one aligned inside entropy.py:
    the state at position t predicts token t+1). KL_t is 0 without a reference model.
    """
    h, logp, mask = forward_entropy_logprob(model, batch)  # [b, T-1] each, zero off the response
    # each response's mean token entropy [b], for the log only (completion_rows)
    batch["response_entropy"] = ((h * mask).sum(-1) / mask.sum(-1).clamp_min(1)).detach()
    kl_sum = torch.zeros((), device=h.device)
    if ref_model is not None:
        ref_logp = reference_logprob(ref_model, batch)
        # k3 estimator of KL(pi_theta || pi_ref) on y ~ pi_theta: exp(r) - r - 1 >= 0,
        # r = log pi_ref(y_t) - log pi_theta(y_t), clamped to [-10, 10] as verl's low_var_kl
        r = (ref_logp - logp).clamp(-10.0, 10.0)
        kl_sum = ((torch.exp(r) - r - 1.0) * mask).sum()
    return (h * mask).sum(), kl_sum


def train_step(model, ref_model, optimizer, batches, args, world, device, dtype):
    """One AdamW step on L = (sum H + kl_coef * sum KL) / N over all response tokens of the step.

    N counts the response tokens on every rank and in every micro-batch, so accumulating the
    micro-batch gradients gives exactly the gradient of the full-batch token mean.
    """
    # N = sum_i |y_i| over the global batch: the token-mean denominator
    n_tokens = all_reduce_sum(sum(b["response_mask"].sum() for b in batches).float())
    h_total, kl_total = torch.zeros((), device=device), torch.zeros((), device=device)
    for batch in batches:
        with autocast(device, dtype):
            h_sum, kl_sum = entropy_loss_sums(model, ref_model, batch)
        # FSDP averages gradients over the ranks; * world turns that average back into the global sum
        loss = (h_sum + args.kl_coef * kl_sum) * world / n_tokens.clamp_min(1.0)
        loss.backward()
        h_total += h_sum.detach()
        kl_total += kl_sum.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)  # pre-clip global norm
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    h_mean = all_reduce_sum(h_total).item() / max(n_tokens.item(), 1.0)
    kl_mean = all_reduce_sum(kl_total).item() / max(n_tokens.item(), 1.0)
    stats = {"loss": h_mean + args.kl_coef * kl_mean, "entropy": h_mean}
    if ref_model is not None:
        stats["kl"] = kl_mean
    grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # DTensor under FSDP2
    stats["grad_norm"] = grad_norm.item()
    stats["response_tokens"] = int(n_tokens.item())
    return stats


# ---- main: sample, take one step on the entropy, log, checkpoint ----
def main(argv=None):
    args = parse_args(argv)
    rank, world, device, dtype = setup(args)
    if args.batch_size % world:
        fail(f"--batch-size {args.batch_size} must be divisible by the number of processes ({world})")
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
            texts = step_prompts(prompts, step, args, rank, world)
            samples = rollout(model, tokenizer, texts, args, stop_ids, device, dtype)
            t1 = clock(device)
            batches = micro_batches(samples, args, tokenizer.pad_token_id)
            stats = train_step(model, ref_model, optimizer, batches, args, world, device, dtype)
            t2 = clock(device)
            times = slowest_rank({"time_rollout": t1 - t0, "time_update": t2 - t1}, device)
            seconds = t2 - t0
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
                run_log.write(log, completion_rows(step, texts, samples, batches, tokenizer, args, stop_ids))
                bar.set_postfix(loss=f"{log['loss']:.4f}", entropy=f"{log['entropy']:.4f}")
            interrupted = stop_requested(signal_flag, device)
            if step % args.save_every == 0 or step == args.steps or interrupted or stopped:
                save_checkpoint(model, optimizer, tokenizer, step, args, device, rank, world)
            if interrupted or stopped:
                break
    finish_run(run_log, args, step, interrupted, stopped, rank, world)


# ---- training plumbing, shared with em_rl.py: flags, FSDP2 sharding and precision ----
def training_args(p, *, script, steps_default, steps_help):
    """The flags em_ft.py and em_rl.py share; script (em_ft or em_rl) names the default run folder."""
    p.set_defaults(max_new_tokens=3072)  # training responses are capped at 3072 tokens (paper setup)
    p.add_argument("--steps", type=int, default=steps_default, help=steps_help)
    p.add_argument("--lr", type=float, default=1e-6,
                   help="AdamW learning rate, constant (official EM-RL config: 1e-6)")
    p.add_argument("--weight-decay", type=float, default=0.01,
                   help="AdamW weight decay (official EM-RL config: 0.01)")
    p.add_argument("--grad-clip", type=float, default=1.0,
                   help="clip the global gradient norm to this (paper / official config: 1.0)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature of the training responses (paper Sec. 3: 1.0)")
    p.add_argument("--max-prompt-tokens", type=int, default=1024,
                   help="skip longer prompts (paper setup: prompts <= 1024 tokens)")
    p.add_argument("--micro-batch-size", type=int, default=8,
                   help="sequences (prompt + one response) per forward/backward on each rank; any value >= 1: "
                        "gradients accumulate over the whole batch, so it changes memory and speed, never the "
                        "result (ours)")
    p.add_argument("--rollout-batch-size", type=int, default=64,
                   help="sequences (prompt + one response) decoded together on each rank, for rollouts and "
                        "--eval-dataset; any value >= 1; the samples depend on it, not on --micro-batch-size (ours: "
                        "a decode step reads every weight once for all rows, so 64 rows cost a GPU little more than "
                        "1; their KV cache at 4096 tokens is ~15 GB for a 7B Qwen)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=False,
                   help="recompute each layer's activations in backward: far less activation memory for ~30%% more "
                        "compute (ours)")
    p.add_argument("--out", default=os.path.join("runs", script),
                   help="run folder: metrics.jsonl, the latest model (save_pretrained) and train_state.pt; "
                        "rerunning resumes from it (ours)")
    p.add_argument("--save-every", type=int, default=10,
                   help="save a checkpoint every N steps, and always after the last one (ours)")
    p.add_argument("--eval-dataset", default=None,
                   help="benchmark for greedy accuracy during training, named as --dataset (default: none; ours: "
                        "off)")
    p.add_argument("--eval-every", type=int, default=0,
                   help="evaluate every N steps and after the last one; 0 = after the last one only (ours)")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="use only the first N eval problems (default: all; ours: smoke runs)")
    # ---- experiment tracking: the dict of metrics.jsonl, per step, to each tracker (rank 0) ----
    p.add_argument("--track", action="append", default=None,
                   help="log every step to these trackers too: none, tensorboard (<out>/tensorboard), wandb (honours "
                        "WANDB_MODE=offline), trackio; repeat the flag or separate names by commas (default: none; "
                        "ours)")
    p.add_argument("--project", default="entropy-minimization",
                   help="wandb / trackio project name (ours)")
    p.add_argument("--run-name", default=None,
                   help="tracker run name (default: the --out folder's name; ours)")
    p.add_argument("--log-completions", type=int, default=0,
                   help="write N prompt / response pairs of each step, with their entropy (and reward), to "
                        "<out>/completions.jsonl and to each tracker that has tables; 0 = off (ours)")
    # ---- LoRA: train low-rank adapters on a frozen base (peft) ----
    p.add_argument("--lora-rank", type=int, default=0,
                   help="LoRA rank r; 0 = full fine-tuning. With r > 0 the base stays frozen in --dtype, only the "
                        "float32 adapters train, and the frozen base is the KL reference (ours: 0, as the paper)")
    p.add_argument("--lora-alpha", type=float, default=None,
                   help="LoRA alpha: the adapters' update is scaled by alpha / r (default: 2 x --lora-rank; ours: a "
                        "common choice)")
    p.add_argument("--lora-target-modules", default="all-linear",
                   help="comma-separated module names to adapt, or all-linear: every linear layer of the decoder, "
                        "not lm_head (peft's all-linear; ours)")
    # ---- label-free collapse guards: stop, save and end the run cleanly ----
    p.add_argument("--stop-entropy", type=float, default=None,
                   help="stop when the mean token entropy of a step's samples falls below this, in nats (default: "
                        "off; ours: over-minimized entropy ends answers badly, README 'Logged metrics')")
    p.add_argument("--stop-clipped", type=float, default=None,
                   help="stop when clipped_ratio, the fraction of a step's responses cut at --max-new-tokens, exceeds "
                        "this (default: off; ours)")
    return p


# --track name -> the module it needs and its pip package
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"), "trackio": ("trackio", "trackio")}


def check_training_args(args):
    """One-line errors for values the training loop cannot use."""
    if args.lr <= 0:
        fail(f"--lr must be > 0, got {args.lr}")
    if args.steps < 1:
        fail(f"--steps must be >= 1, got {args.steps}")
    for name in ("batch_size", "micro_batch_size", "rollout_batch_size", "max_new_tokens", "max_prompt_tokens", "save_every", "samples_per_prompt"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.temperature <= 0 or args.grad_clip <= 0 or args.eval_every < 0:
        fail("--temperature and --grad-clip must be > 0 and --eval-every >= 0")
    if args.dtype == "float16":
        fail("--dtype float16 needs loss scaling, which this script does not do: use bfloat16")
    if os.path.isfile(args.out):
        fail(f"--out {args.out} is a file: pass a folder for the run (metrics, model, training state)")
    # --track a --track b,c -> ["a", "b", "c"] ("none" adds nothing), each tracker importable
    names = [n.strip() for flag in args.track or [] for n in flag.split(",") if n.strip() not in ("", "none")]
    for name in names:
        if name not in TRACKERS:
            fail(f"--track {name}: not a tracker; pass none, {', '.join(TRACKERS)} (repeat --track or join names by "
                 "commas)")
        module, package = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            fail(f"--track {name} needs the {package} package, which is not installed: pip install {package} (or pip "
                 "install -r requirements-train.txt)")
    args.track = list(dict.fromkeys(names))
    args.run_name = args.run_name or os.path.basename(os.path.normpath(args.out))
    if args.log_completions < 0:
        fail(f"--log-completions must be >= 0, got {args.log_completions}")
    if args.lora_rank < 0:
        fail(f"--lora-rank must be >= 0 (0 = full fine-tuning), got {args.lora_rank}")
    if args.lora_rank:
        if importlib.util.find_spec("peft") is None:
            fail("--lora-rank needs the peft package, which is not installed: pip install peft (or pip install -r "
                 "requirements-train.txt)")
        args.lora_alpha = 2.0 * args.lora_rank if args.lora_alpha is None else args.lora_alpha
        if args.lora_alpha <= 0:
            fail(f"--lora-alpha must be > 0, got {args.lora_alpha}")
        targets = [t.strip() for t in args.lora_target_modules.split(",") if t.strip()]
        # the entropy is computed from lm_head's weight itself, in chunks (forward_entropy_logprob), so an adapter
        # there would be skipped; with tied embeddings, merging one into embed_tokens would change lm_head too
        if not targets or any(t.split(".")[-1] in ("lm_head", "embed_tokens") for t in targets):
            fail(f"--lora-target-modules {args.lora_target_modules!r}: pass all-linear or names of the decoder's linear "
                 "layers (e.g. q_proj,v_proj), not lm_head or embed_tokens: the entropy reads lm_head's weight directly")
        args.lora_target_modules = "all-linear" if targets == ["all-linear"] else targets
    if args.stop_entropy is not None and args.stop_entropy <= 0:
        fail(f"--stop-entropy must be > 0 nats, got {args.stop_entropy}")
    if args.stop_clipped is not None and not 0 <= args.stop_clipped < 1:
        fail(f"--stop-clipped must be in [0, 1), a fraction of the step's responses, got {args.stop_clipped}")


def load_for_training(args, rank, world, device, dtype, *, trainable=True, lora=False, adapter=None):
    """load_model, then prepare_model; under torchrun without a full copy of the model on every rank.

    lora: wrap the model in --lora-rank adapters (add_lora) before sharding, with the weights of the saved
    adapter folder `adapter` if given (a resumed LoRA run), else freshly initialized.

    Under torchrun only rank 0 reads the checkpoint, into CPU memory. Every rank builds the model on
    the meta device (shapes, no memory), shards it (prepare_model), allocates its own shards and
    receives them from rank 0 one tensor at a time (set_model_state_dict with broadcast_from_rank0,
    as torchtune loads). The other ranks then peak at their shards plus the largest single tensor
    (the embedding), never the full model; no GPU holds more than its shards plus that tensor.
    """
    if world == 1:
        model, tokenizer = load_model(args, device, dtype)
        model = model.requires_grad_(trainable)
        return prepare_model(add_lora(model, args, adapter) if lora else model, args, world, trainable=trainable), tokenizer
    full, tokenizer = load_model(args, torch.device("cpu"), dtype) if rank == 0 else (None, None)
    shared = [tokenizer, full.config, full.generation_config] if rank == 0 else [None] * 3
    dist.broadcast_object_list(shared, src=0)  # what load_model gave rank 0, for every rank
    tokenizer, config, generation_config = shared
    if rank == 0 and lora:
        full = add_lora(full, args, adapter)  # the adapters' weights travel from rank 0 with the base's
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model.generation_config = generation_config
        model = model.requires_grad_(trainable)
        if lora:
            model = add_lora(model, args)  # the same module tree as rank 0's, no memory
    model = prepare_model(model, args, world, trainable=trainable)
    model.to_empty(device=device)  # this rank's shards, uninitialized; tied embeddings stay one tensor
    set_model_state_dict(model, full.state_dict() if rank == 0 else {},
                         options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    # non-persistent buffers (the rotary inv_freq) are in no state dict: rank 0's, as from_pretrained set them
    for name, buf in model.named_buffers():
        if rank == 0:
            buf.copy_(full.get_buffer(name))
        dist.broadcast(buf, src=0)
    return model, tokenizer


def prepare_model(model, args, world, *, trainable=True):
    """Gradient checkpointing (optional), then FSDP2 when launched by torchrun.

    fully_shard on every decoder layer, then on the root: each layer's weights are all-gathered just
    before its forward and freed after it; the root group (embeddings, final norm, lm_head) is
    gathered by the root's forward and, as FSDP2 does for the root, kept unsharded until backward.
    That is why forward_entropy_logprob below may use model.lm_head.weight after the forward.
    """
    if trainable and args.gradient_checkpointing:
        causal_lm(model).activation_checkpointing_enable({"use_reentrant": False})
    if world > 1:
        # compute in --dtype, reduce gradients in float32, keep float32 master weights (sharded); with LoRA the
        # frozen base stays in its own dtype and the float32 adapters are the only trainable (and reduced) tensors
        mp = MixedPrecisionPolicy(param_dtype=getattr(torch, args.dtype), reduce_dtype=torch.float32)
        for layer in causal_lm(model).model.layers:  # Qwen2 / Llama / Mistral: decoder layers at model.model.layers
            fully_shard(layer, mp_policy=mp)
        fully_shard(model, mp_policy=mp)  # the root: the module whose forward runs (a peft wrapper with LoRA)
    model.train(trainable)
    return model


@contextlib.contextmanager
def gathered(model):
    """The model with full weights on every rank, to decode with in a sampling phase (rollouts, eval).

    A sharded forward all-gathers each decoder layer and frees it again: in a decode loop that moves
    the whole model over the network for every token. Here each FSDP2 module is all-gathered once
    (unshard) and kept (reshard_after_forward False), so decoding runs no collective and each rank
    decodes at its own pace. The gathered weights are the shards as the last optimizer step left
    them: the current policy. Cost: one full copy in the compute dtype per rank for the phase,
    7.6e9 params x 2 bytes = ~15 GB for Qwen2.5-Math-7B in bf16. FSDP2's forward hooks would still
    run on every module at every token (~14% of a CPU decode step of SmolLM2, measured), so this
    yields a plain module tree on the meta device whose parameters and buffers ARE the gathered
    tensors (no copy). On exit every module is resharded and gets its training setting back: layers
    reshard after their forward; the root (embeddings, final norm, lm_head) does not, FSDP2's default.
    In one process it yields the model itself.
    """
    modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not modules:
        yield model
        return
    for m in modules:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()  # one all-gather per module, in --dtype (the MixedPrecisionPolicy's param_dtype)
    try:
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(model.config)
            if is_lora(model):  # the same adapters around it, so that every name below has its module
                from peft import get_peft_model
                plain = get_peft_model(plain, model.peft_config["default"])
        for name, tensor in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
            owner, _, attr = name.rpartition(".")
            setattr(plain.get_submodule(owner), attr, tensor)  # tied weights: the same tensor under both names
        yield plain.eval()
    finally:
        for m in modules:
            m.reshard()
            m.set_reshard_after_forward(m is not model, recurse=False)


def autocast(device, dtype):
    """Forward in dtype over float32 weights in one process; under FSDP2 the MixedPrecisionPolicy
    casts instead (autocast would also cache a cast copy of every gathered weight)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32 and not dist.is_initialized())


def all_reduce_sum(x):
    """Sum a tensor over ranks (no-op in one process)."""
    if dist.is_initialized():
        dist.all_reduce(x)
    return x


def clock(device):
    """Seconds on a wall clock, once the device has finished its queued work (CUDA runs ahead)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def slowest_rank(times, device):
    """{phase: seconds} of this rank -> the slowest rank's seconds per phase: what the step waits for."""
    t = torch.tensor(list(times.values()), dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return dict(zip(times, t.tolist()))


# ---- the model to train: full fine-tuning, or LoRA adapters on a frozen base that is also the KL reference ----
def load_training(args, state, rank, world, device, dtype):
    """(model, tokenizer, KL reference or None, AdamW) for a fresh run or one resumed from `state`.

    Full fine-tuning: float32 master weights (AdamW updates of lr 1e-6 vanish in bf16), the forward in --dtype; a
    resumed run loads the latest weights (and tokenizer) saved in --out. The reference, only with --kl-coef > 0, is
    a second, frozen copy of --model in --dtype. LoRA (--lora-rank > 0): the base in --dtype, frozen, with float32
    adapters (peft upcasts them), the only parameters AdamW sees; a resumed run loads --model again and the adapter
    saved in --out/adapter. Its reference is the policy with the adapters switched off (FrozenBase): no copy.
    """
    if args.lora_rank:
        adapter = os.path.join(args.out, ADAPTER_DIR) if state else None
        model, tokenizer = load_for_training(args, rank, world, device, dtype, lora=True, adapter=adapter)
        ref_model = FrozenBase(model) if args.kl_coef > 0 else None
    else:
        source = argparse.Namespace(**{**vars(args), "model": args.out}) if state else args
        model, tokenizer = load_for_training(source, rank, world, device, torch.float32)
        ref_model = None
        if args.kl_coef > 0:  # the frozen initial model, in the compute dtype: it never trains
            ref_model, _ = load_for_training(args, rank, world, device, dtype, trainable=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay)
    if rank == 0:
        n_all = sum(p.numel() for p in model.parameters())  # DTensors count their global size
        print(f"training {sum(p.numel() for p in trainable):,} of {n_all:,} parameters"
              + (f" (LoRA r={args.lora_rank}, alpha={args.lora_alpha:g})" if args.lora_rank else ""), flush=True)
    if state:
        restore_train_state(state, model, optimizer, device, rank, world)
        if rank == 0:
            print(f"resuming {args.out} after step {state['step']}", flush=True)
    return model, tokenizer, ref_model, optimizer


ADAPTER_DIR = "adapter"  # <out>/adapter: a LoRA run's adapter, in peft's format


def is_lora(model):
    """Whether model is a peft wrapper (under FSDP2 too: fully_shard keeps the wrapper's class and attributes)."""
    return hasattr(model, "peft_config")


def causal_lm(model):
    """The transformers model inside a peft wrapper, or the model itself."""
    return model.get_base_model() if is_lora(model) else model


def add_lora(model, args, adapter=None):
    """model wrapped in peft LoRA adapters: W x + (alpha / r) B A x on every --lora-target-modules layer, the base
    frozen; B = 0 at the start, so training starts from the base model. adapter: a saved adapter folder to load."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    config = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, target_modules=args.lora_target_modules,
                        lora_dropout=0.0, bias="none")  # no dropout: the PPO ratio of a sample stays 1 before a step
    # A's random init from its own seed: the global RNG (the sampling stream) is the same with and without LoRA
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = get_peft_model(model, config)
    if adapter is not None:
        from safetensors.torch import load_file
        path = os.path.join(adapter, "adapter_model.safetensors")
        if not os.path.exists(path):
            fail(f"{path} is missing: this run folder was not saved by a LoRA run; pass another --out or the "
                 "flags it was started with")
        loaded = set_peft_model_state_dict(model, load_file(path))
        if loaded.unexpected_keys:
            fail(f"{path} does not fit --lora-rank {args.lora_rank} --lora-target-modules {args.lora_target_modules} "
                 f"on {args.model} ({loaded.unexpected_keys[0]}): rerun with the flags the run was started with")
    return model


class FrozenBase:
    """The KL reference of a LoRA run: the policy with its adapters switched off is exactly the frozen base model,
    so the reference needs no second copy of the weights (reference_logprob runs it)."""

    def __init__(self, policy):
        self.policy = policy


@contextlib.contextmanager
def adapters_off(model):
    """The base model's forward: every LoRA layer skips its adapter. peft's own disable_adapter() also switches
    the adapters' requires_grad off and on, under FSDP2 on whichever tensors (sharded or gathered) the modules hold
    at that moment; the layers' flag alone changes the forward and nothing else."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m._disable_adapters = True
    try:
        yield
    finally:
        for m in layers:
            m._disable_adapters = False


def merge_lora(state, scaling):
    """A plain transformers state dict from a full peft one: W + scaling B A for every adapted layer, float32.

    state: peft names (base_model.model.<name>.base_layer.weight, <name>.lora_A.default.weight [r, in],
    <name>.lora_B.default.weight [out, r]); returns <name>.weight [out, in] = W + (alpha / r) B A, the weight that
    gives the LoRA layer's output W x + (alpha / r) B (A x) in one matmul, and every other tensor as it was.
    float32 whatever the base's dtype: an update of a small lr rounded into bf16 would be lost.
    """
    merged = {}
    for name, tensor in state.items():
        if ".lora_A." not in name and ".lora_B." not in name:
            merged[name.removeprefix("base_model.model.").replace(".base_layer.", ".")] = tensor.float()
    for name, a in state.items():
        if ".lora_A." in name:
            layer, _, adapter = name.partition(".lora_A.")
            b = state[f"{layer}.lora_B.{adapter}"]
            key = layer.removeprefix("base_model.model.") + ".weight"
            merged[key] = merged[key] + scaling * (b.float() @ a.float())  # [out, r] @ [r, in]
    return merged


def save_lora_folder(model, state, folder):
    """A LoRA run's folder: the MERGED model as a plain transformers folder (config.json, model.safetensors in
    float32: AutoModelForCausalLM.from_pretrained, em_inf.py and evaluate.py load it as any model), and the adapter
    alone in folder/adapter (peft's format: PeftModel.from_pretrained(base, folder/adapter); a resumed run loads it)."""
    from safetensors.torch import save_file

    model.save_pretrained(os.path.join(folder, ADAPTER_DIR), state_dict=state)  # peft keeps the adapter's tensors
    lora = model.peft_config["default"]
    merged = merge_lora(state, lora.lora_alpha / lora.r)
    base = causal_lm(model)
    config = copy.deepcopy(base.config)
    config.dtype = torch.float32  # the merged weights' dtype, which from_pretrained's dtype="auto" then keeps
    if config.tie_word_embeddings:
        merged.pop("lm_head.weight", None)  # one tensor under two names: from_pretrained ties it again
    save_file({k: v.contiguous() for k, v in merged.items()}, os.path.join(folder, "model.safetensors"),
              metadata={"format": "pt"})
    config.save_pretrained(folder)
    base.generation_config.save_pretrained(folder)


# ---- training data, rollouts, micro-batches, the chunked forward, the eval pass ----
# the official EM-RL training data (verl's process_math.py) ends every problem with this instruction
TRAIN_SUFFIX = " Let us think step by step and output the final answer within \\boxed{}"


def training_prompts(problems, tokenizer, args, rank):
    """Chat prompts of the training problems (problem text only: no answers are used), long ones skipped.

    Math problems get the official training prompt: the paper's system prompt (evaluate.build_prompt)
    and TRAIN_SUFFIX after the problem. Chat-list records (a `prompt` of messages, e.g. Eurus-2-RL-Data's code
    rows) are rendered by the chat template as they are, nothing added, as the official pipeline does. Code
    problems (records with tests) and records graded by another rule than \boxed{} (the CPU demo's
    "last_number") keep evaluate's prompt for them.
    """
    boxed = [not r.get("tests") and not r.get("messages") and r.get("grading", "boxed") == "boxed" for r in problems]
    prompts = [evaluate.build_prompt(tokenizer, {**r, "problem": r["problem"] + TRAIN_SUFFIX} if b else r)
               for r, b in zip(problems, boxed)]
    kept = [p for p in prompts if len(tokenizer(p, add_special_tokens=False).input_ids) <= args.max_prompt_tokens]
    if not kept:
        fail(f"every prompt of {args.dataset} is longer than --max-prompt-tokens {args.max_prompt_tokens}")
    if rank == 0 and len(kept) < len(prompts):
        print(f"skipped {len(prompts) - len(kept)} prompts longer than {args.max_prompt_tokens} tokens", flush=True)
    return kept


def step_prompts(prompts, step, args, rank, world):
    """This rank's prompts for optimizer step `step` (1-based), each repeated --samples-per-prompt times.

    The data position is a pure function of the step: the stream is epoch 0, 1, ... and epoch e
    visits the prompts in the order randperm(seed + e). So a resumed run neither repeats nor skips.
    """
    n, start = len(prompts), (step - 1) * args.batch_size
    orders = {}
    batch = []
    for k in range(start, start + args.batch_size):
        epoch = k // n
        if epoch not in orders:
            orders[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed + epoch))
        batch.append(prompts[orders[epoch][k % n]])
    share = args.batch_size // world  # rank r takes the r-th contiguous slice of the global batch
    return [p for p in batch[rank * share:(rank + 1) * share] for _ in range(args.samples_per_prompt)]


def rollout(model, tokenizer, prompts, args, stop_ids, device, dtype):
    """Sample one response per prompt string at --temperature, --rollout-batch-size rows decoded together.

    Returns one (prompt ids [P_i], response ids [R_i]) pair of long tensors per prompt, in prompt order,
    unpadded (the response ends with its stop token, if any); micro_batches() pads them for the
    forward/backward. sample() is em_inf.py's continuous batching: a finished row leaves the batch and
    its KV cache at once and the next prompt of this rank's phase takes its row, so no decode step is
    spent on finished rows (a rank's phase has many more sequences than --rollout-batch-size: 512 at
    the paper's scale; bench/bench_train.py measures refill against drop-only). The samples depend on
    the seed and --rollout-batch-size (one draw per row and step from the RNG, in an order set by which
    rows share a step), never on --micro-batch-size. Under torchrun each rank decodes its prompts with
    gathered weights at its own pace.
    """
    def pick_next(logits, rows):
        # y_t ~ softmax(z_t / T): plain temperature sampling (official: top_p 1.0, no top-k)
        probs = torch.softmax(logits / args.temperature, dim=-1)
        return torch.multinomial(probs, 1).squeeze(-1), {}

    model.eval()  # in train mode, HF switches the KV cache off when gradient checkpointing is on
    responses = [None] * len(prompts)
    with gathered(model) as decoder, autocast(device, dtype):
        # rows come back as they finish: put each in its prompt's place
        for i, response, _ in sample(decoder, tokenizer, prompts, args.max_new_tokens, pick_next, stop_ids,
                                     args.rollout_batch_size, refill=True):
            responses[i] = response.to(device)
    model.train()
    # the unpadded prompt ids: sample()'s left-padded tokenization without its padding
    prompt_ids = tokenizer(prompts, add_special_tokens=False).input_ids
    return [(torch.tensor(p, dtype=torch.long, device=device), r) for p, r in zip(prompt_ids, responses)]


def micro_batches(samples, args, pad_id):
    """(prompt, response) pairs -> micro-batches of --micro-batch-size rows, padded as sample() pads.

    Prompts are left padded and responses right padded, so every response starts at the same column
    P and positions come from the attention mask. Returns dicts of input_ids, attention_mask and
    response_mask (1 on generated tokens), each [b, P + R] with P, R the longest in the micro-batch.
    """
    batches = []
    for i in range(0, len(samples), args.micro_batch_size):
        chunk = samples[i:i + args.micro_batch_size]
        P, R = max(len(p) for p, _ in chunk), max(len(r) for _, r in chunk)
        ids = torch.full((len(chunk), P + R), pad_id, dtype=torch.long, device=chunk[0][0].device)
        attn, resp = torch.zeros_like(ids), torch.zeros_like(ids)
        for row, (p, r) in enumerate(chunk):
            ids[row, P - len(p):P], ids[row, P:P + len(r)] = p, r
            attn[row, P - len(p):P + len(r)] = 1
            resp[row, P:P + len(r)] = 1
        batches.append({"input_ids": ids, "attention_mask": attn, "response_mask": resp})
    return batches


def forward_entropy_logprob(model, batch, temperature=1.0):
    """Per-token entropy and log p of the sampled response tokens under softmax(z / temperature),
    never building [B, T, V] logits.

    One root forward (FSDP2 hooks run) with logits_to_keep=1, so lm_head projects only the last
    position ([B, 1, V], negligible), and output_hidden_states=-1, which keeps only the final hidden
    states after the last norm. The vocabulary projection of the response positions then happens
    chunk by chunk inside entropy.response_entropy_logprob. Returns (H, log p, mask), each [B, T-1].
    """
    pos = (batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)  # the positions sample() used
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=pos,
                use_cache=False, logits_to_keep=1, output_hidden_states=-1)
    # z / T = (h / T) W^T: scaling the states scales the logits exactly (lm_head has no bias); / 1 is exact
    hidden = out.hidden_states[-1] / temperature  # [B, T, d]
    return entropy.response_entropy_logprob(hidden, model.lm_head.weight, batch["input_ids"], batch["response_mask"])


@torch.no_grad()
def reference_logprob(ref_model, batch, temperature=1.0):
    """log pi_ref of the sampled response tokens, [b, T-1] (zero off the response); ref_model: a model, or the
    FrozenBase of a LoRA policy.

    FSDP2 reshards a root group (embeddings, lm_head) in backward, which the frozen reference never
    runs: reshard it here, or its gathered root would stay in memory for the rest of the run.
    """
    if isinstance(ref_model, FrozenBase):  # LoRA: the policy's own weights without the adapters
        with adapters_off(ref_model.policy):
            return forward_entropy_logprob(ref_model.policy, batch, temperature)[1]
    logp = forward_entropy_logprob(ref_model, batch, temperature)[1]
    if isinstance(ref_model, FSDPModule):
        ref_model.reshard()
    return logp


@torch.no_grad()
def evaluate_accuracy(model, tokenizer, problems, args, stop_ids, device, dtype, rank, world):
    """Greedy pass@1 on problems through evaluate.build_prompt / evaluate.grade, split across ranks.

    Each rank decodes its own share with gathered weights, --rollout-batch-size rows at a time
    (continuous batching, as rollout()), and grades each response as it finishes.
    """
    def greedy(logits, rows):
        return logits.argmax(dim=-1), {}

    mine = problems[rank::world]
    prompts = [evaluate.build_prompt(tokenizer, r) for r in mine]
    correct = torch.zeros((), device=device)
    model.eval()
    with gathered(model) as decoder, autocast(device, dtype):
        for i, response, _ in sample(decoder, tokenizer, prompts, args.max_new_tokens, greedy, stop_ids, args.rollout_batch_size):
            correct += evaluate.grade(mine[i], tokenizer.decode(response, skip_special_tokens=True))
    model.train()
    return all_reduce_sum(correct).item() / len(problems)


# ---- collapse metrics and the label-free early stops (--stop-entropy, --stop-clipped) ----
def repeat_4gram(tokens):
    """Fraction of repeated 4-grams in one response: 1 - (distinct 4-grams) / (4-grams).

    tokens: the response's token ids without its stop token, y_1..y_n. Its 4-grams are (y_i, ..., y_i+3) for
    i = 1..n-3; the fraction counts each position whose 4-gram already occurred earlier in the same response, so
    0 = no 4-gram repeats, and a response that loops one phrase tends to 1. Fewer than 4 tokens: no 4-gram, 0.
    Token ids, not words: a collapse repeats tokens, whatever the tokenizer makes of them.
    """
    grams = [tuple(tokens[i:i + 4]) for i in range(len(tokens) - 3)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def collapse_metrics(samples, args, stop_ids, device):
    """clipped_ratio and repeat_4gram of a step's responses, over all ranks.

    samples: this rank's (prompt ids, response ids) pairs, as rollout() returns them. A response is clipped when
    it has --max-new-tokens tokens and its last one is no stop token (it was cut, not ended). repeat_4gram is the
    mean over responses of repeat_4gram(); both are fractions, 0 in a healthy run (README, Logged metrics).
    """
    stops = set(stop_ids)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # clipped responses, sum of repeat_4gram, responses
    for _, response in samples:
        ids = response.tolist()
        ended = bool(ids) and ids[-1] in stops
        sums += torch.tensor([float(len(ids) >= args.max_new_tokens and not ended),
                              repeat_4gram(ids[:-1] if ended else ids), 1.0], dtype=torch.float64, device=device)
    clipped, repeats, n = all_reduce_sum(sums).tolist()
    return {"clipped_ratio": clipped / max(n, 1.0), "repeat_4gram": repeats / max(n, 1.0)}


def collapse_stop(log, args):
    """The early stop this step's log fires, as a sentence, or None. The same on every rank: the log's numbers
    are reduced over all ranks."""
    if args.stop_entropy is not None and log["entropy"] < args.stop_entropy:
        return f"entropy {log['entropy']:.4f} < --stop-entropy {args.stop_entropy:g}"
    if args.stop_clipped is not None and log["clipped_ratio"] > args.stop_clipped:
        return f"clipped_ratio {log['clipped_ratio']:.4f} > --stop-clipped {args.stop_clipped:g}"
    return None


def completion_rows(step, prompts, samples, batches, tokenizer, args, stop_ids):
    """The first --log-completions (prompt, response) pairs of this rank's step, for completions.jsonl and the
    trackers: texts, response tokens, whether it was clipped, its mean token entropy and, in EM-RL, its reward.

    prompts: the prompt strings of rollout(); batches: the micro-batches of the same samples in the same order,
    where the loss (EM-FT) or the scoring (EM-RL) left response_entropy and reward ([b] each).
    """
    n = min(args.log_completions, len(samples))
    if n == 0:
        return []
    values = {key: torch.cat([b[key] for b in batches])[:n].tolist() for key in ("response_entropy", "reward")
              if key in batches[0]}
    rows = []
    for i in range(n):
        response = samples[i][1].tolist()
        row = {"step": step, "prompt": prompts[i], "response": tokenizer.decode(response, skip_special_tokens=True),
               "response_tokens": len(response),
               "clipped": len(response) >= args.max_new_tokens and response[-1] not in stop_ids}
        row.update({"entropy" if key == "response_entropy" else key: v[i] for key, v in values.items()})
        rows.append(row)
    return rows


# ---- checkpoints and metrics: rank 0 writes; saves are atomic; rerunning resumes ----
STATE_FILE = "train_state.pt"


RESUME_KEYS = ("model", "dataset", "limit", "batch_size", "samples_per_prompt", "seed", "max_prompt_tokens",
               "lora_rank", "lora_alpha", "lora_target_modules")
# what a training state saved before a key existed means by it
RESUME_DEFAULTS = {"lora_rank": 0, "lora_alpha": None, "lora_target_modules": "all-linear"}


def _move_into(src, out):
    """Move every file of the committed save folder src into out (folders, e.g. adapter/, whole), then remove src."""
    for name in os.listdir(src):
        target = os.path.join(out, name)
        if os.path.isdir(os.path.join(src, name)) and os.path.isdir(target):
            shutil.rmtree(target)  # a folder cannot replace a folder in one rename; the commit point was src's rename
        os.replace(os.path.join(src, name), target)
    os.rmdir(src)


def finish_interrupted_save(out):
    """Crash recovery for save_checkpoint: complete a committed save, drop an uncommitted one."""
    ready, tmp = os.path.join(out, ".save-ready"), os.path.join(out, ".save-tmp")
    if os.path.isdir(ready):
        _move_into(ready, out)
    shutil.rmtree(tmp, ignore_errors=True)


def rng_state(device):
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def save_checkpoint(model, optimizer, tokenizer, step, args, device, rank, world):
    """Save the model (save_pretrained + tokenizer) and train_state.pt into --out, atomically.

    Protocol: write everything to out/.save-tmp, rename it to out/.save-ready (the commit point: a
    rename is atomic), then move the files into out and remove the folder. A crash before the
    rename leaves the previous checkpoint intact; after it, finish_interrupted_save completes the
    move on the next start. Every rank must call this: gathering the FSDP2 shards is collective.
    """
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)  # full tensors on rank 0's CPU
    model_sd = get_model_state_dict(model, options=full)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=full)
    rngs = [rng_state(device)]
    if world > 1:
        rngs = [None] * world
        dist.all_gather_object(rngs, rng_state(device))  # each rank's sampling RNG
    if rank != 0:
        return
    tmp, ready = os.path.join(args.out, ".save-tmp"), os.path.join(args.out, ".save-ready")
    shutil.rmtree(tmp, ignore_errors=True)
    if is_lora(model):
        save_lora_folder(model, model_sd, tmp)  # the merged model, and the adapter in tmp/adapter
    else:
        model.save_pretrained(tmp, state_dict=model_sd)
    tokenizer.save_pretrained(tmp)
    torch.save({"step": step, "prompts_seen": step * args.batch_size, "optimizer": optim_sd, "rng": rngs,
                "world_size": world, "args": vars(args)}, os.path.join(tmp, STATE_FILE))
    os.replace(tmp, ready)
    _move_into(ready, args.out)


def load_train_state(args, rank, world):
    """The training state saved in --out (None for a fresh run); one-line error if unreadable."""
    if rank == 0 and os.path.isdir(args.out):
        finish_interrupted_save(args.out)
    if world > 1:
        dist.barrier()  # rank 0 may just have completed a save
    path = os.path.join(args.out, STATE_FILE)
    if not os.path.exists(path):
        return None
    try:
        # mmap: ranks share the pages instead of each holding a copy of the optimizer state
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        fail(f"cannot read checkpoint {path} ({str(e).splitlines()[0] if str(e) else type(e).__name__}): "
             f"delete {args.out} or pass another --out")
    if not isinstance(state, dict) or not {"step", "optimizer", "rng", "world_size", "args"} <= state.keys():
        fail(f"{path} is not a training state written by this script: delete {args.out} or pass another --out")
    for key in RESUME_KEYS:
        saved = state["args"].get(key, RESUME_DEFAULTS.get(key))
        if key in ("lora_alpha", "lora_target_modules") and not args.lora_rank and not saved_lora(state):
            continue  # not used by a full fine-tuning run
        if saved != getattr(args, key):
            fail(f"{args.out} holds a run with --{key.replace('_', '-')} {saved}, not "
                 f"{getattr(args, key)}: rerun with the same flags to resume, or pass another --out")
    return state


def saved_lora(state):
    return bool(state["args"].get("lora_rank", 0))


def restore_train_state(state, model, optimizer, device, rank, world):
    """Optimizer moments and step counts, and this rank's RNG, from a training state."""
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state["optimizer"],
                             options=StateDictOptions(full_state_dict=True))  # each rank keeps its shard
    if state["world_size"] == world:
        torch.set_rng_state(state["rng"][rank]["cpu"])
        if device.type == "cuda" and state["rng"][rank]["cuda"] is not None:
            torch.cuda.set_rng_state(state["rng"][rank]["cuda"], device)
    elif rank == 0:
        print(f"world size changed ({state['world_size']} -> {world}): the run goes on with fresh sampling "
              "randomness, so it will not match an uninterrupted run token for token", flush=True)


def open_metrics(args, start_step, rank, name="metrics.jsonl"):
    """<out>/name (metrics.jsonl, completions.jsonl) for appending, cut back to the lines of steps <= start_step
    (a step after the last save reruns)."""
    if rank != 0:
        return None
    path = os.path.join(args.out, name)
    kept = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                with contextlib.suppress(json.JSONDecodeError):  # a line cut by a crash
                    if json.loads(line)["step"] <= start_step:
                        kept.append(line if line.endswith("\n") else line + "\n")
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)
    return open(path, "a")


class RunLog:
    """Where each step's numbers go, on rank 0 (the other ranks hold an empty RunLog): metrics.jsonl, with
    --log-completions completions.jsonl, and every --track tracker, each given the same dict with the run's
    arguments as its config. A resumed run appends to both files (their lines of steps after the last save go
    first: those steps run again) and continues its tracker runs (see each tracker)."""

    def __init__(self, args, start_step, rank):
        self.metrics = self.completions = None
        self.trackers = []
        if rank != 0:
            return
        self.metrics = open_metrics(args, start_step, rank)
        if args.log_completions:
            self.completions = open_metrics(args, start_step, rank, "completions.jsonl")
        ids = tracker_ids(args, start_step)
        self.trackers = [{"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "trackio": TrackioTracker}[name](
            args, start_step, ids) for name in args.track]
        if self.trackers:
            with open(os.path.join(args.out, TRACKER_IDS), "w") as f:
                json.dump(ids, f)

    def write(self, log, completions):
        """One step: log is the metrics.jsonl line; completions its completion_rows."""
        if self.metrics is None:
            return
        self.metrics.write(json.dumps(log) + "\n")
        self.metrics.flush()
        if self.completions is not None:
            self.completions.writelines(json.dumps(row) + "\n" for row in completions)
            self.completions.flush()
        # trackers take numbers: the stop sentence is in metrics.jsonl and on stdout
        numbers = {k: v for k, v in log.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for tracker in self.trackers:
            tracker.log(log["step"], numbers, completions)

    def close(self):
        for f in (self.metrics, self.completions):
            if f is not None:
                f.close()
        for tracker in self.trackers:
            tracker.close()


TRACKER_IDS = "trackers.json"  # <out>/trackers.json: the wandb run id, so that a resumed run continues it


def tracker_ids(args, start_step):
    """The tracker run ids of this run folder: kept from the run being resumed, new for a fresh one."""
    path = os.path.join(args.out, TRACKER_IDS)
    if start_step and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def completions_table(rows):
    """(columns, rows as lists) of completion_rows, for the trackers' tables."""
    columns = list(rows[0])
    return columns, [[row.get(c) for c in columns] for row in rows]


class TensorBoardTracker:
    """Event files in <out>/tensorboard (`tensorboard --logdir <out>`): one scalar per metric, the arguments and
    the completions as text. A resumed run writes to the same folder and purges the events of the steps after its
    last save (SummaryWriter's purge_step), so each step shows once."""

    def __init__(self, args, start_step, ids):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(os.path.join(args.out, "tensorboard"), purge_step=start_step + 1 if start_step else None)
        self.writer.add_text("args", "    " + json.dumps(vars(args), indent=1).replace("\n", "\n    "), start_step)

    def log(self, step, numbers, completions):
        for name, value in numbers.items():
            self.writer.add_scalar(name, value, step)
        if completions:
            columns, rows = completions_table(completions)
            lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            # one markdown table row per completion: | and line breaks inside a cell escaped
            lines += ["| " + " | ".join(str(v).replace("|", "\\|").replace("\n", "<br>") for v in row) + " |"
                      for row in rows]
            self.writer.add_text("completions", "\n".join(lines), step)
        self.writer.flush()

    def close(self):
        self.writer.close()


class WandbTracker:
    """A wandb run: online, or offline with WANDB_MODE=offline (files under <out>/wandb, `wandb sync` uploads
    them). A resumed run continues the same run (its id in <out>/trackers.json, resume="allow"). Our `step` is the
    x axis of every chart: wandb's own counter only grows, so the steps a resumed run repeats (those after the
    last save) are logged again at the same x rather than dropped."""

    def __init__(self, args, start_step, ids):
        import wandb

        self.wandb = wandb
        ids.setdefault("wandb", uuid.uuid4().hex[:12])  # wandb's run ids: lowercase letters and digits
        self.run = wandb.init(project=args.project, name=args.run_name, id=ids["wandb"], resume="allow", dir=args.out,
                              config=vars(args), allow_val_change=True)  # a resumed run may change --steps
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, step, numbers, completions):
        if completions:
            columns, rows = completions_table(completions)
            numbers = {**numbers, "completions": self.wandb.Table(columns=columns, data=rows)}
        self.run.log(numbers)

    def close(self):
        self.run.finish()


class TrackioTracker:
    """A trackio run (local, in trackio's folder: TRACKIO_DIR, default ~/.cache/huggingface/trackio; `trackio show`
    opens it). A resumed run continues the run of the same --project and --run-name (resume="allow")."""

    def __init__(self, args, start_step, ids):
        import trackio

        self.trackio = trackio
        trackio.init(project=args.project, name=args.run_name, config=vars(args), resume="allow")

    def log(self, step, numbers, completions):
        if completions:
            columns, rows = completions_table(completions)
            numbers = {**numbers, "completions": self.trackio.Table(columns=columns, data=rows)}
        numbers = {k: v for k, v in numbers.items() if k != "step"}  # trackio's own key: given as step=
        self.trackio.log(numbers, step=step)

    def close(self):
        self.trackio.finish()


@contextlib.contextmanager
def graceful_stop():
    """First Ctrl-C (SIGINT) or SIGTERM: finish the current step, save, exit. Second Ctrl-C: abort now."""
    flag = {"stop": False}

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True
        print("\nstopping after this step and saving (Ctrl-C again aborts without saving)", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def stop_requested(flag, device):
    """True on every rank as soon as one rank got the signal, so all ranks save together."""
    stop = torch.tensor(float(flag["stop"]), device=device)
    if dist.is_initialized():
        dist.all_reduce(stop, op=dist.ReduceOp.MAX)
    return bool(stop.item())


def finish_run(run_log, args, step, interrupted, stopped, rank, world):
    """The end of a training run: close the logs, say how it ended, exit (130 after Ctrl-C, else 0)."""
    if rank == 0:
        run_log.close()
        if interrupted:
            print(f"interrupted: saved step {step} to {args.out}; rerun the same command to resume", file=sys.stderr, flush=True)
        elif stopped:
            print(f"stopped early at step {step}: {stopped}; model saved in {args.out} (a rerun of the same command "
                  "continues and checks the rule again after each step)", flush=True)
        else:
            print(f"done: {args.steps} steps, model in {args.out}", flush=True)
    if interrupted and world == 1:
        sys.exit(130)
    if world > 1:
        leave_torchrun(130 if interrupted else 0)


def leave_torchrun(code):
    """End a torchrun process without Python's interpreter shutdown, once every rank is done.

    gloo's worker threads release the tensors of the last collectives after those complete; a thread
    that still needs the GIL for that when Python finalizes is killed in the middle of C++ code and the
    process aborts ("terminate called without an active exception", 1 run in ~5 of a 2-process test;
    pytorch/pytorch PR 179291). A barrier only narrows that window. Every file is written and closed
    and every rank is past the barrier, so exiting at once loses nothing.
    """
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
