"""The CPU demo: what entropy minimization does to a real (small) model, on 2 CPU cores.

Time: 7.5 min for `make demo` on an idle 2-core x86_64 CPU (decoding ~2 min, EM-FT ~3.5 min, EM-RL
~2 min, each trained model's greedy pass ~20 s); a machine busy with other jobs is slower, and there
OMP_NUM_THREADS=1 helps (torch's threads then stop fighting over the cores).

    make demo                                             # builds local_models/smollm2 first, offline
    python tools/demo.py --model HuggingFaceTB/SmolLM2-135M-Instruct --out runs/demo   # with the hub

It runs the project's scripts exactly as a user would (one subprocess per command, each printed
before it runs) on one-digit arithmetic (tools/make_arithmetic.py: 80 training prompts, 48 held-out
questions, graded by the last number of the response, evaluate.py's "last_number" rule):

  1. decoding on the held-out questions with em_inf.py: greedy, sampling at T = 1 and T = 0.1,
     adaptive temperature (Algorithm 1) and EM-INF (Sec. 3.3), each with the paper's defaults;
  2. EM-FT (em_ft.py, Sec. 3.1) on the training prompts, held-out greedy accuracy during training
     (--eval-dataset), then greedy decoding of the held-out questions with the trained model;
  3. EM-RL with the token reward (em_rl.py, Sec. 3.2), the same way;
  4. the plots (python evaluate.py plot) and one markdown table, all under --out.

Rerunning resumes: a finished command is skipped (its time is kept in timings.json), an interrupted
one resumes from its own results file or checkpoint. The demo's training settings are NOT the
paper's (which trains 7B models with lr 1e-6 on 512 prompts per step): they are sized so that a
135M model moves visibly in a few minutes of CPU time.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root: the scripts run from it

# decoding rows: (name, em_inf.py flags); each runs greedy-or-sampled once per held-out question
DECODING = [
    ("greedy", ["--mode", "greedy"]),
    ("sample T=1", ["--mode", "sample", "--temperature", "1.0"]),
    ("sample T=0.1", ["--mode", "sample", "--temperature", "0.1"]),
    ("adaptive temperature", ["--mode", "adaptive_temp"]),
    ("EM-INF", ["--mode", "em_inf"]),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct",
                   help="hub id or local folder (default: HuggingFaceTB/SmolLM2-135M-Instruct; make demo passes "
                        "local_models/smollm2)")
    p.add_argument("--out", default=os.path.join("runs", "demo"), help="output folder (default: runs/demo)")
    p.add_argument("--max-new-tokens", type=int, default=48,
                   help="response cap for every command (default: 48; ours: the model answers in ~30 tokens)")
    p.add_argument("--test", type=int, default=48, help="held-out questions (default: 48, see tools/make_arithmetic.py)")
    p.add_argument("--ft-steps", type=int, default=20, help="EM-FT optimizer steps (default: 20; ours: ~3 min on 2 idle cores)")
    p.add_argument("--ft-lr", type=float, default=1e-5,
                   help="EM-FT learning rate (default: 1e-5; ours: the sampled entropy of the 135M model falls ~4x in 10 "
                        "steps; 5e-5 collapsed it to ~0 with accuracy 40%% -> 8%% in an earlier release's run; paper: "
                        "1e-6 for 7B over 40 steps of 512 prompts)")
    p.add_argument("--rl-steps", type=int, default=6, help="EM-RL steps (default: 6; ours: ~2 min on 2 idle cores)")
    p.add_argument("--rl-lr", type=float, default=5e-5, help="EM-RL learning rate (default: 5e-5; ours, as --ft-lr)")
    p.add_argument("--seed", type=int, default=0,
                   help="--seed of every command: the random draws of sampling and training; the questions stay "
                        "tools/make_arithmetic.py's (default: 0)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="training prompts per step; EM-RL samples 4 responses for each of half as many (default: 8)")
    a = p.parse_args(argv)
    if a.max_new_tokens < 1 or a.ft_steps < 1 or a.rl_steps < 1 or a.batch_size < 2 or a.batch_size % 2:
        print("error: --max-new-tokens, --ft-steps and --rl-steps must be >= 1 and --batch-size an even number >= 2",
              file=sys.stderr)
        sys.exit(2)
    return a


class Runner:
    """Runs each command once: a command that finished (rc 0) is recorded with its time in timings.json
    and skipped on the next run; a failure stops the demo with the command's own error."""

    def __init__(self, out):
        self.path = os.path.join(out, "timings.json")
        self.timings = json.load(open(self.path)) if os.path.exists(self.path) else {}

    def __call__(self, key, cmd):
        if key in self.timings:
            print(f"[demo] {key}: done before ({self.timings[key]:.0f} s), skipped", flush=True)
            return
        print(f"[demo] {key}: {' '.join(cmd)}", flush=True)
        t0 = time.time()
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        if rc != 0:
            print(f"error: [demo] {key} failed (exit code {rc}); fix it and rerun: finished parts are kept",
                  file=sys.stderr)
            sys.exit(rc)
        self.timings[key] = time.time() - t0
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.timings, f, indent=1)
        os.replace(self.path + ".tmp", self.path)


def results_row(path):
    """accuracy, entropy, sampled entropy, mean tokens of an em_inf.py results file (as em_inf.py graded it)."""
    rows = [r for r in (json.loads(line) for line in open(path) if line.strip()) if "id" in r]

    def mean(key):
        vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        return sum(vals) / len(vals) if vals else None

    return {"accuracy": mean("correct"), "entropy": mean("entropy"), "sampled_entropy": mean("sampled_entropy"),
            "tokens": mean("tokens"), "n": len(rows)}


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(args, timings):
    """The markdown table: one row per decoding run, one per training run (held-out greedy after training)."""
    lines = ["| what ran | held-out accuracy | model entropy (nats/token) | sampled entropy | response tokens | time |",
             "|---|---|---|---|---|---|"]
    for name, _ in DECODING:
        r = results_row(os.path.join(args.out, "decode", slug(name) + ".jsonl"))
        lines.append(f"| em_inf.py {name} | {fmt(r['accuracy'], '.1%')} ({r['n']}) | {fmt(r['entropy'], '.3f')} "
                     f"| {fmt(r['sampled_entropy'], '.3f')} | {fmt(r['tokens'], '.1f')} | {timings[name]:.0f} s |")
    for run, label, steps in (("em_ft", "EM-FT", args.ft_steps), ("em_rl", "EM-RL token", args.rl_steps)):
        m = read_metrics(os.path.join(args.out, run))
        r = results_row(os.path.join(args.out, "decode", f"{run}_greedy.jsonl"))
        train = f"train-sample entropy {m[0]['entropy']:.3f} -> {m[-1]['entropy']:.3f}"
        if run == "em_rl":
            train += f", reward {m[0]['reward']:.3f} -> {m[-1]['reward']:.3f}"
        lines.append(f"| {label}, {steps} steps, then greedy ({train}) | {fmt(r['accuracy'], '.1%')} ({r['n']}) "
                     f"| {fmt(r['entropy'], '.3f')} | - | {fmt(r['tokens'], '.1f')} "
                     f"| {timings[run]:.0f} s + {timings[run + ' greedy']:.0f} s |")
    return "\n".join(lines)


def slug(name):
    return name.lower().replace(" ", "_").replace("=", "").replace(".", "")


def main(argv=None):
    args = parse_args(argv)
    py, out = sys.executable, os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "decode"), exist_ok=True)
    run = Runner(out)
    t_start = time.time()
    data = os.path.join(out, "data")
    run("data", [py, "tools/make_arithmetic.py", data, "--test", str(args.test)])
    train, test = os.path.join(data, "train.jsonl"), os.path.join(data, "test.jsonl")
    common = ["--max-new-tokens", str(args.max_new_tokens), "--seed", str(args.seed)]

    # 1. decoding: the same held-out questions, five ways (em_inf.py resumes its own results file)
    for name, flags in DECODING:
        run(name, [py, "em_inf.py", "--model", args.model, "--dataset", test, "--batch-size", "16", *common, *flags,
                   "--out", os.path.join(out, "decode", slug(name) + ".jsonl")])

    # 2-3. training: EM-FT and EM-RL on the training prompts (answers unused), held-out greedy accuracy during
    # training (--eval-dataset), then one greedy decode of the held-out questions with the trained model
    train_common = ["--dataset", train, "--eval-dataset", test, "--micro-batch-size", "16", *common]
    run("em_ft", [py, "em_ft.py", "--model", args.model, *train_common, "--steps", str(args.ft_steps),
                  "--batch-size", str(args.batch_size), "--lr", str(args.ft_lr), "--eval-every", str(args.ft_steps // 2),
                  "--save-every", str(args.ft_steps), "--out", os.path.join(out, "em_ft")])
    run("em_rl", [py, "em_rl.py", "--model", args.model, *train_common, "--steps", str(args.rl_steps),
                  "--batch-size", str(args.batch_size // 2), "--mini-batch-size", str(args.batch_size // 2),
                  "--samples-per-prompt", "4", "--reward", "token", "--lr", str(args.rl_lr), "--save-every", str(args.rl_steps),
                  "--out", os.path.join(out, "em_rl")])
    for name in ("em_ft", "em_rl"):
        run(f"{name} greedy", [py, "em_inf.py", "--model", os.path.join(out, name), "--dataset", test,
                               "--batch-size", "16", *common, "--mode", "greedy",
                               "--out", os.path.join(out, "decode", f"{name}_greedy.jsonl")])

    # 4. plots (python evaluate.py plot, as a user would) and the table
    decode_files = [os.path.join(out, "decode", slug(n) + ".jsonl") for n, _ in DECODING]
    decode_files += [os.path.join(out, "decode", f"{n}_greedy.jsonl") for n in ("em_ft", "em_rl")]
    for key, cmd in (("plot decoding", [py, "evaluate.py", "plot", *decode_files, "--out", os.path.join(out, "decoding.png")]),
                     ("plot training", [py, "evaluate.py", "plot", os.path.join(out, "em_ft"), os.path.join(out, "em_rl"),
                                        "--out", os.path.join(out, "training.png")])):
        run.timings.pop(key, None)  # plots are cheap: always redrawn from the current files
        run(key, cmd)
    text = (f"# CPU demo: {args.model}, seed {args.seed}, one-digit arithmetic ({args.test} held-out questions), "
            f"answers graded by the last number of the response (evaluate.py grading \"last_number\")\n\n"
            f"{table(args, run.timings)}\n\nTotal time of the commands: {sum(run.timings.values()) / 60:.1f} min "
            f"(this invocation: {(time.time() - t_start) / 60:.1f} min). Plots: decoding.png, training.png.\n")
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)
    print("\n" + text + f"\nwritten to {os.path.join(out, 'README.md')}", flush=True)


if __name__ == "__main__":
    main()
