"""Benchmark one training step of the method scripts on a Qwen-shaped model (V = 152,064). Run: `make bench` or

    python bench/bench_train.py [--model local_models/qwen-shaped] [--response-tokens 1024] [--batch 2]

EM-FT (em_ft.py): one step = sampling --batch responses of up to --response-tokens tokens with the
KV-cache loop, then the token-entropy loss, backward and the AdamW update, for two variants:
  hidden: em_ft as shipped, entropy from the final hidden states and the lm_head weight in chunks
          (entropy.response_entropy_logprob): the [B, T, V] logits never exist;
  logits: the usual way, the model's full [B, T, V] logits, then token entropy and log-probs on them.
Each variant runs in a fresh subprocess (same seed, so the same samples) so that its peak memory is
its own: peak resident memory (ru_maxrss) on CPU, torch.cuda.max_memory_allocated on CUDA. The
sampling part is identical in both; the "step" memory is the peak minus the memory held after the
model and optimizer were set up. Times are medians over --repeats steps after one warm-up step.
Prints markdown tables.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

import em_ft  # noqa: E402
import entropy  # noqa: E402
import evaluate  # noqa: E402


def peak_mib(device):
    """Peak memory so far: CUDA allocator peak on a GPU, resident set (ru_maxrss, KiB on Linux) on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forward_with_logits(model, batch):
    """The materialized-logits baseline of em_ft.forward_entropy_logprob: same outputs, [B, T, V] logits."""
    pos = (batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=pos,
                   use_cache=False).logits  # [B, T, V]
    targets, mask = entropy.next_token_targets(batch["input_ids"], batch["response_mask"])
    z = logits[:, :-1].float()
    h = entropy.token_entropy(z) * mask
    logp = entropy.sampled_logprobs(z, targets) * mask
    return h, logp, mask


def em_ft_child(variant, a):
    """One process, one variant: warm-up step, then --repeats timed steps; prints one JSON line."""
    args = em_ft.parse_args(["--model", a.model, "--batch-size", str(a.batch), "--micro-batch-size", str(a.batch),
                             "--max-new-tokens", str(a.response_tokens), "--seed", "0"])
    rank, world, device, dtype = em_ft.setup(args)
    if variant == "logits":
        em_ft.forward_entropy_logprob = forward_with_logits  # train_step -> entropy_loss_sums uses it
    model, tokenizer = em_ft.load_model(args, device, torch.float32)
    model = em_ft.prepare_model(model, args, world)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    stop_ids = em_ft.stop_token_ids(model, tokenizer)
    with open(os.path.join(ROOT, "data", "mini_math.jsonl")) as f:
        problem = json.loads(f.readline())["problem"]
    prompts = [evaluate.math_prompt(tokenizer, problem)] * a.batch
    base = peak_mib(device)
    sample_s, train_s, tokens = [], [], []
    for i in range(a.repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        batches = em_ft.rollout(model, tokenizer, prompts, args, stop_ids, device, dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        stats = em_ft.train_step(model, None, optimizer, batches, args, world, device, dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:  # step 0 is the warm-up
            sample_s.append(t1 - t0)
            train_s.append(time.perf_counter() - t1)
            tokens.append(stats["response_tokens"])
    print(json.dumps({"variant": variant, "device": str(device), "peak_mib": peak_mib(device), "base_mib": base,
                      "sample_s": statistics.median(sample_s), "train_s": statistics.median(train_s),
                      "response_tokens": statistics.median(tokens)}))


def run_child(section, variant, a):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", section, "--variant", variant, "--model", a.model,
           "--response-tokens", str(a.response_tokens), "--batch", str(a.batch), "--repeats", str(a.repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        sys.exit(f"{section} {variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_em_ft_step(a):
    res = {v: run_child("em_ft", v, a) for v in ("logits", "hidden")}
    mem = "peak CUDA allocated" if res["hidden"]["device"].startswith("cuda") else "peak RSS"
    print(f"\n### em_ft.py training step, {a.batch} responses x up to {a.response_tokens} tokens, "
          f"{os.path.basename(a.model.rstrip('/'))} (median of {a.repeats}; memory = {mem})\n")
    print(f"command: `python bench/bench_train.py --model {a.model} --response-tokens {a.response_tokens} "
          f"--batch {a.batch} --repeats {a.repeats}`\n")
    print("| variant | response tokens | peak MiB | step MiB (peak - setup) | sampling s | loss + backward + AdamW s | total s |")
    print("|---|---|---|---|---|---|---|")
    for v, r in res.items():
        name = {"logits": "materialized [B, T, V] logits", "hidden": "entropy from hidden states (em_ft)"}[v]
        print(f"| {name} | {r['response_tokens']:.0f} | {r['peak_mib']:.0f} | {r['peak_mib'] - r['base_mib']:.0f} | "
              f"{r['sample_s']:.2f} | {r['train_s']:.2f} | {r['sample_s'] + r['train_s']:.2f} |")
    a_, b_ = res["logits"], res["hidden"]
    print(f"\nstep memory ratio logits/hidden: {(a_['peak_mib'] - a_['base_mib']) / max(b_['peak_mib'] - b_['base_mib'], 1):.1f}x; "
          f"loss + backward time ratio hidden/logits: {b_['train_s'] / a_['train_s']:.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "local_models", "qwen-shaped"), help="model folder (make local_models)")
    p.add_argument("--response-tokens", type=int, default=1024, help="max new tokens per sampled response")
    p.add_argument("--batch", type=int, default=2, help="responses per step (one micro-batch)")
    p.add_argument("--repeats", type=int, default=2, help="timed steps after one warm-up step")
    p.add_argument("--child", choices=["em_ft"], help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child == "em_ft":
        return em_ft_child(a.variant, a)
    if not os.path.isdir(a.model):
        sys.exit(f"error: {a.model} does not exist: run `make local_models` first")
    print(f"## bench_train: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, "
          f"torch {torch.__version__}, cuda {torch.cuda.is_available()}")
    bench_em_ft_step(a)


if __name__ == "__main__":
    main()
