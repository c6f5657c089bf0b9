"""Benchmark the math grader (evaluate.grade_math) on a thousand typical model answers. Run: `make bench` or

    python bench/bench_evaluate.py [--n 1000] [--repeats 3]

The answers are synthetic but shaped like real MATH-500 / AIME responses: ~1.5 KB of reasoning text ending in
a \\boxed{} answer, a mix of correct and wrong integers, fractions vs decimals, radicals, expressions,
tuples/sets/intervals, scientific notation, and truncated responses with no final box. Each repeat starts a
fresh math-verify worker (its start-up is timed separately) so the parse caches are cold, as in a real run
where every answer is new. Every verdict is also checked against the label the generator gave it.
Target (issue 3): 1000 answers well under a minute on 2 CPU cores; issue 10 kept it within 1.5x of 8.7 s.
Then the code sandbox: the wall time of sandbox.run_code on a trivial program (call-based and stdin), i.e. the
per-program start-up cost (namespaces, mounts, interpreter start, LiveCodeBench's import header, guard).
Prints markdown tables with medians.
"""
import argparse
import os
import platform
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import evaluate  # noqa: E402
import sandbox  # noqa: E402

FILLER = ("We first rewrite the condition in terms of $x$ and simplify both sides. Substituting back, "
          "the equation becomes $2x + 3 = 7$, so we check each case carefully and verify the arithmetic. ")


def make_cases(n, seed=0):
    """n (category, response, gold, expected verdict) tuples; about half correct."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < n:
        kind = rng.choice(["integer", "fraction", "radical", "expression", "tuple/set", "interval", "scientific",
                           "no box"])
        a, b = rng.randint(1, 999), rng.randint(2, 99)
        right = rng.random() < 0.5
        if kind == "integer":  # AIME-style golds, sometimes zero-padded or as floats (AMC)
            gold = rng.choice([str(a), f"{a:03d}", float(a)])
            pred = str(a if right else a + rng.choice([-1, 1, 10]))
        elif kind == "fraction":  # \frac vs decimal vs a/b
            gold = f"\\frac{{{a}}}{{{b}}}"
            val = a / b if right else a / (b + 1)
            pred = rng.choice([f"\\dfrac{{{a}}}{{{b}}}" if right else f"\\frac{{{a}}}{{{b + 1}}}",
                               f"{a}/{b}" if right else f"{a}/{b + 1}", f"{val:.10f}"])
        elif kind == "radical":
            k = rng.randint(2, 9)
            gold = f"{k}\\sqrt{{{b}}}"
            pred = f"\\sqrt{{{k * k * b}}}" if right else f"\\sqrt{{{k * k * b + 1}}}"
        elif kind == "expression":
            gold = f"x^2 + {2 * a}x + {a * a}"
            pred = f"(x+{a})^2" if right else f"(x+{a + 1})^2"
        elif kind == "tuple/set":
            gold = rng.choice([f"({a}, {b})", f"\\{{{a}, {b}\\}}"])
            if gold.startswith("("):  # ordered pair: order matters
                pred = f"({a}, {b})" if right else f"({a}, {b + 1})"
            else:  # unordered set, answered as a list in another order
                pred = f"{b}, {a}" if right else f"{a}, {b + 1}"
        elif kind == "interval":
            gold = f"[{a}, {a + b})"
            pred = f"[{a}, {a + b})" if right else f"[{a}, {a + b}]"
        elif kind == "scientific":
            e = b % 30 + 1  # physics-style tiny values, 1e-1 .. 1e-30
            gold = f"{a / 100:.2f}\\times 10^{{-{e}}}"
            pred = f"{a / 100:.2f}e-{e}" if right else f"{a / 100 + 0.01:.2f}e-{e}"
        else:  # the generation hit the token limit inside the box
            gold, pred, right = str(a), None, False
        text = FILLER * rng.randint(5, 15)
        response = text + ("\\boxed{" + str(a) if pred is None else f"So the answer is $\\boxed{{{pred}}}$.")
        cases.append((kind, response, gold, right))
    return cases


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="number of answers to grade (issue 3: a thousand)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over all answers, each with a fresh worker")
    p.add_argument("--code-runs", type=int, default=20, help="trivial programs timed through run_code, per kind "
                                                              "(ours: 20 gives a stable median; 0 skips)")
    args = p.parse_args()
    cases = make_cases(args.n)

    starts, totals, per_kind = [], [], {}
    for _ in range(args.repeats):
        evaluate._GRADER._kill()  # fresh worker and an empty verdict cache: every answer is new
        evaluate._CACHE.clear()
        t0 = time.perf_counter()
        evaluate.answers_equal("\\frac{1}{2}", "x")  # a LaTeX pair: starts the worker
        starts.append(time.perf_counter() - t0)
        t_all = time.perf_counter()
        wrong = 0
        for kind, response, gold, expected in cases:
            t = time.perf_counter()
            verdict = evaluate.grade_math(response, gold)
            per_kind.setdefault(kind, []).append(time.perf_counter() - t)
            wrong += verdict != expected
        totals.append(time.perf_counter() - t_all)
        if wrong:
            print(f"warning: {wrong} verdicts differ from the generator's labels", file=sys.stderr)

    total = statistics.median(totals)
    print(f"\n### evaluate.grade_math on {args.n} synthetic answers (median of {args.repeats} passes)\n")
    print(f"command: `python bench/bench_evaluate.py --n {args.n} --repeats {args.repeats}`  ")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.system()}\n")
    print("| what | value |\n|---|---|")
    print(f"| total for {args.n} answers | {total:.2f} s |")
    print(f"| per answer | {1e3 * total / args.n:.2f} ms |")
    print(f"| worker start-up (once per process) | {statistics.median(starts):.2f} s |")
    print("\n| category | answers | median ms | max ms |\n|---|---|---|---|")
    for kind, times in sorted(per_kind.items()):
        print(f"| {kind} | {len(times) // args.repeats} | {1e3 * statistics.median(times):.2f} | "
              f"{1e3 * max(times):.1f} |")
    if args.code_runs:
        code_startup(args.code_runs)


def code_startup(runs):
    """Median wall time of run_code on a trivial program: the sandbox's cost per program, interleaved kinds."""
    mode = sandbox._sandbox_mode()  # the one-time probe, not timed
    kinds = {"call-based (import + asserts + marker)": ("def f(x):\n    return x + 1\n", "assert f(1) == 2"),
             "stdin/stdout (run as __main__)": ("print(int(input()) + 1)\n", [{"input": "1\n", "output": "2\n"}])}
    times = {kind: [] for kind in kinds}
    for _ in range(runs):
        for kind, (code, tests) in kinds.items():
            t = time.perf_counter()
            ok = sandbox.run_code(code, tests)
            times[kind].append(time.perf_counter() - t)
            assert ok, f"the trivial {kind} program failed"
    isolation = "PID/network/mount namespaces" if mode.namespaces else f"fallback ({mode.why})"
    print(f"\n### sandbox.run_code start-up per program, {isolation} (median of {runs})\n")
    print("| program | median ms | min ms |\n|---|---|---|")
    for kind, ts in times.items():
        print(f"| {kind} | {1e3 * statistics.median(ts):.1f} | {1e3 * min(ts):.1f} |")


if __name__ == "__main__":
    main()
