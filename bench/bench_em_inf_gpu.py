"""GPU benchmark of em_inf.py at the users' scale: a random-init model of Qwen2.5-Math-7B's shape, one GPU.

    python bench/bench_em_inf_gpu.py            # one GPU, under 5 minutes, nothing downloaded
    python bench/bench_em_inf_gpu.py --smoke    # toy sizes on a CPU: checks that the script runs

1. The EM-INF update (minimize_entropy, [32, 152064], 5 Adam steps, every row active): eager vs
   torch.compile of its two functions (entropy.softmax_entropy, em_inf._adam_step). em_inf.py runs it eager: on an H100
   the compiled update took 5.85 ms vs 1.38 ms eager ([16, V] x 5 steps); this rechecks that choice.
2. One decode step (forward with a 1024-token KV cache) at batch 1, 8 and 32, and the per-step cost of
   the greedy and EM-INF token choice on its logits.
3. Greedy vs EM-INF decoding tokens/s with em_inf.sample: batch 32, 256 new tokens, no stop token.
4. Static vs continuous batching (em_inf.sample, --batching static / continuous) on a synthetic
   mixed-length workload: 64 prompts whose responses end after 32 to 1024 tokens (a long tail, as
   math solutions have), batch 32: seconds, tokens/s and occupancy.
The model is built on the GPU directly in bfloat16 (no CPU init of 7.6B parameters, no checkpoint):
random weights decode as fast as trained ones. Prompts are random token ids (no tokenizer needed).
Prints markdown tables. Not yet run on a GPU (written in a session without one).
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

import em_inf  # noqa: E402
import entropy  # noqa: E402

# Qwen2.5-Math-7B (config.json on the hub); --smoke replaces it with toy sizes
QWEN_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
               num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=4096, rope_theta=10000.0,
               tie_word_embeddings=False)
TOY = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False)


class IdsTokenizer:
    """Stands in for a tokenizer in em_inf.sample when the "texts" are already lists of token ids: left padding."""
    pad_token_id = 0

    def __call__(self, texts, return_tensors="pt", padding=True, add_special_tokens=False):
        width = max(len(t) for t in texts)
        ids = torch.tensor([[0] * (width - len(t)) + list(t) for t in texts])
        attn = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in texts])
        return _Encoding(input_ids=ids, attention_mask=attn)


class _Encoding(dict):
    __getattr__ = dict.__getitem__

    def to(self, device):
        return _Encoding({k: v.to(device) for k, v in self.items()})


def timed(fn, device, repeats):
    """Median seconds of fn() over repeats, after one warm-up call, waiting for the GPU each time."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_update(vocab, rows, device, repeats):
    torch.manual_seed(0)
    logits = torch.randn(rows, vocab, device=device) * 3  # entropy ~7 nats: every row takes all 5 steps

    def run():
        return em_inf.minimize_entropy(logits, 0.3, 0.1, 5, 0.05)

    eager_out, eager = run(), timed(run, device, repeats)
    plain = entropy.softmax_entropy, em_inf._adam_step
    entropy.softmax_entropy, em_inf._adam_step = torch.compile(plain[0], dynamic=True), torch.compile(plain[1], dynamic=True)
    try:
        compiled_out, compiled = run(), timed(run, device, repeats)
    finally:
        entropy.softmax_entropy, em_inf._adam_step = plain
    torch.testing.assert_close(torch.softmax(compiled_out, -1), torch.softmax(eager_out, -1), atol=1e-6, rtol=1e-4)
    print(f"\n### EM-INF update, [{rows}, {vocab}] float32, 5 Adam steps, every row active (median of {repeats})\n")
    print("| variant | ms |\n|---|---|")
    print(f"| eager (em_inf.py's choice) | {eager * 1e3:.2f} |\n| torch.compile (entropy.softmax_entropy, _adam_step) | {compiled * 1e3:.2f} |")
    print(f"\nfaster: {'eager: keep' if eager <= compiled else 'compiled: switch em_inf._adam_step to @entropy.compiled'}")


def bench_step(model, vocab, context, batches, device, repeats):
    print(f"\n### One decode step with a {context}-token KV cache, and the token choice on its logits (median of {repeats})\n")
    print("| batch | forward ms | greedy pick ms | EM-INF pick ms | EM-INF / greedy, whole step |\n|---|---|---|---|---|")
    pick = {m: em_inf.make_pick_next(em_inf.parse_args(["--mode", m])) for m in ("greedy", "em_inf")}
    for b in batches:
        ids = torch.randint(1, vocab, (b, context), device=device)
        with torch.no_grad():
            cache = model(input_ids=ids, use_cache=True, logits_to_keep=1).cache
            step = torch.randint(1, vocab, (b, 1), device=device)
            attn = torch.ones(b, context + 1, dtype=torch.long, device=device)
            pos = torch.full((b, 1), context, device=device)

            def forward():
                out = model(input_ids=step, attention_mask=attn, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
                cache.crop(-1)  # back to `context` tokens for the next timing
                return out.logits[:, -1].float()

            logits, rows = forward(), torch.arange(b, device=device)
            t_fwd = timed(forward, device, repeats)
            t_pick = {m: timed(lambda: p(logits, rows), device, repeats) for m, p in pick.items()}
        ratio = (t_fwd + t_pick["greedy"]) / (t_fwd + t_pick["em_inf"])
        print(f"| {b} | {t_fwd * 1e3:.2f} | {t_pick['greedy'] * 1e3:.2f} | {t_pick['em_inf'] * 1e3:.2f} | {ratio:.3f} |")


def bench_decode(model, vocab, batch, new_tokens, device):
    tok, prompts = IdsTokenizer(), [torch.randint(1, vocab, (128,)).tolist() for _ in range(batch)]
    print(f"\n### Decoding tokens/s, em_inf.sample, batch {batch}, 128-token prompts, {new_tokens} new tokens, no stop token\n")
    print("| mode | tokens/s |\n|---|---|")
    tps = {}
    for mode in ("greedy", "em_inf", "greedy", "em_inf"):  # twice each, interleaved: the second run counts
        pick = em_inf.make_pick_next(em_inf.parse_args(["--mode", mode]))
        t0 = time.perf_counter()
        n = sum(len(r) for _, r, _ in em_inf.sample(model, tok, prompts, new_tokens, pick, [], batch))  # ends synced
        tps[mode] = n / (time.perf_counter() - t0)
    print(f"| greedy | {tps['greedy']:.1f} |\n| em_inf | {tps['em_inf']:.1f} ({tps['em_inf'] / tps['greedy']:.2f} x greedy) |")


def bench_batching(model, vocab, n_prompts, batch, lengths, device):
    """Responses end after a chosen number of tokens (a picker that emits the stop token then)."""
    g = torch.Generator().manual_seed(0)
    lo, hi = lengths
    # long tail: most responses short, a few up to hi (log-uniform)
    want = torch.exp(torch.empty(n_prompts).uniform_(float(torch.log(torch.tensor(lo))), float(torch.log(torch.tensor(hi))), generator=g)).long()
    prompts = [torch.randint(1, vocab, (int(n),), generator=g).tolist() for n in torch.randint(64, 256, (n_prompts,), generator=g)]
    stop = 0
    print(f"\n### Static vs continuous batching: {n_prompts} prompts, responses of {lo} to {hi} tokens "
          f"(mean {want.float().mean():.0f}), batch {batch}\n")
    print("| batching | seconds | tokens/s | occupancy |\n|---|---|---|---|")
    for name, drop_at, refill in (("static", batch, False), ("continuous", 1, True)):
        made = torch.zeros(n_prompts, dtype=torch.long, device=device)
        want_dev = want.to(device)

        def pick(z, rows):
            made[rows] += 1
            return torch.where(made[rows] >= want_dev[rows], stop, z.argmax(-1).clamp_min(1)), {}

        work = {}
        t0 = time.perf_counter()
        tokens = sum(len(r) for _, r, _ in em_inf.sample(model, IdsTokenizer(), prompts, hi, pick, [stop], batch,
                                                        drop_at=drop_at, refill=refill, work=work))
        seconds = time.perf_counter() - t0
        assert tokens == int(want.clamp_max(hi).sum()), (tokens, int(want.sum()))
        print(f"| {name} | {seconds:.1f} | {tokens / seconds:.1f} | {tokens / work['row_steps']:.3f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="toy model and sizes, runs on a CPU in seconds (default: off)")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats for the per-step timings (default: 10)")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        sys.exit("error: no GPU: this benchmark is for one GPU; pass --smoke for a toy run on the CPU")
    shape = TOY if args.smoke else QWEN_7B
    dtype = torch.float32 if args.smoke else torch.bfloat16
    t0 = time.perf_counter()
    torch.manual_seed(0)
    # built on the device in its dtype: no 30 GB float32 copy on the CPU first
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = Qwen2ForCausalLM(Qwen2Config(**shape)).eval()
    torch.set_default_dtype(torch.float32)
    params = sum(p.numel() for p in model.parameters())
    print(f"## bench_em_inf_gpu.py\n\ndevice: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch "
          f"{torch.__version__}, model: random Qwen2 {params / 1e9:.2f}B parameters, {dtype}, built in "
          f"{time.perf_counter() - t0:.1f} s")
    vocab = shape["vocab_size"]
    if args.smoke:
        bench_update(vocab, 4, device, 2)
        bench_step(model, vocab, 32, (1, 2), device, 2)
        bench_decode(model, vocab, 2, 8, device)
        bench_batching(model, vocab, 6, 2, (2, 12), device)
    else:
        bench_update(vocab, 32, device, args.repeats)
        bench_step(model, vocab, 1024, (1, 8, 32), device, args.repeats)
        bench_decode(model, vocab, 32, 256, device)
        bench_batching(model, vocab, 64, 32, (32, 1024), device)


if __name__ == "__main__":
    main()
