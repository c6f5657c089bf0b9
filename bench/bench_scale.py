"""Benchmark em_rl.py at the shape of Qwen2.5-Math-1.5B on one GPU (random init: nothing to download).

    python bench/bench_scale.py            # one GPU, under 5 minutes
    python bench/bench_scale.py --smoke    # tiny dims, any machine: checks that the script runs

Measures, with em_rl.py's own functions:
  rollout: em_inf.sample() at --rollout-batch rows x --new-tokens tokens (no stop token, so every row
           decodes every step), temperature-1 sampling as em_rl.rollout: tokens/s and peak memory;
  update:  em_rl.score_rollouts + em_rl.ppo_update (forward, backward, AdamW) of one mini-batch of
           --update-rows x (--prompt-tokens + --new-tokens) tokens, for the lm_head matmuls of the
           chunked entropy head (entropy.response_entropy_logprob) in the compute dtype (bf16, as
           shipped: entropy.py decides the backward's precision) and in float32 (the final hidden
           states cast to float32 first): seconds and peak memory.
Memory is torch.cuda.max_memory_allocated (peak RSS on CPU). Times are medians of --repeats after a
warm-up. Prints a markdown table.
"""
import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tools")]  # tools/ is not a package
import torch  # noqa: E402
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

import em_ft  # noqa: E402
import em_inf  # noqa: E402
import em_rl  # noqa: E402
import entropy  # noqa: E402
import local_models  # noqa: E402  (tools/local_models.py: the tiny test model, no test fixture)

# Qwen2.5-Math-1.5B's config.json: 28 layers, hidden 1536, MLP 8960, 12 query / 2 KV heads, vocab 151936, tied
FULL = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
            num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=4096, rope_theta=10000.0,
            tie_word_embeddings=True)
SMOKE = dict(FULL, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=4096)


def clock(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny dims and sizes: a CPU check that the script runs")
    p.add_argument("--rollout-batch", type=int, default=64, help="rows decoded together (em_rl --rollout-batch-size default)")
    p.add_argument("--new-tokens", type=int, default=512, help="decoded tokens per row; also the update's response length")
    p.add_argument("--update-rows", type=int, default=16, help="rows of the PPO mini-batch in the update")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt tokens per row in the update")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up")
    a = p.parse_args()
    if a.smoke:
        a.rollout_batch, a.new_tokens, a.update_rows, a.prompt_tokens, a.repeats = 4, 8, 2, 8, 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args = em_rl.parse_args(["--batch-size", "1", "--mini-batch-size", "1", "--samples-per-prompt", str(a.update_rows),
                             "--micro-batch-size", str(a.update_rows), "--kl-coef", "0", "--device", str(device)])
    _, world, device, dtype = em_rl.setup(args)
    torch.manual_seed(0)
    with torch.device(device):  # random init straight on the device; float32 master weights as em_rl
        model = Qwen2ForCausalLM(Qwen2Config(**(SMOKE if a.smoke else FULL)))
    model = em_ft.prepare_model(model, args, world)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = AutoTokenizer.from_pretrained(local_models.tiny(tmp), padding_side="left")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"## bench_scale: {torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.machine()}, "
          f"torch {torch.__version__}, Qwen2.5-Math-1.5B shape{' (smoke: tiny dims)' if a.smoke else ''}: "
          f"{n_params / 1e9:.2f}B params, dtype {dtype}, compile {args.compile}\n")

    # ---- rollout: the decode loop of em_rl.rollout, every row to --new-tokens ----
    def pick_next(logits, rows):
        return torch.multinomial(torch.softmax(logits / args.temperature, dim=-1), 1).squeeze(-1), {}

    prompts = ["<|im_start|>user\nWhat is 12 + 30? Let us think step by step.<|im_end|>\n<|im_start|>assistant\n"] * a.rollout_batch
    model.eval()
    with em_rl.autocast(device, dtype):
        list(em_inf.sample(model, tokenizer, prompts, 4, pick_next, [-1], len(prompts)))  # warm-up (kernels, allocator)
        reset_peak(device)
        rollout_s = []
        for _ in range(a.repeats):
            t0 = clock(device)
            # stop id -1: never, so every row decodes --new-tokens tokens
            tokens = sum(len(r) for _, r, _ in em_inf.sample(model, tokenizer, prompts, a.new_tokens, pick_next, [-1], len(prompts)))
            rollout_s.append(clock(device) - t0)
    model.train()
    rollout_peak = peak_gib(device)

    # ---- update: scoring + one PPO optimizer step on a fixed mini-batch, bf16 vs float32 head ----
    g = torch.Generator().manual_seed(1)
    T = a.prompt_tokens + a.new_tokens
    ids = torch.randint(0, model.config.vocab_size, (a.update_rows, T), generator=g).to(device)
    resp = torch.zeros_like(ids)
    resp[:, a.prompt_tokens:] = 1
    minibatches = [[{"input_ids": ids, "attention_mask": torch.ones_like(ids), "response_mask": resp}]]
    shipped = entropy.response_entropy_logprob
    fp32_head = lambda hidden, weight, *rest: shipped(hidden.float(), weight, *rest)  # noqa: E731
    rows = []
    for name, head in (("compute dtype (as shipped)", shipped), ("float32", fp32_head)):
        entropy.response_entropy_logprob = head  # em_rl.forward_entropy_logprob calls it through the module
        for i in range(a.repeats + 1):
            if i == 1:
                reset_peak(device)
            t0 = clock(device)
            em_rl.score_rollouts(model, None, minibatches, args, device, dtype)
            em_rl.ppo_update(model, optimizer, minibatches, args, 1, device, dtype)
            seconds = clock(device) - t0
            if i == 0:
                update_s = []  # the first pass is the warm-up (compile, optimizer state)
            else:
                update_s.append(seconds)
        rows.append((name, statistics.median(update_s), peak_gib(device)))
    entropy.response_entropy_logprob = shipped

    mem = "peak CUDA allocated GiB" if device.type == "cuda" else "peak RSS GiB (whole process)"
    print(f"command: `python bench/bench_scale.py{' --smoke' if a.smoke else ''}` (median of {a.repeats})\n")
    print(f"| phase | size | seconds | tokens/s | {mem} |\n|---|---|---|---|---|")
    print(f"| rollout (em_inf.sample, {dtype}) | {a.rollout_batch} rows x {a.new_tokens} tokens | "
          f"{statistics.median(rollout_s):.2f} | {tokens / statistics.median(rollout_s):.0f} | {rollout_peak:.1f} |")
    for name, s, peak in rows:
        print(f"| update, head matmuls in {name} | {a.update_rows} rows x ({a.prompt_tokens} + {a.new_tokens}) tokens | "
              f"{s:.2f} | {a.update_rows * a.new_tokens / s:.0f} | {peak:.1f} |")


if __name__ == "__main__":
    main()
