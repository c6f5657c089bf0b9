"""entropy.py: the entropy math shared by EM-FT, EM-RL and EM-INF (arXiv 2505.15134). Read this first.

Everything here is in nats. Precision: the softmax statistics (max, logsumexp, E_p[z], the entropy
and its gradient) are always computed in float32, whatever the input dtype. The vocabulary
projection in the *_from_hidden functions runs its matmuls, forward and backward, in the compute
dtype of the model's forward (bf16 under autocast or FSDP2 mixed precision) with float32
accumulation; see _ChunkedHead.

    token entropy     H(z) = -sum_v p_v log p_v,  p = softmax(z)
    stable form       H(z) = logsumexp(z) - sum_v p_v z_v
    one-pass form     m = max z, s = sum exp(z - m), u = sum exp(z - m) (z - m):  H = log s - u / s
    gradient          dH/dz_v = -p_v (z_v - E_p[z])   (= -p_v (log p_v + H))
    log-prob          log p_y = z_y - logsumexp(z),    d log p_y / dz = onehot(y) - p

Public functions:
    token_entropy(logits)                      [..., V] -> [...]    compiled, one fused pass, -inf safe
    softmax_entropy(z, out=None)               (p, p log p, H): what the EM-INF update needs, eager
    entropy_from_hidden(hidden, weight)        [N, d] x [V, d] -> [N]   chunked, never builds [N, V]
    entropy_and_logprob_from_hidden(...)       the same, plus log p of given target tokens, one pass
    sampled_logprobs(logits, tokens)           log p of chosen tokens without a log_softmax copy
    next_token_targets(input_ids, resp_mask)   the shift-by-one alignment, in one place
    response_entropy_logprob(...)              per-token H and log p over response tokens only
    masked_mean(values, mask)                  mean over the True entries
    default_chunk_size(V, device)              rows per chunk for the *_from_hidden functions
    set_compile(enabled), compiled(fn)         the torch.compile switch and decorator (eager fallback)
"""
import os
import warnings

import torch

# ---------------------------------------------------------------------------------------------
# Compilation switch. `torch.compile` turns the few small pure functions below into fused kernels
# (one read of the logits instead of ~6 for the eager log_softmax formula). Scripts call
# `set_compile(args.compile)`; EM_COMPILE=0 switches it off from the environment. If compiling
# fails (no C++ compiler, no Triton, unsupported platform) we warn once and fall back to eager, same
# math; errors of running a function (e.g. CUDA out of memory) propagate and compilation stays on.
# ---------------------------------------------------------------------------------------------
_COMPILE = os.environ.get("EM_COMPILE", "1") != "0"


def set_compile(enabled: bool) -> None:
    """Turn torch.compile on the hot entropy paths on or off (eager gives identical results)."""
    global _COMPILE
    _COMPILE = bool(enabled)


def _is_compile_failure(e: Exception) -> bool:
    """True for a failure of torch.compile itself, False for an error of running the function.

    Compilation is lazy: it happens at the first call and again at any call that needs a new kernel
    (a new dtype or rank), so a compile failure can surface at any call; the exception class tells
    the two apart. torch 2.13 reports compile failures as BackendCompilerFailed (its subclass
    InductorError wraps a failing C++ or Triton build), InternalTorchDynamoError (a bug while
    tracing), TritonMissing or GPUTooOldForTriton. An error of the function itself (a shape
    mismatch the eager code raises too: TorchRuntimeError while tracing, RuntimeError when running;
    torch.OutOfMemoryError) is none of these.
    """
    from torch._dynamo.exc import BackendCompilerFailed, InternalTorchDynamoError
    from torch._inductor.exc import GPUTooOldForTriton, TritonMissing
    return isinstance(e, (BackendCompilerFailed, InternalTorchDynamoError, TritonMissing, GPUTooOldForTriton))


def compiled(fn):
    """Decorator: run `torch.compile(fn, dynamic=True)` when enabled, else `fn`; eager if compiling fails.

    dynamic=True keeps one compiled kernel for every batch size / vocabulary size instead of
    recompiling per shape (decode batches shrink and grow; chunks have a ragged last piece).
    A compile failure switches this function to eager for the rest of the process (with one
    warning); a runtime error propagates to the caller and the next call runs compiled again.
    """
    state = {"fn": None, "broken": False}

    def fall_back(e, args):
        state["broken"] = True
        warnings.warn(f"torch.compile failed for {fn.__name__} ({type(e).__name__}: {' '.join(str(e).split())[:200]}); using eager")
        return fn(*args)

    def wrapper(*args):
        if not _COMPILE or state["broken"]:
            return fn(*args)
        if state["fn"] is None:
            try:
                state["fn"] = torch.compile(fn, dynamic=True)
            except Exception as e:  # torch.compile refuses this platform (e.g. an unsupported Python)
                return fall_back(e, args)
        try:
            return state["fn"](*args)
        except Exception as e:
            if not _is_compile_failure(e):
                raise  # an error of this call, not of the compiler: eager would fail the same way
            return fall_back(e, args)

    wrapper.__name__, wrapper.__doc__, wrapper.eager = fn.__name__, fn.__doc__, fn
    return wrapper


# ---------------------------------------------------------------------------------------------
# Token entropy from logits
# ---------------------------------------------------------------------------------------------
def _entropy_stats(z: torch.Tensor):
    """Shared one-pass statistics of float32 logits z [..., V]: (m, z - m, log s, E_p[z - m], p).

    m = max_v z_v (0 for a row with no finite logit), s = sum exp(z - m).
    -inf logits get p = 0 and contribute exactly 0 (torch.where avoids 0 * -inf = NaN).
    """
    m = z.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # all -inf row: any shift works
    zc = z - m  # <= 0, -inf where masked
    e = torch.exp(zc)  # exp(-inf) = 0
    s = e.sum(dim=-1, keepdim=True).clamp_min(1e-30)  # >= 1 for any row with a finite logit
    zc0 = torch.where(e > 0, zc, torch.zeros_like(zc))  # 0 where masked: 0 * -inf would be NaN (also in backward)
    ez = (e * zc0).sum(dim=-1, keepdim=True) / s  # E_p[z - m]
    return m, zc, torch.log(s), ez, e / s


@compiled
def _token_entropy(z: torch.Tensor) -> torch.Tensor:
    # H = log s - E_p[z - m]  (shift-invariant form of logsumexp(z) - E_p[z])
    _, _, log_s, ez, _ = _entropy_stats(z.float())
    return (log_s - ez).squeeze(-1).clamp_min(0.0)  # rounding can give -1e-7 for one-hot rows


def softmax_entropy(z: torch.Tensor, out=None):
    """(p, p log p, H) of float32 logits z [..., V]: the softmax, its p log p terms, the entropy.

    For callers that need all three: the EM-INF update (dH/dz = -(p log p + p H)) and its sampler,
    and token_entropy without a compiler. out: optional (p, plogp) float32 tensors of z's shape to
    write into (the EM-INF update reuses its buffers from token to token, under no_grad). When z
    requires grad (and out is None), out-of-place ops instead, so autograd can differentiate H.
    p from softmax and log p = z - logsumexp(z) from log_softmax: no log() per token, so ~2x faster
    on a CPU than softmax + xlogy. Not p = exp(log p): ATen's CPU exp() takes a slow path for
    arguments below ~-88 (results that underflow), which are most of a sharp distribution's
    vocabulary (EM-INF samples at temperature 0.1): 23 vs 0.6 ms on [20, 49152], one thread,
    while softmax's own fused exp does not slow down. Always eager (a compiled kernel with out=
    copies its result once more). -inf logits: p = 0 and p log p = 0, never 0 * -inf = NaN (in place:
    log p clamped to the lowest float32; under autograd: log p replaced by 0, so its gradient is 0).
    """
    if out is None and z.requires_grad and torch.is_grad_enabled():  # out= ops have no derivative
        p = torch.softmax(z, dim=-1)
        plogp = p * torch.log_softmax(z, dim=-1).nan_to_num(neginf=0.0)  # masked: log p -> 0, its gradient 0
    else:  # in place, into the caller's buffers or two fresh ones (the fastest form on a CPU)
        p, plogp = out if out is not None else (torch.empty_like(z), torch.empty_like(z))
        torch.softmax(z, dim=-1, out=p)  # max-shifted inside: exp(z - max z) / sum, 0 where masked
        torch.log_softmax(z, dim=-1, out=plogp).clamp_min_(torch.finfo(torch.float32).min)  # log p
        plogp.mul_(p)  # p log p, in log p's memory
    # H = -sum_v p_v log p_v
    return p, plogp, -plogp.sum(dim=-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of softmax(logits) over the last dim.

    logits: [..., V] float32/bf16/fp16, may contain -inf (masked by top-k/top-p).
    returns: [...] float32. Uniform logits give log V; a single finite logit gives 0; never NaN
    for a row with at least one finite logit; a fully masked row gives 0.
    Compiled: the fused one-pass form (one read of the logits). Eager: softmax_entropy's log_softmax
    form, which needs fewer [.., V] temporaries than the one-pass form does without a compiler.
    """
    shape = logits.shape[:-1]
    z = logits.reshape(-1, logits.shape[-1])
    h = _token_entropy(z) if _COMPILE else softmax_entropy(z.float())[2].clamp_min(0.0).nan_to_num(0.0)
    return h.reshape(shape)


@compiled
def _entropy_logprob_grad(z, target, g_h, g_lp, out_dtype):
    """d(g_h * H + g_lp * log p_target)/dz for logits z [N, V], closed form, returned in out_dtype.

    dH/dz = -p (z - E_p[z]);  d log p_y / dz = onehot(y) - p.   target < 0 means "no target".
    The math runs in float32 (bf16 logits are upcast first); only the result is cast to out_dtype,
    the dtype of the matmuls that consume it (fused with the rest when compiled).
    """
    z = z.float()
    _, zc, _, ez, p = _entropy_stats(z)
    # -p (z - E_p[z]) = -p ((z - m) - E_p[z - m]); masked entries (p = 0, z = -inf) get exactly 0
    dh = torch.where(p > 0, -p * (zc - ez), torch.zeros_like(p))
    onehot = (torch.arange(z.shape[-1], device=z.device) == target.unsqueeze(-1)).to(z.dtype)
    g_lp = torch.where(target >= 0, g_lp, torch.zeros_like(g_lp))  # no target: log p is the constant 0
    return (g_h.unsqueeze(-1) * dh + g_lp.unsqueeze(-1) * (onehot - p)).to(out_dtype)


@compiled
def _entropy_logprob(z, target):
    """(H [N], log p_target [N]) of logits z [N, V] (upcast to float32) in one pass; log p = 0 where target < 0."""
    z = z.float()
    m, _, log_s, ez, _ = _entropy_stats(z)
    h = (log_s - ez).squeeze(-1).clamp_min(0.0)
    z_y = z.gather(-1, target.clamp_min(0).unsqueeze(-1))
    lp = torch.where(target.unsqueeze(-1) >= 0, z_y - m - log_s, torch.zeros_like(z_y)).squeeze(-1)
    return h, lp


# ---------------------------------------------------------------------------------------------
# Entropy (and log-probs) from hidden states, chunked: the [N, V] logits never exist at once
# ---------------------------------------------------------------------------------------------
def _head_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype the vocabulary projection runs in: the dtype the model's own forward used.

    One process (em_ft.py / em_rl.py): torch.autocast over float32 weights. The residual stream
    stays float32 there (fp32 embeddings + bf16 block outputs = fp32, and RMSNorm returns its input
    dtype), so the final hidden states are float32 but every linear layer ran in autocast's dtype:
    so does this projection. FSDP2 with MixedPrecisionPolicy(param_dtype=bf16): hidden states and
    the gathered lm_head weight are already bf16. Otherwise: hidden's dtype (float32 / float64).
    """
    device = hidden.device.type
    if torch.is_autocast_enabled(device) and hidden.dtype != torch.float64:  # autocast leaves fp64 alone
        return torch.get_autocast_dtype(device)
    return hidden.dtype


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b in the inputs' dtype, accumulated in float32 by the GEMM, result float32 where possible.

    CUDA with bf16/fp16 inputs: one cuBLAS GEMM that also writes float32 (torch.mm out_dtype), so
    nothing is rounded to bf16 after the float32 accumulation. Elsewhere (CPU has no such kernel)
    the GEMM still accumulates in float32 but rounds its result to the input dtype once (relative
    error <= 2^-8 for bf16); callers upcast it or add it into a float32 buffer. float32 / float64
    inputs: a plain a @ b.
    """
    if a.is_cuda and a.dtype in (torch.bfloat16, torch.float16):
        return torch.mm(a, b, out_dtype=torch.float32)
    return a @ b


class _ChunkedHead(torch.autograd.Function):
    """H and log p_target of softmax(hidden @ weight.T), chunk by chunk over the N rows.

    Forward keeps only hidden and weight; backward recomputes each chunk's logits and applies
    the closed-form gradient g_z (see _entropy_logprob_grad), then
        grad_hidden[chunk] = g_z @ weight          [c, V] x [V, d]
        grad_weight       += g_z.T @ hidden[chunk] [V, c] x [c, d]
    Precision: every matmul, forward and backward, runs in `dtype`, the forward's compute dtype
    (_head_dtype: bf16 under autocast or FSDP2), which backward reuses, so it recomputes exactly
    the logits the forward used. The GEMMs accumulate in float32, the softmax math is float32,
    g_z is cast to `dtype` for its two matmuls, and grad_weight is summed over the chunks in a
    float32 buffer, then cast to weight's dtype once. Each bf16 result is within a few 2^-8 of
    the scale of its terms (test_entropy.py derives the bound the tests assert). Speed: on this
    project's 2-core AVX512-BF16 CPU the head's forward got 2.9x faster and its backward 1.6x
    (casts and bf16 + float32 additions cost there; bench/bench_entropy.py); GPU tensor cores run
    bf16 at ~15x PyTorch's default full-float32 matmul rate by specification (not measured here).
    fp16 inputs work the same way but, as anywhere in fp16 without loss scaling, small g_z
    entries can underflow (the training scripts reject --dtype float16).
    Peak extra memory: a few [chunk_size, V] buffers instead of several [N, V] ones, plus, in bf16,
    a [V, d] bf16 copy of a float32 weight (autocast) and the product blocks of the weight
    gradient, each no larger than one [chunk_size, V] buffer.
    """

    @staticmethod
    def forward(ctx, hidden, weight, target, chunk_size, dtype):
        h_out = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        lp_out = torch.empty_like(h_out)
        w = weight.to(dtype)  # [V, d]: a bf16 copy of a float32 master weight under autocast, else no copy
        with torch.autocast(hidden.device.type, enabled=False):  # the matmuls run in `dtype`, explicitly
            for i in range(0, hidden.shape[0], chunk_size):
                z = _matmul(hidden[i:i + chunk_size].to(dtype), w.T)  # [c, V] logits of this chunk
                h_out[i:i + chunk_size], lp_out[i:i + chunk_size] = _entropy_logprob(z, target[i:i + chunk_size])
        ctx.save_for_backward(hidden, weight, target)
        ctx.chunk_size, ctx.compute_dtype = chunk_size, dtype
        return h_out, lp_out

    @staticmethod
    def backward(ctx, g_h, g_lp):
        hidden, weight, target = ctx.saved_tensors
        c, dtype = ctx.chunk_size, ctx.compute_dtype
        g_h = torch.zeros(hidden.shape[0], device=hidden.device) if g_h is None else g_h.float()
        g_lp = torch.zeros_like(g_h) if g_lp is None else g_lp.float()
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        # the weight gradient is a sum over all N rows: accumulate it in float32 (float64 stays float64)
        acc_dtype = torch.promote_types(dtype, torch.float32)
        grad_weight = torch.zeros_like(weight, dtype=acc_dtype) if ctx.needs_input_grad[1] else None
        w = weight.to(dtype)
        rows = max(1, c * weight.shape[0] // weight.shape[1])  # vocabulary rows per block of the grad_weight product
        with torch.autocast(hidden.device.type, enabled=False):
            for i in range(0, hidden.shape[0], c):
                h = hidden[i:i + c].to(dtype)  # [c, d]
                z = _matmul(h, w.T)  # recompute the chunk's logits, exactly as forward did
                g_z = _entropy_logprob_grad(z, target[i:i + c], g_h[i:i + c], g_lp[i:i + c], dtype)  # [c, V]
                if grad_hidden is not None:
                    # dL/dh = g_z @ W   [c, V] x [V, d], stored in hidden's dtype
                    grad_hidden[i:i + c] = _matmul(g_z, w)
                if grad_weight is not None:
                    # dL/dW += g_z^T @ h   [V, c] x [c, d]; one GEMM into the buffer when it has the compute dtype
                    if dtype == acc_dtype:
                        grad_weight.addmm_(g_z.T, h)
                    else:  # a bf16 GEMM cannot add into a float32 buffer: add its product, `rows` vocabulary
                        for v in range(0, weight.shape[0], rows):  # rows at a time ([rows, d] <= [c, V] elements)
                            grad_weight[v:v + rows] += _matmul(g_z[:, v:v + rows].T, h)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def default_chunk_size(vocab_size: int, device: torch.device) -> int:
    """Rows per chunk so that one [chunk, V] float32 buffer is ~64 MB on a CPU (a few of them stay
    near the caches; eager CPU code makes several) and ~1 GB on a GPU (fewer, larger kernels)."""
    budget = 2**28 if device.type == "cuda" else 2**24  # float32 elements per [chunk, V] buffer
    return max(16, budget // vocab_size)


def entropy_and_logprob_from_hidden(hidden, weight, target, chunk_size=None):
    """Token entropy and log p(target) of softmax(hidden @ weight.T), without the [N, V] logits.

    hidden: [N, d] final hidden states (after the model's last norm); weight: [V, d] lm_head weight;
    target: [N] long token ids (negative = none: its log p is returned as 0); chunk_size: rows per
    chunk, default default_chunk_size(V, device) (at V = 152,064: 110 rows on a CPU, 1765 on a GPU).
    returns: (H [N] float32 nats, log p [N] float32). Differentiable w.r.t. hidden and weight, with
    the closed-form gradients dH/dz = -p (z - E_p[z]) and d log p_y/dz = onehot(y) - p, recomputed
    chunk by chunk (chunk_size rows at a time) in backward. The matmuls, forward and backward, run
    in autocast's dtype when autocast is on (float32 hidden states under autocast are cast per
    chunk), else in hidden's dtype, with float32 accumulation (see _ChunkedHead); gradients come
    back in hidden's and weight's own dtypes.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"expected hidden [N, d] and weight [V, d], got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    chunk_size = chunk_size or default_chunk_size(weight.shape[0], hidden.device)
    return _ChunkedHead.apply(hidden, weight, target.long(), int(chunk_size), _head_dtype(hidden))


def entropy_from_hidden(hidden, weight, chunk_size=None):
    """Token entropy (nats, float32 [N]) of softmax(hidden @ weight.T) for hidden [N, d], weight [V, d].

    Exact, differentiable w.r.t. both inputs, and never materializes the [N, V] logits: it works
    chunk_size rows at a time (default: default_chunk_size) and recomputes each chunk in backward.
    """
    no_target = torch.full((hidden.shape[0],), -1, dtype=torch.long, device=hidden.device)
    return entropy_and_logprob_from_hidden(hidden, weight, no_target, chunk_size)[0]


# ---------------------------------------------------------------------------------------------
# Log-probs of sampled tokens, alignment, reductions
# ---------------------------------------------------------------------------------------------
def sampled_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(tokens) under softmax(logits): z_y - logsumexp(z), float32.

    logits: [..., V]; tokens: [...] long. Only a logsumexp reduction and a gather: no [..., V]
    log_softmax copy is made.
    """
    z = logits.float()
    return z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)


def next_token_targets(input_ids: torch.Tensor, response_mask: torch.Tensor):
    """The shift-by-one alignment: the state at position t predicts token t+1.

    input_ids, response_mask: [B, T] (response_mask is 1 on generated tokens, 0 on prompt and
    padding). Returns (targets [B, T-1], mask [B, T-1] bool) to be used with states[:, :-1]:
    row b, column t holds the token at t+1 and whether that token is a response token.
    """
    return input_ids[:, 1:], response_mask[:, 1:].bool()


def response_entropy_logprob(hidden, weight, input_ids, response_mask, chunk_size=None):
    """Per-token entropy and log p of the sampled response tokens, from final hidden states.

    hidden: [B, T, d] final hidden states of the full sequences (prompt + response);
    weight: [V, d] lm_head weight; input_ids, response_mask: [B, T].
    returns: (H [B, T-1], log p [B, T-1], mask [B, T-1]), zeros off the mask. Only the masked
    positions go through the vocabulary projection, so prompt and padding cost nothing.
    """
    targets, mask = next_token_targets(input_ids, response_mask)
    states = hidden[:, :-1][mask]  # [N, d], N = number of response tokens
    h, lp = entropy_and_logprob_from_hidden(states, weight, targets[mask], chunk_size)
    h_full = hidden.new_zeros(mask.shape, dtype=torch.float32).masked_scatter(mask, h)
    lp_full = hidden.new_zeros(mask.shape, dtype=torch.float32).masked_scatter(mask, lp)
    return h_full, lp_full, mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean of values over entries where mask is true (over `dim`, or all). Empty mask gives 0."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp_min(1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)
