"""Benchmark em_inf.py on this machine (CPU). Run: `make bench` or

    python bench/bench_em_inf.py [--repeats 5] [--long-repeats 2] [--sections update,cli,batching,rollout]

1. update: minimize_entropy on [16, 152064] float32 logits (the Qwen2.5 vocabulary), 5 steps, every
   row active for all 5 steps, vs the official code's loop (one row at a time, autograd, a fresh
   torch.optim.Adam per row). Target: >= 3x faster.
2. cli: the `tokens_per_second` that em_inf.py's own summary line prints, --mode em_inf vs --mode
   greedy, the real SmolLM2-135M-Instruct (`make local_models`), data/mini_math.jsonl,
   --max-new-tokens 64, at --limit 8 --batch-size 8 and --limit 20 --batch-size 20. Each run is the
   CLI in a subprocess (the very path users run), greedy and em_inf interleaved. Target: >= 0.95.
3. batching: em_inf.py --mode greedy --max-new-tokens 256 --batch-size 4 --limit 16, --batching static
   vs continuous: the `occupancy` of the summary line (fraction of row-steps that produce a token),
   tokens/s, and the same response per problem; then transformers' own continuous batching
   (`model.generate_batch`, with its paged sdpa attention) on the same 16 prompts.
4. rollout: a training-style rollout (16 prompts start together, the phase ends with the last one),
   em_inf.sample with refill=False: static (drop_at = 16) vs dropping finished rows at 1, 2, 4.
Variants are interleaved within each repeat (drift on a shared machine hits all alike); medians.
The load average is printed before and after: on a busy shared 2-core machine, rerun on a quiet one.
Prints markdown tables; exits non-zero if a result disagrees with its reference.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # noqa: E402

import em_inf  # noqa: E402
import evaluate  # noqa: E402

V = 152_064
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data", "mini_math.jsonl")


def official_em_inf(logits, threshold, learning_rate, n_grad_steps, kl_weight):
    """The official EM-INF update (min_entropy_gen.py, ent_sample), applied one row at a time as the
    official code does (batch size 1 per generate call): autograd through softmax, fresh Adam."""
    out = []
    for row in logits:
        next_token_logits = row[None].clone().requires_grad_(True).to(torch.float32)
        original_probs = F.softmax(next_token_logits.clone(), dim=-1).detach()
        logits_param = torch.nn.Parameter(next_token_logits)
        optimizer = torch.optim.Adam([logits_param], lr=learning_rate)
        with torch.enable_grad():
            for _ in range(n_grad_steps):
                optimizer.zero_grad()
                probs = F.softmax(logits_param, dim=-1)
                ent = -torch.sum(probs * torch.log(probs + 1e-12))
                if ent < threshold:
                    break
                kl_div = F.kl_div(input=probs.log(), target=original_probs, reduction="batchmean")
                loss = kl_weight * kl_div + ent
                loss.backward()
                optimizer.step()
        out.append(logits_param.detach()[0])
    return torch.stack(out)


def medians(variants, repeats, warmup=1):
    """{name: median seconds} of interleaved runs of each zero-argument callable."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_update(repeats):
    torch.manual_seed(0)
    logits = torch.randn(16, V) * 3  # entropy ~7 nats: no row reaches delta within 5 steps
    delta, lr, steps, kl = 0.3, 0.1, 5, 0.05
    z, taken, _ = em_inf.minimize_entropy(logits, delta, lr, steps, kl, return_stats=True)
    assert taken.tolist() == [steps] * 16, taken
    official = official_em_inf(logits, delta, lr, steps, kl)
    torch.testing.assert_close(torch.softmax(z, -1), torch.softmax(official, -1), atol=1e-6, rtol=1e-4)
    t = medians({"official": lambda: official_em_inf(logits, delta, lr, steps, kl),
                 "ours": lambda: em_inf.minimize_entropy(logits, delta, lr, steps, kl)}, repeats)
    print(f"\n### minimize_entropy on [16, {V}] float32, {steps} Adam steps, every row active (median of {repeats})\n")
    print("| variant | ms | speed-up vs official | target |\n|---|---|---|---|")
    print(f"| official loop: per row, autograd, torch.optim.Adam | {t['official'] * 1e3:.0f} | 1.0x | |")
    print(f"| em_inf.minimize_entropy (eager) | {t['ours'] * 1e3:.0f} | {t['official'] / t['ours']:.1f}x | >= 3x |")
    return t["official"] / t["ours"] >= 3


def run_cli(argv):
    """em_inf.py in a subprocess, as a user runs it; returns its summary (the JSON last line of stdout)."""
    with tempfile.TemporaryDirectory() as tmp:  # a fresh results file: nothing to resume
        res = subprocess.run([sys.executable, os.path.join(ROOT, "em_inf.py"), *argv, "--out", os.path.join(tmp, "r.jsonl")],
                             capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        if res.returncode != 0:
            sys.exit(f"em_inf.py {' '.join(argv)} failed:\n{res.stderr[-2000:]}")
        summary = json.loads(res.stdout.strip().splitlines()[-1])
        summary["rows"] = [json.loads(line) for line in open(os.path.join(tmp, "r.jsonl"))][1:]
        return summary


def bench_cli(model, repeats):
    ok = True
    print(f"\n### em_inf.py summary `tokens_per_second`, {os.path.basename(model)}, 64 new tokens, "
          f"em_inf vs greedy runs interleaved (median of {repeats})\n")
    print("| batch | greedy tok/s | em_inf tok/s | ratio | target | load before / after |\n|---|---|---|---|---|---|")
    for batch in (8, 20):
        common = ["--model", model, "--dataset", DATA, "--max-new-tokens", "64", "--limit", str(batch),
                  "--batch-size", str(batch)]
        before, tps = load(), {"greedy": [], "em_inf": []}
        for _ in range(repeats):
            for mode in tps:
                tps[mode].append(run_cli(common + ["--mode", mode])["tokens_per_second"])
        g, e = statistics.median(tps["greedy"]), statistics.median(tps["em_inf"])
        print(f"| {batch} | {g:.1f} | {e:.1f} | {e / g:.2f} | >= 0.95 | {before} / {load()} |")
        ok &= e / g >= 0.95
    return ok


def bench_batching(model, repeats):
    common = ["--model", model, "--dataset", DATA, "--mode", "greedy", "--max-new-tokens", "256", "--batch-size", "4",
              "--limit", "16"]
    runs = {"static": [], "continuous": []}
    before = load()
    for _ in range(repeats):
        for b in runs:
            runs[b].append(run_cli(common + ["--batching", b]))
    responses = {b: {r["id"]: r["response"] for r in runs[b][0]["rows"]} for b in runs}
    same = responses["static"] == responses["continuous"]
    print(f"\n### em_inf.py --mode greedy --max-new-tokens 256 --batch-size 4 --limit 16, {os.path.basename(model)} "
          f"(median of {repeats}; load before / after: {before} / {load()})\n")
    print("| --batching | occupancy | tokens/s | same responses |\n|---|---|---|---|")
    for b, r in runs.items():
        print(f"| {b} | {r[0]['occupancy']:.3f} | {statistics.median(x['tokens_per_second'] for x in r):.1f} | "
              f"{'yes' if same else 'NO'} |")
    # transformers' continuous batching on the same prompts, greedy, same length cap
    tok = AutoTokenizer.from_pretrained(model)
    paged = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, attn_implementation="sdpa").eval()
    problems = evaluate.load_problems(DATA, limit=16)
    inputs = [tok(evaluate.build_prompt(tok, p), add_special_tokens=False).input_ids for p in problems]
    stop = em_inf.stop_token_ids(paged, tok)
    config = GenerationConfig(do_sample=False, max_new_tokens=256, eos_token_id=stop, pad_token_id=tok.pad_token_id)
    times, agree = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = paged.generate_batch(inputs, generation_config=config, progress_bar=False)
        times.append(time.perf_counter() - t0)
    texts = {}
    n_tokens = 0
    for result in out.values():
        i = int(result.request_id.split("_")[-1])
        n_tokens += len(result.generated_tokens)
        texts[problems[i]["id"]] = tok.decode(result.generated_tokens, skip_special_tokens=True)
    agree = sum(texts.get(k) == v for k, v in responses["static"].items())
    print(f"| model.generate_batch (paged sdpa), whole call | | {n_tokens / statistics.median(times):.1f} | "
          f"{agree}/16 |")
    return same


def bench_rollout(model, repeats):
    """One training-style rollout phase: all rows start together and the phase ends with the last row."""
    tok = AutoTokenizer.from_pretrained(model, padding_side="left")
    net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    prompts = [evaluate.build_prompt(tok, p) for p in evaluate.load_problems(DATA, limit=16)]
    stop, pick = em_inf.stop_token_ids(net, tok), em_inf.make_pick_next(em_inf.parse_args(["--mode", "greedy"]))
    outputs, works = {}, {}

    def phase(drop_at):
        def run():
            works[drop_at] = {}
            outputs[drop_at] = {i: r.tolist() for i, r, _ in em_inf.sample(
                net, tok, prompts, 256, pick, stop, len(prompts), drop_at=drop_at, refill=False, work=works[drop_at])}
        return run

    before = load()
    t = medians({d: phase(d) for d in (16, 1, 2, 4)}, repeats, warmup=0)
    tokens = sum(len(r) for r in outputs[16].values())
    print(f"\n### training-style rollout: 16 prompts x up to 256 tokens, one batch, greedy, em_inf.sample(refill=False) "
          f"(median of {repeats}; load before / after: {before} / {load()})\n")
    print("| finished rows leave the batch | seconds | tokens/s | occupancy | same tokens |\n|---|---|---|---|---|")
    for d in t:
        label = "never (static)" if d == 16 else f"once {d} have finished"
        print(f"| {label} | {t[d]:.1f} | {tokens / t[d]:.1f} | {tokens / works[d]['row_steps']:.3f} | "
              f"{'yes' if outputs[d] == outputs[16] else 'NO'} |")
    return all(outputs[d] == outputs[16] for d in t)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timed runs per variant for update and cli; medians (default: 5)")
    p.add_argument("--long-repeats", type=int, default=2, help="timed runs per variant for the 256-token sections "
                   "batching and rollout (default: 2; each run is about a minute on a quiet 2-core CPU)")
    p.add_argument("--model", default=os.path.join(ROOT, "local_models", "smollm2"), help="model for the decoding benchmarks (make local_models)")
    p.add_argument("--sections", default="update,cli,batching,rollout", help="comma-separated subset of update,cli,batching,rollout")
    args = p.parse_args()
    if not os.path.isdir(args.model):
        print(f"error: model folder {args.model!r} does not exist: run `make local_models` first", file=sys.stderr)
        sys.exit(2)
    print(f"## bench_em_inf.py\n\ncommand: `python bench/bench_em_inf.py {' '.join(sys.argv[1:])}`  \n"
          f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {platform.python_version()}, load average {load()}")
    sections = {"update": lambda: bench_update(args.repeats), "cli": lambda: bench_cli(args.model, args.repeats),
                "batching": lambda: bench_batching(args.model, args.long_repeats),
                "rollout": lambda: bench_rollout(args.model, args.long_repeats)}
    results = {name: sections[name]() for name in args.sections.split(",")}
    print("\n" + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in results.items()))
    if not all(results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
