"""Tests for evaluate.py: answer extraction, math equivalence (cases from the issue, and cases modelled on
the math-verify and Qwen2.5-Math grader test suites), exact numbers, the watchdog, the code sandbox (its attack
set is test_sandbox.py), pass@k against a brute-force count, dataset field maps on local stand-ins for each
hub dataset, prompts, and the CLI."""
import base64
import itertools
import json
import os
import pickle
import subprocess
import sys
import threading
import time
import zlib

import pytest

import evaluate
import sandbox
from evaluate import InputError, answers_equal, extract_boxed, grade, grade_math, pass_at_k, run_code

HERE = os.path.dirname(os.path.abspath(__file__))


def boxed(answer):
    return f"Let us think step by step. ... so the final answer is $\\boxed{{{answer}}}$."


# ----------------------------------------------------------------------------------------------------------------
# extract_boxed


@pytest.mark.parametrize("text,expected", [
    ("\\boxed{5}", "5"),
    ("a \\boxed{1} then b \\boxed{2}", "2"),  # the last box is the answer
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
    ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\fbox{7}", "7"),
    ("\\boxed {12}", "12"),
    ("\\boxed{ x = 3 }", "x = 3"),
    ("no box here, the answer is 5", None),
    ("\\boxed{\\frac{1}{2", None),  # cut off by the token limit: no answer
    ("\\boxed{3} and then \\boxed{\\frac{4", None),  # the final box was cut off
    ("\\boxed{}", None),
    (None, None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


# ----------------------------------------------------------------------------------------------------------------
# grade_math: equivalence cases (pred, gold, expected)

ISSUE_CASES = [
    ("\\frac12", "0.5", True), ("0.5", "\\frac12", True), ("\\dfrac{1}{2}", "\\frac12", True),
    ("x = 3", "3", True), ("3", "x = 3", True),
    ("90^\\circ", "90", True), ("90", "90^\\circ", True),
    ("28\\%", "28", True), ("28", "28\\%", True), ("500", "5", False), ("5", "500", False),
    ("10 \\text{ cm}", "10", True), ("10\\text{ meters}", "10", True), ("11 \\text{ cm}", "10", False),
    ("14{,}916", "14916", True), ("14,916", "14916", True), ("14916", "14{,}916", True),
    ("2, 1", "1, 2", True), ("\\{2, 1\\}", "\\{1, 2\\}", True),  # unordered answer lists
    ("(2, 1)", "(1, 2)", False), ("(1, 2)", "(1, 2)", True),  # ordered tuples
    ("[1, 2)", "[1, 2)", True), ("[1, 2]", "[1, 2)", False), ("(1, 2]", "[1, 2)", False),  # interval brackets
    ("(-\\infty, 3]", "(-\\infty, 3]", True), ("(-\\infty, 3)", "(-\\infty, 3]", False),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
    ("\\begin{pmatrix}1\\\\3\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", False),
    ("\\begin{bmatrix}1 & 2\\\\3 & 4\\end{bmatrix}", "\\begin{pmatrix}1 & 2\\\\3 & 4\\end{pmatrix}", True),
    ("2, -2", "\\pm 2", True), ("\\pm 2", "2, -2", True), ("2", "\\pm 2", False),
]

# modelled on huggingface/Math-Verify tests/test_all.py and QwenLM/Qwen2.5-Math evaluation/grader.py
# (written here from the behaviours they check, not copied)
SUITE_CASES = [
    ("-5", "-5", True), ("7,425,000", "7425000", True), ("1000.0", "1000", True), (".4", "0.4", True),
    ("\\frac{10}{9}", "10/9", True), ("-\\frac{10}{9}", "-10/9", True), ("\\frac13", "1/3", True),
    ("\\frac3{3}", "1", True), ("\\sqrt3", "\\sqrt{3}", True), ("\\cfrac{1}{3}", "1/3", True),
    ("\\tfrac{1}{3}", "1/3", True), ("\\left( \\frac{1}{3} \\right)", "1/3", True),
    ("k = \\frac{1}{3}", "1/3", True), ("\\frac{1}{3} \\textbf{meters}", "1/3", True),
    ("0.0833333333333333", "\\frac{1}{12}", True), ("(1,4.5)", "(1,\\frac{9}{2})", True),
    ("\\frac{x}{7}+\\frac{2}{7}", "\\frac{x+2}{7}", True), ("\\sec^2(y)", "\\tan^2(y)+1", True),
    ("\\frac{\\sqrt{\\sqrt{11}+\\sqrt{194}}}{2\\sqrt{33}+15}", "\\frac{\\sqrt{\\sqrt{11}+\\sqrt{194}}}{15+2\\sqrt{33}}",
     True),
    ("(+5)(b+2)", "(a+5)(b+2)", False), ("\\frac{1+\\sqrt{5}}{2}", "2", False), ("1", "1\\sqrt{19}", False),
    ("x+1", "x+2n+1", False), ("x \\geq 5", "x >= 5", True), ("5 \\geq x", "x \\leq 5", True),
    ("x < 5", "x > 5", False), ("-x > -1", "x < 1", True), ("y=-\\frac{1}{2}x+\\frac{3}{4}", "2x+4y-3=0", True),
    ("-34x-45y+20z-100=0", "34x+45y-20z+100=0", True), ("\\text{Evelyn}", "\\text{Evelyn}", True),
    ("\\text{(C)}", "C", True), ("(C)", "\\text{(C)}", True), ("(B)", "\\text{(C)}", False),
    ("0.333333", "\\frac13", True), ("0.3333", "\\frac13", False), ("3.14", "\\pi", False),
    ("2\\sqrt{2}", "\\sqrt{8}", True), ("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}", True),
    ("\\sqrt{12}", "2\\sqrt{3}", True),
    ("\\infty", "\\infty", True), ("\\emptyset", "\\emptyset", True), ("\\$1000.99", "1000.99", True),
    ("16386.20", "\\$16{,}386.20", True), ("1,000.99", "1000.99", True),
]


@pytest.mark.parametrize("pred,gold,expected", ISSUE_CASES + SUITE_CASES)
def test_grade_math_equivalence(pred, gold, expected):
    assert grade_math(boxed(pred), gold) is expected


@pytest.mark.parametrize("gold", [27, 27.0, "27", "27.0", "027", "$27$", "\\(27\\)", "\\boxed{27}", " 27 "])
def test_gold_types_and_wrapping(gold):
    assert grade_math(boxed("27"), gold) is True
    assert grade_math(boxed("28"), gold) is False


@pytest.mark.parametrize("pred,gold,expected", [
    ("25", "025", True), ("025", "25", True), ("250", "025", False),  # AIME golds with leading zeros
    ("142", 142.0, True), ("0.5", 0.5, True), ("\\frac{1}{2}", 0.5, True), ("0.25", 0.5, False),  # AMC floats
    ("$\\frac{1}{2}$", "0.5", True), ("\\(\\frac{1}{2}\\)", "$0.5$", True),  # $...$ on either side
])
def test_gold_formats(pred, gold, expected):
    assert grade_math(boxed(pred), gold) is expected


@pytest.mark.parametrize("pred,gold,expected", [
    ("1e-5", "0.00001", True), ("0.00001", "1e-5", True), ("1E-5", "10^{-5}", True),
    ("4.5e33", "4.5\\times10^{33}", True), ("4.5 \\times 10^{33}", "4.5e33", True), ("4.5e+33", "4.5e33", True),
    ("4.6e33", "4.5e33", False), ("4.5e32", "4.5e33", False), ("1e-5", "1e-6", False),
    ("4.5e33", 4.5e33, True),  # float gold
])
def test_scientific_notation_is_a_number(pred, gold, expected):
    assert grade_math(boxed(pred), gold) is expected


@pytest.mark.parametrize("pred,gold,expected", [
    ("1.2\\times10^{-8}", "1.3\\times10^{-8}", False), ("0.000000012", "0.000000013", False),
    ("1.2e-8", "1.3e-8", False), ("1e-9", "0", False), ("0", "1e-9", False), ("1e-400", "2e-400", False),
    ("1.2\\times10^{-8}", "0.000000012", True), ("1.2e-8", "1.2\\times10^{-8}", True),
    ("1.234567e-8", "1.234568e-8", True),  # agrees to 6 significant digits
    ("0.2800001", "28\\%", True), ("0.28", "28\\%", True),
    ("1234.5", "1234.6", False), ("123456", "123457", False),  # no relative-only tolerance for big numbers
    ("3.1415926", "3.14159265", True),
])
def test_small_numbers_need_relative_error(pred, gold, expected):
    assert grade_math(boxed(pred), gold) is expected


@pytest.mark.parametrize("gold,pred", [
    ("\\frac{1}{2}", "0.5"), ("\\dfrac12", "1/2"), ("-\\frac{3}{4}", "-0.75"), ("\\frac{1}{3}", "0.333333"),
    ("\\frac{1}{3}", "0.3333"), ("\\frac{2}{3}", "0.666667"), ("3/4", "\\frac{3}{4}"), ("5/7", "0.71"),
    ("4.5\\times10^{33}", "4.5e33"), ("1.2\\cdot 10^{-8}", "1.2e-8"), ("10^{-5}", "0.00001"), ("10^5", "100000"),
    ("1.2\\times10^{-8}", "1.3e-8"), ("14{,}916", "14916"), ("025", "25"), ("0.1", "0.10000001"), ("7", "7.0000011"),
])
def test_fast_numeric_path_agrees_with_math_verify(gold, pred):
    # the exact-arithmetic shortcut must give math-verify's verdict (plus our relative check) on numbers
    fast = evaluate._equivalent(gold, pred)
    slow = evaluate._GRADER.equal(evaluate._latex_ready(gold), evaluate._latex_ready(pred), False, 10.0)
    assert evaluate._as_number(evaluate._clean(gold)) is not None and fast == slow


@pytest.mark.parametrize("pred,gold,expected", [
    # exact on both sides: no float tolerance (the references are Python's own integers)
    ("\\frac{1}{2006!}", "\\frac{1}{2004!}", False), ("\\frac{1}{2004!}", "\\frac{1}{2004!}", True),
    ("\\frac{2}{2\\cdot 2004!}", "\\frac{1}{2004!}", True), ("\\frac{1}{2004\\cdot 2003!}", "\\frac{1}{2004!}", True),
    ("2^{200}+1", "2^{200}", False), ("2^{200}", "2^{200}+1", False), (str(2 ** 200), "2^{200}", True),
    (str(2 ** 200 + 1), "2^{200}", False), ("2^{200}", str(2 ** 200 - 1), False), ("4^{100}", "2^{200}", True),
    ("3^{100}", str(3 ** 100), True), ("2^{-60}", "2^{-61}", False), ("10^{30}+1", "10^{30}", False),
    (str(__import__("math").factorial(30)), "30!", True), (str(__import__("math").factorial(30) - 1), "30!", False),
    ("\\frac{100000}{100001}", "\\frac{99999}{100000}", False),  # fast path: within 1e-6 / 1e-5, yet different
    ("1/3000001", "\\frac{1}{3000000}", False), ("12345678901234567890", "12345678901234567891", False),
    ("\\{1, 2^{200}+1\\}", "\\{2^{200}, 1\\}", False), ("1, 2^{200}", "\\{2^{200}, 1\\}", True),
    ("(1, 2^{200}]", "(1, 2^{200}+1]", False), ("(1, 2^{200}]", "(1, 2^{200}]", True),
    # a decimal on either side keeps the float tolerance
    ("0.333333", "\\frac13", True), ("1.0000001", "1", True), ("1.0000001", "\\frac{10000001}{10000000}", True),
    ("1.6069380442589903e60", "2^{200}", False),  # ... which is absolute AND relative (difference 2)
])
def test_exact_numbers_compare_exactly(pred, gold, expected):
    assert grade_math(boxed(pred), gold) is expected


def test_exact_values_are_bounded_before_they_are_computed():
    import sympy

    t = time.monotonic()
    huge = [sympy.Pow(2, 10 ** 10, evaluate=False), sympy.factorial(sympy.Integer(10 ** 9), evaluate=False),
             sympy.Mul(sympy.Pow(3, 10 ** 5, evaluate=False), sympy.Pow(3, 10 ** 5, evaluate=False), evaluate=False)]
    assert [evaluate._exact_number(x) for x in huge] == [None, None, None]
    assert evaluate._exact_number(sympy.Pow(2, 1000, evaluate=False)) == 2 ** 1000
    assert evaluate._exact_number(sympy.Pow(2, sympy.Rational(1, 2), evaluate=False)) is None  # irrational
    assert evaluate._exact_number(sympy.Float(0.5)) is None  # a decimal: the tolerance decides
    assert time.monotonic() - t < 1.0
    t = time.monotonic()
    assert grade_math(boxed("2^{10^{10}}+1"), "2^{10^{10}}") is False
    assert grade_math(boxed("10^{10^{10}}"), "10^{10^{10}}") is True  # the same text
    assert time.monotonic() - t < evaluate.GRADE_TIMEOUT + 2


def test_argument_order_gold_first():
    # math-verify is asymmetric: a relation gold accepts an interval answer, not the other way round
    assert grade_math(boxed("(1, 2)"), "1 < x < 2") is True
    assert grade_math(boxed("1 < x < 2"), "(1, 2)") is False
    # ... and the assignment of another variable is not the gold equation
    assert grade_math(boxed("y = 3"), "x = 3") is False
    # answers_equal (voting) is symmetric
    assert answers_equal("1 < x < 2", "(1, 2)") and answers_equal("(1, 2)", "1 < x < 2")


def test_answers_equal():
    assert answers_equal("\\frac{1}{2}", "0.5") and answers_equal("0.5", "\\dfrac12")
    assert answers_equal("x = 3", "3") and answers_equal(3, "3.0")
    assert not answers_equal("1", "2") and not answers_equal("", "") and not answers_equal(None, "1")


@pytest.mark.parametrize("response,gold", [
    (None, "1"), ("", "1"), (boxed("1"), None), (boxed("1"), float("nan")), (boxed("1"), ""),
    (boxed("\\frac{"), "1"), (boxed("\\frac{1}{0}"), "1"), (boxed("}{"), "1"), (boxed("\\left("), "1"),
    (boxed("1"), "\\frac{"), (boxed("\\begin{pmatrix}"), "1"), (boxed("x" * 20000), "1"), (boxed("1" * 5000), "1"),
    (boxed("\x00\udcff"), "1"), (boxed("nan"), "1"), (boxed("\\infty"), "1e999"), (12345, "1"), (boxed("1"), [None]),
], ids=lambda v: repr(v)[:40])
def test_malformed_inputs_are_wrong_never_raise(response, gold):
    assert grade_math(response, gold) is False
    assert answers_equal(extract_boxed(response) if isinstance(response, str) else response, gold) is False


def test_watchdog_huge_power_returns_false_in_seconds():
    t = time.monotonic()
    assert grade_math(boxed("10^{10^{10}}"), "5") is False
    assert time.monotonic() - t < evaluate.GRADE_TIMEOUT + 2
    # a shorter hard timeout kills the worker mid-computation; the next call gets a fresh worker
    t = time.monotonic()
    assert grade_math(boxed("9!!!!!!"), "2", timeout=1.0) is False
    assert time.monotonic() - t < 3.0
    assert grade_math(boxed("\\frac{1}{2}"), "0.5") is True


def test_grading_from_threads():
    # math-verify's own signal.alarm raises outside the main thread; our worker does not care
    cases = [("\\frac{1}{2}", "0.5", True), ("\\sqrt{8}", "2\\sqrt{2}", True), ("7", "8", False),
             ("10^{10^{11}}", "5", False)] * 2  # not the pair above: that verdict is cached
    results = [None] * len(cases)

    def work(i):
        results[i] = grade_math(boxed(cases[i][0]), cases[i][1], timeout=2.0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [c[2] for c in cases]


def test_missing_math_verify_is_loud(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "math_verify" else real(name, *a))
    monkeypatch.setattr(evaluate, "_GRADER", evaluate._Grader())
    with pytest.raises(evaluate.GraderUnavailable, match="pip install"):
        answers_equal("\\frac{1}{2}", "\\sqrt{7}")
    assert answers_equal("0.5", ".5")  # plain numbers never need the worker


# ----------------------------------------------------------------------------------------------------------------
# code sandbox


def test_run_code_asserts():
    assert run_code("def add(a, b):\n    return a + b", "assert add(2, 3) == 5") is True
    assert run_code("def add(a, b):\n    return a - b", "assert add(2, 3) == 5") is False
    assert run_code("def add(a, b) return", "assert True") is False  # syntax error
    assert run_code("import sys; sys.exit(3)", "") is False
    assert run_code("raise SystemExit(0)", "") is False  # exiting before the tests ran is a fail (test_sandbox.py)
    assert run_code("x = 1", "assert x == 1") is True


def test_run_code_stdin_stdout():
    prog = "a, b = map(int, input().split())\nprint(a + b)\nprint('done')"
    assert run_code(prog, [{"input": "1 2\n", "output": "3\ndone\n"}, {"input": "5 5", "output": "  10 \n done"}])
    assert not run_code(prog, [{"input": "1 2\n", "output": "3\ndone\n"}, {"input": "5 5", "output": "11\ndone"}])
    assert not run_code(prog, [{"input": "1 2\n", "output": "3\n"}])  # extra output line
    assert not run_code(prog, [])  # no tests is not a pass


def test_infinite_loop_times_out():
    t = time.monotonic()
    assert run_code("while True:\n    pass", "", timeout=1.0) is False
    assert run_code("import time\ntime.sleep(60)", [{"input": "", "output": ""}], timeout=1.0) is False
    assert time.monotonic() - t < 5.0


def test_huge_allocation_is_contained():
    t = time.monotonic()
    assert run_code("x = bytearray(16 << 30)\nprint(len(x))", "", timeout=5.0) is False
    assert run_code("x = [0] * (4 << 30)", "", timeout=5.0) is False
    assert time.monotonic() - t < 10.0


def test_file_writes_are_contained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out = sandbox._run_sandboxed("import os\nopen('out.txt', 'w').write('x')\nprint(os.getcwd())", timeout=5)
    assert rc == 0
    folder = out.strip()
    assert not (tmp_path / "out.txt").exists() and not os.path.exists(folder)  # written inside, then removed
    assert run_code("open('big.bin', 'wb').write(b'0' * (64 << 20))", "", timeout=10) is False  # RLIMIT_FSIZE
    assert run_code("while True:\n    print('spam' * 1000)", [{"input": "", "output": "spam"}], timeout=5) is False


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("SECRET_API_KEY", "hunter2")
    monkeypatch.setenv("PYTHONPATH", HERE)
    prog = "import os, sys\nassert 'SECRET_API_KEY' not in os.environ\nassert sys.flags.isolated == 1"
    assert run_code(prog, "assert True") is True


def test_extract_code():
    text = "Here:\n```python\nprint(1)\n```\nand better:\n```python\nprint(2)\n```\n"
    assert evaluate.extract_code(text).strip() == "print(2)"
    assert evaluate.extract_code("```\nx = 1\n```").strip() == "x = 1"
    assert evaluate.extract_code("x = 1").strip() == "x = 1"


# ----------------------------------------------------------------------------------------------------------------
# pass@k against a brute-force count over all k-subsets


def _brute_pass(n, c, k):
    """Fraction of all k-subsets of n samples (c correct) that contain a correct one."""
    subsets = list(itertools.combinations([True] * c + [False] * (n - c), k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert abs(pass_at_k(n, c, k) - _brute_pass(n, c, k)) < 1e-12


def test_pass_at_k_large_and_invalid():
    assert abs(pass_at_k(200, 13, 1) - 13 / 200) < 1e-12
    assert 0.0 <= pass_at_k(1000, 1, 100) <= 1.0 and pass_at_k(1000, 0, 100) == 0.0
    for bad in [(4, 5, 1), (4, 1, 5), (4, 1, 0), (4, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


# ----------------------------------------------------------------------------------------------------------------
# datasets: local files, and each hub benchmark's field map on a local stand-in with the hub's fields


def test_load_mini_math(mini_math):
    problems = evaluate.load_problems(mini_math)
    assert len(problems) == 20 and problems[0] == {
        "id": "mini-0", "problem": "Tom has 3 apples and buys 5 more. How many apples does he have now?",
        "answer": "8"}
    assert all(isinstance(p["answer"], str) and p["answer"] for p in problems)
    assert len(evaluate.load_problems(mini_math, limit=3)) == 3


def test_local_file_errors(tmp_path):
    with pytest.raises(InputError, match="nope.jsonl: no such file"):
        evaluate.load_problems(str(tmp_path / "nope.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hi", "label": 1}\n')
    with pytest.raises(InputError, match="it has: text, label"):
        evaluate.load_problems(str(bad))
    # unlabeled prompts (EM-FT / EM-RL training data): accepted only when asked for, answer ""
    unlabeled = tmp_path / "prompts.jsonl"
    unlabeled.write_text('{"problem": "What is 1+1?"}\n{"problem": "What is 2+2?"}\n')
    with pytest.raises(InputError, match="it has: problem"):
        evaluate.load_problems(str(unlabeled))
    assert [p["answer"] for p in evaluate.load_problems(str(unlabeled), require_answer=False)] == ["", ""]
    with pytest.raises(InputError, match="it has: text, label"):  # a problem field is still required
        evaluate.load_problems(str(bad), require_answer=False)
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n")
    with pytest.raises(InputError, match="unsupported file type"):
        evaluate.load_problems(str(csv))


def test_local_json_and_parquet(tmp_path):
    import datasets

    rows = [{"question": "1+1?", "final_answer": ["$2$"]}, {"question": "2+2?", "final_answer": ["$4$"]}]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    for name in ("p.json", "p.parquet"):
        probs = evaluate.load_problems(str(tmp_path / name))
        assert [(p["id"], p["problem"], p["answer"]) for p in probs] == [("0", "1+1?", "2"), ("1", "2+2?", "4")]
    # a MATH-style file without an answer field: the gold is the boxed answer of its solution
    (tmp_path / "m.jsonl").write_text(json.dumps({"problem": "p", "solution": "so $\\boxed{\\frac{1}{2}}$."}) + "\n")
    assert evaluate.load_problems(str(tmp_path / "m.jsonl"))[0]["answer"] == "\\frac{1}{2}"


def _lcb_private(cases):
    # how LiveCodeBench stores private tests: base64(zlib(pickle(json string)))
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


HUB_ROWS = {  # one or two rows per benchmark, with the fields its dataset card lists
    "math500": [{"problem": "What is $1+1$?", "solution": "...", "answer": "2", "subject": "Algebra", "level": 1,
                 "unique_id": "test/algebra/1.json"}],
    "amc": [{"id": 0, "problem": "AMC q", "answer": 142.0, "url": "u"}],
    "aime": [{"id": 60, "problem": "AIME q", "solution": "s", "answer": "025", "url": "u"}],
    "aime24": [{"id": 60, "problem": "AIME24 q", "solution": "s", "answer": "204", "url": "u", "year": "2024"}],
    "minerva": [{"question": "Minerva q", "answer": "7.5e-6"}],
    "olympiadbench": [{"id": 2231, "question": "Olympiad q", "solution": ["s"], "final_answer": ["$\\frac{1}{2}$"],
                       "context": None, "is_multiple_answer": False, "unit": None, "answer_type": "Numerical",
                       "error": None, "question_type": "Open-ended", "subfield": "Algebra", "subject": "Math",
                       "language": "English"}],
    "livecodebench": [
        {"question_title": "sum", "question_content": "Read a and b, print a+b.", "platform": "atcoder",
         "question_id": "abc001_a", "contest_id": "abc001", "contest_date": "2023-08-01T00:00:00",
         "starter_code": "", "difficulty": "easy",
         "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
         "private_test_cases": _lcb_private([{"input": "5 7\n", "output": "12\n", "testtype": "stdin"}]),
         "metadata": "{}"},
        {"question_title": "twice", "question_content": "Return twice x.", "platform": "leetcode",
         "question_id": "3000", "contest_id": "weekly-1", "contest_date": "2023-08-01T00:00:00",
         "starter_code": "class Solution:\n    def twice(self, x: int) -> int:\n        ",
         "difficulty": "easy",
         "public_test_cases": json.dumps([{"input": "3", "output": "6", "testtype": "functional"}]),
         "private_test_cases": json.dumps([{"input": "-4", "output": "-8", "testtype": "functional"}]),
         "metadata": json.dumps({"func_name": "twice"})}],
}


@pytest.fixture
def fake_hub(monkeypatch):
    """Route load_dataset to the local stand-ins above and record what was asked for."""
    import datasets

    calls = []

    class FakeDatasets:
        @staticmethod
        def load_dataset(path, name=None, split=None, data_files=None):
            calls.append((path, name, split, data_files))
            if path == "json":  # livecodebench reads its jsonl files by hf:// path
                return datasets.Dataset.from_list(HUB_ROWS["livecodebench"])
            bench = next(b for b, spec in evaluate.BENCHMARKS.items() if spec["hub"] == path)
            return datasets.Dataset.from_list(HUB_ROWS[bench])

    monkeypatch.setattr(evaluate, "_datasets", lambda: FakeDatasets)
    return calls


@pytest.mark.parametrize("name,hub,config,split,expected", [
    ("math500", "HuggingFaceH4/MATH-500", None, "test", {"id": "test/algebra/1.json", "answer": "2"}),
    ("amc", "AI-MO/aimo-validation-amc", None, "train", {"id": "0", "answer": "142"}),
    ("aime", "AI-MO/aimo-validation-aime", None, "train", {"id": "60", "answer": "025"}),
    ("aime24", "HuggingFaceH4/aime_2024", None, "train", {"id": "60", "answer": "204"}),
    ("minerva", "math-ai/minervamath", None, "test", {"id": "0", "answer": "7.5e-6"}),
    ("olympiadbench", "Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train", {"id": "2231", "answer": "\\frac{1}{2}"}),
])
def test_math_benchmark_field_maps(fake_hub, name, hub, config, split, expected):
    (rec,) = evaluate.load_problems(name)
    assert fake_hub == [(hub, config, split, None)]
    assert set(rec) == {"id", "problem", "answer"} and rec["problem"] == HUB_ROWS[name][0].get(
        "problem", HUB_ROWS[name][0].get("question"))
    assert {k: rec[k] for k in expected} == expected


def test_livecodebench_field_map_and_grading(fake_hub):
    stdin_rec, func_rec = evaluate.load_problems("livecodebench")
    ((path, _, _, files),) = fake_hub
    at = "hf://datasets/livecodebench/code_generation_lite@0fe84c3912ea0c4d4a78037083943e8f0c4dd505"  # pinned
    assert path == "json" and files == [f"{at}/test.jsonl", f"{at}/test2.jsonl"]
    assert stdin_rec["id"] == "abc001_a" and stdin_rec["answer"] == ""
    assert stdin_rec["tests"] == [{"input": "1 2\n", "output": "3\n"}, {"input": "5 7\n", "output": "12\n"}]
    assert "stdin" in stdin_rec["problem"] and "class Solution" in func_rec["problem"]
    good = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    assert grade(stdin_rec, good) and not grade(stdin_rec, good.replace("a + b", "a * b"))
    good = "```python\nclass Solution:\n    def twice(self, x):\n        return 2 * x\n```"
    assert grade(func_rec, good) and not grade(func_rec, good.replace("2 * x", "x + 3"))


def test_local_livecodebench_dump(tmp_path):
    path = _write_jsonl(tmp_path / "lcb.jsonl", HUB_ROWS["livecodebench"])
    stdin_rec, func_rec = evaluate.load_problems(path)
    assert stdin_rec["tests"][1] == {"input": "5 7\n", "output": "12\n"} and "Solution()" in func_rec["tests"]


def test_livecodebench_refuses_pickled_code(fake_hub):
    evil = base64.b64encode(zlib.compress(pickle.dumps(os.getcwd))).decode()  # a pickle that imports a function
    HUB_ROWS["livecodebench"].append(dict(HUB_ROWS["livecodebench"][0], private_test_cases=evil))
    try:
        with pytest.raises(InputError, match="row 2: unexpected layout"):
            evaluate.load_problems("livecodebench")
    finally:
        HUB_ROWS["livecodebench"].pop()


def test_hub_failure_is_one_line_input_error():
    # conftest sets HF_HUB_OFFLINE=1: the real download fails fast, as it would without network
    with pytest.raises(InputError) as err:
        evaluate.load_problems("olympiadbench")
    msg = str(err.value)
    assert msg.startswith("cannot download Hothan/OlympiadBench: no network? pass a local file") and "\n" not in msg


# ----------------------------------------------------------------------------------------------------------------
# prompts


def test_prompts_use_the_chat_template(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    text = evaluate.build_prompt(tok, {"problem": "What is 1+1?", "answer": "2"})
    assert text == ("<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}."
                    "<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n")
    code = evaluate.build_prompt(tok, {"problem": "Print 3.", "tests": "assert True"})
    assert code.startswith("<|im_start|>system\n" + evaluate.CODE_SYSTEM_PROMPT) and "Print 3." in code
    tok.chat_template = None  # a base-model tokenizer: plain text with the same instruction
    plain = evaluate.math_prompt(tok, "What is 1+1?")
    assert evaluate.MATH_SYSTEM_PROMPT in plain and "What is 1+1?" in plain and "<|im_start|>" not in plain


# ----------------------------------------------------------------------------------------------------------------
# CLI


def _write_jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def _cli(*files):
    return subprocess.run([sys.executable, os.path.join(HERE, "evaluate.py"), *files], capture_output=True,
                          text=True, timeout=120, cwd=HERE)


def test_cli_regrades_and_compares(tmp_path):
    greedy = _write_jsonl(tmp_path / "greedy.jsonl", [
        {"config": {"method": "greedy"}},
        {"id": "1", "problem": "p", "gold": "0.5", "response": boxed("\\frac12"), "correct": True, "tokens": 10,
         "entropy": 0.5},
        {"id": "2", "problem": "p", "gold": "3", "response": boxed("4"), "correct": True, "tokens": 20,
         "entropy": 0.25},  # stored verdict is wrong: the re-grade flips it
        "{not json",
        {"id": "4", "problem": "p"},  # no response
        {"id": "3", "problem": "p", "gold": 27.0, "response": boxed("27"), "correct": True, "tokens": 30},
    ])
    sampled = _write_jsonl(tmp_path / "sampled.jsonl", [
        {"id": "1", "gold": "2", "response": boxed("2"), "responses": [boxed("2"), boxed("3"), boxed("2")],
         "correct": True, "tokens": 7},
        {"id": "2", "gold": "5", "response": boxed("4"), "responses": [boxed("4"), boxed("1"), boxed("5"), "cut"],
         "correct": False, "tokens": 9},
    ])
    res = _cli(greedy, str(tmp_path / "missing.jsonl"), sampled)
    assert res.returncode == 0, res.stderr
    # one line per file: the first bad line, and how many more
    assert "greedy.jsonl:4: not valid JSON" in res.stderr and "(and 1 more bad lines); skipped" in res.stderr
    assert len([line for line in res.stderr.splitlines() if "greedy.jsonl" in line]) == 1
    assert "missing.jsonl: no such file" in res.stderr and "Traceback" not in res.stderr
    rows = [line for line in res.stdout.splitlines() if line.startswith("| /")]
    assert len(rows) == 2
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    # greedy: 2 of 3 correct, no samples, mean tokens 20, mean entropy of the two recorded, one flip
    assert cells[1:] == ["3", "66.7%", "-", "-", "20", "0.375", "1"]
    cells = [c.strip() for c in rows[1].strip("|").split("|")]
    # sampled: accuracy 1/2; pass@1 and pass@3 (k = the smallest n) from brute-force counts over subsets
    p1 = (_brute_pass(3, 2, 1) + _brute_pass(4, 1, 1)) / 2
    p3 = (_brute_pass(3, 2, 3) + _brute_pass(4, 1, 3)) / 2
    assert cells[1:] == ["2", "50.0%", f"{p1:.1%}", f"{p3:.1%} (k=3)", "8", "-", "0"]


def test_cli_code_results_and_nothing_gradable(tmp_path):
    code = _write_jsonl(tmp_path / "code.jsonl", [
        {"id": "a", "problem": "add", "gold": "", "tests": "assert add(1, 2) == 3",
         "response": "```python\ndef add(a, b):\n    return a + b\n```", "correct": True, "tokens": 5},
        {"id": "b", "problem": "echo", "gold": "", "tests": [{"input": "hi\n", "output": "hi\n"}],
         "response": "```python\nprint(input()[::-1])\n```", "correct": False, "tokens": 5},
    ])
    res = _cli(code)
    assert res.returncode == 0 and "| 2 | 50.0% |" in res.stdout
    empty = _write_jsonl(tmp_path / "empty.jsonl", ["{broken"])
    res = _cli(empty, str(tmp_path / "missing.jsonl"))
    assert res.returncode == 1 and "empty.jsonl:1: not valid JSON" in res.stderr and "nothing to grade" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 2 and "Traceback" not in res.stderr
