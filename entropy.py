"""entropy.py: the entropy math shared by EM-FT, EM-RL and EM-INF (arXiv 2505.15134). Read this first.

Everything here is in nats, computed in float32 whatever the input dtype.

    token entropy     H(z) = -sum_v p_v log p_v,  p = softmax(z)
    stable form       H(z) = logsumexp(z) - sum_v p_v z_v
    one-pass form     m = max z, s = sum exp(z - m), u = sum exp(z - m) (z - m):  H = log s - u / s
    gradient          dH/dz_v = -p_v (z_v - E_p[z])   (= -p_v (log p_v + H))
    log-prob          log p_y = z_y - logsumexp(z),    d log p_y / dz = onehot(y) - p

Public functions:
    token_entropy(logits)                      [..., V] -> [...]    compiled, one fused pass, -inf safe
    softmax_entropy(z)                         (p, p log p, H): what the EM-INF update needs
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
# `set_compile(args.compile)`; EM_COMPILE=0 switches it off from the environment. If compilation
# fails (no C++ compiler, unsupported platform) we warn once and fall back to eager, same math.
# ---------------------------------------------------------------------------------------------
_COMPILE = os.environ.get("EM_COMPILE", "1") != "0"


def set_compile(enabled: bool) -> None:
    """Turn torch.compile on the hot entropy paths on or off (eager gives identical results)."""
    global _COMPILE
    _COMPILE = bool(enabled)


def compiled(fn):
    """Decorator: run `torch.compile(fn, dynamic=True)` when enabled, else `fn`; eager on failure.

    dynamic=True keeps one compiled kernel for every batch size / vocabulary size instead of
    recompiling per shape (decode batches shrink and grow; chunks have a ragged last piece).
    """
    state = {"fn": None, "broken": False}

    def wrapper(*args):
        if not _COMPILE or state["broken"]:
            return fn(*args)
        if state["fn"] is None:
            state["fn"] = torch.compile(fn, dynamic=True)
        try:
            return state["fn"](*args)
        except Exception as e:  # compile-time failure only; the eager function has the same math
            state["broken"] = True
            warnings.warn(f"torch.compile failed for {fn.__name__} ({type(e).__name__}); using eager")
            return fn(*args)

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
    ez = torch.where(e > 0, e * zc, torch.zeros_like(e)).sum(dim=-1, keepdim=True) / s  # E_p[z - m]
    return m, zc, torch.log(s), ez, e / s


@compiled
def _token_entropy(z: torch.Tensor) -> torch.Tensor:
    # H = log s - E_p[z - m]  (shift-invariant form of logsumexp(z) - E_p[z])
    _, _, log_s, ez, _ = _entropy_stats(z.float())
    return (log_s - ez).squeeze(-1).clamp_min(0.0)  # rounding can give -1e-7 for one-hot rows


@compiled
def softmax_entropy(z: torch.Tensor):
    """(p, p log p, H) of float32 logits z [..., V]: the softmax, its p log p terms, the entropy.

    For callers that need all three (the EM-INF update: dH/dz = -(p log p + p H)). -inf logits get
    p = 0 and p log p = xlogy(0, 0) = 0. Without a compiler this is two [..., V] passes (ATen's fused
    softmax, then xlogy): the cheapest eager sequence for the entropy.
    """
    p = torch.softmax(z, dim=-1)  # max-shifted inside: exp(z - max z) / sum, 0 where masked
    plogp = torch.xlogy(p, p)
    # H = -sum_v p_v log p_v
    return p, plogp, -plogp.sum(dim=-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of softmax(logits) over the last dim.

    logits: [..., V] float32/bf16/fp16, may contain -inf (masked by top-k/top-p).
    returns: [...] float32. Uniform logits give log V; a single finite logit gives 0; never NaN
    for a row with at least one finite logit; a fully masked row gives 0.
    Compiled: the fused one-pass form (one read of the logits). Eager: the p log p form, which
    needs fewer [.., V] temporaries than the one-pass form does without a compiler (~2x faster).
    """
    shape = logits.shape[:-1]
    z = logits.reshape(-1, logits.shape[-1])
    h = _token_entropy(z) if _COMPILE else softmax_entropy(z.float())[2].clamp_min(0.0).nan_to_num(0.0)
    return h.reshape(shape)


@compiled
def _entropy_logprob_grad(z, target, g_h, g_lp):
    """d(g_h * H + g_lp * log p_target)/dz for float32 logits z [N, V], closed form.

    dH/dz = -p (z - E_p[z]);  d log p_y / dz = onehot(y) - p.   target < 0 means "no target".
    """
    _, zc, _, ez, p = _entropy_stats(z)
    # -p (z - E_p[z]) = -p ((z - m) - E_p[z - m]); masked entries (p = 0, z = -inf) get exactly 0
    dh = torch.where(p > 0, -p * (zc - ez), torch.zeros_like(p))
    onehot = (torch.arange(z.shape[-1], device=z.device) == target.unsqueeze(-1)).to(z.dtype)
    g_lp = torch.where(target >= 0, g_lp, torch.zeros_like(g_lp))  # no target: log p is the constant 0
    return g_h.unsqueeze(-1) * dh + g_lp.unsqueeze(-1) * (onehot - p)


@compiled
def _entropy_logprob(z, target):
    """(H [N], log p_target [N]) of float32 logits z [N, V] in one pass; log p = 0 where target < 0."""
    m, _, log_s, ez, _ = _entropy_stats(z)
    h = (log_s - ez).squeeze(-1).clamp_min(0.0)
    z_y = z.gather(-1, target.clamp_min(0).unsqueeze(-1))
    lp = torch.where(target.unsqueeze(-1) >= 0, z_y - m - log_s, torch.zeros_like(z_y)).squeeze(-1)
    return h, lp


# ---------------------------------------------------------------------------------------------
# Entropy (and log-probs) from hidden states, chunked: the [N, V] logits never exist at once
# ---------------------------------------------------------------------------------------------
class _ChunkedHead(torch.autograd.Function):
    """H and log p_target of softmax(hidden @ weight.T), chunk by chunk over the N rows.

    Forward keeps only hidden and weight; backward recomputes each chunk's logits and applies
    the closed-form gradient g_z (see _entropy_logprob_grad), then
        grad_hidden[chunk] = g_z @ weight          [c, V] x [V, d]
        grad_weight       += g_z.T @ hidden[chunk] [V, c] x [c, d]
    Peak extra memory: a few [chunk_size, V] float32 buffers instead of several [N, V] ones.
    """

    @staticmethod
    def forward(ctx, hidden, weight, target, chunk_size):
        h_out = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        lp_out = torch.empty_like(h_out)
        w = weight.to(hidden.dtype)  # e.g. bf16 hidden states under autocast, fp32 master weight
        for i in range(0, hidden.shape[0], chunk_size):
            z = (hidden[i:i + chunk_size] @ w.T).float()  # [c, V] logits of this chunk
            h_out[i:i + chunk_size], lp_out[i:i + chunk_size] = _entropy_logprob(z, target[i:i + chunk_size])
        ctx.save_for_backward(hidden, weight, target)
        ctx.chunk_size = chunk_size
        return h_out, lp_out

    @staticmethod
    def backward(ctx, g_h, g_lp):
        hidden, weight, target = ctx.saved_tensors
        c = ctx.chunk_size
        g_h = torch.zeros(hidden.shape[0], device=hidden.device) if g_h is None else g_h.float()
        g_lp = torch.zeros_like(g_h) if g_lp is None else g_lp.float()
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        # weight gradient accumulated in float32 across chunks (no-op casts when everything is fp32)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        w = weight.to(hidden.dtype)
        for i in range(0, hidden.shape[0], c):
            h = hidden[i:i + c]
            z = (h @ w.T).float()  # recompute the chunk's logits
            g_z = _entropy_logprob_grad(z, target[i:i + c], g_h[i:i + c], g_lp[i:i + c])  # [c, V] fp32
            if grad_hidden is not None:
                grad_hidden[i:i + c] = g_z.to(hidden.dtype) @ w
            if grad_weight is not None:
                grad_weight.addmm_(g_z.T, h.float())
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None


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
    chunk by chunk (chunk_size rows at a time) in backward.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"expected hidden [N, d] and weight [V, d], got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    chunk_size = chunk_size or default_chunk_size(weight.shape[0], hidden.device)
    return _ChunkedHead.apply(hidden, weight, target.long(), int(chunk_size))


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
