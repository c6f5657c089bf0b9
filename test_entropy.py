"""Tests for entropy.py against independent references: float64 naive formulas,
torch.distributions.Categorical, autograd through materialized float64 logits, and gradcheck."""
import math
import pathlib
import subprocess
import sys
import warnings

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



@pytest.mark.parametrize("compile_", [False, True])
def test_token_entropy_gradient_matches_closed_form(compile_):
    """token_entropy is differentiable, eager and compiled: dH/dz = -p (log p + H), in float64 from the
    definition (finite logits here; -inf logits get gradient 0)."""
    torch.manual_seed(0)
    z = torch.randn(4, 257) * 3
    z[0, :200] = float("-inf")
    g = torch.randn(4)
    entropy.set_compile(compile_)
    try:
        zz = z.clone().requires_grad_(True)
        (entropy.token_entropy(zz) * g).sum().backward()
    finally:
        entropy.set_compile(False)
    z64 = z.double()
    p = torch.softmax(z64, dim=-1)
    logp = torch.where(p > 0, torch.log(p), torch.zeros_like(p))
    h = -(p * logp).sum(-1, keepdim=True)
    ref = -p * (logp + h) * g.double()[:, None]
    assert torch.isfinite(zz.grad).all()
    torch.testing.assert_close(zz.grad.double(), ref, atol=1e-6, rtol=1e-5)

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


# bf16 head: the error bound the tests below assert, derived rather than measured.
# bfloat16 keeps 8 significant bits (ulp(1) = 2^-7), so rounding to nearest has relative error
# <= u = 2^-8 (confirmed: CPU bf16 GEMMs return the exact product rounded once). Against
# exact arithmetic on the same bf16 inputs (h, W), the bf16 path of _ChunkedHead makes, per entry:
#   logits  z = h W^T, float32 accumulation, rounded to bf16 on CPU:  |dz| <= u |z|
#   g = dL/dz in float32 from the rounded z:  |dg| <= |J| |dz|, J = d^2 L / dz^2 (V x V per row)
#   then g is rounded to bf16 for its two matmuls:  + u |g|
#   grad_h = g W: one more rounding of the result (bf16 on CPU, or into a bf16 hidden)
#   grad_W = sum over chunks of g^T h: each chunk's product rounded once (on CPU), the sum kept
#            in float32, rounded once more into a bf16 weight:  <= 2 u |g|^T |h|
# so, to first order in u:  |d grad_h| <= (|J| u|z| + 2u|g|) @ |W|,
#                           |d grad_W| <= (|J| u|z| + 3u|g|)^T @ |h|,
#                           |d H| <= u sum_v |dH/dz_v| |z_v|  (the same for log p).
# The tests allow twice that (second-order terms) plus 1e-5 (float32 softmax arithmetic, for
# entries whose bound is ~0). A float32 accumulation that lost its float32 buffer (bf16 partial
# sums over the chunks) breaks it: each of n chunks would add u |running sum|.
BF16_U = 2.0 ** -8


def bf16_head_reference(h, w, target, g_h, g_lp):
    """Float64 autograd through the materialized logits of the bf16-rounded inputs, and the bounds above.

    Returns {name: (reference, allowed error)} for H, log p, grad_h and grad_W.
    """
    hb, wb = h.detach().bfloat16().double(), w.detach().bfloat16().double()  # what the bf16 matmuls see
    hr, wr = hb.clone().requires_grad_(), wb.clone().requires_grad_()
    z = hr @ wr.T
    logp = torch.log_softmax(z, -1)
    H = -(logp.exp() * logp).sum(-1)
    lp = torch.where(target >= 0, logp.gather(-1, target.clamp_min(0)[:, None]).squeeze(-1), 0.0)
    L = (H * g_h).sum() + (lp * g_lp).sum()
    dH_dz, dlp_dz, g = (torch.autograd.grad(f, z, retain_graph=True)[0] for f in (H.sum(), lp.sum(), L))  # [N, V]
    grad_h, grad_w = torch.autograd.grad(L, [hr, wr])

    def row_loss(zr, y, gh, glp):  # L of one row, for its Hessian J [V, V]
        lr = torch.log_softmax(zr, -1)
        lp_r = torch.where(y >= 0, lr.gather(0, y.clamp_min(0)[None])[0], torch.zeros((), dtype=zr.dtype))
        return gh * -(lr.exp() * lr).sum() + glp * lp_r

    J = torch.func.vmap(torch.func.hessian(row_loss))(z.detach(), target, g_h, g_lp)  # [N, V, V]
    dz = BF16_U * z.detach().abs()
    J_dz = (J.abs() @ dz.unsqueeze(-1)).squeeze(-1)  # [N, V] first-order bound of |dg| from |dz|
    ag = g.abs()
    bounds = {"H": (dH_dz.abs() * dz).sum(-1), "lp": (dlp_dz.abs() * dz).sum(-1),
              "grad_h": (J_dz + 2 * BF16_U * ag) @ wb.abs(), "grad_w": (J_dz + 3 * BF16_U * ag).T @ hb.abs()}
    refs = {"H": H.detach(), "lp": lp.detach(), "grad_h": grad_h, "grad_w": grad_w}
    return {k: (refs[k], 2 * bounds[k] + 1e-5) for k in refs}


def assert_within(name, got, ref, allowed):
    err = (got.double() - ref).abs()
    worst = (err / allowed).max().item()
    assert worst <= 1.0, f"{name}: error {err.max().item():.3g} exceeds the bf16 bound ({worst:.2f}x of it)"


@pytest.mark.parametrize("chunk_size", [4, 64])
@pytest.mark.parametrize("mode", ["bf16", "autocast"])
def test_entropy_and_logprob_bf16_gradients_within_bound(mode, chunk_size):
    """bf16 hidden and weight (FSDP2's MixedPrecisionPolicy), and float32 ones under torch.autocast
    (one process; backward outside autocast, as in the training scripts): H, log p and both
    gradients stay within the bf16 bound derived above, and come back in the inputs' dtypes."""
    N, d, V = 40, 32, 300
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(N, d, generator=gen)
    w = torch.randn(V, d, generator=gen) * (2.0 / math.sqrt(d))  # logits of std ~2, max ~8
    target = torch.randint(0, V, (N,), generator=gen)
    target[::5] = -1
    g_h, g_lp = torch.randn(N, dtype=torch.float64, generator=gen), torch.randn(N, dtype=torch.float64, generator=gen)
    expected = bf16_head_reference(h, w, target, g_h, g_lp)

    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    hx, wx = h.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
        H, lp = entropy.entropy_and_logprob_from_hidden(hx, wx, target, chunk_size=chunk_size)
    ((H * g_h.float()).sum() + (lp * g_lp.float()).sum()).backward()
    assert H.dtype == lp.dtype == torch.float32 and hx.grad.dtype == wx.grad.dtype == dtype
    for name, got in [("H", H), ("lp", lp), ("grad_h", hx.grad), ("grad_w", wx.grad)]:
        assert_within(name, got, *expected[name])


@pytest.mark.parametrize("mode", ["bf16", "autocast"])
def test_bf16_weight_gradient_sums_chunks_in_float32(mode):
    """512 chunks of one row whose weight-gradient terms all have the same sign: a bf16 running
    sum would stop growing once it is 2^8 times a term (each new term rounds away), far outside the
    bound; the float32 buffer keeps the sum within it."""
    N, d, V = 512, 8, 50
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(N, d, generator=gen).abs()  # positive rows
    w = torch.randn(V, d, generator=gen) * 0.3
    target = torch.full((N,), 3)  # the same target everywhere: dlog p_3/dz_3 = 1 - p_3 > 0 on every row
    g_h, g_lp = torch.zeros(N, dtype=torch.float64), torch.ones(N, dtype=torch.float64)
    ref, allowed = bf16_head_reference(h, w, target, g_h, g_lp)["grad_w"]
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    wx = w.to(dtype).requires_grad_()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 512 tiny chunks: OpenMP hand-offs would cost ~1 ms per op on a busy machine
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
            _, lp = entropy.entropy_and_logprob_from_hidden(h.to(dtype), wx, target, chunk_size=1)
        lp.sum().backward()
    finally:
        torch.set_num_threads(threads)
    assert_within("grad_w", wx.grad, ref, allowed)


def test_head_matmuls_run_in_the_forward_compute_dtype():
    """Every matmul of forward and backward sees bf16 operands when the forward ran under bf16
    autocast over float32 hidden states and weights (the one-process training setup), and float32
    ones without autocast: backward follows the forward's dtype, not the saved tensors' dtype."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class RecordMatmuls(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.dtypes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_):
                operands = args[1:3] if len(args) == 3 else args  # mm(a, b) / addmm(acc, a, b): the two factors
                self.dtypes.append(tuple(t.dtype for t in operands))
            return func(*args, **(kwargs or {}))

    # 3 chunks of 4 rows: 3 forward logits + 3 recomputed logits + 3 grad_h matmuls, then grad_W:
    # one addmm_ per chunk in float32; in bf16, 2 products per chunk (blocks of 4 * 50 // 8 = 25 vocabulary rows)
    for autocast, want, count in [(True, torch.bfloat16, 15), (False, torch.float32, 12)]:
        hidden, weight = torch.randn(10, 8, requires_grad=True), torch.randn(50, 8, requires_grad=True)
        with RecordMatmuls() as rec:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                h = entropy.entropy_from_hidden(hidden, weight, chunk_size=4)
            h.sum().backward()
        assert len(rec.dtypes) == count, rec.dtypes
        assert all(dt == (want, want) for dt in rec.dtypes), rec.dtypes
        assert hidden.grad.dtype == weight.grad.dtype == torch.float32


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


@pytest.mark.parametrize("autocast", [False, True])
def test_entropy_from_hidden_compiled_equals_eager(autocast):
    N, d, V = 20, 8, 77
    hidden, weight = torch.randn(N, d), torch.randn(V, d)
    target = torch.randint(0, V, (N,))

    def run():
        hx, wx = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
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
    # the same float32 math on the same logits; under autocast the fused and the eager cast of g_z
    # to bf16 may round a float32 value that differs in its last bits to neighbouring bf16 values
    grad_tol = dict(atol=1e-5, rtol=1e-5) if not autocast else dict(atol=1e-3, rtol=2.0 ** -7)
    for a, b, tol in zip(comp, eager, [dict(atol=1e-5, rtol=1e-5)] * 2 + [grad_tol] * 2):
        torch.testing.assert_close(a, b, **tol)


# ---------------------------------------------------------------------------------------------
# entropy.compiled: eager only when compiling fails; runtime errors propagate
# ---------------------------------------------------------------------------------------------
def compile_with(monkeypatch, backend):
    """Make entropy.compiled compile through `backend` (a real torch.compile, a fake compiler)."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend=backend, **kw))
    monkeypatch.setattr(entropy, "_COMPILE", True)


def test_compiled_falls_back_to_eager_when_compiling_fails(monkeypatch):
    attempts = []

    def broken_compiler(gm, example_inputs):  # what a missing C++ compiler or Triton looks like
        attempts.append(1)
        raise RuntimeError("C++ compiler not found")

    compile_with(monkeypatch, broken_compiler)

    @entropy.compiled
    def double(x):
        return 2 * x

    with pytest.warns(UserWarning, match="torch.compile failed for double"):
        assert torch.equal(double(torch.ones(3)), torch.full((3,), 2.0))  # the eager result, this call
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        assert torch.equal(double(torch.ones(4)), torch.full((4,), 2.0))
    assert len(attempts) == 1  # eager for good: no second compile attempt


def test_compiled_falls_back_when_torch_compile_is_unavailable(monkeypatch):
    def unavailable(fn, **kw):  # what torch.compile does on a Python version dynamo does not support
        raise RuntimeError("torch.compile is not supported on this Python version")

    monkeypatch.setattr(torch, "compile", unavailable)
    monkeypatch.setattr(entropy, "_COMPILE", True)
    increment = entropy.compiled(lambda x: x + 1)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        assert increment(torch.zeros(2)).tolist() == [1.0, 1.0]


def test_compiled_lets_runtime_errors_through_and_stays_compiled(monkeypatch):
    runs = {"compiled": 0, "oom": False}

    def counting_compiler(gm, example_inputs):  # compiles fine; its kernel can run out of memory
        def kernel(*args):
            runs["compiled"] += 1
            if runs["oom"]:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return gm.forward(*args)
        return kernel

    compile_with(monkeypatch, counting_compiler)

    @entropy.compiled
    def add(x, y):
        return x + y

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback would warn
        with pytest.raises(RuntimeError, match="size of tensor"):  # the shape error eager raises too
            add(torch.ones(3), torch.ones(4))
        assert torch.equal(add(torch.ones(3), torch.ones(3)), torch.full((3,), 2.0))
        assert runs["compiled"] == 1  # the shape error did not switch compilation off
        runs["oom"] = True
        with pytest.raises(torch.OutOfMemoryError):
            add(torch.ones(3), torch.ones(3))
        runs["oom"] = False
        assert torch.equal(add(torch.ones(3), torch.ones(3)), torch.full((3,), 2.0))
        assert runs["compiled"] == 3  # after the out-of-memory error the compiled kernel runs again


def test_bench_head_precision_runs_at_toy_size():
    """bench/bench_entropy.py --gpu --smoke: the GPU section's code at a toy size on the CPU (it is
    meant for one GPU at the Qwen2.5-Math-1.5B shape, which this test cannot run)."""
    bench = pathlib.Path(__file__).parent / "bench" / "bench_entropy.py"
    out = subprocess.run([sys.executable, str(bench), "--gpu", "--smoke"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith(("| fp32 |", "| autocast |", "| bf16 |"))]
    assert len(rows) == 3, out.stdout
    fp32, autocast = (row.split("|") for row in rows[:2])
    assert fp32[6].strip() == "0.0e+00"  # the reference against itself
    assert 1e-4 < float(autocast[6]) < 2.0 ** -6  # bf16 gradients differ from float32 ones, at the bf16 scale
    if not torch.cuda.is_available():  # --gpu without a GPU: a one-line error, exit code 2
        no_gpu = subprocess.run([sys.executable, str(bench), "--gpu"], capture_output=True, text=True, timeout=300)
        assert no_gpu.returncode == 2 and no_gpu.stderr.count("\n") == 1 and "--gpu needs a CUDA device" in no_gpu.stderr


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


def test_softmax_entropy_into_given_buffers_sharp_logits():
    # out=: the EM-INF update's kept buffers are written and returned; logits at temperature 0.1 (most
    # p underflow to 0) and -inf entries still give exact p, finite p log p and the float64 entropy
    z = torch.randn(3, 300) * 3 / 0.1
    z[0, 100:] = float("-inf")
    out = (torch.full_like(z, float("nan")), torch.full_like(z, float("nan")))
    p, plogp, h = entropy.softmax_entropy(z, out)
    assert p.data_ptr() == out[0].data_ptr() and plogp.data_ptr() == out[1].data_ptr()
    ref_p = torch.softmax(z.double(), -1)
    torch.testing.assert_close(p.double(), ref_p, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(plogp.double(), torch.xlogy(ref_p, ref_p), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(h.double(), naive_masked_entropy64(z), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(plogp).all() and torch.equal(p[0, 100:], torch.zeros(200))
