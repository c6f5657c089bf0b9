"""Tests for entropy.py against independent references: float64 naive formulas,
torch.distributions.Categorical, autograd through materialized float64 logits, and gradcheck."""
import math

import pytest
import torch

import entropy

torch.manual_seed(0)


def naive_entropy64(z):
    """-sum p log p in float64 from the logits as given (after rounding to their dtype)."""
    return torch.distributions.Categorical(logits=z.double()).entropy()


def naive_masked_entropy64(z):
    """Reference for logits with -inf entries: entropy over the finite entries only, float64."""
    out = []
    for row in z.double().reshape(-1, z.shape[-1]):
        f = row[torch.isfinite(row)]
        p = torch.softmax(f, -1)
        out.append(-(p * torch.log(p)).sum() if f.numel() else torch.tensor(0.0, dtype=torch.float64))
    return torch.stack(out).reshape(z.shape[:-1])


# ---------------------------------------------------------------------------------------------
# token_entropy
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 11), (4, 1000), (1, 50_000)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 2e-5), (torch.float16, 2e-5)])
def test_token_entropy_matches_categorical(shape, dtype, tol):
    z = (torch.randn(shape) * 3).to(dtype)
    h = entropy.token_entropy(z)
    assert h.dtype == torch.float32 and h.shape == shape[:-1]
    ref = naive_entropy64(z)  # same rounded inputs, exact arithmetic: only our float32 error remains
    torch.testing.assert_close(h.double(), ref, atol=tol * math.log(shape[-1]) + 1e-6, rtol=1e-5)


def test_token_entropy_special_rows():
    V = 1000
    uniform = torch.zeros(V)
    one_hot = torch.full((V,), float("-inf"))
    one_hot[17] = 3.0
    peaked = torch.zeros(V)
    peaked[0] = 1e4  # huge logit: naive exp overflows, the shifted form does not
    h = entropy.token_entropy(torch.stack([uniform, one_hot, peaked]))
    assert abs(h[0].item() - math.log(V)) < 1e-5
    assert h[1].item() == 0.0
    assert 0.0 <= h[2].item() < 1e-6


def test_token_entropy_masked_logits_no_nan():
    z = torch.randn(6, 300) * 2
    # top-k masking: keep the 5 largest per row, as a sampler would
    kth = z.topk(5, dim=-1).values[:, -1:]
    z_topk = z.masked_fill(z < kth, float("-inf"))
    h = entropy.token_entropy(z_topk)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h.double(), naive_masked_entropy64(z_topk), atol=1e-5, rtol=1e-5)
    all_masked = torch.full((2, 10), float("-inf"))
    assert torch.equal(entropy.token_entropy(all_masked), torch.zeros(2))


def test_token_entropy_compiled_equals_eager():
    z = torch.randn(5, 3001) * 4
    z[0, :2000] = float("-inf")
    entropy.set_compile(False)
    eager = entropy.token_entropy(z)
    entropy.set_compile(True)
    try:
        for shape in [(5, 3001), (3, 128)]:  # a second shape must not need a different kernel
            zz = z[: shape[0], : shape[1]]
            torch.testing.assert_close(entropy.token_entropy(zz), naive_masked_entropy64(zz).float(), atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(entropy.token_entropy(z), eager, atol=1e-5, rtol=1e-6)
    finally:
        entropy.set_compile(False)


# ---------------------------------------------------------------------------------------------
# entropy_from_hidden / entropy_and_logprob_from_hidden
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [1, 3, 16, 37, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_entropy_from_hidden_values(chunk_size, dtype):
    N, d, V = 37, 12, 101
    hidden, weight = torch.randn(N, d, dtype=dtype), torch.randn(V, d, dtype=dtype) * 0.5
    h = entropy.entropy_from_hidden(hidden, weight, chunk_size=chunk_size)
    assert h.shape == (N,) and h.dtype == torch.float32
    ref = naive_entropy64(hidden.double() @ weight.double().T)
    torch.testing.assert_close(h.double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_entropy_and_logprob_gradients_match_autograd(chunk_size):
    N, d, V = 23, 8, 61
    h64 = torch.randn(N, d, dtype=torch.float64)
    w64 = torch.randn(V, d, dtype=torch.float64) * 0.7
    target = torch.randint(0, V, (N,))
    target[::4] = -1  # "no target" rows: log p reported as 0, no gradient from it
    g_h, g_lp = torch.randn(N, dtype=torch.float64), torch.randn(N, dtype=torch.float64)

    # reference: autograd through the materialized float64 logits
    hr, wr = h64.clone().requires_grad_(), w64.clone().requires_grad_()
    z = hr @ wr.T
    logp = torch.log_softmax(z, -1)
    H_ref = -(logp.exp() * logp).sum(-1)
    lp_ref = torch.where(target >= 0, logp.gather(-1, target.clamp_min(0)[:, None]).squeeze(-1), 0.0)
    ((H_ref * g_h).sum() + (lp_ref * g_lp).sum()).backward()

    hx, wx = h64.float().requires_grad_(), w64.float().requires_grad_()
    H, lp = entropy.entropy_and_logprob_from_hidden(hx, wx, target, chunk_size=chunk_size)
    ((H * g_h.float()).sum() + (lp * g_lp.float()).sum()).backward()
    torch.testing.assert_close(H.double(), H_ref.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lp.double(), lp_ref.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hx.grad.double(), hr.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(wx.grad.double(), wr.grad, atol=1e-4, rtol=1e-4)


def test_entropy_from_hidden_gradcheck():
    """Finite differences in float64 (the forward itself is float32, so compare grads of a float64
    closed form via autograd instead): gradcheck of the hidden/weight gradient of sum(H)."""
    N, d, V = 9, 4, 13
    hidden = torch.randn(N, d, dtype=torch.float64)
    weight = torch.randn(V, d, dtype=torch.float64)
    eps = 1e-3  # central differences of float32 forward values: eps large enough for fp32 noise
    hx, wx = hidden.float().requires_grad_(), weight.float().requires_grad_()
    entropy.entropy_from_hidden(hx, wx, chunk_size=4).sum().backward()
    for (i, j) in [(0, 0), (3, 2), (8, 3)]:
        hp, hm = hidden.clone(), hidden.clone()
        hp[i, j] += eps
        hm[i, j] -= eps
        fd = (naive_entropy64(hp @ weight.T).sum() - naive_entropy64(hm @ weight.T).sum()) / (2 * eps)
        assert abs(hx.grad[i, j].item() - fd.item()) < 1e-3


def test_entropy_from_hidden_never_materializes_full_logits():
    """With chunk_size c, no float32 buffer of N x V elements is allocated (forward and backward)."""
    N, d, V, c = 64, 8, 512, 8
    hidden = torch.randn(N, d, requires_grad=True)
    weight = torch.randn(V, d, requires_grad=True)
    sizes = []
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        entropy.entropy_from_hidden(hidden, weight, chunk_size=c).sum().backward()
    for e in prof.events():
        if e.cpu_memory_usage > 0:
            sizes.append(e.cpu_memory_usage)
    assert sizes, "the profiler recorded no allocation"
    assert max(sizes) < N * V * 4 / 2, f"an allocation of {max(sizes)} bytes looks like the full [N, V] logits"


def test_entropy_from_hidden_bf16_close_to_float64():
    N, d, V = 16, 32, 300
    hidden, weight = torch.randn(N, d), torch.randn(V, d) * 0.2
    h = entropy.entropy_from_hidden(hidden.bfloat16(), weight.bfloat16())
    assert h.dtype == torch.float32
    ref = naive_entropy64(hidden.bfloat16().double() @ weight.bfloat16().double().T)
    torch.testing.assert_close(h.double(), ref, atol=0.05, rtol=0.02)  # bf16 matmul rounding only


def test_entropy_from_hidden_compiled_equals_eager():
    N, d, V = 20, 8, 77
    hidden, weight = torch.randn(N, d), torch.randn(V, d)
    target = torch.randint(0, V, (N,))

    def run():
        hx, wx = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        H, lp = entropy.entropy_and_logprob_from_hidden(hx, wx, target, chunk_size=6)
        (H.sum() - lp.sum()).backward()
        return H, lp, hx.grad, wx.grad

    entropy.set_compile(False)
    eager = run()
    entropy.set_compile(True)
    try:
        comp = run()
    finally:
        entropy.set_compile(False)
    for a, b in zip(comp, eager):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# log-probs, alignment, masked mean
# ---------------------------------------------------------------------------------------------
def test_sampled_logprobs():
    z = torch.randn(3, 4, 50) * 3
    tok = torch.randint(0, 50, (3, 4))
    ref = torch.log_softmax(z.double(), -1).gather(-1, tok[..., None]).squeeze(-1)
    torch.testing.assert_close(entropy.sampled_logprobs(z, tok).double(), ref, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(entropy.sampled_logprobs(z.bfloat16(), tok).double(),
                               torch.log_softmax(z.bfloat16().double(), -1).gather(-1, tok[..., None]).squeeze(-1),
                               atol=1e-4, rtol=1e-4)


def test_response_alignment_hand_built_batch():
    """Row 0: 2 pad, 2 prompt, 2 response tokens. Row 1: 3 prompt, 3 response tokens.
    The state at t predicts token t+1, so the response tokens at t+1 select the states at t."""
    B, T, d, V = 2, 6, 5, 9
    pad = 0
    input_ids = torch.tensor([[pad, pad, 4, 5, 6, 7],
                              [3, 4, 5, 6, 7, 8]])
    response_mask = torch.tensor([[0, 0, 0, 0, 1, 1],
                                  [0, 0, 0, 1, 1, 1]])
    hidden = torch.randn(B, T, d)
    weight = torch.randn(V, d)
    H, lp, mask = entropy.response_entropy_logprob(hidden, weight, input_ids, response_mask, chunk_size=2)
    assert H.shape == lp.shape == mask.shape == (B, T - 1)
    expected_positions = {(0, 3), (0, 4), (1, 2), (1, 3), (1, 4)}  # states that predict response tokens
    assert {tuple(x) for x in mask.nonzero().tolist()} == expected_positions
    for b in range(B):
        for t in range(T - 1):
            z = hidden[b, t].double() @ weight.double().T
            if (b, t) in expected_positions:
                assert abs(H[b, t].item() - naive_entropy64(z).item()) < 1e-5
                assert abs(lp[b, t].item() - torch.log_softmax(z, -1)[input_ids[b, t + 1]].item()) < 1e-5
            else:  # prompt and padding positions are exactly zero, never averaged in
                assert H[b, t].item() == 0.0 and lp[b, t].item() == 0.0
    # the mean token entropy over response tokens: 5 tokens, padding ignored
    ref_mean = sum(naive_entropy64(hidden[b, t].double() @ weight.double().T).item() for b, t in expected_positions) / 5
    assert abs(entropy.masked_mean(H, mask).item() - ref_mean) < 1e-5
    # per-row means: row 0 has 2 response tokens, row 1 has 3
    row_means = entropy.masked_mean(H, mask, dim=1)
    assert abs(row_means[0].item() - H[0, 3:5].double().mean().item()) < 1e-6
    assert abs(row_means[1].item() - H[1, 2:5].double().mean().item()) < 1e-6


def test_masked_mean_empty_mask_is_zero():
    assert entropy.masked_mean(torch.ones(3), torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_softmax_entropy_returns_softmax_plogp_and_entropy():
    z = torch.randn(4, 257) * 3
    z[1, 5:] = float("-inf")  # masked tail
    p, plogp, h = entropy.softmax_entropy(z)
    ref_p = torch.softmax(z.double(), -1)
    torch.testing.assert_close(p.double(), ref_p, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(plogp.double(), torch.xlogy(ref_p, ref_p), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(h.double(), naive_masked_entropy64(z), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(plogp).all()
