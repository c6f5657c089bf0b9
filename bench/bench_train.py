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
EM-RL (em_rl.py, bench_em_rl_step): one RL step (2 prompts x 4 rollouts of up to 32 tokens) split
into rollout / reward (no-grad scoring of policy and reference) / update (PPO forward, backward,
AdamW) on the tiny fixture model and SmolLM2-135M; then scoring + one PPO update of a fixed
8 x (32 + 256)-token mini-batch on --model, chunked (em_rl) vs materialized logits, in fresh
processes: step memory and the largest tensor any op creates ([chunk, V] vs [B * T, V]).
Rollout (bench_rollout_batching): continuous batching's refill against dropping finished rows.
torchrun (bench_torchrun_rollout, bench_torchrun_load): real em_rl.py runs, one process against 2 ranks
(gloo, OMP_NUM_THREADS=1), per-rank rollout tokens/s from metrics.jsonl's time_rollout; then rank 1's
resident memory while em_ft.load_for_training loads SmolLM2 and a random model of 7B proportions.
LoRA (bench_lora): peak resident memory of em_ft.load_training plus two EM-FT training steps on a fixed
micro-batch, full fine-tuning against --lora-rank adapters, each with and without the KL reference (a second copy
for full fine-tuning, the adapters switched off for LoRA), on SmolLM2-135M, each variant in fresh processes.
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
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tools")]  # tools/ is not a package
import torch  # noqa: E402

import em_ft  # noqa: E402
import em_inf  # noqa: E402
import entropy  # noqa: E402
import local_models  # noqa: E402  (tools/local_models.py: the tiny test model, no test fixture)
import evaluate  # noqa: E402


def peak_mib(device):
    """Peak memory so far: CUDA allocator peak on a GPU, resident set (ru_maxrss, KiB on Linux) on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forward_with_logits(model, batch, temperature=1.0):
    """The materialized-logits baseline of em_ft.forward_entropy_logprob: same outputs, [B, T, V] logits."""
    pos = (batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=pos,
                   use_cache=False).logits  # [B, T, V]
    targets, mask = entropy.next_token_targets(batch["input_ids"], batch["response_mask"])
    z = logits[:, :-1].float() / temperature
    h = entropy.token_entropy(z) * mask
    logp = entropy.sampled_logprobs(z, targets) * mask
    return h, logp, mask


def em_ft_child(variant, a):
    """One process, one variant: warm-up step, then --repeats timed steps; prints one JSON line."""
    args = em_ft.parse_args(["--model", a.model, "--batch-size", str(a.batch), "--micro-batch-size", str(a.batch),
                             "--rollout-batch-size", str(a.batch),
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
        batches = em_ft.micro_batches(em_ft.rollout(model, tokenizer, prompts, args, stop_ids, device, dtype), args,
                                      tokenizer.pad_token_id)
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


# ---------------------------------------------------------------------------------------------
# EM-RL (em_rl.py): one RL step split into rollout / reward / update, and the memory of the update
# ---------------------------------------------------------------------------------------------
RL_PROMPTS, RL_N, RL_NEW_TOKENS = 2, 4, 32  # one step: 2 prompts x 4 rollouts of up to 32 tokens
RL_ROWS, RL_PROMPT_LEN, RL_RESPONSE_LEN = 8, 32, 256  # memory: one mini-batch of 8 x (32 + 256) tokens


def em_rl_setup(model_path, max_new_tokens, kl_coef):
    """em_rl.py's own parsing and setup (its defaults otherwise: n 4, RLOO, token reward, PPO clip 0.2)."""
    import em_rl

    args = em_rl.parse_args(["--model", model_path, "--dataset", os.path.join(ROOT, "data", "mini_math.jsonl"),
                             "--batch-size", str(RL_PROMPTS), "--mini-batch-size", str(RL_PROMPTS), "--samples-per-prompt", str(RL_N),
                             "--micro-batch-size", str(RL_ROWS), "--rollout-batch-size", str(RL_ROWS),
                             "--max-new-tokens", str(max_new_tokens),
                             "--kl-coef", str(kl_coef), "--seed", "0"])
    rank, world, device, dtype = em_rl.setup(args)
    model, tokenizer = em_inf.load_model(args, device, torch.float32)
    ref_model = None
    if args.kl_coef > 0:  # as em_rl.main: the frozen reference in the compute dtype
        ref_model, _ = em_inf.load_model(args, device, dtype)
        ref_model = em_ft.prepare_model(ref_model.requires_grad_(False), args, world, trainable=False)
    model = em_ft.prepare_model(model, args, world)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    return em_rl, args, device, dtype, model, tokenizer, ref_model, optimizer


def em_rl_steps_child(model_path, repeats):
    """Seconds of each phase of an RL step as em_rl.main runs it (kl 0.001: the reference is scored too)."""
    em_rl, args, device, dtype, model, tokenizer, ref_model, optimizer = em_rl_setup(model_path, RL_NEW_TOKENS, 0.001)
    prompts = em_rl.training_prompts(evaluate.load_problems(args.dataset), tokenizer, args, 0)
    stop_ids = em_rl.stop_token_ids(model, tokenizer)

    def now():
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    phases, tokens = {"rollout_s": [], "reward_s": [], "update_s": []}, []
    for step in range(1, repeats + 2):  # step 1 is the warm-up
        t0 = now()
        samples = em_rl.rollout(model, tokenizer, em_rl.step_prompts(prompts, step, args, 0, 1), args, stop_ids, device, dtype)
        minibatches = [em_rl.micro_batches(samples, args, tokenizer.pad_token_id)]
        t1 = now()
        sums, _ = em_rl.score_rollouts(model, ref_model, minibatches, args, device, dtype)
        t2 = now()
        em_rl.ppo_update(model, optimizer, minibatches, args, 1, device, dtype)
        t3 = now()
        if step > 1:
            for k, t in zip(phases, (t1 - t0, t2 - t1, t3 - t2)):
                phases[k].append(t)
            tokens.append(sums[3].item() / sums[4].item())
    print(json.dumps({"device": str(device), "tokens": statistics.median(tokens),
                      **{k: statistics.median(v) for k, v in phases.items()}}))


from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402


class LargestTensor(TorchDispatchMode):
    """While active, remembers the shape of the largest tensor any op returns."""

    def __init__(self):
        super().__init__()
        self.numel, self.shape = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.numel() > self.numel:
                self.numel, self.shape = t.numel(), list(t.shape)
        return out


def em_rl_memory_child(variant, model_path):
    """Peak memory and largest tensor of scoring + one PPO update on a fixed mini-batch, one variant."""
    em_rl, args, device, dtype, model, tokenizer, _, optimizer = em_rl_setup(model_path, RL_RESPONSE_LEN, 0.0)
    if variant == "logits":
        em_rl.forward_entropy_logprob = forward_with_logits  # score_rollouts and ppo_loss_sums use it
    args.samples_per_prompt = RL_ROWS  # the mini-batch is one prompt's RL_ROWS rollouts

    def minibatch(prompt_len, response_len, seed):
        g = torch.Generator().manual_seed(seed)  # random tokens: memory and time do not depend on the text
        ids = torch.randint(0, model.config.vocab_size, (RL_ROWS, prompt_len + response_len), generator=g).to(device)
        resp = torch.zeros_like(ids)
        resp[:, prompt_len:] = 1
        return [[{"input_ids": ids, "attention_mask": torch.ones_like(ids), "response_mask": resp}]]

    def step(minibatches):
        em_rl.score_rollouts(model, None, minibatches, args, device, dtype)
        em_rl.ppo_update(model, optimizer, minibatches, args, 1, device, dtype)

    step(minibatch(4, 4, 0))  # warm-up: optimizer state, allocator
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = peak_mib(device) if device.type != "cuda" else torch.cuda.memory_allocated(device) / 2**20
    t0 = time.perf_counter()
    step(minibatch(RL_PROMPT_LEN, RL_RESPONSE_LEN, 1))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = peak_mib(device)
    with LargestTensor() as largest:
        step(minibatch(RL_PROMPT_LEN, RL_RESPONSE_LEN, 2))
    print(json.dumps({"device": str(device), "step_mib": peak - base, "seconds": seconds, "largest": largest.shape}))


def run_function_child(call):
    """Run `bench_train.<call>` in a fresh process (own peak memory) and parse its last line of JSON."""
    code = f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import bench_train; bench_train.{call}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        sys.exit(f"{call} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_em_rl_step(a):
    """RL step phases on the tiny fixture model and SmolLM2-135M; update memory on --model (V = 152,064)."""
    import tempfile


    smollm2 = os.path.join(ROOT, "local_models", "smollm2")
    with tempfile.TemporaryDirectory() as tmp:
        models = [("tiny fixture (2 layers, V = 400)", local_models.tiny(tmp))]
        if os.path.isdir(smollm2):
            models.append(("SmolLM2-135M-Instruct", smollm2))
        rows = [(name, run_function_child(f"em_rl_steps_child({path!r}, {a.repeats})")) for name, path in models]
    print(f"\n### em_rl.py RL step, {RL_PROMPTS} prompts x {RL_N} rollouts of up to {RL_NEW_TOKENS} tokens, "
          f"kl 0.001 (median of {a.repeats} steps after a warm-up)\n")
    print("rollout: sampling with the KV cache; reward: one no-grad forward of the policy and the reference (rewards, "
          "old log-probs, RLOO advantages); update: PPO forward + backward + AdamW.\n")
    print("| model | tokens / response | rollout s | reward s | update s | step s |\n|---|---|---|---|---|---|")
    for name, r in rows:
        total = r["rollout_s"] + r["reward_s"] + r["update_s"]
        print(f"| {name} | {r['tokens']:.0f} | {r['rollout_s']:.2f} | {r['reward_s']:.2f} | {r['update_s']:.2f} | {total:.2f} |")
    res = {v: run_function_child(f"em_rl_memory_child({v!r}, {a.model!r})") for v in ("logits", "hidden")}
    mem = "peak CUDA allocated" if res["hidden"]["device"].startswith("cuda") else "peak RSS"
    print(f"\n### em_rl.py scoring + PPO update of one mini-batch, {RL_ROWS} x ({RL_PROMPT_LEN} prompt + {RL_RESPONSE_LEN} "
          f"response) tokens, {os.path.basename(a.model.rstrip('/'))} (step memory = {mem} minus before the step)\n")
    print("| variant | largest tensor created | step MiB | s |\n|---|---|---|---|")
    for v, r in res.items():
        name = {"logits": "materialized [B, T, V] logits", "hidden": "entropy from hidden states (em_rl)"}[v]
        print(f"| {name} | {r['largest']} | {r['step_mib']:.0f} | {r['seconds']:.2f} |")
    print(f"\nstep memory ratio logits/hidden: {res['logits']['step_mib'] / max(res['hidden']['step_mib'], 1):.1f}x")


# ---------------------------------------------------------------------------------------------
# Rollout batching: the decode loop of em_ft.rollout / em_rl.rollout with and without refill
# ---------------------------------------------------------------------------------------------
def bench_rollout_batching(a):
    """One rank's rollout phase, --rollout-prompts sequences --rollout-batch rows at a time, on SmolLM2-135M.

    em_ft.sample (the loop rollout() runs) with refill=True (a finished row leaves the batch and the next
    prompt takes it at once: what rollout() does) against refill=False (finished rows leave the batch, the
    next --rollout-batch prompts start when the whole batch is done). Greedy decoding, so both variants
    decode the same tokens (checked here; test_em_inf.py tests it) and the times compare the same work.
    Variants interleaved, medians of --repeats runs after a warm-up.
    """
    smollm2 = os.path.join(ROOT, "local_models", "smollm2")
    if not os.path.isdir(smollm2):
        print(f"\n(rollout batching skipped: {smollm2} does not exist, run `make local_models`)")
        return
    args = em_ft.parse_args(["--model", smollm2, "--dataset", os.path.join(ROOT, "data", "mini_math.jsonl")])
    _, _, device, dtype = em_ft.setup(args)
    model, tokenizer = em_ft.load_model(args, device, dtype)
    model.eval()
    stop_ids = em_ft.stop_token_ids(model, tokenizer)
    problems = evaluate.load_problems(args.dataset, require_answer=False)
    prompts = em_ft.training_prompts(problems, tokenizer, args, 0)
    prompts = [prompts[i % len(prompts)] for i in range(a.rollout_prompts)]
    steps = [0]

    def greedy(logits, rows):
        steps[0] += 1
        return logits.argmax(dim=-1), {}

    def run(refill, new_tokens):
        steps[0], work = 0, {}
        t0 = em_ft.clock(device)
        out = {i: r for i, r, _ in em_ft.sample(model, tokenizer, prompts, new_tokens, greedy, stop_ids,
                                                a.rollout_batch, refill=refill, work=work)}
        return em_ft.clock(device) - t0, out, steps[0], work["row_steps"]

    load = os.getloadavg()[0]
    with em_ft.autocast(device, dtype):
        run(True, 4)  # warm-up (allocator, kernels)
        res = {True: [], False: []}
        for _ in range(a.repeats):
            for refill in (True, False):
                res[refill].append(run(refill, a.rollout_tokens))
    tokens = {refill: r[-1][1] for refill, r in res.items()}
    same = all(torch.equal(tokens[True][i], tokens[False][i]) for i in range(len(prompts)))
    print(f"\n### rollout batching (em_ft.rollout / em_rl.rollout decode loop): {a.rollout_prompts} prompts x up to "
          f"{a.rollout_tokens} tokens, --rollout-batch-size {a.rollout_batch}, SmolLM2-135M-Instruct, greedy, {device} "
          f"(median of {a.repeats} interleaved runs; load average {load:.1f} at the start)\n")
    print(f"command: `python bench/bench_train.py --sections rollout --rollout-prompts {a.rollout_prompts} "
          f"--rollout-batch {a.rollout_batch} --rollout-tokens {a.rollout_tokens} --repeats {a.repeats}`\n")
    print("| variant | response tokens | decode steps | rows per step | s | tokens/s |\n|---|---|---|---|---|---|")
    for refill, runs in res.items():
        name = "refill (continuous batching, rollout())" if refill else "drop finished rows, no refill"
        seconds, out, n_steps, row_steps = statistics.median(r[0] for r in runs), runs[-1][1], runs[-1][2], runs[-1][3]
        n = sum(len(r) for r in out.values())
        print(f"| {name} | {n} | {n_steps} | {row_steps / n_steps:.2f} | {seconds:.2f} | {n / seconds:.1f} |")
    print(f"\nsame tokens with and without refill: {same}; time refill / no refill: "
          f"{statistics.median(r[0] for r in res[True]) / statistics.median(r[0] for r in res[False]):.2f}")


# ---------------------------------------------------------------------------------------------
# torchrun (issue 12's two targets): rollout speed per rank, and rank 1's memory while loading
# ---------------------------------------------------------------------------------------------
def torchrun_env():
    """Both torchrun benchmarks: offline, and one thread per process (2 ranks on 2 cores)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def em_rl_cmd(out, world, a, problem_file):
    """One real em_rl.py run, as a user types it (torchrun when world > 1); returns its metrics.jsonl rows."""
    launcher = [sys.executable] if world == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc_per_node", str(world)]
    cmd = [*launcher, os.path.join(ROOT, "em_rl.py"), "--model", os.path.join(ROOT, "local_models", "smollm2"),
           "--dataset", problem_file, "--batch-size", str(world), "--samples-per-prompt", "4",
           "--max-new-tokens", str(a.torchrun_tokens), "--steps", str(a.torchrun_steps), "--kl-coef", "0",
           "--save-every", str(a.torchrun_steps + 1), "--out", out]
    return cmd


def rollout_rate(out):
    """Per-rank rollout tokens/s of each step after the first: 4 responses per rank / time_rollout (slowest rank)."""
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["response_length"] * 4 / r["time_rollout"] for r in rows[1:]]


def bench_torchrun_rollout(a, tmp):
    """em_rl.py's time_rollout, one process vs 2 ranks under torchrun (gloo, OMP_NUM_THREADS=1 each).

    Every rank decodes the same prompt (a one-problem dataset: --batch-size = world), 4 responses of up to
    --torchrun-tokens, so per-rank work is the same both ways. A third variant runs two single-process
    runs side by side: what 2 processes sharing this machine's cores and memory cost without any
    torchrun code, to tell the machine's share from the code's.
    """
    problem_file = os.path.join(tmp, "one.jsonl")
    with open(os.path.join(ROOT, "data", "mini_math.jsonl")) as f, open(problem_file, "w") as g:
        g.write(f.readline())
    rates = {"one process": [], "torchrun, 2 ranks (per rank)": [], "two single processes side by side (each)": []}
    load = os.getloadavg()[0]
    for i in range(a.repeats):
        for name in rates:
            if name.startswith("two"):
                outs = [os.path.join(tmp, f"side{i}{j}") for j in (0, 1)]
                procs = [subprocess.Popen(em_rl_cmd(o, 1, a, problem_file), env=torchrun_env(), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True) for o in outs]
                if any(p.wait() != 0 for p in procs):
                    sys.exit(f"em_rl.py failed:\n{procs[0].stderr.read()[-3000:]}")
                for o in outs:
                    rates[name] += rollout_rate(o)
                continue
            out = os.path.join(tmp, f"{'t' if 'torchrun' in name else 's'}{i}")
            r = subprocess.run(em_rl_cmd(out, 2 if "torchrun" in name else 1, a, problem_file), env=torchrun_env(),
                               capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"em_rl.py failed:\n{r.stderr[-3000:]}")
            rates[name] += rollout_rate(out)
    print(f"\n### rollout tokens/s per rank: em_rl.py in one process vs 2 ranks under torchrun (gloo), SmolLM2-135M, "
          f"OMP_NUM_THREADS=1, 4 responses x up to {a.torchrun_tokens} tokens per rank, from metrics.jsonl's "
          f"time_rollout (steps 2-{a.torchrun_steps} of {a.repeats} interleaved runs each; load average {load:.1f} at the start)\n")
    print(f"command: `python bench/bench_train.py --sections torchrun --torchrun-tokens {a.torchrun_tokens} "
          f"--torchrun-steps {a.torchrun_steps} --repeats {a.repeats}`\n")
    print("| run | steps | median tokens/s | vs one process |\n|---|---|---|---|")
    one = statistics.median(rates["one process"])
    for name, r in rates.items():
        print(f"| {name} | {len(r)} | {statistics.median(r):.1f} | {statistics.median(r) / one:.2f} |")


def load_child(model_path):
    """Under torchrun: em_ft.load_for_training as em_rl.main calls it (float32 master weights), with rank 1's
    resident memory read before loading and around its set_model_state_dict (the weights' transfer)."""
    import em_ft
    import em_rl

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    args = em_rl.parse_args(["--model", model_path, "--dataset", os.path.join(ROOT, "data", "mini_math.jsonl"),
                             "--batch-size", "2", "--dtype", "float32", "--device", "cpu"])
    rank, world, device, dtype = em_rl.setup(args)
    marks = {"before": rss_mib()}
    original = em_ft.set_model_state_dict

    def probed(*args_, **kwargs):  # the transfer itself: what its peak adds to what the process held
        marks["transfer_start"] = rss_mib()
        original(*args_, **kwargs)
        marks["transfer_peak"] = peak_mib(device)

    em_ft.set_model_state_dict = probed  # load_for_training's own global
    model, _ = em_ft.load_for_training(args, rank, world, device, torch.float32)
    marks["after"], marks["peak"] = rss_mib(), peak_mib(device)
    full = [p.numel() for p in model.parameters()]  # a DTensor's numel is the full (unsharded) one
    if rank == 1:
        print(json.dumps({**marks, "model_mib": sum(full) * 4 / 2**20, "largest_mib": max(full) * 4 / 2**20}), flush=True)
    em_ft.leave_torchrun(0)


def proportioned_model(path):
    """A random Llama-shaped model whose largest tensor is ~7% of it, as in Qwen2.5-Math-7B (untied embedding and
    lm_head of 152064 x 3584 = 0.55e9 of 7.6e9 each): SmolLM2's tokenizer and vocabulary (49152), hidden 512,
    34 layers with a 5376-wide MLP, untied head; 353M parameters, 1.35 GiB in float32."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if os.path.exists(os.path.join(path, "config.json")):
        return
    smollm2 = os.path.join(ROOT, "local_models", "smollm2")
    config = AutoConfig.from_pretrained(smollm2)
    config.update({"hidden_size": 512, "intermediate_size": 5376, "num_hidden_layers": 34, "num_attention_heads": 4,
                   "num_key_value_heads": 1, "head_dim": 128, "tie_word_embeddings": False})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(smollm2).save_pretrained(path)


def bench_torchrun_load(a, tmp):
    """Rank 1's peak resident memory while loading under torchrun, against the full float32 model."""
    models = {"SmolLM2-135M-Instruct (tied embedding: 21% of it)": os.path.join(ROOT, "local_models", "smollm2"),
              "random model of 7B proportions (largest tensor 7%)": os.path.join(tmp, "proportioned")}
    proportioned_model(models["random model of 7B proportions (largest tensor 7%)"])
    print("\n### rank 1's memory while loading under torchrun (2 ranks, gloo): em_ft.load_for_training, float32 master "
          "weights; resident memory (RSS) in MiB and as a fraction of the full float32 model\n")
    print("command: `python bench/bench_train.py --sections torchrun`\n")
    print("| model | full fp32 model | largest tensor | RSS before loading | peak - before | transfer peak - transfer start "
          "| held after - before |\n|---|---|---|---|---|---|---|")
    for name, path in models.items():
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               os.path.abspath(__file__), "--child", "load", "--model", path]
        r = subprocess.run(cmd, env=torchrun_env(), capture_output=True, text=True)
        lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
        if r.returncode != 0 or not lines:
            sys.exit(f"load under torchrun failed:\n{r.stderr[-3000:]}")
        m = json.loads(lines[-1])
        size = m["model_mib"]

        def frac(x):
            return f"{x:.0f} ({x / size:.2f} x)"

        print(f"| {name} | {size:.0f} | {frac(m['largest_mib'])} | {m['before']:.0f} | {frac(m['peak'] - m['before'])} "
              f"| {frac(m['transfer_peak'] - m['transfer_start'])} | {frac(m['after'] - m['before'])} |")
    print("\n'peak - before' includes what does not grow with the model (the tokenizer and config received from rank 0, "
          "the modeling code imported); 'transfer' is set_model_state_dict alone: the shards plus one full tensor in flight.")


# ---------------------------------------------------------------------------------------------
# LoRA (--lora-rank): the memory of one EM-FT training step with and without adapters
# ---------------------------------------------------------------------------------------------
LORA_ROWS, LORA_PROMPT_LEN, LORA_RESPONSE_LEN = 2, 32, 256  # one micro-batch of 2 x (32 + 256) tokens


def lora_child(model_path, lora_rank, kl_coef, steps=2):
    """em_ft.load_training (the real loading: LoRA or not, the reference) and `steps` EM-FT training steps on a fixed
    batch of random tokens; prints peak resident memory after loading and after the steps. Two steps: AdamW
    allocates its moments at the first one, so the second shows the steady state."""
    args = em_ft.parse_args(["--model", model_path, "--lora-rank", str(lora_rank), "--kl-coef", str(kl_coef),
                             "--micro-batch-size", str(LORA_ROWS), "--out", tempfile.mkdtemp(), "--lr", "1e-4"])
    rank, world, device, dtype = em_ft.setup(args)
    model, tokenizer, ref_model, optimizer = em_ft.load_training(args, None, rank, world, device, dtype)
    loaded = peak_mib(device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (LORA_ROWS, LORA_PROMPT_LEN + LORA_RESPONSE_LEN), generator=g)
    resp = torch.zeros_like(ids)
    resp[:, LORA_PROMPT_LEN:] = 1
    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "response_mask": resp.to(device)}
    seconds = []
    for _ in range(steps):
        t0 = time.perf_counter()
        stats = em_ft.train_step(model, ref_model, optimizer, [batch], args, world, device, dtype)
        seconds.append(time.perf_counter() - t0)
    print(json.dumps({"loaded_mib": loaded, "peak_mib": peak_mib(device), "step_s": seconds[-1], "loss": stats["loss"],
                      "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                      "params": sum(p.numel() for p in model.parameters())}))


def bench_lora(a):
    if not os.path.isdir(a.lora_model):
        print(f"\n(lora skipped: {a.lora_model} does not exist, run `make local_models`)")
        return
    variants = [(0, 0.0), (a.lora_rank, 0.0), (0, 0.001), (a.lora_rank, 0.001)]
    runs = {v: [] for v in variants}
    for _ in range(a.repeats):  # interleaved, each in a fresh process (its own peak)
        for rank, kl in variants:
            runs[(rank, kl)].append(run_function_child(f"lora_child({a.lora_model!r}, {rank}, {kl})"))
    print(f"\n### EM-FT step memory with and without LoRA, {os.path.basename(a.lora_model.rstrip('/'))}, one micro-batch "
          f"of {LORA_ROWS} x ({LORA_PROMPT_LEN} + {LORA_RESPONSE_LEN}) tokens, float32 on CPU (median of {a.repeats} "
          f"fresh processes; peak RSS after em_ft.load_training and after 2 training steps)\n")
    print(f"command: `python bench/bench_train.py --sections lora --lora-model {a.lora_model} --lora-rank {a.lora_rank} "
          f"--repeats {a.repeats}` (load {os.getloadavg()[0]:.1f})\n")
    print("| variant | trainable parameters | peak RSS after loading, MiB | peak RSS after 2 steps, MiB | second step s |")
    print("|---|---|---|---|---|")
    med = {}
    for (rank, kl), rs in runs.items():
        m = {k: statistics.median(r[k] for r in rs) for k in ("loaded_mib", "peak_mib", "step_s")}
        med[(rank, kl)] = m
        name = (f"LoRA r={rank}" if rank else "full fine-tuning") + (f", KL {kl:g} (reference: "
                                                                       + ("adapters off" if rank else "second copy") + ")" if kl else "")
        print(f"| {name} | {rs[0]['trainable']:,} of {rs[0]['params']:,} | {m['loaded_mib']:.0f} | {m['peak_mib']:.0f} | "
              f"{m['step_s']:.2f} |")
    full, lora = med[(0, 0.0)], med[(a.lora_rank, 0.0)]
    print(f"\nLoRA saves {full['peak_mib'] - lora['peak_mib']:.0f} MiB of peak RSS ({full['peak_mib'] / lora['peak_mib']:.2f}x "
          f"lower); with the KL reference {med[(0, 0.001)]['peak_mib'] - med[(a.lora_rank, 0.001)]['peak_mib']:.0f} MiB")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "local_models", "qwen-shaped"), help="model folder (make local_models)")
    p.add_argument("--response-tokens", type=int, default=1024, help="max new tokens per sampled response")
    p.add_argument("--batch", type=int, default=2, help="responses per step (one micro-batch)")
    p.add_argument("--repeats", type=int, default=2, help="timed steps after one warm-up step")
    p.add_argument("--sections", nargs="+", choices=["em_ft", "em_rl", "rollout", "torchrun", "lora"],
                   default=["em_ft", "em_rl", "rollout", "torchrun", "lora"],
                   help="which benchmarks to run")
    p.add_argument("--rollout-prompts", type=int, default=32, help="rollout section: sequences in the rollout phase")
    p.add_argument("--rollout-batch", type=int, default=8, help="rollout section: --rollout-batch-size")
    p.add_argument("--rollout-tokens", type=int, default=256, help="rollout section: max new tokens per sequence")
    p.add_argument("--torchrun-tokens", type=int, default=64, help="torchrun section: max new tokens per response (default: 64)")
    p.add_argument("--torchrun-steps", type=int, default=6, help="torchrun section: em_rl.py steps per run, the first dropped (default: 6)")
    p.add_argument("--lora-model", default=os.path.join(ROOT, "local_models", "smollm2"),
                   help="lora section: model folder (default: SmolLM2-135M, whose decoder holds most of its weights)")
    p.add_argument("--lora-rank", type=int, default=16, help="lora section: adapter rank (default: 16)")
    p.add_argument("--child", choices=["em_ft", "load"], help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    a = p.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each table as soon as it is measured, also into a file
    if a.child == "em_ft":
        return em_ft_child(a.variant, a)
    if a.child == "load":
        return load_child(a.model)
    if not os.path.isdir(a.model):
        sys.exit(f"error: {a.model} does not exist: run `make local_models` first")
    print(f"## bench_train: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, "
          f"torch {torch.__version__}, cuda {torch.cuda.is_available()}")
    if "em_ft" in a.sections:
        bench_em_ft_step(a)
    if "em_rl" in a.sections:
        bench_em_rl_step(a)
    if "rollout" in a.sections:
        bench_rollout_batching(a)
    if "lora" in a.sections:
        bench_lora(a)
    if "torchrun" in a.sections:
        if not os.path.isdir(os.path.join(ROOT, "local_models", "smollm2")):
            print("\n(torchrun skipped: local_models/smollm2 does not exist, run `make local_models`)")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                bench_torchrun_rollout(a, tmp)
                bench_torchrun_load(a, tmp)


if __name__ == "__main__":
    main()
