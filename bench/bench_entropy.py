"""Benchmark entropy.py at the real Qwen2.5 vocabulary (V = 152,064). Run: `make bench` or

    python bench/bench_entropy.py [--repeats 20] [--sizes 2048 4096]

1. token_entropy on [16, V] float32 (compiled, one fused pass) vs the eager formula
   -(log_softmax(z).exp() * log_softmax(z)).sum(-1). Target: >= 3x faster.
2. entropy_from_hidden forward + backward at d = 256 vs the naive version that materializes the
   [N, V] logits. Each variant runs in a fresh subprocess so that its peak resident memory
   (ru_maxrss, minus the memory held before the call) is its own. Targets at N = 2048: peak
   memory >= 4x lower, time <= 1.3x naive.
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


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20, help="timed repetitions for token_entropy")
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096], help="N for entropy_from_hidden")
    p.add_argument("--d", type=int, default=256, help="hidden size for entropy_from_hidden")
    p.add_argument("--hidden-repeats", type=int, default=3, help="timed repetitions for entropy_from_hidden")
    p.add_argument("--child", choices=["naive", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child, a.n, a.d, a.repeats)
        sys.exit(0)
    print(f"## bench_entropy: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, "
          f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads")
    bench_token_entropy(a.repeats)
    bench_entropy_from_hidden(a.sizes, a.d, a.hidden_repeats)
