"""Benchmark entropy.py at the real Qwen2.5 vocabulary (V = 152,064). Run: `make bench` or

    python bench/bench_entropy.py [--repeats 20] [--sizes 2048 4096]

1. token_entropy on [16, V] float32 (compiled, one fused pass) vs the eager formula
   -(log_softmax(z).exp() * log_softmax(z)).sum(-1). Target: >= 3x faster.
2. entropy_from_hidden forward + backward at d = 256 vs the naive version that materializes the
   [N, V] logits. Each variant runs in a fresh subprocess so that its peak resident memory
   (ru_maxrss, minus the memory held before the call) is its own. Targets at N = 2048: peak
   memory >= 4x lower, time <= 1.3x naive.
3. The head's matmul precision: entropy_and_logprob_from_hidden forward + backward (the EM-FT /
   EM-RL update's head) with float32 matmuls against bf16 ones, as the training scripts run them:
   float32 weights under torch.autocast(bf16) (one process) and bf16 hidden + weight (FSDP2).
   Times are interleaved medians in one process; peak memory as in 2 (CPU) or
   torch.cuda.max_memory_allocated (GPU); the gradients' normwise relative difference from the
   float32 run shows what bf16 costs in accuracy. On a CPU, bf16 matmul speed depends on the
   CPU's bf16 instructions (avx512_bf16 / AMX) and says little about a GPU, where bf16 tensor
   cores run ~15x the float32 rate (PyTorch keeps float32 matmuls in full float32 by default).

    python bench/bench_entropy.py --gpu            # section 3 alone on one GPU at the shape of
                                                   # Qwen2.5-Math-1.5B: N = 8 x 3072, d = 1536,
                                                   # V = 151,936; estimated at under 2 minutes
                                                   # (7 float32 steps of ~46 TFLOP, compilation;
                                                   # not yet run on a GPU)
    python bench/bench_entropy.py --gpu --smoke    # the same code at a toy size on the CPU
Prints markdown tables with medians.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch  # noqa: E402

import entropy  # noqa: E402

V = 152_064


def median_seconds(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def naive_entropy(z):
    # what most code does: two log_softmax passes, an exp, a product and a sum over [.., V]
    return -(torch.log_softmax(z, -1).exp() * torch.log_softmax(z, -1)).sum(-1)


def bench_token_entropy(repeats):
    z = torch.randn(16, V) * 4
    entropy.set_compile(True)
    t_naive = median_seconds(lambda: naive_entropy(z), repeats)
    t_ours = median_seconds(lambda: entropy.token_entropy(z), repeats)
    entropy.set_compile(False)
    t_eager = median_seconds(lambda: entropy.token_entropy(z), repeats)
    torch.testing.assert_close(entropy.token_entropy(z), naive_entropy(z), atol=1e-4, rtol=1e-5)
    print(f"\n### token_entropy on [16, {V}] float32 (median of {repeats})\n")
    print("| variant | ms | speed-up vs eager formula |\n|---|---|---|")
    for name, t in [("eager -(log_softmax.exp() * log_softmax).sum(-1)", t_naive),
                    ("entropy.token_entropy, eager fallback", t_eager),
                    ("entropy.token_entropy, torch.compile (default)", t_ours)]:
        print(f"| {name} | {t * 1e3:.2f} | {t_naive / t:.1f}x |")


def child(variant, n, d, repeats):
    """Run one variant in this (fresh) process; print peak extra memory and median time as JSON."""
    torch.manual_seed(0)
    hidden = torch.randn(n, d, requires_grad=True)
    weight = (torch.randn(V, d) * 0.05).requires_grad_()
    entropy.set_compile(True)

    def step():
        if variant == "naive":
            h = naive_entropy(hidden @ weight.T)  # materializes [N, V] logits and their softmax copies
        else:
            h = entropy.entropy_from_hidden(hidden, weight)  # default chunk size
        h.mean().backward()
        hidden.grad = weight.grad = None

    if variant != "naive":  # compile the kernels on a tiny input so compilation is not counted as memory
        entropy.entropy_from_hidden(hidden[:8].detach().requires_grad_(), weight).mean().backward()
        weight.grad = None
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    step()  # first call: peak memory of one forward + backward
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    seconds = median_seconds(step, repeats, warmup=0)
    print(json.dumps({"variant": variant, "n": n, "peak_mib": peak_mib, "seconds": seconds}))


def bench_entropy_from_hidden(sizes, d, repeats):
    print(f"\n### entropy_from_hidden forward + backward, d = {d}, V = {V} (median of {repeats}; memory = peak RSS increase)\n")
    print("| N | naive peak MiB | ours peak MiB | memory ratio | naive s | ours s | time ratio ours/naive |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        res = {}
        for variant in ["naive", "ours"]:
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--n", str(n), "--d", str(d),
                                  "--repeats", str(repeats)], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"child {variant} N={n} failed:\n{out.stderr[-2000:]}")
            res[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        a, b = res["naive"], res["ours"]
        print(f"| {n} | {a['peak_mib']:.0f} | {b['peak_mib']:.0f} | {a['peak_mib'] / max(b['peak_mib'], 1):.1f}x | "
              f"{a['seconds']:.2f} | {b['seconds']:.2f} | {b['seconds'] / a['seconds']:.2f} |")


# ---------------------------------------------------------------------------------------------
# 3. The head's matmul precision
# ---------------------------------------------------------------------------------------------
HEAD_VARIANTS = {  # name: (dtype of hidden states and weight, torch.autocast to bf16 around the forward)
    "fp32": (torch.float32, False),  # float32 matmuls: what backward ran before, even under autocast
    "autocast": (torch.float32, True),  # one process: float32 master weights, forward under autocast(bf16)
    "bf16": (torch.bfloat16, False),  # FSDP2 MixedPrecisionPolicy: bf16 hidden states and lm_head weight
}


def head_inputs(variant, n, d, vocab, device):
    """The same random hidden [n, d], weight [vocab, d] (logits of std ~2) and targets for every variant."""
    gen = torch.Generator().manual_seed(0)
    dtype = HEAD_VARIANTS[variant][0]
    hidden = torch.randn(n, d, generator=gen).to(device, dtype).requires_grad_()
    weight = (torch.randn(vocab, d, generator=gen) * (2 / d ** 0.5)).to(device, dtype).requires_grad_()
    return hidden, weight, torch.randint(0, vocab, (n,), generator=gen).to(device)


def head_step(variant, hidden, weight, target):
    """One forward + backward of the chunked head, as a training step calls it: (forward s, backward s)."""
    sync = torch.cuda.synchronize if hidden.is_cuda else (lambda: None)
    hidden.grad = weight.grad = None
    sync()
    t0 = time.perf_counter()
    with torch.autocast(hidden.device.type, dtype=torch.bfloat16, enabled=HEAD_VARIANTS[variant][1]):
        h, lp = entropy.entropy_and_logprob_from_hidden(hidden, weight, target)  # default chunk size
    sync()
    t1 = time.perf_counter()
    (h.mean() - lp.mean()).backward()  # an entropy term and a log-prob term, like the EM-FT / EM-RL losses
    sync()
    return t1 - t0, time.perf_counter() - t1


def proc_status_kib(key):
    """A memory figure of this process from /proc/self/status (Linux), in KiB: VmRSS now, VmHWM peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def head_child(variant, n, d, vocab):
    """CPU peak memory of one head step in this fresh process, beyond what it held before the step."""
    head_step(variant, *head_inputs(variant, 8, d, 64, torch.device("cpu")))  # compile on tiny inputs (dynamic shapes)
    hidden, weight, target = head_inputs(variant, n, d, vocab, torch.device("cpu"))
    # reset the peak resident size to the current one (Linux >= 4.0), so that neither compilation
    # nor building the inputs counts: ru_maxrss cannot be reset
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = proc_status_kib("VmRSS")
    head_step(variant, hidden, weight, target)
    print(json.dumps({"peak_mib": (proc_status_kib("VmHWM") - base) / 1024}))


def head_peak_mib(variant, n, d, vocab, inputs):
    """Peak memory of one head step beyond what was allocated before it (its gradients included)."""
    if inputs[0].is_cuda:
        inputs[0].grad = inputs[1].grad = None
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        head_step(variant, *inputs)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--n", str(n), "--d", str(d),
                          "--vocab", str(vocab)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"child {variant} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def bench_head_precision(n, d, vocab, repeats, device):
    print(f"\n### entropy_and_logprob_from_hidden forward + backward on {device.type}: float32 vs bf16 matmuls, "
          f"N = {n}, d = {d}, V = {vocab} (median of {repeats} interleaved; torch.compile "
          f"{'on' if entropy._COMPILE else 'off (EM_COMPILE=0)'})\n")
    inputs = {v: head_inputs(v, n, d, vocab, device) for v in HEAD_VARIANTS}
    for v in HEAD_VARIANTS:  # warm-up: compilation, allocator, oneDNN / cuBLAS kernel selection
        head_step(v, *inputs[v])
    times = {v: [] for v in HEAD_VARIANTS}
    for _ in range(repeats):
        for v in HEAD_VARIANTS:
            times[v].append(head_step(v, *inputs[v]))
    peak = {v: head_peak_mib(v, n, d, vocab, inputs[v]) for v in HEAD_VARIANTS}

    def rel_diff(a, b):  # ||a - b|| / ||b||, normwise, in float64
        return ((a.double() - b.double()).norm() / b.double().norm()).item()

    ref = inputs["fp32"]
    print("| variant | forward ms | backward ms | fwd + bwd ms | peak MiB | grad_hidden vs fp32 | grad_weight vs fp32 |")
    print("|---|---|---|---|---|---|---|")
    med = {}
    for v in HEAD_VARIANTS:
        fwd, bwd = (statistics.median(t[i] for t in times[v]) for i in (0, 1))
        med[v] = (fwd, bwd)
        hid, w = inputs[v][0].grad, inputs[v][1].grad
        print(f"| {v} | {fwd * 1e3:.1f} | {bwd * 1e3:.1f} | {(fwd + bwd) * 1e3:.1f} | {peak[v]:.0f} | "
              f"{rel_diff(hid, ref[0].grad):.1e} | {rel_diff(w, ref[1].grad):.1e} |")
    before = med["autocast"][0] + med["fp32"][1]
    print(f"\nBefore this change, one process (autocast) ran the bf16 forward and the float32 backward: an estimated "
          f"{before * 1e3:.1f} ms (autocast forward + fp32 backward, both measured above) against {sum(med['autocast']) * 1e3:.1f} ms now.")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20, help="timed repetitions for token_entropy")
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096], help="N for entropy_from_hidden")
    p.add_argument("--d", type=int, default=256, help="hidden size for entropy_from_hidden")
    p.add_argument("--hidden-repeats", type=int, default=3, help="timed repetitions for entropy_from_hidden")
    p.add_argument("--head-n", type=int, default=1024, help="rows N for section 3 on the CPU (ours: 1024 keeps it to a few minutes on 2 cores)")
    p.add_argument("--gpu", action="store_true",
                   help="run only section 3, on the GPU, at the shape of Qwen2.5-Math-1.5B (N = 8 x 3072, d = 1536, V = 151,936)")
    p.add_argument("--smoke", action="store_true", help="with --gpu: run that section at a toy size on the CPU instead")
    p.add_argument("--child", choices=["naive", "ours", *HEAD_VARIANTS], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--vocab", type=int, default=V, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child in HEAD_VARIANTS:
        head_child(a.child, a.n, a.d, a.vocab)
        sys.exit(0)
    if a.child:
        child(a.child, a.n, a.d, a.repeats)
        sys.exit(0)
    if a.gpu and not a.smoke and not torch.cuda.is_available():
        print("error: --gpu needs a CUDA device (torch.cuda.is_available() is False); add --smoke to run it on the CPU at a toy size",
              file=sys.stderr)
        sys.exit(2)
    print(f"## bench_entropy: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, "
          f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads"
          + (f", {torch.cuda.get_device_name()}" if a.gpu and not a.smoke else ""))
    if a.gpu:
        if a.smoke:
            bench_head_precision(64, 32, 1000, 2, torch.device("cpu"))
        else:
            bench_head_precision(8 * 3072, 1536, 151_936, 5, torch.device("cuda"))
        sys.exit(0)
    bench_token_entropy(a.repeats)
    bench_entropy_from_hidden(a.sizes, a.d, a.hidden_repeats)
    bench_head_precision(a.head_n, a.d, V, a.hidden_repeats, torch.device("cpu"))
