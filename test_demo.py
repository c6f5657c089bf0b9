"""Tests for the CPU demo: the arithmetic task generator (deterministic, gold answers checked against Python's
own arithmetic on the question text), the "last_number" prompt and grading rule in evaluate.py, the
`evaluate.py plot` subcommand (PNG size and non-blank pixels), and tools/demo.py end to end on the tiny
fixture model (a few tokens, one or two steps), including its resume."""
import json
import operator
import os
import re
import subprocess
import sys

import pytest

import evaluate

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "tools"))

import make_arithmetic  # noqa: E402  (tools/ is not a package)

# the reference: parse the question text and compute with the operator module, not with the generator's table
QUESTION = re.compile(r"^What is (\d+) ([+*]) (\d+)\?$")
PYTHON_OPS = {"+": operator.add, "*": operator.mul}


def need_matplotlib():
    """matplotlib is optional for users (skip), but CI (CI=true) installs it and must run the plot tests."""
    if os.environ.get("CI"):
        import matplotlib  # noqa: F401  (an ImportError here fails the test)
    else:
        pytest.importorskip("matplotlib", reason="optional: pip install -r requirements-dev.txt")


def run_cli(*args, cwd=HERE):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


# ----------------------------------------------------------------------------------------------------------------
# the task generator


def test_generator_is_deterministic_and_seeded():
    assert make_arithmetic.make_splits(0) == make_arithmetic.make_splits(0)
    assert make_arithmetic.make_splits(0) != make_arithmetic.make_splits(1)


def test_generator_gold_answers_match_python_arithmetic():
    train, test = make_arithmetic.make_splits(seed=3, n_test=48)
    assert (len(train), len(test)) == (80, 48)
    for rec in train + test:
        a, op, b = QUESTION.match(rec["problem"]).groups()
        assert rec["answer"] == str(PYTHON_OPS[op](int(a), int(b)))
        assert rec["grading"] == "last_number"
        assert 2 <= int(a) <= 9 and 2 <= int(b) <= 9
    # every question once, split without overlap: nothing held out is ever trained on
    problems = [r["problem"] for r in train + test]
    assert len(set(problems)) == 128 and len({r["id"] for r in train + test}) == 128


def test_generator_cli_writes_the_same_files_twice(tmp_path):
    for out in ("a", "b"):
        proc = run_cli(os.path.join("tools", "make_arithmetic.py"), str(tmp_path / out), "--test", "10")
        assert proc.returncode == 0, proc.stderr
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len((tmp_path / "a" / "test.jsonl").read_text().splitlines()) == 10
    bad = run_cli(os.path.join("tools", "make_arithmetic.py"), str(tmp_path / "c"), "--test", "0")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--test" in bad.stderr


# ----------------------------------------------------------------------------------------------------------------
# the demo's answer format in evaluate.py


@pytest.mark.parametrize("text,expected", [
    ("7 + 5 = 12. The answer is 12.", "12"),
    ("The answer is 1,234.", "1234"),
    ("It is -3.5 degrees", "-3.5"),
    ("8 * 8 = 64, so 8 * 9 = 72", "72"),
    ("no digits at all", None),
    (None, None),
])
def test_extract_last_number(text, expected):
    assert evaluate.extract_last_number(text) == expected


def test_grade_dispatches_on_the_record_grading_field():
    demo = {"problem": "What is 7 * 8?", "answer": "56", "grading": "last_number"}
    assert evaluate.grade(demo, "7 * 8 = 56")
    assert not evaluate.grade(demo, "The answer is 56, or maybe 54")  # the LAST number decides
    assert not evaluate.grade(demo, "fifty-six")
    # a results-file row (gold instead of answer) grades the same way
    assert evaluate.grade({"gold": "56", "grading": "last_number"}, "so 56")
    # without the field the paper's rule holds: no \boxed{}, no answer
    assert not evaluate.grade({"problem": "What is 7 * 8?", "answer": "56"}, "7 * 8 = 56")
    assert evaluate.grade({"problem": "What is 7 * 8?", "answer": "56"}, "\\boxed{56}")


def test_load_problems_keeps_grading_and_rejects_unknown_values(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"id": "q", "problem": "What is 2 + 3?", "answer": "5", "grading": "last_number"}) + "\n")
    rec = evaluate.load_problems(str(good))[0]
    assert rec["grading"] == "last_number"
    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompt = evaluate.build_prompt(tok, rec)
    assert "What is 2 + 3?" in prompt and "boxed" not in prompt  # no \boxed{} instruction for this rule
    assert "boxed" in evaluate.build_prompt(tok, {"problem": "What is 2 + 3?", "answer": "5"})
    # training prompts: the official \boxed{} suffix only where the record is graded by \boxed{}
    import argparse
    import em_ft
    import em_rl
    args = argparse.Namespace(max_prompt_tokens=1024, dataset=str(good))
    assert em_rl.training_prompts is em_ft.training_prompts  # one definition, imported by em_rl.py
    demo, paper = em_ft.training_prompts([rec, {"problem": "What is 2 + 3?", "answer": "5"}], tok, args, 0)
    assert demo == prompt and "boxed" not in demo
    assert paper.count("boxed") == 2 and em_ft.TRAIN_SUFFIX.strip() in paper  # system prompt + suffix
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "What is 2 + 3?", "answer": "5", "grading": "first_number"}) + "\n")
    with pytest.raises(evaluate.InputError, match="first_number"):
        evaluate.load_problems(str(bad))


# ----------------------------------------------------------------------------------------------------------------
# evaluate.py plot


def check_png(path):
    """A real PNG of a plausible size whose pixels are not all the background colour."""
    import matplotlib.image

    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 5_000
    img = matplotlib.image.imread(path)  # [H, W, 3 or 4] floats in [0, 1]
    assert img.shape[0] >= 200 and img.shape[1] >= 400
    rgb = img[..., :3]
    drawn = (abs(rgb - rgb[0, 0]).sum(-1) > 0.1).mean()  # pixels that differ from the corner's background
    assert 0.01 < drawn < 0.9, drawn
    # coloured pixels (not grey text or axes): the lines / bars were drawn
    assert ((rgb.max(-1) - rgb.min(-1)) > 0.3).mean() > 0.001


def write_run(folder, rows):
    folder.mkdir()
    with open(folder / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
        f.write('{"step": 99, "entr')  # a line cut off by a crash is skipped


def test_plot_runs_and_results_files(tmp_path):
    need_matplotlib()
    write_run(tmp_path / "em_ft", [{"step": s, "loss": 1.0 / s, "entropy": 1.0 / s, "response_length": 30 - s,
                                    **({"eval_accuracy": 0.1 * s} if s % 2 == 0 else {})} for s in range(1, 7)])
    write_run(tmp_path / "em_rl", [{"step": s, "loss": 0.1, "entropy": 0.5, "reward": -0.5 + 0.05 * s,
                                    "response_length": 20} for s in range(1, 4)])
    out = tmp_path / "curves.png"
    proc = run_cli("evaluate.py", "plot", str(tmp_path / "em_ft"), str(tmp_path / "em_rl"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    check_png(out)

    files = []
    for name, correct in (("greedy", [True, False, False]), ("em_inf", [True, True, False])):
        path = tmp_path / f"{name}.jsonl"
        rows = [{"config": {"mode": name}}] + [
            {"id": str(i), "gold": "5", "grading": "last_number", "response": "5" if c else "4", "correct": c,
             "tokens": 10, "entropy": 0.4 + 0.1 * i, "sampled_entropy": 0.2} for i, c in enumerate(correct)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        files.append(str(path))
    out = tmp_path / "bars.png"
    proc = run_cli("evaluate.py", "plot", *files, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    check_png(out)

    # mixing the two kinds, or a folder without metrics.jsonl: one-line errors, exit code 2
    for args in ([str(tmp_path / "em_ft"), files[0]], [str(tmp_path)], [str(tmp_path / "nope.jsonl")]):
        proc = run_cli("evaluate.py", "plot", *args, "--out", str(tmp_path / "x.png"))
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch, capsys):
    write_run(tmp_path / "run", [{"step": 1, "entropy": 0.5}])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    assert evaluate.main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install matplotlib" in err
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------------------------------------------
# tools/demo.py on the tiny model: every piece runs, the table and plots are written, a rerun skips the work


def test_demo_end_to_end_on_the_tiny_model_and_resume(tmp_path, tiny_model):
    need_matplotlib()
    out = tmp_path / "demo"
    args = [os.path.join("tools", "demo.py"), "--model", tiny_model, "--out", str(out), "--test", "3",
            "--max-new-tokens", "3", "--ft-steps", "2", "--rl-steps", "1", "--batch-size", "2", "--seed", "5"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = [line for line in proc.stdout.splitlines() if re.match(r"\[demo\] .*\.py ", line)]
    scripts = [c for c in commands if re.search(r"(em_inf|em_ft|em_rl)\.py", c)]
    assert len(scripts) == 9 and all(" --seed 5 " in c for c in scripts)  # --seed reaches every run
    table = (out / "README.md").read_text()
    assert "seed 5" in table
    for row in ("greedy", "sample T=1", "sample T=0.1", "adaptive temperature", "EM-INF", "EM-FT", "EM-RL"):
        assert f"| em_inf.py {row} |" in table or f"| {row}" in table, row
    assert table.count("(3) |") == 7  # every row graded the 3 held-out questions
    check_png(out / "decoding.png")
    check_png(out / "training.png")
    metrics = [json.loads(line) for line in (out / "em_ft" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and "eval_accuracy" in metrics[-1]
    timings = json.loads((out / "timings.json").read_text())

    again = run_cli(*args)  # the rerun only redraws the plots and the table
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped") == len(timings) - 2  # all but the two plots
    assert not re.search(r"^\[demo\] .*(em_inf|em_ft|em_rl)\.py", again.stdout, flags=re.M)  # no script reran
    assert json.loads((out / "timings.json").read_text())["em_ft"] == timings["em_ft"]
