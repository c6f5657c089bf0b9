"""em_inf.py: EM-INF, entropy minimization at inference time, plus the paper's decoding baselines.

At every decoding step the frozen model's next-token logits z0 are treated as free parameters and
pushed toward a lower-entropy distribution by a few Adam steps, then the sampling temperature is
applied and a token is sampled:

    z* ~= argmin_z  H(softmax(z)) + kl_weight * KL(softmax(z0) || softmax(z)),   y_t ~ softmax(z* / T)

(at most --steps Adam steps from z = z0, each row stopping for good once H(softmax(z)) < --delta).
Paper: Agarwal et al., "The Unreasonable Effectiveness of Entropy Minimization in LLM Reasoning",
arXiv 2505.15134, Sec. 3.3 (Eq. 5) for EM-INF, Algorithm 1 for adaptive temperature, Table 3 for the
baselines (greedy, sampling at T = 0.1, adaptive temperature, self-consistency N = 4).

Differences from the paper and the official code (github shivamag125/EM_PT, EM-INF/*.sh and
eval/UGPhysics/codes/min_entropy_gen.py):
 1. Batched. The official code decodes one prompt per `generate` call in 16 worker processes, and its
    entropy `-(p * log(p + 1e-12)).sum()` has no dim, so it is only right at batch size 1. Here all
    rows of a batch are optimized at once, each with its own Adam state and its own stopping step.
 2. Closed-form gradients instead of autograd: dH/dz = -p (z - E_p[z]), dKL(p0||p)/dz = p - p0, and
    the exact entropy -sum p log p with 0 log 0 = 0 (entropy.softmax_entropy) instead of the official
    `log(p + 1e-12)`; the two agree except on tokens with p below ~1e-10 (test_em_inf.py bounds the
    difference). The update runs in place, eager (compiled, it was 4x slower on an H100); rows that
    start below delta take no step and, on a CPU, are left out of the update altogether.
 3. The model's generation_config is NOT applied. Calling `model.generate` makes the official EM-INF
    code inherit Qwen2.5-Instruct's top-k 20, top-p 0.8 and repetition penalty 1.05 (after the
    EM-INF update, in that order with the temperature) while its baselines run in vLLM without them.
    Here these are flags, off by default; `--top-k 20 --top-p 0.8 --repetition-penalty 1.05
    --prob-floor 1e-9` reproduces the official EM-INF sampler for those models.
 4. The official EM-INF sampler clamps probabilities to >= 1e-9 before sampling (at a 152k vocabulary
    that is a ~1.5e-4 chance per token of an arbitrary token); here --prob-floor, off by default.
 5. Responses stop at the EOS / chat end tokens only; the official code also stops at the strings
    "Question", "USER", "ASSISTANT", "Instruction", "Response", which can occur inside a solution.
 6. Self-consistency: like the official code, the response whose boxed answer is equivalent to the
    most others wins, but ties go to the earliest sample (official: random) and equivalence is
    evaluate.answers_equal (math-verify) instead of the UGPhysics judge.
 7. Data parallel with torchrun (one model per GPU, problems sharded, each rank at its own pace, rank
    0 merging at the end) instead of a process pool; results are streamed to a JSONL file, one line per
    problem as it finishes, and a rerun resumes.
 8. Tokens are drawn by inverting the CDF (one uniform number per row) instead of torch.multinomial:
    the same distribution, another random stream, and 8x cheaper on a CPU.
 9. Iterative refinement (--mode iter_refine, the official `self_refinement`): no critique text; round r's prompt
    is round r-1's prompt + its response + "\n\n" + the original prompt. The official code grades every round
    and picks none; we report the last round (the row keeps every round). We think the paper's row is the last
    round too, unverified: for Qwen2.5-Math-7B-Instruct its iter-refine cells equal its T = 0.1 cells, which
    fits either the first round or later rounds overflowing that model's 4K context.
10. Continuous batching (--batching continuous): a finished response leaves the batch and its KV cache,
    and the next problem takes its row, so no decode step is spent on finished rows. A row's random
    numbers then depend on which rows share its steps: sampled responses differ from a static batch
    (or from one problem at a time) as any other seed would; greedy responses do not.
11. SciCode (--dataset scicode): the official code gave EM-INF the raw template text (no chat template), a
    4096-token cap and Qwen's generation_config sampler, and its baselines (vLLM) the chat template with "You are
    a helpful assistant." and no cap. Here every mode gets the same prompt, cap and sampler (chat by default;
    --prompt-format raw --top-k 20 --top-p 0.8 --repetition-penalty 1.05 --prob-floor 1e-9 is the official
    EM-INF path). Step k is decoded after step k-1 with its code in the prompt, as SciCode's own harness.

The file reads top to bottom as: arguments; the method (minimize_entropy, with minimize_entropy_reference,
the official per-token Adam loop written plainly, beside it) and the baselines (adaptive_temperature, the
sampling filters, majority_vote); main; then the plumbing that em_ft.py and em_rl.py import from here: the
shared flags, setup, model loading, stop tokens, the ONE decode engine (sample: a batched KV-cache loop with
continuous batching) and the results file.

Commands:
    # GPU (paper Table 3 protocol, Qwen2.5-Math-7B-Instruct on MATH-500)
    python em_inf.py --model Qwen/Qwen2.5-Math-7B-Instruct --dataset math500
    python em_inf.py --model Qwen/Qwen2.5-Math-7B-Instruct --mode self_consistency --samples-per-prompt 4
    # data parallel on 8 GPUs: the problems are sharded, the results merged into one file
    torchrun --nproc_per_node 8 em_inf.py --model Qwen/Qwen2.5-Math-7B-Instruct --dataset math500
    # SciCode (test split, with background): SciCode's eval/data folder, see the README
    python em_inf.py --model Qwen/Qwen2.5-7B-Instruct --dataset scicode --scicode-data SciCode/eval/data --mode greedy
    # iterative refinement, 3 rounds (Table 3)
    python em_inf.py --model Qwen/Qwen2.5-Math-7B-Instruct --dataset math500 --mode iter_refine --rounds 3
    # CPU smoke run with SmolLM2-135M-Instruct (the hub id, or local_models/smollm2 from `make local_models`)
    python em_inf.py --model HuggingFaceTB/SmolLM2-135M-Instruct --dataset data/mini_math.jsonl --limit 4 --max-new-tokens 64
"""
import argparse
import concurrent.futures
import itertools
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers import DynamicLayer, LogitsProcessor

import entropy
import evaluate


# ---- arguments (the flags shared with em_ft.py / em_rl.py, common_args, are at the bottom) ----
# EM-INF hyperparameters of the official EM-INF/em_inf_eval.sh; the flags and EMInfLogitsProcessor use them
DELTA, LR, STEPS, KL_WEIGHT, TEMPERATURE = 0.3, 0.1, 3, 0.05, 0.1


MODES = ["em_inf", "greedy", "sample", "adaptive_temp", "self_consistency", "iter_refine"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] + " " + SOURCES, formatter_class=HelpFormatter)
    common_args(p, batch_size_default=32,
                batch_size_help="sequences decoded together on each rank (self_consistency: --samples-per-prompt "
                                "per problem); any value >= 1 (ours: fits a 7B model at 4096 tokens on an 80 GB GPU)")
    p.add_argument("--mode", default="em_inf", choices=MODES,
                   help="em_inf (paper Sec. 3.3) or a Table 3 baseline: greedy, sample (at --temperature), "
                        "adaptive_temp (Algorithm 1), self_consistency (majority of --n samples), iter_refine "
                        "(--rounds rounds, each sampled at --temperature, each prompt holding the previous rounds)")
    p.add_argument("--delta", type=float, default=DELTA,
                   help="entropy threshold in nats: EM-INF stops a row below it; adaptive_temp leaves rows below it "
                        "alone (official em_inf_eval.sh: 0.3; paper Sec. 3.3: 0.1-0.5 best; official "
                        "adaptive_temp_eval.sh: 1e-5)")
    p.add_argument("--lr", type=float, default=LR,
                   help="Adam learning rate on the logits (official em_inf_eval.sh, paper Sec. 3.3)")
    p.add_argument("--steps", type=int, default=STEPS,
                   help="max Adam steps per token (official em_inf_eval.sh: 3; paper Sec. 3.3: 5-15; UGPhysics code: "
                        "5)")
    p.add_argument("--kl-weight", type=float, default=KL_WEIGHT,
                   help="weight of KL(p0 || p) to the model's distribution (official em_inf_eval.sh: 0.05; UGPhysics "
                        "code: 0.001)")
    p.add_argument("--temperature", type=float, default=TEMPERATURE,
                   help="sampling temperature for em_inf (applied after the update), sample and self_consistency; "
                        "adaptive_temp picks its own per token (paper Sec. 4, official em_inf_eval.sh: 0.1)")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="adaptive_temp target ratio: H* = max(delta, alpha * H) (paper Sec. 3.3: 0.4-0.6 best; "
                        "official adaptive_temp_eval.sh: 0.85)")
    # --n is an alias for the paper's notation, but torchrun's own parser rejects it (an ambiguous abbreviation
    # of its --nnodes / --nproc-per-node), so the documented spelling is --samples-per-prompt
    p.add_argument("--samples-per-prompt", "--n", dest="n", type=int, default=4,
                   help="samples per problem for self_consistency; --n is an alias that torchrun does not pass on "
                        "(paper Table 3: N = 4)")
    p.add_argument("--rounds", type=int, default=3,
                   help="iter_refine: rounds per problem; the row's `correct` is the last round's, every round is "
                        "kept (paper Table 3: N = 3; official scripts: 4 for MATH-500/AMC/AIME and LeetCode, 3 for "
                        "Minerva, OlympiadBench and UGPhysics)")
    p.add_argument("--prompt-format", default="chat", choices=evaluate.SCICODE_PROMPT_FORMATS,
                   help="SciCode only: chat = SciCode's template as the user turn under the system message 'You are "
                        "a helpful assistant.' (the official baselines' prompt); raw = the template text alone, no "
                        "chat template (the official EM-INF path). Every mode gets the same prompt (ours; the "
                        "official code gave EM-INF raw prompts and its baselines chat ones)")
    p.add_argument("--scicode-data", default=None,
                   help="SciCode only: the folder SciCode's repository keeps as eval/data, with test_data.h5 (~1 GB, "
                        "from the Google Drive folder in SciCode's README) and the given steps 13.6.txt, 62.1.txt, "
                        "76.3.txt (default: none; required for --dataset scicode)")
    p.add_argument("--scicode-timeout", type=float, default=evaluate.SCICODE_TIMEOUT,
                   help="SciCode only: seconds each step's test program may run (official EM_PT: 300; upstream "
                        "SciCode: 1800)")
    p.add_argument("--scicode-official-given", action="store_true",
                   help="SciCode only: give the steps after 13.6 / 62.1 only the first __init__ of those given class "
                        "steps, as upstream's extraction does (default: off, the whole given code; ours: upstream "
                        "loses the class, so 11 later steps cannot pass)")
    p.add_argument("--ugphysics-judge", default="ours", choices=evaluate.JUDGES,
                   help="UGPhysics only: the rule-based judge; ours compares numbers with their exponents, official "
                        "(the paper's) compares only the mantissas, so 2.0e3 == 2.0e5 (ours: a wrong answer is wrong)")
    p.add_argument("--top-k", type=int, default=0,
                   help="keep the k most likely tokens, 0 = off (ours: off; the official EM-INF code leaks Qwen's "
                        "generation_config top-k 20)")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="nucleus sampling mass, 1 = off (ours: off; the official EM-INF code leaks top-p 0.8)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="HF-style penalty on tokens already in the prompt or response, 1 = off (ours: off; the "
                        "official EM-INF code leaks 1.05)")
    p.add_argument("--prob-floor", type=float, default=0.0,
                   help="clamp sampling probabilities to at least this, 0 = off (ours: off; official EM-INF sampler: "
                        "1e-9)")
    p.add_argument("--batching", default="continuous", choices=["continuous", "static"],
                   help="continuous: a finished response leaves the batch and the next problem takes its row "
                        "(ours: no decode step is spent on finished rows; bench/bench_em_inf.py); static: batches of "
                        "--batch-size problems, each decoded until its longest response ends (ours: a baseline to "
                        "measure against, "
                        "and for models whose KV cache cannot be re-padded)")
    p.add_argument("--out", default=None,
                   help="results JSONL, appended per problem, resumed on rerun (default: "
                        "results/<model>_<dataset>_<mode>.jsonl; ours)")
    args = p.parse_args(argv)
    # one-line errors for values that would crash or silently do nothing later
    checks = [(args.delta > 0, f"--delta must be > 0 (got {args.delta}): it is an entropy in nats, e.g. 0.3"),
              (args.steps >= 1, f"--steps must be >= 1 (got {args.steps})"),
              (args.batch_size >= 1, f"--batch-size must be >= 1 (got {args.batch_size})"),
              (args.lr > 0, f"--lr must be > 0 (got {args.lr})"),
              (args.kl_weight >= 0, f"--kl-weight must be >= 0 (got {args.kl_weight})"),
              (args.temperature > 0, f"--temperature must be > 0 (got {args.temperature}); use --mode greedy for argmax"),
              (0 < args.alpha <= 1, f"--alpha must be in (0, 1] (got {args.alpha})"),
              (args.n >= 1, f"--samples-per-prompt must be >= 1 (got {args.n})"),
              (args.rounds >= 1, f"--rounds must be >= 1 (got {args.rounds})"),
              (args.scicode_timeout > 0, f"--scicode-timeout must be > 0 (got {args.scicode_timeout})"),
              (args.max_new_tokens >= 1, f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})"),
              (args.limit is None or args.limit >= 1, f"--limit must be >= 1 (got {args.limit})"),
              (args.top_k >= 0, f"--top-k must be >= 0 (got {args.top_k})"),
              (0 < args.top_p <= 1, f"--top-p must be in (0, 1] (got {args.top_p})"),
              (args.repetition_penalty > 0, f"--repetition-penalty must be > 0 (got {args.repetition_penalty})"),
              (0 <= args.prob_floor < 1, f"--prob-floor must be in [0, 1) (got {args.prob_floor})")]
    for ok, message in checks:
        if not ok:
            fail(message)
    return args


# ---- the method: EM-INF logit optimization (paper Sec. 3.3, Eq. 5) ----
def minimize_entropy_reference(logits, delta, lr, steps, kl_weight):
    """minimize_entropy written plainly: the official per-token loop (autograd, torch.optim.Adam), one row at a time.

    The readable definition of the update, for reading and for tests (test_em_inf.py checks that the fast
    minimize_entropy below gives the same logits); ~100x slower. Finite logits only (at -inf, autograd's
    0 * -inf is NaN). logits [B, V] -> optimized float32 logits [B, V].
    """
    out = []
    for z0 in logits.float():  # one token's logits [V]
        p0 = torch.softmax(z0, dim=-1)
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)  # fresh Adam state for every token (torch defaults but lr)
        for _ in range(steps):
            log_p = torch.log_softmax(z, dim=-1)
            h = -(log_p.exp() * log_p).sum()  # H(softmax z)
            if h < delta:  # confident enough: stop for good (official: break)
                break
            kl = (p0 * (p0.log() - log_p)).sum()  # KL(p0 || softmax z)
            opt.zero_grad()
            (h + kl_weight * kl).backward()
            opt.step()
        out.append(z.detach())
    return torch.stack(out)


# torch.optim.Adam defaults, which the official code uses (it only sets lr)
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


SKIP_WHEN_DONE = ("cpu",)  # devices where minimize_entropy leaves out rows that need no step (see there)


def minimize_entropy(logits, delta, lr, steps, kl_weight, return_stats=False):
    """EM-INF: lower the entropy of each row of `logits` with a few Adam steps on the logits themselves.

    logits: [B, V] (any float dtype; -inf entries allowed, each row needs one finite logit).
    Per row, independently, exactly the official algorithm: fresh Adam state (torch defaults), then up
    to `steps` times: if H(softmax(z)) < delta the row stops for good, else one Adam step on
    H(softmax z) + kl_weight * KL(softmax(logits) || softmax z). Gradients are closed-form.
    returns: the optimized float32 logits [B, V] (-inf stays -inf); with return_stats=True also the
    Adam steps each row took ([B] long, 0 for rows that start below delta) and H(softmax(logits)) [B].
    """
    z = logits.to(torch.float32, copy=True)  # updated in place below; the caller's logits stay as they are
    # h0: the model's own entropy, also the `entropy` statistic
    p, plogp, h0 = entropy.softmax_entropy(z, (_scratch("p0", len(z), z), _scratch("plogp0", len(z), z)))
    taken = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    # A row already below delta takes no step (official: it breaks before the first one), so on a CPU
    # it is left out of the update altogether: with a confident model most rows are. Choosing the rows
    # needs their number on the host: free on a CPU, but on a GPU a sync that makes the CPU wait
    # instead of queueing the update behind the forward pass. There every row runs every step, the
    # stopped ones frozen (same result; H100, [16, 152064], 5 steps: ~0.4 ms of GPU time).
    if z.device.type in SKIP_WHEN_DONE:
        rows = (h0 >= delta).nonzero().squeeze(1)  # [b] the rows that take at least one step
        if len(rows) == 0:
            return (z, taken, h0) if return_stats else z
        if len(rows) < z.shape[0]:
            b = len(rows)  # gather the rows into kept buffers: indexing would allocate fresh ones
            z_rows, p_rows, plogp_rows = (torch.index_select(x, 0, rows, out=_scratch(name, b, z))
                                          for x, name in ((z, "z"), (p, "p"), (plogp, "plogp")))
            z_rows, taken_rows = _minimize_rows(z_rows, p_rows, plogp_rows, h0[rows], delta, lr, steps, kl_weight)
            z[rows], taken[rows] = z_rows, taken_rows
            return (z, taken, h0) if return_stats else z
    z, taken = _minimize_rows(z, p, plogp, h0.clone(), delta, lr, steps, kl_weight)
    return (z, taken, h0) if return_stats else z


def _minimize_rows(z, p, plogp, h, delta, lr, steps, kl_weight):
    """minimize_entropy on float32 z [b, V] in place, given entropy.softmax_entropy(z); returns (z, steps taken [b]).

    p and plogp are overwritten (their memory is reused); the other temporaries are kept buffers (_scratch)."""
    consts = _adam_constants(lr, steps, kl_weight, z.device)
    b = len(z)
    kl_p0 = torch.mul(p, consts[0, 2], out=_scratch("kl_p0", b, z))  # w p0: the KL anchor, fixed for this token
    # fresh Adam state (written, not read, at step 1) and the scratch for its denominator
    exp_avg, exp_avg_sq, denom = (_scratch(name, b, z) for name in ("exp_avg", "exp_avg_sq", "denom"))
    active = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
    taken = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    can_skip = z.device.type in SKIP_WHEN_DONE  # stop once no row is active (a host sync: CPU only)
    for t in range(steps):
        if t > 0:
            p, plogp, h = entropy.softmax_entropy(z, (p, plogp))  # into the same buffers
        # a row whose entropy fell below delta stops for good (official: `if entropy < threshold: break`)
        active = active & (h >= delta)
        if can_skip and t > 0 and not active.any():  # every row is confident enough
            break
        # every active row has taken t steps so far, so one bias correction serves the whole batch
        _adam_step(z, exp_avg, exp_avg_sq, denom, p, plogp, h, kl_p0, active.unsqueeze(-1).float(), consts[t], t == 0)
        taken += active
    return z, taken


def _adam_step(z, exp_avg, exp_avg_sq, denom, p, plogp, h, kl_p0, rate, c, first):
    """One Adam step, in place on z, exp_avg, exp_avg_sq [B, V], on L(z) = H(p) + w KL(p0 || p).

    denom [B, V]: scratch space; p, plogp, h: entropy.softmax_entropy(z); kl_p0 = w p0 [B, V];
    rate [B, 1] = 1 for rows still optimizing and 0 for rows that stopped (they never restart, so their
    Adam state may drift: z is all that is kept); c: [3] float32 (lr / (1 - beta1^t), sqrt(1 - beta2^t), w); first: t == 1, where the state is zero.
    Changing values travel as tensors, so new lr, t or w never recompile. In place and with the fewest
    passes over [B, V] (each is a memory-bound loop on a CPU, a kernel launch on a GPU): 8 per step.
    Stays eager everywhere: compiled, the whole update was 4x slower on an H100 (README, bench/).
    """
    step_size, bias_correction2_sqrt, kl_weight = c[0], c[1], c[2]
    # dH/dz = -p (log p + H),  dKL(p0 || p)/dz = p - p0,  so  -grad = p log p + p (H - w) + w p0
    neg_grad = plogp.addcmul_(p, (h - kl_weight).unsqueeze(-1)).add_(kl_p0)  # reuses plogp's memory
    # m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2   (from m = v = 0 at the first step;
    # exp_avg holds -m, the moment of -grad)
    if first:
        torch.mul(neg_grad, 1 - BETA1, out=exp_avg)
        torch.mul(neg_grad, neg_grad, out=exp_avg_sq).mul_(1 - BETA2)
    else:
        exp_avg.lerp_(neg_grad, 1 - BETA1)
        exp_avg_sq.mul_(BETA2).addcmul_(neg_grad, neg_grad, value=1 - BETA2)
    # z <- z - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    #    = z - m / ((sqrt(v) + eps sqrt(1 - b2^t)) / (sqrt(1 - b2^t) lr / (1 - b1^t) rate))
    # a stopped row (rate 0) divides m by inf: no move; masked tokens: m = 0, z stays -inf
    torch.sqrt(exp_avg_sq, out=denom).add_(ADAM_EPS * bias_correction2_sqrt).div_(rate * (bias_correction2_sqrt * step_size))
    z.addcdiv_(exp_avg, denom)  # z + (-m) / denom


_ADAM_CONSTANTS = {}


def _adam_constants(lr, steps, kl_weight, device):
    """[steps, 3] float32 on device: Adam's bias-corrected step sizes per iteration, and the KL weight.

    Built once per setting and device, so the decode loop copies nothing to the GPU per token.
    """
    key = (float(lr), int(steps), float(kl_weight), str(device))
    if key not in _ADAM_CONSTANTS:
        rows = [[lr / (1 - BETA1 ** t), (1 - BETA2 ** t) ** 0.5, kl_weight] for t in range(1, steps + 1)]
        _ADAM_CONSTANTS[key] = torch.tensor(rows, dtype=torch.float32, device=device)
    return _ADAM_CONSTANTS[key]


_WORKSPACE = {}  # (name, V, dtype, device) -> the reusable [rows, V] buffer of that name


def _scratch(name, rows, like, dtype=torch.float32):
    """The first `rows` rows of a [>= rows, V] buffer kept from call to call (contiguous, contents undefined).

    The EM-INF pick needs ~8 temporaries of [rows, V] per token. Fresh ones cost more than the math on a
    CPU: a 4 MB tensor ([20, 49152] float32) is big enough for the allocator to hand it back to the
    operating system when freed, so every token page-faults it in again (half of the update's time
    on this project's 2-core CPU). Kept buffers only grow: at most max-batch x V elements each.
    Valid until the next call that asks for the same name: only for values used within one token.
    """
    key = (name, like.shape[-1], dtype, like.device)
    buf = _WORKSPACE.get(key)
    if buf is None or buf.shape[0] < rows:
        buf = _WORKSPACE[key] = torch.empty(rows, like.shape[-1], dtype=dtype, device=like.device)
    return buf[:rows]


# ---- the baselines of Table 3: adaptive temperature (Algorithm 1), self-consistency ----
def adaptive_temperature(logits, delta, alpha, t_min=0.01, t_max=1.0, max_iter=100, tol=0.1):
    """The paper's adaptive-temperature baseline (Algorithm 1): per row, scale the logits by 1/tau.

    logits: [B, V]. Target H* = max(delta, alpha * H(z)); rows with H(z) <= delta keep tau = 1; the
    others bisect tau in [t_min, t_max] until |H(z / tau) - H*| < tol or max_iter halvings
    (defaults: official AdaptiveTemperatureProcessor and adaptive_temp_eval.sh). H(z / tau) grows with
    tau (dH/dtau = Var_p(z) / tau^3 >= 0), so bisection is well posed. Exact entropies (the official
    code uses log(p + 1e-9)), all rows at once. returns float32 z / tau [B, V].
    """
    z = logits.float()
    h0 = entropy.token_entropy(z)
    # H* = max(delta, alpha * H0)
    target = (alpha * h0).clamp_min(delta)
    lo, hi = torch.full_like(h0, t_min), torch.full_like(h0, t_max)
    tau = torch.ones_like(h0)
    searching = h0 > delta
    for _ in range(max_iter):
        if not searching.any():
            break
        mid = (lo + hi) / 2
        h = entropy.token_entropy(z / mid.unsqueeze(-1))
        tau = torch.where(searching, mid, tau)  # the official code keeps the last midpoint tried
        hit = (h - target).abs() < tol
        too_cold = h < target  # entropy too low: the temperature must go up
        lo = torch.where(searching & ~hit & too_cold, mid, lo)
        hi = torch.where(searching & ~hit & ~too_cold, mid, hi)
        searching = searching & ~hit
    return z / tau.unsqueeze(-1)


def majority_vote(responses):
    """Index of the response whose final \\boxed{} answer is equivalent to the most responses.

    Pairwise equivalence (evaluate.answers_equal) as in the official self-consistency code, so a
    non-transitive checker cannot split a cluster; no answer counts as matching nothing; ties go to
    the earliest response (official: random).
    """
    answers = [evaluate.extract_boxed(r) for r in responses]
    votes = [0] * len(responses)
    for i, a in enumerate(answers):
        for j in range(i, len(answers)):
            if a is not None and answers[j] is not None and (i == j or evaluate.answers_equal(a, answers[j])):
                votes[i] += 1
                votes[j] += int(i != j)
    return max(range(len(responses)), key=lambda i: (votes[i], -i))


# ---- the sampling filters the official EM-INF code inherits from generation_config (off by default) ----
def repetition_penalty(z, seen, penalty):
    """HF/CTRL repetition penalty: logits of tokens in `seen` [B, V] bool move toward -inf by `penalty`."""
    # z_v <- z_v / penalty if z_v > 0 else z_v * penalty   (for every token already in the sequence)
    return torch.where(seen, torch.where(z < 0, z * penalty, z / penalty), z)


def top_k_top_p(z, top_k, top_p):
    """Mask (-inf) all but the top_k largest logits (0 = off) and the smallest set of most likely tokens
    whose probability reaches top_p (1 = off), as HF's TopK / TopP warpers, in that order."""
    if top_k > 0:
        kth = torch.topk(z, min(top_k, z.shape[-1]), dim=-1).values[:, -1:]  # [B, 1]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sorted_z, order = torch.sort(z, dim=-1, descending=True)
        probs = torch.softmax(sorted_z, dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass (the top one stays)
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
        z = z.masked_fill(drop, float("-inf"))
    return z


# ---- one token per row: the method or a baseline, then the sampler ----
def draw(probs):
    """Sample one token per row of probs [B, V] (unnormalized is fine) by inverting the CDF.

    One uniform number per row, where torch.multinomial draws V exponentials per row (8 ms for [8, 49152]
    on a CPU, more than the EM-INF update). The prefix sums are float64: float32 ones drift by ~1e-5 over
    150k tokens, more than a rare token's whole probability. Tokens with p = 0 are never drawn.
    """
    cdf = _scratch("cdf", probs.shape[0], probs, torch.float64).copy_(probs).cumsum_(dim=-1)  # [B, V], kept buffer
    u = torch.rand(probs.shape[0], 1, dtype=torch.float64, device=probs.device) * cdf[:, -1:]  # [B, 1]
    # the first token whose cumulative mass exceeds u
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_max(probs.shape[-1] - 1)


def make_pick_next(args, seen=None):
    """The per-step token choice of --mode, for sample(): (logits [b, V] float32, rows [b]) -> (tokens, stats).

    seen: [N, V] bool tokens already in each of sample()'s N sequences (prompt included), indexed by
    rows, only with --repetition-penalty. Order as in the official EM-INF sampler: EM-INF update,
    repetition penalty, temperature, top-k, top-p, probability floor. stats per row: entropy (of the
    model's distribution), sampled_entropy (of the distribution actually sampled from) and em_steps
    (EM-INF only).
    """

    def pick_next(z0, rows):
        if args.mode == "em_inf":
            z, taken, h0 = minimize_entropy(z0, args.delta, args.lr, args.steps, args.kl_weight, return_stats=True)
            stats = {"entropy": h0, "em_steps": taken}
        else:
            z, stats = z0, {"entropy": entropy.token_entropy(z0)}
        if seen is not None:
            z = repetition_penalty(z, seen[rows], args.repetition_penalty)
        if args.mode == "greedy":
            nxt = z.argmax(dim=-1)
        else:
            if args.mode == "adaptive_temp":
                z = adaptive_temperature(z, args.delta, args.alpha)
            elif args.mode == "em_inf":
                z = z.div_(args.temperature)  # z is minimize_entropy's own copy (or repetition_penalty's)
            else:
                z = z / args.temperature  # z may be the caller's logits: not in place
            z = top_k_top_p(z, args.top_k, args.top_p)
            # the distribution we sample from, and its entropy (before the floor); masked tokens get p = 0
            probs, _, stats["sampled_entropy"] = entropy.softmax_entropy(z, (_scratch("p", len(z), z), _scratch("plogp", len(z), z)))
            if args.prob_floor > 0:
                probs = probs.clamp_min(args.prob_floor)  # draw() renormalizes
            nxt = draw(probs)
        if seen is not None:
            seen[rows, nxt] = True
        return nxt, stats

    return pick_next


class EMInfLogitsProcessor(LogitsProcessor):
    """EM-INF as a transformers LogitsProcessor: the same update as minimize_entropy, then 1/temperature.

        model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                       logits_processor=LogitsProcessorList([EMInfLogitsProcessor()]))

    generate applies its own temperature / top-k / top-p BEFORE custom processors, so keep them off (as
    above) to get EM-INF on the raw logits, as em_inf.py's own decode loop does.
    """

    def __init__(self, delta=DELTA, lr=LR, steps=STEPS, kl_weight=KL_WEIGHT, temperature=TEMPERATURE):
        if delta <= 0 or steps < 1 or temperature <= 0:
            raise ValueError(f"need delta > 0, steps >= 1, temperature > 0 (got {delta}, {steps}, {temperature})")
        self.delta, self.lr, self.steps, self.kl_weight, self.temperature = delta, lr, steps, kl_weight, temperature

    def __call__(self, input_ids, scores):
        z = minimize_entropy(scores, self.delta, self.lr, self.steps, self.kl_weight)
        return z / self.temperature


# ---- main: decode, grade, write one results line per problem ----
def problem_stages(rec, tokenizer, args):
    """One problem as a coroutine: it yields the prompts it needs decoded next, receives their responses
    [(text, tokens, per-token stat sums)], one per prompt, and returns its results row.

    One stage for every mode but iter_refine: --samples-per-prompt prompts for self_consistency, else one.
    iter_refine (Table 3's iterative-refinement baseline, the official `self_refinement` mode): --rounds stages;
    round r's prompt is round r-1's prompt + its response + "\n\n" + the original prompt (for code records the
    response is replaced by its extracted code in a ```python fence and the EOS token, as the official LeetCode
    path), strings concatenated as they are: the assistant turn is never closed, as in the official code.
    """
    if rec.get("grading") == "scicode":
        return (yield from scicode_stages(rec, tokenizer, args))
    prompt = evaluate.build_prompt(tokenizer, rec)
    if args.mode != "iter_refine":
        samples = yield [prompt] * (args.n if args.mode == "self_consistency" else 1)
        return result_row(rec, samples, args)
    rounds, first = [], prompt
    for _ in range(args.rounds):
        [answer] = yield [prompt]
        rounds.append(answer)
        prompt = prompt + refinement_context(rec, answer[0], tokenizer) + "\n\n" + first
    return refined_row(rec, rounds, args)


def scicode_stages(rec, tokenizer, args):
    """SciCode (one main problem): step k is decoded after step k-1, its prompt holding the code of steps
    0..k-1 (SciCode's multistep template with background: evaluate.scicode_prompt). A given step (13.6, 62.1,
    76.3) is not decoded: its code comes from --scicode-data. Once every step has code, the steps are graded in
    the sandbox (each: dependencies + earlier steps + this step + its tests); returns a Future of the row, so
    decoding goes on while the tests run (solve waits for it)."""
    codes, steps, answers = [], [], []
    for k, sub in enumerate(rec["sub_steps"]):
        if evaluate.scicode_is_given(sub):
            code = evaluate.scicode_given_code(sub, args.scicode_data, official=args.scicode_official_given)
            codes.append(code)
            steps.append({"step_number": sub["step_number"], "code": code})
            continue
        user = evaluate.scicode_prompt(rec, k, codes)  # the user text, kept in the row
        [answer] = yield [evaluate.scicode_step_prompt(tokenizer, rec, k, codes, prompt_format=args.prompt_format)]
        code = evaluate.scicode_extract(answer[0])  # the FIRST fence, imports removed (SciCode's extraction)
        codes.append(code)
        answers.append(answer)
        steps.append({"step_number": sub["step_number"], "prompt": user, "response": answer[0], "code": code})
    tokens = sum(n for _, n, _ in answers)
    stats = {name: sum(a[2][name] for a in answers) / max(tokens, 1) for name in (answers[0][2] if answers else {})}

    def grade():
        verdicts = evaluate.grade_scicode(rec, codes, args.scicode_data, timeout=args.scicode_timeout)
        return {**evaluate.scicode_row(rec, steps, verdicts), "gold": "", "tokens": tokens, "mode": args.mode,
                **stats}

    return _grader_pool().submit(grade)


_POOL = []


def _grader_pool():
    """Threads that run SciCode's tests beside the decode loop (each problem's steps run in parallel inside)."""
    if not _POOL:
        _POOL.append(concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="scicode-grader"))
    return _POOL[0]


def refinement_context(rec, response, tokenizer):
    """What the next round's prompt repeats of a response: the response, or for code its extracted program."""
    if not rec.get("tests"):
        return response
    return f"```python\n{evaluate.extract_code(response)}\n```{tokenizer.eos_token or ''}"


@torch.no_grad()
def solve(model, tokenizer, records, args, stop_ids, work, progress=None):
    """Decode and grade problems; yields results rows, one per problem as soon as it is done, and progress lines.

    Each problem is a coroutine (problem_stages) that asks for the prompts of its next stage. They share one
    continuous batch: when a row frees, sample() asks for more prompts, and a problem's next stage (its next
    round, or SciCode's next step) takes it before any new problem starts, so problems finish early and an
    interrupted run loses little. A stage of a problem that has another stage after it is written as a progress
    line ({"progress": id, "stage": s, "samples": [...]}); progress: {id: {stage: samples}} of an interrupted run,
    replayed instead of decoded again.
    work: dict that collects "tokens" generated, decode "seconds" (grading excluded), "row_steps" (see sample)
    and "prompt_tokens" (of the prompts decoded).
    """
    progress = progress or {}
    seen = SeenTokens(model.config.vocab_size, model.device) if args.repetition_penalty != 1.0 else None
    jobs, stage, expected, answers = {}, {}, {}, {}  # per problem: coroutine, stage index, prompts, responses
    owner, prompt_tokens = [], {}  # owner[i]: (problem, sample) of sample()'s i-th prompt; tokens per problem
    ready, out = [], []  # prompts waiting for a row (problem, sample, text); rows and progress lines to hand out
    pending = []  # (Future of a row, its prompt tokens): problems whose tests run in the background
    fresh = iter(range(len(records)))

    def advance(p, reply):
        """Send problem p the responses of its stage (None: start it); queue its next prompts or take its row."""
        while True:
            try:
                texts = jobs[p].send(reply)
            except StopIteration as end:
                del jobs[p]
                if isinstance(end.value, concurrent.futures.Future):  # graded in the background (SciCode)
                    pending.append((end.value, prompt_tokens[p]))
                else:
                    out.append({**end.value, "prompt_tokens": prompt_tokens[p]})
                return
            stage[p] = stage.get(p, -1) + 1
            prompt_tokens[p] = prompt_tokens.get(p, 0) + sum(len(tokenizer(t, add_special_tokens=False).input_ids)
                                                              for t in texts)
            saved = progress.get(records[p]["id"], {}).get(stage[p])
            if saved is None or len(saved) != len(texts):
                break
            reply = [tuple(x) for x in saved]  # decoded by an interrupted run
        expected[p], answers[p] = len(texts), {}
        ready[:0] = [(p, j, t) for j, t in enumerate(texts)]  # follow-ups first (see above)

    def more(n):
        """Up to n prompts for sample()'s free rows: waiting stages first, then new problems."""
        given = []
        while len(given) < n:
            if not ready:
                p = next(fresh, None)
                if p is None:
                    break
                jobs[p] = problem_stages(records[p], tokenizer, args)
                advance(p, None)
                continue
            p, j, text = ready.pop(0)
            owner.append((p, j))
            given.append(text)
            if seen is not None:
                seen.add(tokenizer(text, add_special_tokens=False).input_ids)
        return given

    rows = args.batch_size * (args.n if args.mode == "self_consistency" else 1)
    # continuous: a finished row leaves at once and the next prompt takes its place. Dropping a row copies the
    # KV cache, but DynamicCache already copies it at every step (torch.cat), so a drop costs less than one
    # step while a finished row left in costs a row of compute at every step. static: batches of
    # --batch-size problems, each decoded until its longest response ends.
    drop_at, refill = (1, True) if args.batching == "continuous" else (rows, False)
    decoding = sample(model, tokenizer, more, args.max_new_tokens, make_pick_next(args, seen), stop_ids, rows,
                      drop_at=drop_at, refill=refill, work=work)
    t0 = time.perf_counter()
    for i, response, stats in decoding:  # response is on the CPU: the GPU has finished this step
        work["seconds"] = work.get("seconds", 0.0) + time.perf_counter() - t0
        work["tokens"] = work.get("tokens", 0) + len(response)
        p, j = owner[i]
        text = tokenizer.decode(response, skip_special_tokens=True)
        answers[p][j] = (text, len(response), {name: float(v.sum()) for name, v in stats.items()})
        if len(answers[p]) == expected[p]:
            got, s = answers.pop(p), stage[p]
            reply = [got[j] for j in range(expected[p])]
            advance(p, reply)
            if p in jobs:  # another stage follows: keep this one, so that a rerun does not decode it again
                out.append({"progress": records[p]["id"], "stage": s, "samples": reply})
        graded = [(f, n) for f, n in pending if f.done()]
        out.extend({**f.result(), "prompt_tokens": n} for f, n in graded)
        pending[:] = [x for x in pending if x not in graded]
        yield from out
        out.clear()
        t0 = time.perf_counter()
    out.extend({**f.result(), "prompt_tokens": n} for f, n in pending)  # decoding is over: wait for the tests
    yield from out  # (and problems an interrupted run had decoded to the end)


class SeenTokens:
    """[N, V] bool: the tokens already in each of sample()'s N sequences, the prompt included (as HF generate
    counts them for the repetition penalty); a row is added as each prompt enters, so N grows with the run."""

    def __init__(self, vocab_size, device):
        self.rows = torch.zeros(0, vocab_size, dtype=torch.bool, device=device)
        self.n = 0

    def add(self, ids):
        if self.n == len(self.rows):  # grow by doubling: amortized O(1) copies per prompt
            more = self.rows.new_zeros(max(self.n, 16), self.rows.shape[1])
            self.rows = torch.cat([self.rows, more])
        self.rows[self.n, torch.tensor(ids, dtype=torch.long, device=self.rows.device)] = True
        self.n += 1

    def __getitem__(self, index):
        return self.rows[index]

    def __setitem__(self, index, value):
        self.rows[index] = value


def check_problems(problems, args):
    """One-line errors, before the model loads, for settings these problems cannot use (evaluate.InputError)."""
    scicode = any(p.get("grading") == "scicode" for p in problems)
    if args.mode == "self_consistency" and any(p.get("tests") for p in problems):
        raise evaluate.InputError("--mode self_consistency votes on final \\boxed{} answers, and code problems have "
                                  "none (the paper reports it for math): use another mode for this dataset")
    if not scicode:
        if args.prompt_format != "chat" or args.scicode_data or args.scicode_official_given:
            raise evaluate.InputError("--prompt-format raw, --scicode-data and --scicode-official-given are for "
                                      "SciCode problems (--dataset scicode): drop them for this dataset")
        return
    if args.mode in ("self_consistency", "iter_refine"):
        # voting needs one final answer per sample, and SciCode's official iter-refine gives every round the plain
        # prompt (its save functions ignore the iteration), so neither has a protocol to reproduce
        raise evaluate.InputError(f"--mode {args.mode} is not defined for SciCode (no final answer to vote on; the "
                                  "official refinement rounds never saw their previous code): use greedy, sample, "
                                  "adaptive_temp or em_inf")
    if not args.scicode_data:
        raise evaluate.InputError("SciCode needs --scicode-data DIR: SciCode's eval/data folder with test_data.h5 (the "
                                  "Google Drive folder in SciCode's README) and 13.6.txt, 62.1.txt, 76.3.txt (its git "
                                  "repository)")
    evaluate.check_scicode_data(args.scicode_data, problems)


def result_row(rec, samples, args):
    """The results-file row of one problem from its k samples [(text, tokens, stat sums)]."""
    texts = [text for text, _, _ in samples]
    tokens = sum(n for _, n, _ in samples)
    best = majority_vote(texts) if len(samples) > 1 else 0
    row = {"id": rec["id"], "problem": rec["problem"], "gold": rec.get("answer", ""), "response": texts[best],
           "correct": bool(evaluate.grade(rec, texts[best])), "tokens": tokens, "mode": args.mode}
    # token-weighted means over all samples of this problem
    row.update({name: sum(s[name] for _, _, s in samples) / max(tokens, 1) for name in samples[0][2]})
    if len(samples) > 1:
        row["responses"] = texts
        row["corrects"] = [bool(evaluate.grade(rec, t)) for t in texts]
    for key in ("tests", "grading", "judge", "answer_type"):  # what evaluate.grade needs to re-grade the row
        if rec.get(key):
            row[key] = rec[key]
    return row


def refined_row(rec, rounds, args):
    """The row of an iter_refine problem: every round graded and kept in `rounds`; the row's response and
    `correct` are the last round's (the table's number, see --rounds); tokens and stats over all rounds."""
    row = result_row(rec, rounds[-1:], args)
    tokens = sum(n for _, n, _ in rounds)
    row["tokens"] = tokens
    row.update({name: sum(s[name] for _, _, s in rounds) / max(tokens, 1) for name in rounds[0][2]})
    row["rounds"] = [{"response": text, "correct": bool(evaluate.grade(rec, text)) if r < len(rounds) - 1
                      else row["correct"]} for r, (text, _, _) in enumerate(rounds)]
    return row


def main(argv=None):
    args = parse_args(argv)
    args.out = args.out or default_out(args)
    if os.path.isdir(args.out):
        fail(f"--out {args.out} is a folder: pass a results file, e.g. {os.path.join(args.out, os.path.basename(default_out(args)))}")
    rank, world, device, dtype = setup(args)
    try:
        problems = evaluate.load_problems(args.dataset, limit=args.limit, prompt_style=args.prompt_style,
                                          judge=args.ugphysics_judge)
        check_problems(problems, args)
    except evaluate.InputError as e:
        fail(str(e))
    check_results(args)
    model, tokenizer = load_model(args, device, dtype)
    model.eval()
    stop_ids = stop_token_ids(model, tokenizer)
    try:  # a broken grader should stop the run now, not after the first hours of decoding
        evaluate.answers_equal("\\frac{x}{2}", "x/2")
    except evaluate.GraderUnavailable as e:
        fail(str(e))

    finished, progress = start_results(args, rank, world)
    if world > 1:
        # EM-INF has no collective in the forward pass: from here on every rank decodes its shard at its
        # own pace, and rank 0 merges the per-rank files once every rank has left its done marker
        dist.destroy_process_group()
    todo = [p for p in problems if p["id"] not in finished]
    if rank == 0 and finished:
        print(f"resuming {args.out}: {len(problems) - len(todo)} of {len(problems)} problems already done"
              + ("; nothing left to decode (pass another --out to decode them again)" if not todo else ""), flush=True)
    shard = todo[rank::world]
    path = args.out if world == 1 else f"{args.out}.part{rank}"
    bar = tqdm(total=len(shard), desc=f"{args.mode}", disable=rank != 0, dynamic_ncols=True)
    work, n_correct, n_done = {"tokens": 0, "seconds": 0.0, "row_steps": 0}, 0, 0
    with open(path, "a") as f, open(path + ".progress", "a") as f_progress:
        for row in solve(model, tokenizer, shard, args, stop_ids, work, progress):
            # an interrupted run keeps every finished problem, and every finished stage of the others
            out = f_progress if "progress" in row else f
            out.write(json.dumps(row) + "\n")
            out.flush()
            if "progress" in row:
                continue
            n_correct, n_done = n_correct + row["correct"], n_done + 1
            bar.update(1)
            bar.set_postfix(acc=f"{n_correct / n_done:.3f}", tok_s=f"{work['tokens'] / max(work['seconds'], 1e-9):.1f}")
    bar.close()

    if world > 1:
        with open(f"{args.out}.part{rank}.done.tmp", "w") as f:
            json.dump(work, f)
        os.replace(f"{args.out}.part{rank}.done.tmp", f"{args.out}.part{rank}.done")  # never read half written
        if rank != 0:
            return
        markers = [f"{args.out}.part{r}.done" for r in range(world)]
        while not all(os.path.exists(m) for m in markers):  # torchrun stops us too if a rank fails
            time.sleep(1.0)
        works = [json.load(open(m)) for m in markers]
        # tokens/s of the whole job: all tokens over the slowest rank's decode time
        work = {"tokens": sum(w["tokens"] for w in works), "seconds": max(w["seconds"] for w in works),
                "row_steps": sum(w["row_steps"] for w in works)}
    if rank == 0:
        merge_parts(args.out)  # also removes the done markers and the progress of finished problems
        summarize(args, model, tokenizer, problems, work)


# ---- plumbing shared with em_ft.py and em_rl.py: errors, common flags, setup, model loading ----
def fail(message):
    """Bad input: one line on stderr naming the problem and the fix, exit code 2, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each flag's default as "(default: X)", unless the help text already says it."""

    def _get_help_string(self, action):
        return action.help if "default:" in action.help else super()._get_help_string(action)


SOURCES = ("Where a default comes from, in parentheses after each help text: (paper ...) = the paper, arXiv "
           "2505.15134; (official ...) = the authors' code, github.com/shivamag125/EM_PT; (ours: why) = our own "
           "choice, where neither gives a value.")


def common_args(p, *, batch_size_default, batch_size_help):
    p.add_argument("--model", default="Qwen/Qwen2.5-Math-7B", help="hub id or local folder (paper Sec. 4)")
    p.add_argument("--dataset", default="math500",
                   help="benchmark name or .jsonl/.json/.parquet file, see evaluate.load_problems (ours: math500, "
                        "the paper's first benchmark; train on your own prompts file)")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N problems (default: all; ours: smoke runs)")
    p.add_argument("--prompt-style", default="official", choices=evaluate.PROMPT_STYLES,
                   help="livecodebench only: official = the official evaluation's prompt (LiveCodeBench's question "
                        "template and the Eurus system prompt), its code extraction and 6 s per test; ours = our "
                        "LiveCodeBench-style prompt, the last fenced block and 10 s (official lcb_runner)")
    p.add_argument("--batch-size", type=int, default=batch_size_default, help=batch_size_help)
    p.add_argument("--max-new-tokens", type=int, default=4096,
                   help="response length cap (paper Sec. 4: 4096; 3072 for training)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same output (ours)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="model dtype; auto = bf16 on CUDA, float32 on CPU (ours)")
    p.add_argument("--device", default="auto", help="auto = cuda if available else cpu (ours)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the small hot functions of entropy.py (default: on with CUDA, off on CPU; "
                        "ours)")
    p.add_argument("--chat-template-kwargs", default="{}",
                   help="JSON object of extra chat-template variables, passed to every prompt's chat template, e.g. "
                        "'{\"enable_thinking\": false}' for Qwen3 (ours: none)")
    return p


def parse_chat_template_kwargs(text):
    """--chat-template-kwargs as a dict; one-line error for bad JSON or anything but a JSON object."""
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"--chat-template-kwargs is not valid JSON ({e.msg} at character {e.pos}): pass an object such as "
             "'{\"enable_thinking\": false}'")
    if not isinstance(kwargs, dict):
        fail(f"--chat-template-kwargs must be a JSON object of template variables, got {type(kwargs).__name__} "
             f"{text}: e.g. '{{\"enable_thinking\": false}}'")
    return kwargs


def setup(args):
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; a plain `python` run is world size 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if args.device == "auto":
        args.device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(args.device)
    except RuntimeError:
        fail(f"--device {args.device!r} is not a device torch knows: pass auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            fail(f"--device {args.device}, but torch sees no CUDA GPU (a CPU build of torch, or no driver): pass --device cpu or auto")
        device = torch.device("cuda", local_rank if device.index is None else device.index)  # "cuda": this rank's GPU
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if args.dtype == "auto":
        args.dtype = "bfloat16" if device.type == "cuda" else "float32"
    if args.compile is None:
        args.compile = device.type == "cuda"
    if isinstance(args.chat_template_kwargs, str):  # the JSON text of the command line; a dict from here on
        args.chat_template_kwargs = parse_chat_template_kwargs(args.chat_template_kwargs)
    entropy.set_compile(args.compile)
    torch.manual_seed(args.seed + rank)
    if rank == 0:
        print(f"device={device} dtype={args.dtype} compile={args.compile} world_size={world}", flush=True)
        print("args: " + json.dumps(vars(args)), flush=True)
    return rank, world, device, getattr(torch, args.dtype)


def load_model(args, device, dtype):
    """Model + left-padding tokenizer from a hub id or a local folder, one-line error if missing."""
    # a hub id is "org/name"; anything else that looks like a path, or exists here, must be a model folder
    looks_local = args.model.startswith((".", "/")) or args.model.count("/") > 1 or os.path.exists(args.model)
    if looks_local and not os.path.isfile(os.path.join(args.model, "config.json")):
        problem = "does not exist" if not os.path.exists(args.model) else "is not a model folder (no config.json)"
        fail(f"model folder {args.model!r} {problem}: pass a Hugging Face model folder or a hub id such as Qwen/Qwen2.5-Math-7B")
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(device)
    except (OSError, ValueError) as e:  # hub errors, missing weights or tokenizer files
        where = "the folder" if looks_local else "no such local folder, and the hub"
        fail(f"cannot load model {args.model!r}: {where} said: {str(e).strip().splitlines()[0]}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # every chat prompt reads its extra template variables from here (evaluate.render_chat); it travels with the
    # tokenizer (to the other ranks too), and is not saved with it: each command says its own
    tokenizer.chat_template_kwargs = getattr(args, "chat_template_kwargs", None) or {}
    return model, tokenizer


def stop_token_ids(model, tokenizer):
    """EOS ids from the tokenizer, the generation config and the chat end token, whichever exist."""
    ids = {tokenizer.eos_token_id}
    gen_eos = model.generation_config.eos_token_id
    ids |= set(gen_eos) if isinstance(gen_eos, (list, tuple)) else {gen_eos}
    vocab = tokenizer.get_vocab()
    ids |= {vocab[t] for t in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>") if t in vocab}
    return sorted(i for i in ids if i is not None)


# ---- the decode engine: our batched KV-cache loop, finished rows leave the batch (continuous batching) ----
@torch.no_grad()
def sample(model, tokenizer, prompts, max_new_tokens, pick_next, stop_ids, batch_size, drop_at=1, refill=True, work=None):
    """Decode prompt strings with the KV cache, batch_size rows at a time; yield each row when it finishes.

    prompts: a list of strings, or a function more(n) -> up to n further prompt strings, called whenever rows are
    free ([] when none is ready; decoding ends when the batch is empty and more() has none). The i-th prompt
    given is index i. A function lets a prompt depend on a response that finished in this very run (em_inf.py's
    next round or next SciCode step joins the running batch at once).

    pick_next(logits [b, V] float32, rows [b] long: each row's index in prompts) -> (next tokens [b] long,
    stats dict of [b] tensors) is the only per-method part: temperature sampling, greedy or the EM-INF update.
    Yields (index in prompts, response ids [n] long, {stat: [n] float32}) as rows finish, on the CPU;
    the response includes the stop token (or ends at max_new_tokens).
    Rows that finished keep being computed (their tokens thrown away) until drop_at of them have
    finished (or all rows have): then they leave the batch and the KV cache, which costs one copy of
    the cache. With refill, the next prompts take the freed rows at that moment (continuous batching, what
    em_inf.py and the rollouts of em_ft.py / em_rl.py run: a rank's rollout phase has many more sequences
    than rows); without, new prompts start only when the whole batch is done (drop_at=batch_size and
    refill=False give static batches). work["row_steps"] counts the rows of every decode step (occupancy).
    """
    device = next(model.parameters()).device
    stop = torch.tensor(stop_ids, dtype=torch.long, device=device)
    # per row of the batch: its prompt index, tokens generated so far, next input token and position
    rows = torch.zeros(0, dtype=torch.long, device=device)
    lengths, step_ids, step_pos = rows.clone(), rows.clone(), rows.clone()
    finished = torch.zeros(0, dtype=torch.bool, device=device)
    tokens = torch.zeros(0, max_new_tokens, dtype=torch.long, device=device)  # [b, R] response ids
    stats = {}  # name -> [b, R] per-token statistics
    cache, attn = None, torch.zeros(0, 0, dtype=torch.long, device=device)  # attn [b, L]: 1 on cached real tokens
    if not callable(prompts):
        listed = iter(prompts)
        prompts = lambda n: list(itertools.islice(listed, n))  # noqa: E731
    started = 0  # prompts given so far, so the next one is index `started`
    while True:
        # 1. finished rows leave the batch and the cache, once there are enough of them to pay for the copy
        n_finished = int(finished.sum())  # a host sync, like the stop check of any decode loop
        if n_finished and n_finished >= min(drop_at, len(rows)):
            keep = (~finished).nonzero().squeeze(1)
            rows, lengths, step_ids, step_pos, finished, tokens, attn = (
                x[keep] for x in (rows, lengths, step_ids, step_pos, finished, tokens, attn))
            stats = {k: v[keep] for k, v in stats.items()}
            cache = _trim(cache, attn, keep) if len(keep) else None
            attn = attn[:, attn.shape[1] - (0 if cache is None else cache.get_seq_length()):]
        # 2. new prompts take the free rows: continuously (refill), or when the whole batch is done
        texts = prompts(batch_size - len(rows)) if refill or len(rows) == 0 else []
        new = len(texts)
        if new > 0:
            new_cache, new_attn, new_ids, new_pos = _prefill(model, tokenizer, texts, device)
            cache, attn = _merge(cache, attn, new_cache, new_attn)
            rows = torch.cat([rows, torch.arange(started, started + new, device=device)])
            lengths = torch.cat([lengths, torch.zeros_like(new_ids)])
            finished = torch.cat([finished, torch.zeros_like(new_ids, dtype=torch.bool)])
            step_ids, step_pos = torch.cat([step_ids, new_ids]), torch.cat([step_pos, new_pos])
            tokens = torch.cat([tokens, tokens.new_zeros(new, max_new_tokens)])
            stats = {k: torch.cat([v, v.new_zeros(new, max_new_tokens)]) for k, v in stats.items()}
            started += new
        if len(rows) == 0:
            return
        # 3. one decode step for every row: the new token attends to the cache and to itself
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], -1)
        res = model(input_ids=step_ids[:, None], attention_mask=attn, position_ids=step_pos[:, None], cache=cache,
                    use_cache=True, logits_to_keep=1)
        cache = res.cache
        nxt, st = pick_next(res.logits[:, -1].float(), rows)
        if work is not None:
            work["row_steps"] = work.get("row_steps", 0) + len(rows)
        # write each row's token at its own position (a finished row writes past its end: never read)
        at = (torch.arange(len(rows), device=device), lengths.clamp_max(max_new_tokens - 1))
        tokens[at] = nxt
        for k, v in st.items():
            stats.setdefault(k, torch.zeros(len(rows), max_new_tokens, device=device))[at] = v.float()
        lengths += ~finished
        done_now = ~finished & (torch.isin(nxt, stop) | (lengths >= max_new_tokens))
        finished |= done_now
        for i in done_now.nonzero().squeeze(1).tolist():
            n = int(lengths[i])
            yield int(rows[i]), tokens[i, :n].cpu(), {k: v[i, :n].cpu() for k, v in stats.items()}
        step_ids, step_pos = nxt, step_pos + 1


def _prefill(model, tokenizer, texts, device):
    """Put the prompts in a new KV cache, all but their last token, which is each row's first decode input.

    returns (cache or None, attention mask [n, P - 1] of the cached tokens, last token [n], its position [n]).
    Left padding puts every prompt's last token in the last column; positions count real tokens only.
    """
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    ids, attn = enc.input_ids, enc.attention_mask
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    cache = None
    if ids.shape[1] > 1:
        cache = model(input_ids=ids[:, :-1], attention_mask=attn[:, :-1], position_ids=pos[:, :-1], use_cache=True,
                      logits_to_keep=1).cache
    return cache, attn[:, :-1], ids[:, -1], pos[:, -1]


def _cache_layers(cache):
    """The DynamicLayer list of a DynamicCache; other layer kinds (sliding windows) cannot be re-padded."""
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        fail(f"continuous batching needs full-attention cache layers, this model has "
             f"{sorted({type(layer).__name__ for layer in cache.layers})}: em_inf.py --batching static decodes it; "
             f"em_ft.py and em_rl.py need a model without sliding-window layers")
    return cache.layers


def _trim(cache, attn, keep):
    """Keep only the batch rows `keep` of the cache, then drop leading columns that are padding in every row.

    attn [b, L] is the mask of the rows kept; the caller cuts it to the cache's new length."""
    cache.batch_select_indices(keep)
    first = int(attn.any(0).int().argmax())  # the first column holding a real token of some row
    if first > 0:
        for layer in _cache_layers(cache):
            layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
    return cache


def _merge(cache, attn, new_cache, new_attn):
    """Stack the rows of two left-padded KV caches: the shorter one is padded on the left to the other's length.

    Padding columns hold zeros and are masked out by attn (0), like the tokenizer's own left padding."""
    if len(attn) == 0:  # the batch was empty
        return new_cache, new_attn
    length = max(attn.shape[1], new_attn.shape[1])
    old_layers = _cache_layers(cache)
    new_layers = _cache_layers(new_cache) if new_cache is not None else [None] * len(old_layers)
    for old, new in zip(old_layers, new_layers):
        for name in ("keys", "values"):
            a = getattr(old, name)  # [b, heads, L, head_dim]
            b = getattr(new, name) if new is not None else a.new_zeros(len(new_attn), a.shape[1], 0, a.shape[3])
            setattr(old, name, torch.cat([F.pad(a, (0, 0, length - a.shape[2], 0)), F.pad(b, (0, 0, length - b.shape[2], 0))]))
    attn = torch.cat([F.pad(attn, (length - attn.shape[1], 0)), F.pad(new_attn, (length - new_attn.shape[1], 0))])
    return cache, attn


# ---- results file: one JSON line per problem, appended as each finishes, resumable ----
# Row keys (README: Results files): id, problem, gold, response, correct, tokens (all tokens generated for the problem, so
# the n samples of self_consistency), prompt_tokens (every prompt decoded for it), entropy / sampled_entropy /
# em_steps (means per generated token), mode; self_consistency adds responses and corrects (pass@k), iter_refine
# adds rounds ([{response, correct}]). The first line holds {"config": the arguments}. Lines {"progress": id, "stage",
# "samples"} keep the finished stages of a problem that has more (iter_refine rounds, SciCode steps) for a rerun.
# settings that change the responses: a results file must not mix two of them
RUN_KEYS = ["model", "dataset", "mode", "delta", "lr", "steps", "kl_weight", "temperature", "alpha", "n",
            "max_new_tokens", "seed", "top_k", "top_p", "repetition_penalty", "prob_floor", "rounds", "prompt_format",
            "prompt_style", "scicode_official_given", "ugphysics_judge", "chat_template_kwargs"]


def default_out(args):
    model = os.path.basename(os.path.normpath(args.model))
    dataset = os.path.splitext(os.path.basename(os.path.normpath(args.dataset)))[0]
    return os.path.join("results", f"{model}_{dataset}_{args.mode}.jsonl")


def read_results(path):
    """(config or None, {id: row}) from a results file; a line cut off by a crash is ignored."""
    config, rows = None, {}
    if not os.path.exists(path):
        return config, rows
    with open(path) as f:
        for line in f:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "config" in obj:
                config = obj["config"]
            elif "id" in obj:
                rows[str(obj["id"])] = obj
    return config, rows


def read_progress(path):
    """{id: {stage: samples}} from the progress file beside a results file (PATH.progress), if any."""
    progress = {}
    if os.path.exists(path + ".progress"):
        with open(path + ".progress") as f:
            for line in f:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:  # cut off by a crash
                    continue
                progress.setdefault(str(obj["progress"]), {})[obj["stage"]] = obj["samples"]
    return progress


def end_last_line(path):
    """End a line cut off by a crash, so that the next row appended starts on a line of its own."""
    with open(path, "rb+") as f:
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def merge_parts(out):
    """Move the rows of per-rank files out.part<r> (this run's or an interrupted one's) into out, and their
    progress files into out.progress (which keeps only problems still without a row)."""
    _, have = read_results(out)
    directory = os.path.dirname(out) or "."
    parts = sorted(f for f in os.listdir(directory) if f.startswith(os.path.basename(out) + ".part")
                   and not f.endswith(".progress"))
    with open(out, "a") as f:
        for name in parts:
            path = os.path.join(directory, name)
            for rid, row in read_results(path)[1].items():
                if rid not in have:
                    have[rid] = row
                    f.write(json.dumps(row) + "\n")
            os.remove(path)
    # the finished stages of unfinished problems (PATH.progress files): into out's, for the rerun to continue
    kept = read_progress(out)
    with open(out + ".progress", "a") as f:
        for name in parts:
            path = os.path.join(directory, name)
            for rid, stages in read_progress(path).items():
                for stage, samples in stages.items():
                    if rid not in have and stage not in kept.get(rid, {}):
                        f.write(json.dumps({"progress": rid, "stage": stage, "samples": samples}) + "\n")
            if os.path.exists(path + ".progress"):
                os.remove(path + ".progress")
    # keep only the stages of problems still without a row; no file when there are none
    left = {rid: stages for rid, stages in read_progress(out).items() if rid not in have}
    if left:
        with open(out + ".progress.tmp", "w") as f:
            f.writelines(json.dumps({"progress": rid, "stage": stage, "samples": samples}) + "\n"
                         for rid, stages in left.items() for stage, samples in stages.items())
        os.replace(out + ".progress.tmp", out + ".progress")
    else:
        os.remove(out + ".progress")


def check_results(args):
    """One-line error, before the model loads, if args.out holds a run with other settings."""
    config, _ = read_results(args.out)
    changed = [k for k in RUN_KEYS if config is not None and k in config and config[k] != getattr(args, k)]
    if changed:
        fail(f"{args.out} holds a run with other settings ({', '.join(f'{k}={config[k]}' for k in changed)}): "
             "pass another --out, or the same settings to resume it")


def start_results(args, rank, world):
    """Create args.out with its config line (rank 0); return the ids already finished and the progress of the
    unfinished ones (all ranks)."""
    if rank == 0:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        if read_results(args.out)[0] is None and not os.path.exists(args.out):
            with open(args.out, "w") as f:
                f.write(json.dumps({"config": vars(args)}) + "\n")
        else:
            end_last_line(args.out)
        merge_parts(args.out)
    if world > 1:
        dist.barrier()
    return set(read_results(args.out)[1]), read_progress(args.out)


def summarize(args, model, tokenizer, problems, work):
    """Print the results table and, as the last stdout line, the JSON summary over all finished problems.

    work: this run's decode tokens, seconds and row_steps (all ranks): tokens_per_second and occupancy."""
    _, done = read_results(args.out)
    rows = [done[p["id"]] for p in problems if p["id"] in done]
    k = args.n if args.mode == "self_consistency" else 1
    # FLOPs ~ 2 x parameters x tokens processed (prompt once per sample + generated), paper's 2PD convention;
    # rows carry their prompt tokens (every round or step included); rows of older files are counted here
    prompt_tokens = sum(r["prompt_tokens"] if "prompt_tokens" in r else
                        k * len(tokenizer(evaluate.build_prompt(tokenizer, p), add_special_tokens=False).input_ids)
                        for p, r in ((p, done[p["id"]]) for p in problems if p["id"] in done))
    generated = sum(r["tokens"] for r in rows)
    params = sum(p.numel() for p in model.parameters())

    def mean(key):
        vals = [r[key] for r in rows if key in r]
        return round(sum(vals) / len(vals), 4) if vals else None

    summary = {"mode": args.mode, "model": args.model, "dataset": args.dataset, "problems": len(rows),
               "samples_per_problem": k, "accuracy": round(sum(r["correct"] for r in rows) / max(len(rows), 1), 4),
               "generated_tokens": generated,
               "tokens_per_second": round(work["tokens"] / work["seconds"], 2) if work.get("seconds") else None,
               # the fraction of row-steps (a row of a decode forward pass) that produced a token of a response
               "occupancy": round(work["tokens"] / work["row_steps"], 4) if work.get("row_steps") else None,
               "flops": 2 * params * (prompt_tokens + generated),
               "entropy": mean("entropy"), "sampled_entropy": mean("sampled_entropy"), "em_steps": mean("em_steps"),
               "out": args.out}
    if any(r.get("grading") == "ugphysics" for r in rows):  # which judge produced `accuracy`
        summary["ugphysics_judge"] = args.ugphysics_judge
    if rows and all(r.get("grading") == "scicode" for r in rows):  # main problems and scored steps, with counts
        scores = evaluate.scicode_scores(rows)
        summary.update(correct=scores["correct"], subproblem_accuracy=round(scores["subproblem_accuracy"] or 0, 4),
                       sub_correct=scores["sub_correct"], sub_total=scores["sub_total"])
    if args.mode == "iter_refine":  # every round's accuracy; `accuracy` is the last round's
        summary["round_accuracy"] = [round(sum(r["rounds"][i]["correct"] for r in rows) / max(len(rows), 1), 4)
                                     for i in range(args.rounds)]

    def cell(v, spec):  # "-": not measured by this run (e.g. every problem was decoded by an earlier run)
        return "-" if v is None else format(v, spec)

    print("\n| mode | problems | accuracy | generated tokens | tokens/s (this run) | occupancy | TFLOPs | entropy | "
          "EM steps |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.mode} | {len(rows)} | {summary['accuracy']:.1%} | {generated} | {cell(summary['tokens_per_second'], '.1f')} "
          f"| {cell(summary['occupancy'], '.3f')} | {summary['flops'] / 1e12:.3g} | {cell(summary['entropy'], '.3f')} "
          f"| {cell(summary['em_steps'], '.2f')} |")
    if "sub_total" in summary:
        print(f"\nSciCode: main problems {summary['correct']}/{len(rows)} = {summary['accuracy']:.1%}, subproblems "
              f"{summary['sub_correct']}/{summary['sub_total']} = {summary['subproblem_accuracy']:.1%} (given steps "
              f"excluded: 65 and 288 on the test split)")
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
