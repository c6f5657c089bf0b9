"""Tests for evaluate.py's SciCode support: the dataset layout, prompts against golden strings built here from
SciCode's template text, extraction, the given steps, targets read from an h5 written here with h5py, grading in
the sandbox (pass, fail, timeout, hostile programs), SciCode's comparison helpers, main-problem aggregation,
the data-folder checks and the CLI's re-grading. Offline: a hand-made SciCode-format file with three problems."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.sparse
import torch

import evaluate
from evaluate import InputError

HERE = os.path.dirname(os.path.abspath(__file__))

# SciCode's eval/data/multistep_template.txt, typed out here as the independent reference for the golden prompts
TEMPLATE_HEAD = ("PROBLEM DESCRIPTION:\nYou will be provided with problem steps along with background knowledge necessary "
                 "for solving the problem. Your task will be to develop a Python solution focused on the next step of "
                 "the problem-solving process.\n\nPROBLEM STEPS AND FUNCTION CODE:\nHere, you'll find the Python code "
                 "for the initial steps of the problem-solving process. This code is integral to building the "
                 "solution.\n\n")
TEMPLATE_NEXT = ("\n\nNEXT STEP - PROBLEM STEP AND FUNCTION HEADER:\nThis part will describe the next step in the "
                 "problem-solving process. A function header will be provided, and your task is to develop the Python "
                 "code for this next step based on the provided description and function header.\n\n")
TEMPLATE_DEPS = ("\n\nDEPENDENCIES:\nUse only the following dependencies in your solution. Do not include these "
                 "dependencies at the beginning of your code.\n\n")
TEMPLATE_TAIL = ("\n\nRESPONSE GUIDELINES:\nNow, based on the instructions and information provided above, write the "
                 "complete and executable Python program for the next step in a single block.\nYour response should "
                 "focus exclusively on implementing the solution for the next step, adhering closely to the specified "
                 "function header and the context provided by the initial steps.\nYour response should NOT include "
                 "the dependencies and functions of all previous steps. If your next step function calls functions "
                 "from previous steps, please make sure it uses the headers provided without modification.\nDO NOT "
                 "generate EXAMPLE USAGE OR TEST CODE in your response. Please make sure your response python code in "
                 "format of ```python```.")

ADD_HEADER = "def add(a, b):\n    '''Sum of a and b.'''"
BOUNDS_HEADER = "def bounds(x, pad):\n    '''(min - pad, max + pad) of x, through add.'''"
BLOCK_HEADER = "class Block:\n    def __init__(self, length):\n        '''\n        '''\n    def size(self):\n        '''\n        '''"
PROBLEMS = [
    {"problem_name": "vector tools", "problem_id": "1", "required_dependencies": "import numpy as np",
     "problem_description_main": "never shown", "sub_steps": [
         {"step_number": "1.1", "step_description_prompt": "Write add.", "step_background": "Background:\nSums {add}.",
          "function_header": ADD_HEADER, "return_line": "    return s",
          "test_cases": ["assert np.allclose(add(1, 2), target)", "assert np.allclose(add(np.array([1., 2.]), 1), target)"]},
         {"step_number": "1.2", "step_description_prompt": "Write bounds.", "step_background": "",
          "function_header": BOUNDS_HEADER, "return_line": "    return lo, hi",
          "test_cases": ["from scicode.compare.cmp import cmp_tuple_or_list\n"
                         "assert cmp_tuple_or_list(bounds(np.array([3., 1., 2.]), 0.5), target)"]}]},
    # like SciCode's 62: the first step is a given class
    {"problem_name": "blocks", "problem_id": "62", "required_dependencies": "import numpy as np", "sub_steps": [
        {"step_number": "62.1", "step_description_prompt": "The Block class.", "step_background": "",
         "function_header": BLOCK_HEADER, "return_line": None, "test_cases": []},
        {"step_number": "62.2", "step_description_prompt": "Grow a block.", "step_background": "Background:\nOne more.",
         "function_header": "def grow(block):\n    '''A Block one longer.'''", "return_line": "    return new",
         "test_cases": ["assert np.allclose(grow(Block(2)).size(), target)"]}]},
    # like SciCode's 2 and 28: simps in the dependencies, removed in SciPy 1.14
    {"problem_name": "area", "problem_id": "3", "required_dependencies": "import numpy as np\nfrom scipy.integrate import simps",
     "sub_steps": [
         {"step_number": "3.1", "step_description_prompt": "Integrate x^2.", "step_background": "",
          "function_header": "def area(n):\n    '''Integral of x^2 on [0, 1], n samples.'''", "return_line": "    return a",
          "test_cases": ["assert np.allclose(area(5), target)",
                         # SciPy < 1.11's rule for an even count: Simpson on 3 samples + the trapezoid on the last interval
                         "x = np.linspace(0, 1, 4)\nassert np.isclose(simps(x ** 2, x=x, even='first'), 8 / 81 + 13 / 54)"]}]},
]
GIVEN_62 = "class Block:\n    def __init__(self, length):\n        self.length = length\n\n    def size(self):\n        return 2 ** self.length\n"
CODES = {"1": ["def add(a, b):\n    s = a + b\n    return s\n",
               "def bounds(x, pad):\n    lo, hi = add(x.min(), -pad), add(x.max(), pad)\n    return lo, hi\n"],
         "62": [GIVEN_62, "def grow(block):\n    new = Block(block.length + 1)\n    return new\n"],
         "3": ["def area(n):\n    x = np.linspace(0, 1, n)\n    a = simps(x ** 2, x=x)\n    return a\n"]}


@pytest.fixture(scope="module")
def scicode(tmp_path_factory):
    """(problems file, data folder): the problems above, the given code of 62.1, targets in test_data.h5."""
    root = tmp_path_factory.mktemp("scicode")
    problems = root / "problems.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    data = root / "data"
    data.mkdir()
    (data / "62.1.txt").write_text(GIVEN_62)
    with h5py.File(data / "test_data.h5", "w") as f:
        f["1.1/test1/var1"] = 3.0
        f["1.1/test2/var1"] = np.array([2.0, 3.0])
        f["1.2/test1/var1"], f["1.2/test1/var2"] = 0.5, 3.5  # two variables: a tuple
        f["62.2/test1/var1"] = 8.0
        f["3.1/test1/var1"] = 1 / 3
        f["3.1/test2/var1"] = 0.0  # unused by its test (which has its own reference), but present as upstream
    return str(problems), str(data)


@pytest.fixture(scope="module")
def records(scicode):
    return {r["id"]: r for r in evaluate.load_problems(scicode[0])}


# ----------------------------------------------------------------------------------------------------------------
# dataset


def test_local_file_in_scicode_layout_gives_one_record_per_main_problem(records):
    assert list(records) == ["1", "62", "3"]
    rec = records["1"]
    assert {k: rec[k] for k in ("id", "problem", "answer", "grading", "required_dependencies")} == {
        "id": "1", "problem": "vector tools", "answer": "", "grading": "scicode",
        "required_dependencies": "import numpy as np"}
    assert [s["step_number"] for s in rec["sub_steps"]] == ["1.1", "1.2"]
    assert rec["sub_steps"][0]["test_cases"] == PROBLEMS[0]["sub_steps"][0]["test_cases"]
    assert records["62"]["sub_steps"][0]["return_line"] == ""  # SciCode's null for a given step
    assert [evaluate.scicode_is_given(s) for s in records["62"]["sub_steps"]] == [True, False]
    assert evaluate.BENCHMARKS["scicode"]["files"] == ["problems_test.jsonl"]
    assert evaluate.BENCHMARKS["scicode_dev"]["files"] == ["problems_dev.jsonl"]


@pytest.mark.parametrize("change, message", [
    (lambda p: p["sub_steps"][1].pop("function_header"), "sub_steps[1] has no function_header"),
    (lambda p: p.update(sub_steps=[]), "sub_steps must be a non-empty list"),
    (lambda p: p["sub_steps"][0].update(test_cases="assert True"), "test_cases must be a list of strings"),
    (lambda p: p.pop("problem_id"), "KeyError: 'problem_id'"),
])
def test_bad_scicode_layout_is_one_line(tmp_path, change, message):
    problem = json.loads(json.dumps(PROBLEMS[0]))
    change(problem)
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(problem) + "\n")
    with pytest.raises(InputError) as e:
        evaluate.load_problems(str(path))
    assert message in str(e.value) and "row 0: unexpected layout" in str(e.value) and "\n" not in str(e.value)


def test_scicode_records_refuse_the_single_prompt_and_single_response_paths(records):
    with pytest.raises(ValueError, match="scicode_step_prompt"):
        evaluate.build_prompt(None, records["1"])
    with pytest.raises(ValueError, match="grade_scicode"):
        evaluate.grade(records["1"], "```python\npass\n```")


# ----------------------------------------------------------------------------------------------------------------
# prompts


def test_golden_prompts_for_the_first_and_second_step(records):
    rec = records["1"]
    # k = 0: no earlier steps; the step's description + "\n" + background, then header and return line
    want0 = (TEMPLATE_HEAD + "" + TEMPLATE_NEXT + "Write add.\nBackground:\nSums {add}.\n\n" + ADD_HEADER + "\n\n"
             + "    return s" + TEMPLATE_DEPS + "import numpy as np" + TEMPLATE_TAIL)
    assert evaluate.scicode_prompt(rec, 0, []) == want0
    # k = 1: step 0's description and code before it (no "------" after the last one); empty background -> "\n"
    code0 = "def add(a, b):\n    return {'x': a}['x'] + b"  # braces in code must survive the template filling
    want1 = (TEMPLATE_HEAD + "Write add.\nBackground:\nSums {add}.\n\n" + code0 + TEMPLATE_NEXT + "Write bounds.\n"
             + "\n\n" + BOUNDS_HEADER + "\n\n" + "    return lo, hi" + TEMPLATE_DEPS + "import numpy as np" + TEMPLATE_TAIL)
    assert evaluate.scicode_prompt(rec, 1, [code0]) == want1
    assert evaluate.scicode_prompt(rec, 1, [code0, "later code is ignored"]) == want1
    # three steps: "------" separates the earlier steps
    rec3 = {**rec, "sub_steps": rec["sub_steps"] + [{**rec["sub_steps"][1], "step_number": "1.3"}]}
    assert ("Sums {add}.\n\nC0\n\n------\n\nWrite bounds.\n\n\nC1\n\nNEXT STEP"
            in evaluate.scicode_prompt(rec3, 2, ["C0", "C1"]))


def test_prompt_without_background_and_bad_calls(records):
    rec = records["1"]
    text = evaluate.scicode_prompt(rec, 1, ["C0"], with_background=False)
    assert text.startswith("PROBLEM DESCRIPTION:\nYou will be provided with the main description of the problem")
    assert "PREVIOUS STEPS DESCRIPTION:\nWrite add.\n\nC0\n\nNEXT STEP - PROBLEM DESCRIPTION AND FUNCTION HEADER:" in text
    assert "Background:" not in text.replace("starting with 'Background: '", "").replace("# Background: [", "")
    assert "beginning of your code.\nimport numpy as np\n\nRESPONSE GUIDELINES:" in text and text.endswith("```\n")
    with pytest.raises(ValueError, match="needs the code"):
        evaluate.scicode_prompt(rec, 1, [])
    with pytest.raises(ValueError, match="62.1 is given"):
        evaluate.scicode_prompt(records["62"], 0, [])


class ChatTokenizer:
    """Just enough of a tokenizer for the chat path: the messages, visibly framed."""
    chat_template = "given"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def test_step_prompt_chat_and_raw(records):
    user = evaluate.scicode_prompt(records["1"], 0, [])
    chat = evaluate.scicode_step_prompt(ChatTokenizer(), records["1"], 0, [])
    assert chat == f"<system>You are a helpful assistant.</system><user>{user}</user><assistant>"
    assert evaluate.scicode_step_prompt(ChatTokenizer(), records["1"], 0, [], prompt_format="raw") == user
    with pytest.raises(ValueError, match="chat, raw"):
        evaluate.scicode_step_prompt(ChatTokenizer(), records["1"], 0, [], prompt_format="plain")


# ----------------------------------------------------------------------------------------------------------------
# extraction and given code


@pytest.mark.parametrize("response, code", [
    # the FIRST ```python block, not the last
    ("Here:\n```python\ndef f():\n    return 1\n```\nand\n```python\ndef g():\n    return 2\n```", "\ndef f():\n    return 1\n"),
    # no ```python: the first bare block, its language tag kept (as upstream)
    ("```\nx = 1\n```\n```python\ny = 2\n```", "\ny = 2\n"),
    ("```py\nx = 1\n```", "py\nx = 1\n"),
    # an unclosed fence: everything after it
    ("```python\ndef f():\n    return 1", "\ndef f():\n    return 1"),
    # no fence: from the first def to the end of the stripped text; else all of it
    ("Sure.\ndef f(x):\n    return x\nDone.  \n", "def f(x):\n    return x\nDone."),
    ("x = 1", "x = 1"),
])
def test_extract_takes_the_first_fenced_block(response, code):
    assert evaluate.scicode_extract(response) == code


def test_extract_removes_import_lines_indented_ones_too():
    response = ("```python\nimport numpy as np\nfrom scipy.linalg import eigh\ndef f(x):\n    import math as m\n"
                "    from os import path\n    return m.sqrt(x)  # imported\n```")
    # each match also takes the whitespace before it (newlines too); the rest of the line stays
    assert evaluate.scicode_extract(response) == "\n\ndef f(x):\n\n\n    return m.sqrt(x)  # imported\n"


def test_given_code_whole_or_as_upstream_truncates_it(records, scicode):
    step = records["62"]["sub_steps"][0]
    assert evaluate.scicode_given_code(step, scicode[1]) == GIVEN_62
    # upstream: the header's first def is __init__, so only that method survives, unparsed, without its class
    assert evaluate.scicode_given_code(step, scicode[1], official=True) == "def __init__(self, length):\n    self.length = length"
    with pytest.raises(InputError, match="76.3.txt: missing"):
        evaluate.scicode_given_code({"step_number": "76.3", "function_header": "def f():"}, scicode[1])


# ----------------------------------------------------------------------------------------------------------------
# targets and the comparison helpers


def test_targets_follow_scicodes_h5_layout(tmp_path):
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        f["9.1/test1/var1"] = np.arange(3.0)
        f["9.1/test2/var1"] = "text"  # h5py stores str, returns bytes: decoded
        for name, value in [("var1", 1.0), ("var2", 2.0), ("var10", 10.0)]:
            f[f"9.1/test3/{name}"] = value
        f["9.1/test4/var1/list/a"], f["9.1/test4/var1/list/b"] = 1.0, np.array([2.0, 3.0])
        m = scipy.sparse.random(4, 5, density=0.4, format="csr", random_state=0)
        g = f.create_group("9.1/test5/var1/sparse_matrix")
        g["data"], g["indices"], g["indptr"], g["shape"] = m.data, m.indices, m.indptr, m.shape
        coo = m.tocoo()
        g = f.create_group("9.1/test6/var1/sparse_matrix")
        g["data"], g["row"], g["col"], g["shape"] = coo.data, coo.row, coo.col, coo.shape
        f["9.1/test7/var1/0.5"], f["9.1/test7/var1/name"], f["9.1/test7/var1/label"] = 1.5, 7, "s"
        g = f.create_group("9.1/test7/var1/mat/sparse_matrix")
        g["data"], g["indices"], g["indptr"], g["shape"] = m.data, m.indices, m.indptr, m.shape
    with h5py.File(path, "r") as f:
        got = evaluate._scicode_targets(h5py, f, "9.1", 7)
        missing = evaluate._scicode_targets(h5py, f, "9.1", 8)
    assert got["error"] is None and got["step"] == "9.1"
    t = got["targets"]
    assert np.array_equal(t[0], [0.0, 1.0, 2.0]) and t[1] == "text"
    assert t[2] == (1.0, 10.0, 2.0)  # several variables: a tuple in h5py's name order (var1, var10, var2)
    assert isinstance(t[3], list) and t[3][0] == 1.0 and np.array_equal(t[3][1], [2.0, 3.0])
    assert isinstance(t[4], scipy.sparse.csr_matrix) and np.array_equal(t[4].toarray(), m.toarray())
    assert isinstance(t[5], scipy.sparse.coo_matrix) and np.array_equal(t[5].toarray(), m.toarray())
    d = t[6]
    assert set(d) == {0.5, "name", "label", "mat"} and d[0.5] == 1.5 and d["label"] == "s"  # float keys where they parse
    assert np.array_equal(d["mat"].toarray(), m.toarray())
    # a test group the h5 lacks: the step's program raises it (the step fails), as upstream's test file does
    assert missing["targets"] is None and "9.1/test8" in missing["error"]


@pytest.fixture(scope="module")
def cmp():
    return evaluate.scicode_helpers({"step": "1.1", "targets": [], "error": None})["scicode.compare.cmp"]


def test_cmp_tuple_or_list_on_dicts_sparse_matrices_and_plain_values(cmp):
    import sympy

    a = scipy.sparse.csr_matrix(np.array([[0.0, 1.0], [2.0, 0.0]]))
    same, other = scipy.sparse.csr_matrix(a.toarray() + 1e-12), scipy.sparse.csr_matrix(a.toarray() * 2)
    f = cmp["cmp_tuple_or_list"]
    assert f((1.0, a, {"x": 1.0}), (1.0 + 1e-9, same, {"x": 1.0}))
    assert not f((1.0, a), (1.0, other))
    assert not f([1.0, 2.0], [1.0])  # lengths differ
    assert f([{"H": a, 0.5: np.ones(2)}], [{"H": same, 0.5: np.ones(2)}])  # sparse values inside a dict
    assert not f([{"H": a}], [{"H": other}])
    assert not f([{"x": 1.0}], [{"y": 1.0}])  # keys differ
    assert f([True, 2], [True, 2.0]) and not f([True], [False])
    with pytest.raises(TypeError):  # np.allclose raises TypeError on strings; only a ValueError falls back to ==
        f(["ab"], ["ab"])
    assert cmp["are_dicts_close"]({"s": "ab"}, {"s": "ab"}) and not cmp["are_dicts_close"]({"s": "ab"}, {"s": "ac"})
    x = sympy.Symbol("x")
    assert cmp["are_dicts_close"]({x: 1.0, "v": x}, {"x": 1.0 + 1e-9, "v": "x"})  # Symbols compare as their names
    assert not cmp["are_dicts_close"]({"a": 1.0}, {"a": 1.1})
    assert cmp["are_dicts_close"]({"a": 1.0}, {"a": 1.0 + 1e-6}) and not cmp["are_dicts_close"]({"a": 1.0}, {"a": 1.0 + 1e-4})


# ----------------------------------------------------------------------------------------------------------------
# grading in the sandbox


def test_step_program_is_the_step_file_plus_the_tests(records):
    program = evaluate.scicode_step_program(records["1"], 1, ["A", "B"])
    assert program == ("import numpy as np\nA\n\nB\n\nfrom scicode.parse.parse import process_hdf5_to_tuple\n\n"
                       "targets = process_hdf5_to_tuple('1.2', 1)\ntarget = targets[0]\n\n"
                       "from scicode.compare.cmp import cmp_tuple_or_list\n"
                       "assert cmp_tuple_or_list(bounds(np.array([3., 1., 2.]), 0.5), target)\n")


def test_grading_passes_correct_code_and_fails_wrong_code(records, scicode):
    data = scicode[1]
    assert evaluate.grade_scicode(records["1"], CODES["1"], data) == [True, True]
    wrong = [CODES["1"][0], CODES["1"][1].replace("-pad", "+pad")]
    assert evaluate.grade_scicode(records["1"], wrong, data) == [True, False]
    assert evaluate.grade_scicode(records["3"], CODES["3"], data) == [True]  # simps via the shim
    # the given class step: whole (ours) it passes; truncated to __init__ (upstream) Block is a NameError
    assert evaluate.grade_scicode(records["62"], CODES["62"], data) == [None, True]
    official = evaluate.scicode_given_code(records["62"]["sub_steps"][0], data, official=True)
    assert evaluate.grade_scicode(records["62"], [official, CODES["62"][1]], data) == [None, False]


def test_timeouts_and_hostile_programs_fail(records, scicode):
    rec, data = records["62"], scicode[1]

    def verdict(code, **kw):
        return evaluate.grade_scicode(rec, [GIVEN_62, code], data, **kw)[1]

    assert verdict("while True:\n    pass\n", timeout=1.5) is False
    early = "def grow(block):\n    return None\nraise SystemExit(0)\n"  # exits 0 before the tests run
    assert verdict(early) is False
    assert verdict(early, must_finish=False) is True  # upstream's plain exit-status rule passes it
    # reading the targets from disk: the header deleted their file before the program started
    assert verdict("import os\nassert not os.path.exists('scicode_targets.pkl')\n" + CODES["62"][1])
    # SIGKILL to its parent (the sandbox's PID 1, or the bootstrap without namespaces; os.kill is disabled, ctypes
    # is not) and then an early exit 0: either the kill worked (no exit status) or it did not (no marker): a fail
    hostile = "import ctypes, os, signal\nctypes.CDLL(None).kill(os.getppid(), signal.SIGKILL)\n" + early
    assert verdict(hostile) is False
    assert verdict("import os\nos.kill(os.getppid(), 9)\n" + CODES["62"][1]) is False  # the guard raises


# ----------------------------------------------------------------------------------------------------------------
# rows, aggregation, data checks, CLI


def _rows(records, data, wrong_bounds=False):
    rows = []
    for pid, rec in records.items():
        codes = list(CODES[pid])
        if wrong_bounds and pid == "1":
            codes[1] = codes[1].replace("-pad", "+pad")
        steps = [{"step_number": s["step_number"], "prompt": None if evaluate.scicode_is_given(s) else f"prompt {k}",
                  "response": None if evaluate.scicode_is_given(s) else f"```python\n{c}```", "code": c}
                 for k, (s, c) in enumerate(zip(rec["sub_steps"], codes))]
        rows.append({**evaluate.scicode_row(rec, steps, evaluate.grade_scicode(rec, codes, data)), "tokens": 10})
    return rows


def test_rows_and_main_problem_aggregation(records, scicode):
    rows = _rows(records, scicode[1], wrong_bounds=True)
    one, blocks, area = rows
    assert [s["correct"] for s in one["steps"]] == [True, False] and one["correct"] is False
    assert (one["sub_correct"], one["sub_total"]) == (1, 2)
    assert blocks["steps"][0] == {"step_number": "62.1", "prompt": None, "response": None, "code": GIVEN_62,
                                  "correct": None, "given": True, "test_cases": []}
    assert blocks["correct"] is True and (blocks["sub_correct"], blocks["sub_total"]) == (1, 1)  # given step not counted
    assert one["steps"][1]["test_cases"] == PROBLEMS[0]["sub_steps"][1]["test_cases"] and one["grading"] == "scicode"
    scores = evaluate.scicode_scores(rows)
    assert scores == {"problems": 3, "correct": 2, "accuracy": 2 / 3, "sub_correct": 3, "sub_total": 4,
                      "subproblem_accuracy": 3 / 4}
    assert evaluate.scicode_scores([{"correct": False, "sub_correct": 0, "sub_total": 0}])["subproblem_accuracy"] is None
    with pytest.raises(ValueError, match="verdict None for a tested step"):
        evaluate.scicode_row(records["1"], one["steps"], [True, None])


def test_missing_data_is_one_line_naming_the_file_and_where_to_get_it(records, scicode, tmp_path):
    def message(data_dir, recs=None):
        with pytest.raises(InputError) as e:
            evaluate.check_scicode_data(data_dir, recs)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "no such folder" in message(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    text = message(str(empty), list(records.values()))
    assert "missing test_data.h5" in text and "drive.google.com/drive/folders/1W5GZW6_bdiDAiipuFMqdUhvUaHIj6-pR" in text
    assert "62.1.txt" in text and "SciCode/tree/main/eval/data" in text and "13.6.txt" not in text
    (empty / "test_data.h5").write_text("not hdf5")
    assert "not a readable HDF5 file" in message(str(empty))
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "62.1.txt").write_text(GIVEN_62)
    with h5py.File(partial / "test_data.h5", "w") as f:
        f["1.1/test1/var1"] = 3.0
    assert "no targets for step 1.2" in message(str(partial), list(records.values()))
    evaluate.check_scicode_data(scicode[1], list(records.values()))  # the complete folder passes
    evaluate.check_scicode_data(str(partial))  # re-grading needs only the h5


def test_cli_regrades_a_results_file_from_its_saved_code(records, scicode, tmp_path):
    rows = _rows(records, scicode[1])
    # step 1.2's saved code made wrong after it was graded: stored as passing, re-graded as failing (one flip)
    rows[0]["steps"][1]["code"] = rows[0]["steps"][1]["code"].replace("-pad", "+pad")
    path = tmp_path / "scicode_results.jsonl"
    path.write_text(json.dumps({"config": {"dataset": "scicode"}}) + "\n" + "".join(json.dumps(r) + "\n" for r in rows))

    def cli(*args):
        return subprocess.run([sys.executable, os.path.join(HERE, "evaluate.py"), str(path), *args],
                              capture_output=True, text=True, timeout=120, cwd=HERE)

    res = cli("--scicode-data", scicode[1])
    assert res.returncode == 0, res.stderr
    line = next(line for line in res.stdout.splitlines() if line.startswith(f"| {path}"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:] == ["3", "66.7% (2/3)", "75.0% (3/4)", "10", "-", "1"]
    assert "subproblem_accuracy" in res.stdout
    res = cli()
    assert res.returncode == 1 and "pass --scicode-data DIR" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = cli("--scicode-data", str(tmp_path / "nowhere"))
    assert res.returncode == 2 and "no such folder" in res.stderr and "Traceback" not in res.stderr


# ----------------------------------------------------------------------------------------------------------------
# em_inf.py on SciCode: the real decode loop on the tiny model, with scripted responses
ANSWERS = {"Write add.": CODES["1"][0], "Write bounds.": CODES["1"][1], "Grow a block.": CODES["62"][1],
           "Integrate x^2.": CODES["3"][0]}


def scripted_responses(monkeypatch, tokenizer, answer_for):
    """em_inf.main's own engine (sample, continuous batching) with make_pick_next replaced by a script: the row of
    prompt i emits the tokens of answer_for(prompt i's text), then EOS. Returns the prompt texts of the latest run,
    in the order given."""
    import em_inf

    given, pos, real_sample = [], {}, em_inf.sample

    def spy_sample(model, tok, prompts, *args, **kwargs):
        given.clear()  # a new run: its prompt indices start again at 0
        pos.clear()

        def more(n):
            texts = prompts(n)
            given.extend(texts)
            return texts
        return real_sample(model, tok, more, *args, **kwargs)

    def make_pick_next(args, seen=None):
        def pick(z0, rows):
            out = []
            for i in rows.tolist():
                ids = tokenizer(answer_for(given[i]), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
                pos[i] = pos.get(i, -1) + 1
                out.append(ids[min(pos[i], len(ids) - 1)])
            return torch.tensor(out), {"entropy": torch.zeros(len(rows))}
        return pick

    monkeypatch.setattr(em_inf, "sample", spy_sample)
    monkeypatch.setattr(em_inf, "make_pick_next", make_pick_next)
    return given


def next_step(prompt):
    """The description of the step a prompt asks for (the text after NEXT STEP's heading)."""
    return next(d for d in ANSWERS if d in prompt.split("NEXT STEP - PROBLEM STEP AND FUNCTION HEADER:")[1])


def run_em_inf(capsys, argv):
    import em_inf

    capsys.readouterr()
    em_inf.main(argv)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return summary


def test_em_inf_decodes_step_after_step_with_the_previous_code_in_the_prompt(tiny_model, scicode, tmp_path,
                                                                             monkeypatch, capsys):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    def answer_for(prompt):
        return f"Here it is:\n```python\nimport numpy as np\n{ANSWERS[next_step(prompt)]}```\nDone."

    given = scripted_responses(monkeypatch, tok, answer_for)
    out = tmp_path / "sc.jsonl"
    summary = run_em_inf(capsys, ["--model", tiny_model, "--dataset", scicode[0], "--scicode-data", scicode[1],
                                  "--mode", "greedy", "--max-new-tokens", "200", "--batch-size", "2", "--out", str(out)])
    rows = {r["id"]: r for r in map(json.loads, open(out).read().splitlines()[1:])}
    # step 1.2's prompt holds step 1.1's extracted code (its import line removed); 62.2's holds the given class
    bounds = next(p for p in given if next_step(p) == "Write bounds.")
    assert CODES["1"][0].strip() in bounds and "import numpy" not in bounds.split("NEXT STEP")[0]
    assert GIVEN_62.strip() in next(p for p in given if next_step(p) == "Grow a block.")
    assert bounds.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    # the import line is removed, its newline stays (SciCode's re.sub)
    assert [s["code"] for s in rows["1"]["steps"]] == ["\n" + c for c in CODES["1"]] and rows["62"]["steps"][0]["given"]
    assert rows["1"]["steps"][1]["prompt"] == evaluate.scicode_prompt(records_of(scicode)["1"], 1,
                                                                      ["\n" + CODES["1"][0]])
    assert all(r["correct"] for r in rows.values()) and summary["accuracy"] == 1.0
    assert (summary["sub_correct"], summary["sub_total"], summary["subproblem_accuracy"]) == (4, 4, 1.0)
    assert len(given) == 4 and all(r["tokens"] > 0 and r["prompt_tokens"] > 0 for r in rows.values())


def records_of(scicode):
    return {r["id"]: r for r in evaluate.load_problems(scicode[0])}


def test_em_inf_scicode_resumes_mid_problem_and_fails_wrong_code(tiny_model, scicode, tmp_path, monkeypatch, capsys):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    asked, crash = {}, [True]  # prompt text -> its step, in the order first asked

    def answer_for(prompt):
        step = next_step(prompt)
        if step == "Write bounds." and crash[0]:
            raise KeyboardInterrupt  # interrupted while decoding problem 1's second step
        asked.setdefault(prompt, step)
        return f"```python\n{ANSWERS[step].replace('-pad', '+pad')}```"  # bounds is wrong now

    scripted_responses(monkeypatch, tok, answer_for)
    out = tmp_path / "sc.jsonl"
    argv = ["--model", tiny_model, "--dataset", scicode[0], "--scicode-data", scicode[1], "--mode", "greedy",
            "--max-new-tokens", "200", "--batch-size", "1", "--limit", "1", "--out", str(out)]
    with pytest.raises(KeyboardInterrupt):
        run_em_inf(capsys, argv)
    assert list(asked.values()) == ["Write add."]
    progress = [json.loads(line) for line in open(str(out) + ".progress")]
    assert [(p["progress"], p["stage"]) for p in progress] == [("1", 0)]
    crash[0] = False
    summary = run_em_inf(capsys, argv)
    assert list(asked.values()) == ["Write add.", "Write bounds."]  # step 1.1 was not decoded again
    [row] = map(json.loads, open(out).read().splitlines()[1:])
    assert [s["correct"] for s in row["steps"]] == [True, False] and row["correct"] is False
    assert summary["accuracy"] == 0.0 and (summary["sub_correct"], summary["sub_total"]) == (1, 2)
    assert not os.path.exists(str(out) + ".progress")


@pytest.mark.parametrize("extra, message", [([], "needs --scicode-data"),
                                            (["--scicode-data", "MISSING", "--mode", "self_consistency"], "not defined"),
                                            (["--scicode-data", "MISSING"], "MISSING")])
def test_em_inf_scicode_bad_settings_are_one_line_before_the_model_loads(scicode, extra, message):
    proc = subprocess.run([sys.executable, os.path.join(HERE, "em_inf.py"), "--model", "no/such-model", "--dataset",
                           scicode[0], *extra], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
