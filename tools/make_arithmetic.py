"""Write the CPU demo's task: one-digit arithmetic questions with computed gold answers, fixed seed.

    python tools/make_arithmetic.py runs/demo/data          # -> train.jsonl (80) and test.jsonl (48)

Every question is "What is a + b?" or "What is a * b?" with a, b in 2..9: 2 x 8 x 8 = 128 distinct
problems, shuffled with --seed and split into a held-out test set (the first --test) and a training
set (the rest), so no test question is ever trained on. Records are
{"id", "problem", "answer", "grading": "last_number"}: evaluate.build_prompt then asks the question
with the model's own chat template (no \\boxed{} instruction) and evaluate.grade takes the LAST
number of the response as the answer (the GSM8K-style rule). This is the demo's choice for
SmolLM2-135M-Instruct, which never writes \\boxed{}; the paper's benchmarks keep the boxed protocol.

Why this task: it is the one we found where the 135M model's greedy accuracy is in the 10-70% band
with short responses (~30 tokens): on 24 questions each, greedy got 62% on one-digit sums, 21% on
one-digit products, 21% on two-digit sums, 0-8% on subtraction, 1x2-digit products and 3-term sums.
"""
import argparse
import json
import os
import random
import sys

OPERATIONS = {"+": lambda a, b: a + b, "*": lambda a, b: a * b}
NAMES = {"+": "add", "*": "mul"}  # for the ids: add-3-5, mul-7-8
DIGITS = range(2, 10)  # 0 and 1 make trivial questions (a * 1 = a)


def all_problems():
    """The 128 (operation, a, b) triples with their gold answers, in a fixed order."""
    return [{"problem": f"What is {a} {op} {b}?", "answer": str(OPERATIONS[op](a, b)), "op": op, "a": a, "b": b}
            for op in OPERATIONS for a in DIGITS for b in DIGITS]


def make_splits(seed=0, n_test=48):
    """(train, test) lists of records; the same seed gives the same splits on every machine and Python."""
    problems = all_problems()
    random.Random(seed).shuffle(problems)  # random.Random(seed) is stable across platforms and versions
    records = [{"id": f"{NAMES[p['op']]}-{p['a']}-{p['b']}", "problem": p["problem"],
                "answer": p["answer"], "grading": "last_number"} for p in problems]
    return records[n_test:], records[:n_test]


def write_jsonl(path, records):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="folder for train.jsonl and test.jsonl (created)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed of the split (default: 0)")
    p.add_argument("--test", type=int, default=48,
                   help="held-out questions; the other 128 - N are the training prompts (default: 48; ours: "
                        "~30 s of greedy decoding on 2 CPU cores)")
    a = p.parse_args(argv)
    if not 1 <= a.test < len(all_problems()):
        print(f"error: --test must be in 1..{len(all_problems()) - 1}, got {a.test}", file=sys.stderr)
        sys.exit(2)
    train, test = make_splits(a.seed, a.test)
    os.makedirs(a.out, exist_ok=True)
    write_jsonl(os.path.join(a.out, "train.jsonl"), train)
    write_jsonl(os.path.join(a.out, "test.jsonl"), test)
    print(f"wrote {a.out}/train.jsonl ({len(train)}) and {a.out}/test.jsonl ({len(test)})")


if __name__ == "__main__":
    main()
