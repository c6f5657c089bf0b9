"""The shared grader: benchmarks, prompts, math and code grading, and a CLI that re-grades result files.

Every number the three method scripts report goes through this file, so a grader that is too lenient
(or too brittle) silently changes every comparison with the paper's tables.

Math: the answer is the content of the LAST complete `\\boxed{...}` of the response (paper Sec. 4: "put
your final answer within \\boxed{}"). It is compared with the gold answer by mathematical equivalence:
cheap exact/numeric checks first, then math-verify (LaTeX -> sympy; huggingface/Math-Verify) in a
separate worker process, behind a wrapper of ours that closes math-verify's known gaps.

Physics (UGPhysics, Table 3): the official prompt and the official rule-based judge (answer types, physical
constants, several answers, precision 1e-2), with one fix a switch undoes: judge="ours" compares the exponents of
numbers, judge="official" (the paper's) does not. Its section below lists the source and every deviation.

Code tests run by LiveCodeBench's protocol (sandbox.run_code). Call-based tests import the program as a module
and run in its namespace; a pass needs every test to have run (a random marker after the last one), so an early
sys.exit(0) fails. stdin/stdout programs run as scripts. Every program runs in sandbox.py's isolation (fresh
PID, network and mount namespaces under an unprivileged uid, with rlimits; its run_code docstring lists what is and
is not isolated, and the weaker fallback elsewhere).

The code benchmarks as the official evaluation runs them (github shivamag125/EM_PT, eval/Coding/leetcode and its
vendored lcb_runner; its system prompt is Eurus-2's, the base model of the paper's code rows):
  - leetcode: DeepSeek-Coder's 180 contest problems. Prompt: EURUS_SYSTEM_PROMPT, prompt_sft + EURUS_CODE_SUFFIX.
    Code: match_code, wrapped in `class Solution:` when it is missing (extract_leetcode_code). Pass: the import
    lines + code + the problem's 100 asserts run with no exception within 10 s in all (grade_leetcode).
  - livecodebench (prompt_style "official", the default): LiveCodeBench's question template + EURUS_CODE_SUFFIX
    under LCB_SYSTEM_PROMPT (the Eurus prompt with literal backslash-n, as the official file holds it); the code
    is match_code's; tests as run_code, 6 s per test. prompt_style "ours": CODE_SYSTEM_PROMPT, the last fenced
    block (extract_code), 10 s per run: what this file did before, kept for comparison.
  - chat-list prompts (Eurus-2-RL-Data's rows, the code training set eurus2_code): the messages go through the
    chat template as they are, with no system prompt or instruction added.
Differences from the official code are listed where they apply (build_prompt, grade_leetcode, grade).

Public functions, in file order:
    load_problems(name_or_path, split, limit, require_answer, prompt_style)
                                                benchmark name or local file -> records (its docstring lists them)
    render_chat(tokenizer, messages)            the one chat-template call (with tokenizer.chat_template_kwargs)
    chat_prompt(tokenizer, messages)            a chat-list prompt as the chat template renders it
    leetcode_prompt(tokenizer, problem), lcb_prompt(tokenizer, problem)   the official code prompts
    build_prompt(tokenizer, record)             the full prompt text of one record (chat list, code, math or plain)
    extract_boxed(text)                         the last complete \\boxed{...} of a response
    grade_math(response, gold)                  boxed answer vs gold by mathematical equivalence
    answers_equal(a, b)                         symmetric equivalence of two answers (self-consistency voting)
    ugphysics_prompt(record)                    UGPhysics's official instruction for one record (EN or ZH)
    ugphysics_answers(text)                     a response's (or gold's) final answers as UGPhysics's judge reads them
    grade_ugphysics(response, gold, judge, timeout)   UGPhysics's rule-based judge, "ours" or "official"
    extract_last_number(text), grade_last_number(response, gold)   GSM8K-style grading (the CPU demo)
    extract_code(text)                          the last fenced code block of a response (ours)
    match_code(text), extract_leetcode_code(text)   the official code extraction, and LeetCode's class wrapping
    leetcode_program(code, tests), grade_leetcode(response, tests, timeout)   one LeetCode check
    pass_at_k(n, c, k)                          the unbiased pass@k estimator
    grade(record, response, timeout, judge)     one response against its record: code, UGPhysics, last number, math
    grade_ugphysics(response, gold, judge)      the UGPhysics rule-based judge (judge ours / official)
    plot_runs(run_dirs, out), plot_results(files, out)   training curves, accuracy per results file
    summarize(path, scicode_data, scicode_timeout, judge)  a results file's accuracy and statistics (the CLI's rows)
  SciCode (its own section; one record per main problem, one prompt and one program per step):
    check_scicode_data(data_dir, records)       one-line InputError unless --scicode-data has what is needed
    scicode_is_given(step), scicode_given_code(step, data_dir, official)   the 3 given steps and their code
    scicode_prompt(problem, k, previous_codes, with_background)   SciCode's exact user text for step k (0-based)
    scicode_step_prompt(tokenizer, problem, k, previous_codes, with_background, prompt_format)   chat or raw
    scicode_extract(response)                   the first fenced block, import lines removed
    scicode_step_program(problem, k, codes)     step k's test program (dependencies, code of steps 0..k, tests)
    grade_scicode(problem, codes, data_dir, timeout, ...)   [True/False per step, None for given steps]
    scicode_row(record, steps, verdicts), scicode_scores(rows)   a results row; accuracy and subproblem_accuracy
    scicode_helpers(targets), scipy_simps()     SciCode's test helpers and scipy's simps, for the sandbox

SciCode (Tian et al. 2024; paper Table 3, with background): step k of a problem is prompted with the code of
steps 0..k-1 in SciCode's multistep template; its code is the response's first fenced block; its program
(dependencies + the code of steps 0..k + its test cases) runs in the sandbox with targets read from SciCode's
test_data.h5 and passes on exit status 0. The official code (shivamag125/EM_PT eval/SciCode, a fork of
scicode-bench/SciCode) has quirks that change the numbers; each, and what we do:
  1. Given class steps lose their class: for 13.6 and 62.1 gencode.py keeps only the first `__init__` of the given
     file (extract_function_name + ast.unparse), so Maxwell, Block and EnlargedBlock are missing from every later
     prompt and test program, and 13.8-13.14, 62.2, 62.4-62.6 fail with a NameError unless the model redefines
     the class (upstream SciCode too). Ours: the whole given file; scicode_given_code(official=True) reproduces it.
  2. Steps never scored: the 3 given steps (13.6, 62.1, 76.3) have no tests and count in neither number, so the
     test split is 65 main problems and 288 scored steps (EM_PT's test_generated_code.py, and the paper); a main
     problem is correct when all its scored steps pass. Same here (scicode_scores). inspect_ai's variant divides by
     291 and never credits problems 13, 62 and 76.
  3. The official EM-INF path used another prompt and sampler than its baselines: the raw template text without
     a chat template, at most 4096 new tokens, Qwen's top-k 20 / top-p 0.8 / repetition penalty 1.05 and T = 0.1
     (min_entropy.py); greedy, T = 0.1 and adaptive temperature got a chat endpoint with the system message "You
     are a helpful assistant." and no token cap. Ours: the same prompt and token cap for every mode
     (scicode_step_prompt: chat by default; prompt_format="raw" is the official EM-INF prompt).
  4. SciPy >= 1.14 has no scipy.integrate.simps, which problems 2 and 28 import, so their 4 steps fail at import
     (EM_PT's eval/requirements_prime.txt pins scipy 1.14.1). Ours: a program that mentions simps gets it back
     (scipy_simps: simpson, with simps's signature and its older `even` rules).
  5. A pass upstream is exit status 0 alone, so code that exits 0 before the tests passes; ours also needs the
     program to reach its last line (grade_scicode(must_finish=False) is upstream's rule). Per step: 300 s (EM_PT;
     upstream SciCode 1800 s) and 8 GB of address space (upstream: no limit; SCICODE_MEMORY_MB says why).

Deliberate differences from the graders people usually compare with: Qwen2.5-Math's `math_equal`
(evaluation/grader.py of QwenLM/Qwen2.5-Math, the harness Qwen2.5-Math results are usually reported
with) and plain math-verify 0.9.0:
  1. Only the last complete \\boxed{} counts. A box cut off by the token limit is no answer, and there is
     no fallback to "the answer is ..." or to the last number in the text.
  2. Numbers are equal when |a - b| <= 1e-6 AND |a - b| <= 1e-5 * max(|a|, |b|), if either is written as a
     decimal (0.333333, 1.5e-8). Qwen uses a relative tolerance of 1e-4 (so 1234.5 == 1234.6); math-verify
     rounds to 6 decimals (so 1e-7 == 2e-7). Exact numbers on both sides (integers, fractions, factorials,
     integer powers, up to MAX_EXACT_BITS) are compared exactly: math-verify has 1/2006! == 1/2004!.
  3. Percent: `28\\%` equals `28` and `0.28`. Qwen also accepts 100x the gold value, so 5 == 500.
  4. Brackets matter: Qwen strips them, so (1, 2] == [1, 2) and an ordered pair equals an unordered
     set; here intervals keep their bracket types and tuples keep their order.
  5. Scientific notation (`4.5e33`, `1e-5`) is read as a number; math-verify reads `e` as Euler's number.
  6. Gold answers may be int/float/str (`27.0`, AIME `025`, AMC floats): they are normalised first.
  7. No input can hang or crash the caller: math-verify's timeouts use signal.alarm (main thread only,
     and they cannot interrupt a long C-level computation); here a watchdog kills the worker process
     after GRADE_TIMEOUT seconds, from any thread. Any failure is a wrong answer, never an exception.
  8. Plain numbers, integer fractions and a\\times10^{b} are compared by exact arithmetic before sympy is
     involved (the same verdict, ~100x faster); answers over MAX_ANSWER_CHARS match only as identical text.
     Exact values are bounded before they are computed (2^{10^{10}} is left to math-verify and the watchdog).
  9. Every unescaped `$` is removed from gold answers (at load) and from both sides of a comparison, as Qwen's
     harness does: OlympiadBench golds hold `$69$,$84$` or ["$69$", "$84$"]. MATH's escaped `\\$18.90` stays
     (_drop_dollars). A .jsonl / .json saved with a UTF-8 byte-order mark reads like any other.

Usage (re-grade result files, one row per file; SciCode results also need SciCode's eval/data folder; --judge
official re-grades UGPhysics rows with the paper's judge):
    python evaluate.py runs/greedy.jsonl runs/em_inf.jsonl
    python evaluate.py results/scicode_em_inf.jsonl --scicode-data SciCode/eval/data
"""
import argparse
import ast
import atexit
import base64
import concurrent.futures
import contextlib
import decimal
import fractions
import functools
import hashlib
import importlib.util
import inspect
import io
import json
import math
import os
import pickle
import re
import resource
import select
import signal
import subprocess
import sys
import threading
import time
import zlib

from sandbox import run_code, run_program

MATH_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."  # paper Sec. 4
# ours, after LiveCodeBench's own generation prompt: complete program, one fenced block
CODE_SYSTEM_PROMPT = ("You are an expert Python programmer. You will be given a question (problem specification) "
                      "and will generate a correct Python program that matches the specification and passes all "
                      "tests. Put the complete program in a single ```python code block.")
# The code prompts of the official evaluation (EM_PT eval/Coding/leetcode/evaluate_leetcode.py and its vendored
# lcb_runner/prompts/code_generation.py): Eurus-2's action-centric system prompt (the Eurus-2-7B-SFT model card's
# "tailored prompt"), and PRIME's instruction after the problem. LeetCode gets the prompt as written here (one
# trailing newline; Eurus-2-RL-Data's own copy ends in two).
EURUS_SYSTEM_PROMPT = ("\nWhen tackling complex reasoning tasks, you have access to the following actions. Use them "
                       "as needed to progress through your thought process.\n\n[ASSESS]\n\n[ADVANCE]\n\n[VERIFY]\n\n"
                       "[SIMPLIFY]\n\n[SYNTHESIZE]\n\n[PIVOT]\n\n[OUTPUT]\n\nYou should strictly follow the format "
                       "below:\n\n[ACTION NAME]\n\n# Your action step 1\n\n# Your action step 2\n\n# Your action "
                       "step 3\n\n...\n\nNext action: [NEXT ACTION NAME]\n")
EURUS_CODE_SUFFIX = ("\n\nWrite Python code to solve the problem. Present the code in \n```python\nYour code\n```\n"
                     "at the end.")
# The official LiveCodeBench run reads its system prompt from eval/system_prompt_original.md, which holds the same
# text with every newline written as the two characters backslash and n (and no newline at the end): that string,
# not the one above, is what the model saw.
LCB_SYSTEM_PROMPT = EURUS_SYSTEM_PROMPT.replace("\n", "\\n")
# livecodebench prompt styles (load_problems(prompt_style=...)): "official" = the official evaluation's prompt,
# extraction and per-test time limit (the default); "ours" = CODE_SYSTEM_PROMPT, the last fenced block, 10 s
PROMPT_STYLES = ("official", "ours")

# a record's optional "grading" field: boxed (the default, paper Sec. 4) or last_number (GSM8K-style, for the
# CPU demo's small model; never the default for a benchmark); leetcode and livecodebench name the official code
# protocols (prompt, extraction and execution, see grade_leetcode and grade), which their loaders set
GRADINGS = ("boxed", "last_number", "leetcode", "livecodebench")
GRADE_TIMEOUT = 10.0  # seconds one math comparison may take before the watchdog kills the worker
MV_TIMEOUT = 3  # math-verify's own (signal.alarm, whole seconds) timeout inside the worker: cheap recovery
ABS_TOL, REL_TOL = 1e-6, 1e-5  # numeric equality: both must hold (difference 2 in the docstring)
# real final answers are short (a 10x10 matrix is ~600 characters); longer "answers" are degenerate text that
# would only burn math-verify timeouts: they match by exact string only
MAX_ANSWER_CHARS = 2000


class InputError(ValueError):
    """Bad user input (missing file, unknown benchmark, unusable fields): a one-line message, no traceback."""


# ----------------------------------------------------------------------------------------------------------------
# Datasets: one field map per benchmark to the common schema {id, problem, answer[, tests]}.
# Ids, configs, splits and field names were read from the dataset cards on the hub (see PAPER.md).

BENCHMARKS = {
    "math500": dict(hub="HuggingFaceH4/MATH-500", split="test", id="unique_id", problem="problem", answer="answer"),
    "amc": dict(hub="AI-MO/aimo-validation-amc", split="train", id="id", problem="problem", answer="answer"),
    "aime": dict(hub="AI-MO/aimo-validation-aime", split="train", id="id", problem="problem", answer="answer"),
    "aime24": dict(hub="HuggingFaceH4/aime_2024", split="train", id="id", problem="problem", answer="answer"),
    "minerva": dict(hub="math-ai/minervamath", split="test", id=None, problem="question", answer="answer"),
    "olympiadbench": dict(hub="Hothan/OlympiadBench", config="OE_TO_maths_en_COMP", split="train", id="id",
                          problem="question", answer="final_answer"),
    # release_v2 = the first two files of the repository (its old loading script: ALLOWED_FILES["release_v2"]);
    # reading the files directly does not depend on the repository's loading script or config names. The
    # revision is one that other projects pin to read these test*.jsonl files (later revisions add a parquet
    # conversion); it was not checked from here: huggingface_hub.list_repo_files(hub, repo_type="dataset",
    # revision=...) should list both files.
    "livecodebench": dict(hub="livecodebench/code_generation_lite", revision="0fe84c3912ea0c4d4a78037083943e8f0c4dd505",
                          files=["test.jsonl", "test2.jsonl"], split="test", id="question_id",
                          problem="question_content", answer=None, layout="livecodebench"),
    # DeepSeek-Coder's Evaluation/LeetCode/data/20240121-Jul.jsonl (MIT), byte-identical to the official
    # evaluation's eval/data/leetcode/leetcode-test.json: 180 problems of the contests 2023-07 ... 2024-01 (45 Easy,
    # 91 Medium, 44 Hard), 100 asserts each. The hub copy is a third party's and no revision of it could be pinned:
    # instead the downloaded file must have the git blob hash of DeepSeek-Coder's file (`git hash-object FILE`), or
    # loading stops. A local copy in this format (detected by its fields) is read as it is, unchecked.
    "leetcode": dict(hub="TechxGenus/LeetCode-Contest", file="20240121-Jul.jsonl",
                     blob="b96d75740ab2b9c681a34b0fb39595e6710104ec", split="test", id="task_id",
                     problem="prompt_sft", answer=None, layout="leetcode"),
    # Table 2's code training set: the rows of PRIME-RL/Eurus-2-RL-Data (MIT) with ability == "code" (the card says
    # 26,758 of 482,019 train rows; the paper says 25K, which a later "remove none ground truth" commit may
    # explain: count on load). The revision is one other projects pin for train.parquet, unchecked from here.
    # Training prompts only: no answers are graded here (require_answer=False); the training scripts drop
    # prompts over 1024 tokens, as the official pipeline (filter_overlong_prompts).
    "eurus2_code": dict(hub="PRIME-RL/Eurus-2-RL-Data", revision="9776b13264b5aaa0b16495fcf086a0a8d86fd655",
                        files=["train.parquet"], split="train", id=None, problem="prompt", answer=None,
                        layout="eurus", where=("ability", "code"), train_only=True),
    # SciCode (the SciCode section below): the hub repository's files as read_from_hf_dataset loads them; one record
    # per main problem, its steps in sub_steps
    "scicode": dict(hub="SciCode1/SciCode", files=["problems_test.jsonl"], split="test", id="problem_id",
                    problem="problem_name", answer=None, layout="scicode"),
    "scicode_dev": dict(hub="SciCode1/SciCode", files=["problems_dev.jsonl"], split="validation", id="problem_id",
                        problem="problem_name", answer=None, layout="scicode"),
    # both splits (en, zh) by default; other subjects and one language by name: load_problems, _load_ugphysics
    "ugphysics": dict(hub="UGPhysics/ugphysics", config="SemiconductorPhysics", split="en+zh", id="index",
                      problem="problem", answer="answers"),
}
# for local files: the first of these fields that a record has is used
PROBLEM_FIELDS = ("problem", "question", "prompt", "question_content")
ANSWER_FIELDS = ("answer", "gold", "final_answer", "expected_answer")


def _datasets():
    import datasets

    datasets.disable_progress_bars()
    return datasets


def _answer_to_str(gold):
    """Gold answers arrive as str, int, float (AMC: 142.0) or list (OlympiadBench final_answer): one string."""
    if gold is None or isinstance(gold, bool):
        return "" if gold is None else str(gold)
    if isinstance(gold, int):
        return str(gold)
    if isinstance(gold, float):
        if not math.isfinite(gold):
            return ""
        # 27.0 -> "27"; otherwise the shortest repr that round-trips (0.1 -> "0.1", 4.5e+33 stays scientific)
        return str(int(gold)) if gold.is_integer() and abs(gold) < 1e16 else repr(gold)
    if isinstance(gold, (list, tuple)):
        return ", ".join(_strip_math_delims(_answer_to_str(g)) for g in gold)
    return str(gold).strip()


def _lcb_tests(row):
    """LiveCodeBench tests -> ours: a list of {"input", "output"} (stdin/stdout) or assert-style Python code.

    public_test_cases is a JSON string; private_test_cases is JSON or base64(zlib(pickle(JSON string))).
    'functional' tests call a method of class Solution (LeetCode) named in metadata["func_name"], one JSON
    value per input line. As in LiveCodeBench, a tuple result equals the list the JSON gold gives (JSON has no
    tuples): the generated asserts pass the result through `_as_list` first. Hand-written assert tests keep
    Python's own `==` (a tuple is not a list), as human-eval and MBPP grade them.
    """
    cases = _decode_lcb_cases(row.get("public_test_cases")) + _decode_lcb_cases(row.get("private_test_cases"))
    if cases and all(c.get("testtype") == "functional" for c in cases):
        meta = row.get("metadata") or "{}"
        func = (json.loads(meta) if isinstance(meta, str) else meta)["func_name"]
        lines = ["import json as _json", "_solution = Solution()",
                 "def _as_list(result):", "    return list(result) if isinstance(result, tuple) else result"]
        for c in cases:
            args = f"*[_json.loads(_l) for _l in {c['input']!r}.split(chr(10))]"
            lines.append(f"assert _as_list(_solution.{func}({args})) == _json.loads({c['output']!r})")
        return "\n".join(lines) + "\n"
    return [{"input": c["input"], "output": c["output"]} for c in cases]


class _NoClassesUnpickler(pickle.Unpickler):
    # the private LiveCodeBench tests are a pickled str: allow plain data only, never import/call anything
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _decode_lcb_cases(value):
    if not value:
        return []
    if isinstance(value, list):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raw = zlib.decompress(base64.b64decode(value))
        return json.loads(_NoClassesUnpickler(io.BytesIO(raw)).load())


def _lcb_problem(row):
    """Our problem text for CODE_SYSTEM_PROMPT (prompt_style "ours"): the statement, plus the starter code or the
    stdin/stdout instruction."""
    text = row["question_content"].strip()
    if row.get("starter_code"):
        return (f"{text}\n\nYou will use the following starter code to write the solution to the problem:\n"
                f"```python\n{row['starter_code'].rstrip()}\n```")
    return (f"{text}\n\nRead the inputs from stdin, solve the problem and write the answer to stdout "
            f"(do not directly test on the sample inputs).")


# LiveCodeBench's instructions in its generic question template (lcb_runner/prompts/code_generation.py,
# PromptConstants), word for word: the missing comma after "stdin" is theirs
_LCB_WITH_STARTER = ("You will use the following starter code to write the solution to the problem and enclose your "
                     "code within delimiters.")
_LCB_WITHOUT_STARTER = ("Read the inputs from stdin solve the problem and write the answer to stdout (do not directly "
                        "test on the sample inputs). Enclose your code within delimiters as follows.")


def _lcb_question(row):
    """The official run's user text before EURUS_CODE_SUFFIX (prompt_style "official"): LiveCodeBench's generic
    question template (get_generic_question_template_answer), with the statement and starter code as stored."""
    if row.get("starter_code"):
        fmt = f"### Format: {_LCB_WITH_STARTER}\n```python\n{row['starter_code']}\n```\n\n"
    else:
        fmt = f"### Format: {_LCB_WITHOUT_STARTER}\n```python\n# YOUR CODE HERE\n```\n\n"
    return f"### Question:\n{row['question_content']}\n\n{fmt}### Answer: (use the provided format with backticks)\n\n"


def _messages(value):
    """A chat-list prompt -> (the messages as given, the last user message's content); ValueError if it is not one."""
    if not value or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                            for m in value):
        raise ValueError('a list prompt must be chat messages, each {"role": str, "content": str}')
    users = [m["content"] for m in value if m["role"] == "user"]
    if not users:
        raise ValueError("a chat-list prompt needs a user message")
    return [dict(m) for m in value], users[-1]


def _to_record(spec, row, index):
    """One dataset row -> {id, problem, answer[, tests, grading, messages, ...]} through a field map like
    BENCHMARKS[name] (its "layout" names the benchmarks with a row format of their own)."""
    if spec.get("layout") == "scicode":
        return _scicode_record(row)
    rid = row.get(spec["id"]) if spec.get("id") else None
    rec = {"id": str(rid if rid is not None else index)}
    layout = spec.get("layout")
    if layout == "livecodebench":
        if spec.get("prompt_style", "official") == "official":
            rec.update(problem=_lcb_question(row), answer="", tests=_lcb_tests(row), grading="livecodebench")
        else:
            rec.update(problem=_lcb_problem(row), answer="", tests=_lcb_tests(row))
        return rec
    if layout == "leetcode":  # the user text is prompt_sft as stored (it ends in the starter code's fence)
        if not isinstance(row["prompt_sft"], str) or not isinstance(row["test"], str):
            raise TypeError("prompt_sft and test must be strings")
        rec.update(problem=row["prompt_sft"], answer="", grading="leetcode", tests=row["test"],
                   difficulty=(row.get("meta") or {}).get("difficulty"))
        return rec
    if layout == "eurus":  # Eurus-2-RL-Data: a chat-list prompt; math rows' ground truth is their answer
        rec["messages"], rec["problem"] = _messages(row["prompt"])
        index_in_split = (row.get("extra_info") or {}).get("index")
        if index_in_split is not None:
            rec["id"] = f"{row.get('data_source')}/{index_in_split}"
        gold = (row.get("reward_model") or {}).get("ground_truth") if row.get("ability") == "math" else None
        rec.update(answer=_strip_math_delims(_answer_to_str(gold)), ability=row.get("ability"))
        return rec
    value = row[spec["problem"]]
    if isinstance(value, (list, tuple)):  # a chat-list prompt: kept as messages, never str(list)
        rec["messages"], rec["problem"] = _messages(list(value))
    else:
        rec["problem"] = str(value).strip()
    rec["answer"] = _clean_gold(row.get(spec["answer"])) if spec["answer"] else ""
    if row.get("tests"):
        rec["tests"] = row["tests"]
    if row.get("grading"):  # a record-level answer format (GRADINGS), e.g. the CPU demo's tasks
        if row["grading"] not in GRADINGS:
            raise ValueError(f"grading {row['grading']!r} is not one of {', '.join(GRADINGS)}")
        rec["grading"] = row["grading"]
    return rec


def _hub_file(repo, filename):
    """Local path of one file of a hub dataset repository (downloaded once, then from the cache)."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo, filename, repo_type="dataset")


def _git_blob_sha(path):
    """What `git hash-object FILE` prints: sha1 of "blob <size>\0" + the bytes."""
    with open(path, "rb") as f:
        data = f.read()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _where(rows, field, value, fields, source):
    """The rows (list of dicts or datasets.Dataset) whose top-level `field`, as a string, equals `value`."""
    if field not in fields:
        raise InputError(f"{source}: no field {field!r} to select rows by; it has: {', '.join(fields)}")
    if hasattr(rows, "filter"):
        kept = rows.filter(lambda column: [str(v) == value for v in column], input_columns=field, batched=True)
    else:
        kept = [r for r in rows if str(r.get(field)) == value]
    if len(kept) == 0:
        seen = sorted({str(v) for v in (rows[field] if hasattr(rows, "filter") else (r.get(field) for r in rows))})
        raise InputError(f"{source}: no row has {field} == {value!r} (it has: {', '.join(seen[:10])})")
    return kept


def _load_hub(name, split, limit, prompt_style):
    spec = dict(BENCHMARKS[name], prompt_style=prompt_style)
    split = split or spec["split"]
    try:
        if "blob" in spec:  # one file, checked by its content below
            path = _hub_file(spec["hub"], spec["file"])
        elif "files" in spec:
            at = f"@{spec['revision']}" if spec.get("revision") else ""
            files = [f"hf://datasets/{spec['hub']}{at}/{f}" for f in spec["files"]]
            rows = _datasets().load_dataset("parquet" if files[0].endswith(".parquet") else "json", data_files=files,
                                            split="train")
        else:
            rows = _datasets().load_dataset(spec["hub"], spec.get("config"), split=split)
    except Exception as e:  # offline, hub down, renamed: one line, never a traceback
        raise InputError(f"cannot download {spec['hub']}: no network? pass a local file "
                         f"({type(e).__name__})") from None
    if "blob" in spec:
        blob = _git_blob_sha(path)
        if blob != spec["blob"]:
            raise InputError(f"{spec['hub']} {spec['file']} has git blob {blob}, not {spec['blob']} (the file the "
                             f"paper used): the hub copy changed; pass a local copy of the right file instead")
        rows = _read_json_records(path)
    fields = (list(rows.column_names) if hasattr(rows, "column_names")
              else list(dict.fromkeys(k for r in rows for k in r)))
    if spec.get("where"):
        rows = _where(rows, *spec["where"], fields, spec["hub"])
    return _map_rows(spec, rows, fields, limit, spec["hub"])


def _map_rows(spec, rows, fields, limit, source):
    """Apply a field map to the first `limit` rows (dicts); a row that does not fit is a one-line InputError."""
    if limit is not None:  # a hub Dataset selects, a list of records slices
        rows = rows.select(range(min(limit, len(rows)))) if hasattr(rows, "select") else rows[:limit]
    out = []
    try:
        for i, row in enumerate(rows):
            rec = _to_record(spec, dict(row), i)
            if spec.get("answer") is None and row.get("solution") and not rec.get("tests"):
                rec["answer"] = extract_boxed(row["solution"]) or ""  # MATH-style files: gold = boxed solution
            out.append(rec)
    except (KeyError, TypeError, ValueError, pickle.UnpicklingError, zlib.error) as e:  # e.g. the hub copy changed
        raise InputError(f"{source}: row {i}: unexpected layout ({type(e).__name__}: {e}); it has: "
                         f"{', '.join(fields)}") from None
    return out


def _read_json_records(path):
    """Records of a .jsonl (one JSON object per line) or .json (a list of objects, or JSON lines) file.

    Read with the json module, not `datasets`, so that a broken line is named by its number (and no library
    log line is printed before the error)."""
    # utf-8-sig: a file saved with a byte-order mark (Windows editors, Excel, PowerShell) reads like any other
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        text = f.read()
    if path.lower().endswith(".json") and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}): fix the file") from None
    else:
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.lstrip("\ufeff")  # files joined with `cat` keep each one's byte-order mark
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg}): fix or delete that line, "
                                     f"one JSON object per line") from None
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise InputError(f"{path}: record {bad + 1} is a {type(records[bad]).__name__}, not a JSON object "
                         f"like {{\"problem\": ..., \"answer\": ...}}")
    return records


def _load_local(path, limit, require_answer, where=None, prompt_style="official", judge="ours"):
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file (named benchmarks: {', '.join(BENCHMARKS)})")
    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(os.path.splitext(path)[1].lower())
    if builder is None:
        raise InputError(f"{path}: unsupported file type (use .jsonl, .json or .parquet)")
    if builder == "json":
        rows = _read_json_records(path)
        fields = list(dict.fromkeys(k for r in rows for k in r))  # every field any record has, in order
    else:
        try:
            rows = _datasets().load_dataset(builder, data_files=os.path.abspath(path), split="train")
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise InputError(f"{path}: cannot read it: {msg}") from None
        fields = list(rows.column_names)
    if len(rows) == 0:
        raise InputError(f"{path}: the file holds no records: one JSON object per line, e.g. "
                         f'{{"problem": "What is 2 + 3?", "answer": "5"}}')
    if where:
        rows = _where(rows, *where, fields, path)
    # formats with a layout of their own, recognised by their fields
    if "answers" in fields and "answer_type" in fields:  # a UGPhysics file (UGPHYSICS_FIELDS)
        return _ugphysics_records(rows, limit, judge, path)
    if "question_content" in fields and "public_test_cases" in fields:  # a LiveCodeBench dump
        spec = dict(BENCHMARKS["livecodebench"], prompt_style=prompt_style)
    elif {"task_id", "prompt_sft", "test"} <= set(fields):  # DeepSeek-Coder's LeetCode contest file
        spec = dict(BENCHMARKS["leetcode"])
    elif {"ability", "prompt"} <= set(fields) and isinstance(rows[0]["prompt"], list):  # Eurus-2-RL-Data
        spec = dict(id=None, problem="prompt", answer=None, layout="eurus")
    elif "sub_steps" in fields:  # SciCode's layout (problems_test.jsonl and the like)
        spec = dict(BENCHMARKS["scicode"])
    else:
        problem = next((f for f in PROBLEM_FIELDS if f in fields), None)
        answer = next((f for f in ANSWER_FIELDS if f in fields), None)
        unlabeled = answer is None and "tests" not in fields and "solution" not in fields
        if problem is None or (require_answer and unlabeled):
            raise InputError(f"{path}: needs a problem field ({'/'.join(PROBLEM_FIELDS)}) and an answer field "
                             f"({'/'.join(ANSWER_FIELDS)}) or tests; it has: {', '.join(fields) or 'none'}")
        spec = dict(id=next((f for f in ("id", "unique_id", "question_id") if f in fields), None),
                    problem=problem, answer=answer)
    records = _map_rows(spec, rows, fields, limit, path)
    unanswered = sum(not r["answer"] for r in records) if spec.get("layout") == "eurus" else 0
    if require_answer and unanswered:
        raise InputError(f"{path}: {unanswered} of {len(records)} rows have no answer graded here (Eurus-2 code rows "
                         f"are training prompts): train on them, or evaluate the math rows ({path}:ability=math)")
    return records


# a local file's rows selected by one top-level field: "train.parquet:ability=code"
_WHERE = re.compile(r"(.+):(\w+)=([^=:]*)")


def load_problems(name_or_path, split=None, limit=None, require_answer=True, prompt_style="official", judge="ours"):
    """Problems as [{"id": str, "problem": str, "answer": str, ...}] from a benchmark name or a local file.

    Named (hub, see BENCHMARKS): math500, amc, aime, aime24, minerva, olympiadbench, livecodebench, leetcode,
    scicode, scicode_dev, and eurus2_code (training prompts only: Eurus-2-RL-Data's train rows with ability ==
    "code").
    Otherwise a local .jsonl / .json / .parquet file; `PATH:FIELD=VALUE` keeps only its rows whose top-level
    FIELD equals VALUE as a string (a local copy of Eurus-2-RL-Data's code rows: `train.parquet:ability=code`).
    `split` only applies to hub datasets. `limit` keeps the first rows (after the selection).

    Records by format (local files are recognised by their fields):
      - math (problem/question + answer/...): {id, problem, answer};
      - chat-list prompts (a problem field holding [{"role", "content"}, ...]): also {messages}; `problem` is the
        last user message, for display; build_prompt renders the messages with the chat template as they are;
      - LiveCodeBench (question_content, public_test_cases, ...): {id, problem, answer: "", tests[, grading]};
      - LeetCode (task_id, prompt_sft, test, meta): {id: task_id, problem: prompt_sft, answer: "",
        grading: "leetcode", tests: the row's assert program, difficulty: meta["difficulty"]};
      - Eurus-2-RL-Data (data_source, prompt (chat list), ability, reward_model, extra_info): {id:
        "<data_source>/<extra_info.index>", problem, messages, answer (math rows: reward_model.ground_truth;
        code rows: ""), ability};
      - SciCode (sub_steps): one record per main problem, {id, problem, answer "", grading "scicode", sub_steps,
        required_dependencies} (the SciCode section).
    prompt_style (livecodebench only): "official" (the default) = the official evaluation's protocol, grading
    "livecodebench": LiveCodeBench's question template + EURUS_CODE_SUFFIX under LCB_SYSTEM_PROMPT, its code
    extraction (match_code) and 6 s per test; "ours" = CODE_SYSTEM_PROMPT, the last fenced block, 10 s.
    require_answer=False accepts a file of unlabeled prompts (EM-FT / EM-RL training data: only the
    prompt is used); its records get answer "". With True, eurus2_code and Eurus code rows are refused.

    """
    if limit is not None and limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    if prompt_style not in PROMPT_STYLES:
        raise InputError(f"prompt style {prompt_style!r} is not one of {', '.join(PROMPT_STYLES)}")
    if judge not in JUDGES:
        raise InputError(f"judge {judge!r} is not one of {', '.join(JUDGES)}")
    if str(name_or_path).split(":")[0] == "ugphysics":
        return _load_ugphysics(str(name_or_path), split, limit, judge)
    if name_or_path in BENCHMARKS:
        if require_answer and BENCHMARKS[name_or_path].get("train_only"):
            raise InputError(f"{name_or_path} holds training prompts only (no answers are graded here): train on it "
                             f"with em_ft.py or em_rl.py")
        return _load_hub(name_or_path, split, limit, prompt_style)
    path, where = str(name_or_path), None
    selection = _WHERE.fullmatch(path)
    if selection and not os.path.exists(path):
        path, where = selection.group(1), (selection.group(2), selection.group(3))
    return _load_local(path, limit, require_answer, where, prompt_style, judge)


# ----------------------------------------------------------------------------------------------------------------
# Prompts


def render_chat(tokenizer, messages):
    """The chat template with the generation prompt, as text: every chat prompt of the three scripts comes from here.

    Extra template variables come from the tokenizer itself, tokenizer.chat_template_kwargs (a dict), which
    em_inf.load_model sets from --chat-template-kwargs (e.g. {"enable_thinking": false} for Qwen3's template): the
    prompt functions below and their callers take (tokenizer, record) and need no argument of their own for it."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         **(getattr(tokenizer, "chat_template_kwargs", None) or {}))


def _chat(tokenizer, system, user):
    """Chat template with a system message and the generation prompt; plain text for base tokenizers."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        try:
            return render_chat(tokenizer, messages)
        except Exception:  # some templates (e.g. Gemma) reject a system role: fold it into the user turn
            messages = [{"role": "user", "content": f"{system}\n\n{user}"}]
            return render_chat(tokenizer, messages)
    # no chat template (a base model): the same instruction as plain text the model can continue
    return f"{system}\n\nQuestion: {user}\n\nAnswer:"


def math_prompt(tokenizer, problem):
    return _chat(tokenizer, MATH_SYSTEM_PROMPT, problem)


def code_prompt(tokenizer, problem):
    return _chat(tokenizer, CODE_SYSTEM_PROMPT, problem)


def plain_prompt(tokenizer, problem):
    """The problem as the only user message, with the model's own default system prompt: for records with
    grading "last_number" (a small model that never writes \\boxed{} still states its answer last)."""
    if getattr(tokenizer, "chat_template", None):
        return render_chat(tokenizer, [{"role": "user", "content": problem}])
    return f"Question: {problem}\n\nAnswer:"


def chat_prompt(tokenizer, messages):
    """A chat-list prompt exactly as the chat template renders it, with the generation prompt: no system prompt or
    instruction added (Eurus-2-RL-Data's rows carry their own; the official pipeline applies the template as is)."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("chat-list prompts need a tokenizer with a chat template; this one has none")
    try:
        return render_chat(tokenizer, messages)
    except Exception as e:  # e.g. a template that rejects the system role
        raise InputError(f"the chat template cannot render these messages: {str(e).splitlines()[0][:200]}") from None


def leetcode_prompt(tokenizer, problem):
    """The official LeetCode prompt (EM_PT evaluate_leetcode.py, make_conv_hf): Eurus-2's system prompt, and
    prompt_sft + EURUS_CODE_SUFFIX as the user turn."""
    return _chat(tokenizer, EURUS_SYSTEM_PROMPT, problem + EURUS_CODE_SUFFIX)


def lcb_prompt(tokenizer, problem):
    """The official LiveCodeBench prompt (EM_PT's lcb_runner, format_prompt_generation for Eurus-2-7B-SFT):
    LCB_SYSTEM_PROMPT (literal backslash-n), and LiveCodeBench's question template + EURUS_CODE_SUFFIX."""
    return _chat(tokenizer, LCB_SYSTEM_PROMPT, problem + EURUS_CODE_SUFFIX)


def build_prompt(tokenizer, record):
    """The full prompt text for one record:
      - chat-list records ("messages"): the messages through the chat template, as they are;
      - grading "leetcode" / "livecodebench": the official code prompts (leetcode_prompt, lcb_prompt);
      - other records with tests: our code prompt; grading "ugphysics": UGPhysics's official prompt;
        grading "last_number": the plain prompt;
      - otherwise the math prompt (paper Sec. 4).
    Differences from the official code: its LiveCodeBench run renders every model's prompt with
    Qwen2.5-Math-7B-Instruct's chat template (hard-coded); here each model's own template is used. A template
    that rejects a system message gets it folded into the user turn, and a tokenizer without a template gets
    plain text (_chat): the official scripts would fail on both. SciCode records have one prompt per step
    (scicode_step_prompt), so they are refused here."""
    if record.get("grading") == "scicode":
        raise ValueError("a SciCode record has one prompt per step: "
                         "evaluate.scicode_step_prompt(tokenizer, record, k, codes)")
    if record.get("messages"):
        return chat_prompt(tokenizer, record["messages"])
    if record.get("grading") == "leetcode":
        return leetcode_prompt(tokenizer, record["problem"])
    if record.get("grading") == "livecodebench":
        return lcb_prompt(tokenizer, record["problem"])
    if record.get("tests"):
        return code_prompt(tokenizer, record["problem"])
    if record.get("grading") == "ugphysics":  # official generate_open.py: make_prompt(item) + "\n\n" + problem
        return _chat(tokenizer, UGPHYSICS_SYSTEM_PROMPT, ugphysics_prompt(record) + "\n\n" + record["problem"])
    if record.get("grading") == "last_number":
        return plain_prompt(tokenizer, record["problem"])
    return math_prompt(tokenizer, record["problem"])


# ----------------------------------------------------------------------------------------------------------------
# Math grading, step 1: the answer string

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def _matching_brace(text, start):
    """Index of the '}' closing the group that starts at text[start] (just after a '{'), or -1."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def extract_boxed(text):
    """Content of the last \\boxed{...} (or \\fbox{...}), nested braces handled; None if absent or cut off."""
    if not isinstance(text, str):
        return None
    starts = [m.end() for m in _BOX.finditer(text)]
    if not starts:
        return None
    # the LAST box decides: if the generation stopped inside it, the model gave no final answer
    end = _matching_brace(text, starts[-1])
    return (text[starts[-1]:end].strip() or None) if end >= 0 else None


_DELIMS = [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")]
_DOLLAR = re.compile(r"(?<!\\)\$")  # a math-mode $, not an escaped \$ (MATH's dollar amounts: \$18.90)


def _drop_dollars(s):
    """Every unescaped $ removed, as the Qwen2.5-Math harness does (strip_string): OlympiadBench golds such as
    "$69$,$84$" or ["$69$", "$84$"] have $ inside, not only around. Applied to every gold answer when a dataset
    loads and to both sides of every math comparison (_clean); UGPhysics's judge removes them itself."""
    return _DOLLAR.sub("", s)


def _clean_gold(gold):
    """A dataset's gold answer (str, number or list) as the record's answer string: one string, no $."""
    return _strip_math_delims(_drop_dollars(_answer_to_str(gold)))


def _strip_math_delims(s):
    """'$\\frac12$' -> '\\frac12': dataset golds (OlympiadBench) and model answers are often wrapped."""
    s = s.strip()
    changed = True
    while changed:
        changed = False
        for left, right in _DELIMS:
            if len(s) > len(left) + len(right) - 1 and s.startswith(left) and s.endswith(right):
                s, changed = s[len(left):len(s) - len(right)].strip(), True
        box = _BOX.match(s)
        if box and _matching_brace(s, box.end()) == len(s) - 1:  # the whole answer is one \\boxed{...}
            s, changed = s[box.end():-1].strip(), True
    return s


_TEXT_WRAP = re.compile(r"^\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}$")
_CHOICE = re.compile(r"^\(?([A-E])\)?$")


def _clean(ans):
    """Normalisation that never changes a mathematical value: delimiters, a whole-answer \\text{}, trailing
    period, (C) -> C."""
    s = _strip_math_delims(_drop_dollars(ans))
    m = _TEXT_WRAP.match(s)
    if m:
        s = m.group(1).strip()
    s = s.rstrip(".").strip()
    m = _CHOICE.match(s)
    return m.group(1) if m else s


# ----------------------------------------------------------------------------------------------------------------
# Math grading, step 2: fast exact and numeric checks (no sympy: most answers are plain numbers or
# fractions, and exact arithmetic decides them in microseconds)

_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:(?:\{,\}|,|\\,|\\!|\s)\d{3})+(?:\.\d+)?$")  # 14{,}916  10\,000  1,234
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")  # 27  27.0  025  .5  1e-5  4.5E+33
_FRAC = re.compile(r"^(-?)\\[dtc]?frac(?:\{(-?\d+)\}|(\d))(?:\{(\d+)\}|(\d))$")  # \frac{1}{2}  \dfrac12  -\frac{3}{4}
_SLASH = re.compile(r"^([+-]?\d+)\s*/\s*(\d+)$")  # 3/4
_TIMES_TEN = re.compile(r"^(?:([+-]?(?:\d+\.?\d*|\.\d+))\s*(?:\\times|\\cdot)\s*)?10\^(?:\{([+-]?\d+)\}|(\d))$")
_MAX_DIGITS = 400  # longer numbers / exponents go to math-verify (under the watchdog), not to exact arithmetic here


def _as_number(s):
    """A plain number as a Fraction when it is exact (integer, integer fraction, integer \\times 10^{b}) or as a
    Decimal when it is written with a decimal point or an exponent (27.0, 1e-5: a measured value, compared with
    the float tolerance); None for anything else (that goes to math-verify)."""
    if len(s) > _MAX_DIGITS:
        return None
    if _THOUSANDS.match(s):
        s = re.sub(r"\{,\}|,|\\,|\\!|\s", "", s)
    if _NUMBER.match(s):
        if not re.search(r"[.eE]", s):
            return fractions.Fraction(int(s))
        d = decimal.Decimal(s)
        return d if abs(d.adjusted()) <= _MAX_DIGITS else None
    m = _FRAC.match(s) or _SLASH.match(s)
    if m:
        parts = [g for g in m.groups()[1:] if g] if m.re is _FRAC else list(m.groups())
        value = fractions.Fraction(int(parts[0]), int(parts[1])) if int(parts[1]) else None
        return -value if value is not None and m.re is _FRAC and m.group(1) else value
    m = _TIMES_TEN.match(s)
    if m:
        mantissa, exp = m.group(1) or "1", int(m.group(2) or m.group(3))
        if abs(exp) > _MAX_DIGITS:
            return None
        if "." in mantissa:
            return decimal.Decimal(f"{mantissa}e{exp}")
        return fractions.Fraction(int(mantissa)) * fractions.Fraction(10) ** exp
    return None


def _numbers_close(a, b):
    """Two exact numbers (Fractions): equal or not, exactly. Otherwise (a Decimal or a float on either side):
    |a - b| <= ABS_TOL and <= REL_TOL * max(|a|, |b|), computed exactly.

    Raises decimal.InvalidOperation for NaN (callers treat any exception as "not equal")."""
    if isinstance(a, fractions.Fraction) and isinstance(b, fractions.Fraction):
        return a == b  # \frac{100000}{100001} != \frac{99999}{100000}, though within both tolerances
    with decimal.localcontext() as ctx:
        ctx.prec, ctx.Emax, ctx.Emin = 60, decimal.MAX_EMAX, decimal.MIN_EMIN

        def dec(x):  # 60 significant digits: far below both tolerances
            if isinstance(x, fractions.Fraction):
                return decimal.Decimal(x.numerator) / decimal.Decimal(x.denominator)
            return decimal.Decimal(x)

        a, b = dec(a), dec(b)
        if a == b:
            return True
        diff = abs(a - b)
        # absolute test = math-verify's 6-decimal rounding; the relative one keeps 1e-7 != 2e-7
        return diff <= decimal.Decimal(str(ABS_TOL)) and diff <= decimal.Decimal(str(REL_TOL)) * max(abs(a), abs(b))


_SCI = re.compile(r"(?<![\w.\\])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)(?![\w.])")


def _latex_ready(s):
    # 4.5e33 -> 4.5\times10^{33}: math-verify's LaTeX parser would read e as Euler's number (4.5*E*33)
    return _SCI.sub(lambda m: f"{m.group(1)}\\times10^{{{m.group(2)}}}", s)


# ----------------------------------------------------------------------------------------------------------------
# Math grading, step 3: math-verify in a worker process, with a watchdog
#
# Why a process: math-verify guards its sympy calls with signal.alarm, which (a) raises in any thread but
# the main one and (b) cannot interrupt one long C-level operation (a huge integer power). A worker that
# the parent kills after GRADE_TIMEOUT bounds every call, from any thread; the lock serialises callers.


def _mv_equal(gold, pred):
    """Worker side: does math-verify find pred equivalent to gold? (asymmetric: gold first, as math-verify asks)"""
    import sympy
    from math_verify import parse, verify

    g = parse("\\boxed{" + gold + "}", parsing_timeout=MV_TIMEOUT)
    p = parse("\\boxed{" + pred + "}", parsing_timeout=MV_TIMEOUT)
    if not g or not p:
        return False
    g0 = next((x for x in g if isinstance(x, sympy.Basic)), None)
    p0 = next((x for x in p if isinstance(x, sympy.Basic)), None)
    # exact numbers on both sides (integers, fractions, factorials, integer powers): equal or not, exactly, in
    # both directions; math-verify compares their floats, so 1/2006! == 1/2004!, and 2^{200} != its own digits.
    # A percent keeps math-verify's reading (28\\% may equal 28 or 0.28).
    exact = "%" not in gold + pred and g0 is not None and p0 is not None
    if exact and _exact_number(g0) is not None and _exact_number(p0) is not None:
        return _exact_number(g0) == _exact_number(p0)
    if not verify(g, p, timeout_seconds=MV_TIMEOUT):
        return False
    if exact and type(g0) is type(p0) and isinstance(g0, (sympy.FiniteSet, sympy.Tuple, sympy.Interval)):
        # sets, tuples, intervals of exact numbers: math-verify's True stands only if the numbers are exactly equal
        gx, px = [_exact_number(a) for a in g0.args], [_exact_number(a) for a in p0.args]
        if None not in gx + px and (sorted(gx) != sorted(px) if isinstance(g0, sympy.FiniteSet) else gx != px):
            return False
    # math-verify compares floats rounded to 6 decimals, so every number below 5e-7 would equal every other:
    # re-check plain numbers with our absolute AND relative tolerance
    if g0 is None or p0 is None or not (g0.has(sympy.Float) or p0.has(sympy.Float)):
        return True
    try:
        gv, pv = _sympy_value(g0), _sympy_value(p0)
    except (TypeError, ValueError, ArithmeticError, AttributeError):
        return True  # not a plain number after all (a set, a symbol...): math-verify's verdict stands
    return _numbers_close(gv[0], pv[0]) and _numbers_close(gv[1], pv[1])


MAX_EXACT_BITS = 1 << 17  # exact values up to ~40,000 digits (10000!, 2^{131072}); larger ones: math-verify's verdict


def _exact_number(x):
    """A sympy expression built only from integers, + - * /, integer powers and factorials of integers -> its exact
    value as a Fraction; None for anything else (a float, a symbol, a root, pi...) or anything over
    MAX_EXACT_BITS. The size of a power or a factorial is bounded BEFORE it is computed: 2^{10^{10}} is None at
    once, where evaluating it would hang the worker until the watchdog."""
    import sympy

    def fits(v):
        return v.numerator.bit_length() + v.denominator.bit_length() <= MAX_EXACT_BITS

    def value(e):
        if isinstance(e, sympy.Rational):  # Integer is a Rational
            return fractions.Fraction(int(e.p), int(e.q))
        if isinstance(e, (sympy.Add, sympy.Mul)):
            total = fractions.Fraction(0 if isinstance(e, sympy.Add) else 1)
            for arg in e.args:
                v = value(arg)
                total = total + v if isinstance(e, sympy.Add) else total * v
                if not fits(total):
                    raise OverflowError
            return total
        if isinstance(e, sympy.Pow) and isinstance(e.exp, sympy.Integer):
            base, k = value(e.base), int(e.exp)
            # |b^k| needs about |k| * bits(b) bits
            if abs(k) * max(base.numerator.bit_length(), base.denominator.bit_length()) > MAX_EXACT_BITS:
                raise OverflowError
            return base ** k
        if isinstance(e, sympy.factorial) and isinstance(e.args[0], sympy.Integer) and e.args[0] >= 0:
            n = int(e.args[0])
            if math.lgamma(n + 1) / math.log(2) > MAX_EXACT_BITS:  # log2(n!)
                raise OverflowError
            return fractions.Fraction(math.factorial(n))
        raise TypeError("not an exact number")

    try:
        return value(x)
    except (TypeError, OverflowError, ZeroDivisionError, ValueError):
        return None


def _sympy_value(x):
    """A numeric sympy expression -> (real, imag) as exact Decimals (30 digits; floats would lose 1e-400)."""
    import sympy

    v = sympy.N(x.doit(), 30)  # doit: math-verify keeps 28\% as an unevaluated 28*(1/100)
    if not v.is_number:
        raise ValueError("not a number")
    re_, im_ = v.as_real_imag()
    return decimal.Decimal(str(sympy.N(re_, 30))), decimal.Decimal(str(sympy.N(im_, 30)))


def _grader_worker_main():
    """Worker loop: one JSON request per stdin line -> '1' or '0' per line on the protocol pipe. A request is a
    math-verify comparison {gold, pred, symmetric} or a UGPhysics item {ugphysics: judge, gold: [...], pred: [...],
    precision}."""
    from math_verify.errors import TimeoutException

    proto = os.fdopen(os.dup(1), "w")  # the protocol keeps the real stdout ...
    os.dup2(2, 1)  # ... and anything a library prints goes to stderr, so it cannot corrupt the protocol
    with contextlib.suppress(ValueError, OSError):  # a pathological expression gets MemoryError, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its timeout warnings are expected here
    _mv_equal("1", "1")  # import and warm up sympy/antlr before saying ready
    proto.write("ready\n")
    proto.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            if "ugphysics" in req:  # the UGPhysics judge on normalised answer lists; its value is the judge
                ok = _ugp_match(req["gold"], req["pred"], req["ugphysics"] == "official", req["precision"])
            else:
                ok = _mv_equal(req["gold"], req["pred"]) or (req["symmetric"] and _mv_equal(req["pred"], req["gold"]))
        except (Exception, TimeoutException):
            ok = False
        proto.write("1\n" if ok else "0\n")
        proto.flush()


class GraderUnavailable(RuntimeError):
    """math-verify cannot run at all (not installed, broken install): an environment error, raised loudly
    instead of silently grading every LaTeX answer as wrong."""


class _Grader:
    """Parent side: owns the worker process, restarts it after a timeout or a crash."""

    def __init__(self):
        self.lock = threading.Lock()
        self.proc, self.pid, self.buf = None, None, b""

    def _start(self):
        import importlib.util

        if importlib.util.find_spec("math_verify") is None:
            raise GraderUnavailable("math-verify is not installed: pip install 'math-verify[antlr4_13_2]==0.9.0'")
        code = "import sys; sys.path.insert(0, sys.argv[1]); import evaluate; evaluate._grader_worker_main()"
        here = os.path.dirname(os.path.abspath(__file__))
        self.proc = subprocess.Popen([sys.executable, "-c", code, here], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.pid, self.buf = os.getpid(), b""
        if self._readline(120.0) != "ready":  # imports take ~1-2 s; a dead worker reads as ""
            self._kill()
            raise GraderUnavailable(f"the math-verify worker failed to start ({sys.executable} -c 'import "
                                    f"math_verify' should tell why)")

    def _kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdin.close()
            self.proc.stdout.close()
        self.proc = None

    def _readline(self, timeout):
        """One line from the worker within `timeout` seconds, '' on EOF, None on timeout."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return ""
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def equal(self, gold, pred, symmetric, timeout):
        return self.ask({"gold": gold, "pred": pred, "symmetric": symmetric}, timeout)

    def ask(self, request, timeout):
        """One request (see _grader_worker_main) -> True/False; False when the worker takes over `timeout`
        seconds (it is killed and restarted) or dies."""
        with self.lock:
            try:
                # a forked child (DataLoader worker...) must not share the parent's pipes
                if self.proc is None or self.proc.poll() is not None or self.pid != os.getpid():
                    self.proc = None if self.pid != os.getpid() else self.proc
                    self._kill()
                    self._start()
                msg = json.dumps(request) + "\n"
                self.proc.stdin.write(msg.encode())
                self.proc.stdin.flush()
                answer = self._readline(timeout)
            except (OSError, ValueError):  # broken pipe: the worker died under us
                answer = None
            if answer not in ("0", "1"):  # timeout or crash: the worker's state is unknown, replace it
                self._kill()
                return False
            return answer == "1"


_GRADER = _Grader()
atexit.register(lambda: _GRADER._kill())


_CACHE = {}  # (gold, pred, symmetric) -> verdict: voting and pass@k compare the same strings many times
_CACHE_SIZE = 1 << 16


def _equivalent(gold, pred, symmetric=False, timeout=None):
    """Two answer strings: exact match, numeric match, then math-verify under the watchdog.

    Never raises for any input (a malformed answer is a wrong answer); only GraderUnavailable escapes."""
    try:
        gold, pred = _clean(_answer_to_str(gold)), _clean(_answer_to_str(pred))
        if not gold or not pred:
            return False
        if gold == pred:
            return True
        g, p = _as_number(gold), _as_number(pred)
        if g is not None and p is not None:  # both plain numbers: decided here, exactly
            return _numbers_close(g, p)
        if max(len(gold), len(pred)) > MAX_ANSWER_CHARS:
            return False
    except Exception:
        return False
    key = (gold, pred, symmetric)
    if key not in _CACHE:
        verdict = _GRADER.equal(_latex_ready(gold), _latex_ready(pred), symmetric,
                                GRADE_TIMEOUT if timeout is None else timeout)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = verdict
    return _CACHE[key]


def grade_math(response, gold, timeout=None):
    """True when the last complete \\boxed{} of `response` is mathematically equal to `gold` (str/int/float)."""
    pred = extract_boxed(response)
    if pred is None:
        return False
    return _equivalent(gold, pred, timeout=timeout)


# GSM8K-style: the last number of the text, with optional sign, thousands commas and decimals ("1,234.5")
_LAST_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def extract_last_number(text):
    """The last number in `text` as a string without thousands commas ("... is 1,234." -> "1234"); None if none."""
    found = _LAST_NUMBER.findall(text) if isinstance(text, str) else []
    return found[-1].replace(",", "") if found else None


def grade_last_number(response, gold):
    """True when the last number of `response` equals `gold` (exact arithmetic, _numbers_close tolerances).

    NOT the paper's protocol (that is grade_math): a lenient rule for records that ask for it with
    grading "last_number", such as the CPU demo's arithmetic tasks for a model too small to use \\boxed{}."""
    pred = extract_last_number(response)
    return pred is not None and _equivalent(gold, pred)


def answers_equal(a, b, timeout=None):
    """Mathematical equivalence of two extracted answers (self-consistency voting): symmetric."""
    return _equivalent(a, b, symmetric=True, timeout=timeout)


# ----------------------------------------------------------------------------------------------------------------
# UGPhysics (Table 3's physics column): the dataset, its official prompt and its rule-based judge
#
# Source of the protocol: YangLabHKUST/UGPhysics@42b25f9 codes/utils.py (make_prompt, PHY_CONST) and
# codes/judge.py (Judger.auto_judge), the same in shivamag125/EM_PT@91cda30 eval/UGPhysics, which scored Table 3
# with precision 1e-2 and the LM judge off (../shared/benchmarks/leetcode-ugphysics-iterrefine-eurus.md, Sec. 2).
# Written here from that code's behaviour, step by step (1-5 below). Deviations, each with its reason:
#  U1. Numbers (NV): when the relative test fails, the official judge compares the "{:.2e}" mantissas within 0.1
#      and ignores the exponents (its exponent test is commented out), so 4.88e20 passes for 4.88e23. judge="ours"
#      (the default) keeps that test with the exponents compared; judge="official" reproduces the paper's judge.
#      This is the only difference between the two judges.
#  U2. LaTeX goes to sympy through latex2sympy2_extended (installed with math-verify), not sympy's parse_latex,
#      which needs antlr4 4.11 where this project pins 4.13.2 for math-verify. _ugp_parse makes it read as
#      parse_latex does: a backslash and all the letters after it are one token (the normalisation removes spaces,
#      so "\omega t" arrives as \omegat, one symbol), e and E are symbols (the elementary charge; latex2sympy2
#      reads Euler's number), symbols keep their case, \log is ln, 2\frac{1}{2} is a product, a prime after a
#      command is dropped and after a letter kept, math delimiters and intervals/sets/tuples do not parse.
#      Not mimicked: on malformed LaTeX parse_latex silently keeps the longest valid prefix, and the constants
#      removal often leaves malformed LaTeX (\frac{2m}{\hbar^2} -> \frac{2m}{^2}), so upstream compares prefixes
#      and accepts e.g. \frac{1.004}{2\pi^2}(...) for \frac{1}{2\pi^2}(...); here such an answer is wrong.
#      Measured against the official judge run under antlr4 4.11 on 2,147 (response, gold) pairs built from
#      UGPhysics golds (the Semiconductor Physics set, 300 problems of other subjects; the gold itself, numbers off
#      by 0.4% and 3%, a wrong exponent, another problem's gold, reordered or missing answers, dropped constants,
#      no box): judge="official" agrees on 2,129 (99.2%); in all 18 others upstream accepts by prefix reading.
#  U3. Time limits: the official 5 s per answer type (signal.alarm) is kept, inside the grader's worker process
#      (its main thread); the whole item has UGPHYSICS_TIMEOUT = 60 s (official: 600 s) from the watchdog, which
#      also stops what an alarm cannot (one long C-level computation). Over the limit is False, as upstream.
#  U4. Text that crashes the official normalisation (a \sqrt or \frac with nothing after it) is left as it is; the
#      exception would stop the official evaluation run.
# Kept as upstream, lenient or strict as it is: the constants removal (so an answer that drops a constant factor
# of PHY_CONST passes), EX compares only what follows the first `=`, MC letters are case-sensitive (golds are
# mostly lower case), several answers are paired greedily, and text after the last "therefore" decides.

UGPHYSICS_HUB = "UGPhysics/ugphysics"
UGPHYSICS_SUBJECTS = ("AtomicPhysics", "ClassicalElectromagnetism", "ClassicalMechanics", "Electrodynamics",
                      "GeometricalOptics", "QuantumMechanics", "Relativity", "SemiconductorPhysics",
                      "Solid-StatePhysics", "StatisticalMechanics", "TheoreticalMechanics", "Thermodynamics",
                      "WaveOptics")  # the hub's 13 configs; Table 3 uses SemiconductorPhysics
UGPHYSICS_LANGUAGES = ("en", "zh")  # the splits; the paper scores both (186 + 186)
# the fields of a UGPhysics row; a local file with `answers` and `answer_type` is read as UGPhysics
UGPHYSICS_FIELDS = ("index", "domain", "subject", "topic", "problem", "solution", "answers", "answer_type", "unit",
                    "is_multiple_answer", "language", "level")
_UGP_NEEDED = ("problem", "answers", "answer_type", "is_multiple_answer", "language", "subject")  # prompt + judge
UGPHYSICS_SYSTEM_PROMPT = "You are a helpful assistant."  # official generate_open.py
JUDGES = ("ours", "official")  # UGPhysics judges: difference U1 above
_JUDGE_NOTES = {"ours": "numbers compared with their exponents", "official": "the paper's: exponents ignored"}
UGPHYSICS_PRECISION = 1e-2  # relative precision (official eval.py default, used by the paper's run.sh)
UGPHYSICS_TIMEOUT = 60.0  # seconds per item, whole judge (U3)
UGPHYSICS_TYPE_TIMEOUT = 5  # seconds per answer type, as the official signal.alarm(5)


def _ugphysics_name(name, split):
    """'ugphysics[:SUBJECT][:en|zh]' (parts in any order, case-insensitive) -> (subject config, languages)."""
    subject, languages = None, None
    for part in name.split(":")[1:]:
        low = part.strip().lower()
        match = next((s for s in UGPHYSICS_SUBJECTS if s.lower() == low), None)
        if low in UGPHYSICS_LANGUAGES and languages is None:
            languages = (low,)
        elif match and subject is None:
            subject = match
        else:
            raise InputError(f"{name}: {part!r} is not a UGPhysics subject or language (or is given twice): use "
                             f"ugphysics[:SUBJECT][:en|zh], SUBJECT one of {', '.join(UGPHYSICS_SUBJECTS)}")
    if split is not None:  # load_problems(split=...): a language too
        if split not in UGPHYSICS_LANGUAGES or (languages and languages != (split,)):
            raise InputError(f"{name}: split {split!r} is not {' or '.join(UGPHYSICS_LANGUAGES)}, or contradicts "
                             f"the language in the name")
        languages = (split,)
    return subject or "SemiconductorPhysics", languages or UGPHYSICS_LANGUAGES


def _load_ugphysics(name, split, limit, judge):
    subject, languages = _ugphysics_name(name, split)
    rows = []
    for lang in languages:  # en first, then zh: the official order (generate_open.py reads en.jsonl, zh.jsonl)
        if limit is not None and len(rows) >= limit:
            break
        try:
            ds = _datasets().load_dataset(UGPHYSICS_HUB, subject, split=lang)
        except Exception as e:  # offline, hub down, renamed: one line, never a traceback
            raise InputError(f"cannot download {UGPHYSICS_HUB} ({subject}, {lang}): no network? pass a local file "
                             f"({type(e).__name__})") from None
        rows += [dict(r) for r in ds]
    return _ugphysics_records(rows, limit, judge, UGPHYSICS_HUB)


def _ugphysics_records(rows, limit, judge, source):
    """UGPhysics rows -> records: {id, problem, answer (the gold `answers` string), grading "ugphysics", judge,
    answer_type, is_multiple_answer, language, subject, unit, topic, level, index}."""
    rows = list(rows)[:limit] if limit is not None else list(rows)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    missing = [f for f in _UGP_NEEDED if f not in fields]
    if missing:
        raise InputError(f"{source}: a UGPhysics file needs {', '.join(_UGP_NEEDED)}; it lacks {', '.join(missing)}")
    out, seen = [], {}
    for i, row in enumerate(rows):
        try:
            lang = str(row["language"]).upper()
            if lang not in ("EN", "ZH"):
                raise ValueError(f"language {row['language']!r} is not EN or ZH")
            index = row.get("index", i)
            rec = {"id": f"{lang.lower()}-{index}", "problem": str(row["problem"]), "answer": str(row["answers"]),
                   "grading": "ugphysics", "judge": judge, "answer_type": str(row["answer_type"]),
                   "is_multiple_answer": bool(row["is_multiple_answer"]), "language": lang,
                   "subject": str(row["subject"])}
            rec.update({k: row.get(k) for k in ("unit", "topic", "level", "index") if k in row})
            ugphysics_prompt(rec)  # an unknown answer type fails here, before any decoding
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{source}: row {i + 1}: not a UGPhysics row ({type(e).__name__}: {e})") from None
        if rec["id"] in seen:  # results files are keyed by id (resume)
            raise InputError(f"{source}: rows {seen[rec['id']] + 1} and {i + 1} have the same language and index "
                             f"({rec['id']}): ids must be unique")
        seen[rec["id"]] = i
        out.append(rec)
    return out


# answer type -> its words in the prompt (English, Chinese), as in the official utils.py ("inteval" and
# "seperated" included); looked up by substring, in this order ("\\\nMC" is MC)
_UGP_TYPE_WORDS = {
    "IN": ("a range inteval", "区间"),
    "TF": ("either True or False", "是或否"),
    "EX": ("an expression", "表达式"),
    "EQ": ("an equation", "方程"),
    "MC": ("one option of a multiple choice question", "多项选择题的一个选项"),
    "NV": ("a numerical value without units", "数值"),
    "TUP": ("multiple numbers, seperated by comma, such as (x, y, z)", "由逗号隔开的若干元素的元组，比如 (x, y, z)"),
}


def _ugp_type_words(answer_type, zh):
    code = next((t for t in _UGP_TYPE_WORDS if t in answer_type), None)
    if code is None:
        raise ValueError(f"answer_type {answer_type!r} names none of {', '.join(_UGP_TYPE_WORDS)}")
    return _UGP_TYPE_WORDS[code][zh]


def ugphysics_prompt(record):
    """The official instruction that precedes the problem (make_prompt of UGPhysics codes/utils.py), in the record's
    language (EN/ZH), naming its answer type(s); the unit instruction is there whatever the record's unit."""
    zh = record["language"] == "ZH"
    multiple = bool(record["is_multiple_answer"])
    kinds = [_ugp_type_words(t, zh) for t in (record["answer_type"].split(",") if multiple else [record["answer_type"]])]
    subject = record["subject"]
    if zh:
        if not multiple:
            kind = f"，答案类型为{kinds[0]}"
        elif len(set(kinds)) == 1:
            kind = f"，题目有多个答案，答案类型均为{kinds[0]}"
        else:
            kind = f"，题目有多个答案，答案类型分别为{'、'.join(kinds)}"
        box = "\\boxed{用英文逗号连接的多个答案}" if multiple else "\\boxed{答案}"
        return (f"以下是大学物理的{subject}科目中的解答题{kind}。请根据题目的要求和所提供的信息计算得出答案。"
                f"解答过程和结果中使用的变量和公式请使用LaTeX格式表示。请在最后以“所以最终答案是{box}(单位)。”"
                f"显式给出结果。注意答案的单位不要放在\\boxed{{}}中。")
    if not multiple:
        kind = f"The answer of The problem should be {kinds[0]}. "
    elif len(set(kinds)) == 1:
        kind = f"The problem has multiple answers, each of them should be {kinds[0]}. "
    else:
        kind = f"The problem has multiple answers, with the answers in order being {', '.join(kinds)}. "
    box = "\\boxed{multiple answers connected with commas}" if multiple else "\\boxed{answer}"
    return (f"The following is an open-ended problem from {subject} of the undergraduate-level Physics. {kind}"
            f"Please calculate the answer according to the given requirements and the information provided. "
            f"Please use LaTeX format to represent the variables and formulas used in the solution process and "
            f"results. Please end your solution with \"So the final answer is {box}(unit).\" and give the result "
            f"explicitly, note that the unit of the answers should not be included in \\boxed{{}}.")


# ---- judge, step 1: the answer text of a response (or of the gold `answers`), official extract_ans with
# strict_extract=True: no guess from the last formula or number

_UGP_TRAILING = set("([{\\:./,#?$\"'ки")  # clean_trailing strips these characters from the end of the response


def _ugp_extract(text):
    s = str(text).strip()
    while s and s[-1] in _UGP_TRAILING:
        s = s[:-1].strip()
    if "herefore" in s:  # "Therefore ..." / "therefore ...": only the text after the last one counts
        s = s.split("herefore")[-1].strip()
    if "oxed{" in s:
        return _ugp_boxed(s)
    if "is the ans" in s or "is our ans" in s:  # "... 5 is the answer": the words before it, after the last , . !
        marker = "is the ans" if "is the ans" in s else "is our ans"
        s = re.split(r"(,|\.|!\|?)", s.split(marker)[-2].strip())[-1].strip()
    else:
        marker = next((m for m in ("answer is", "answer:", "answer :") if m in s), None)
        if marker is None:
            return ""
        s = s.split(marker)[-1].strip()
    return s[1:-1] if s.startswith("$") and s.endswith("$") else s


def _ugp_boxed(s):
    """The last \\boxed{...} (brace-matched), normalised; if it does not close, the first \\boxed{...}; if none
    closes, the whole text (as upstream, which then rarely matches)."""
    start = s.rfind("\\boxed")
    start = s.rfind("\\fbox") if start < 0 else start
    depth, content = 0, None
    for i in range(max(start, 0), len(s) if start >= 0 else 0):
        depth += (s[i] == "{") - (s[i] == "}")
        if s[i] == "}" and depth == 0:
            whole = s[start:i + 1]
            content = whole[len("\\boxed{"):-1] if whole.startswith("\\boxed{") else None  # \fbox: not a box here
            break
    if content is None:
        first = s.find("\\boxed{")
        end = _matching_brace(s, first + len("\\boxed{")) if first >= 0 else -1
        if end < 0 or end == first + len("\\boxed{"):  # none, unclosed or empty: the text itself
            return s
        content = s[first + len("\\boxed{"):end]
    return _ugp_normalize(content)


# ---- judge, step 2: several answers: split at commas outside () and [], "a \pm b" is two answers

def _ugp_split(s, pm=True):
    items, depth, start = [], 0, 0
    for i, c in enumerate(s):
        depth += (c in "([") - (c in ")]")
        if c == "," and depth == 0:
            items.append(s[start:i].strip())
            start = i + 1
    if start < len(s):
        items.append(s[start:].strip())
    items = [x.strip("$").strip() for x in items]
    if not pm:
        return items
    return [y for x in items for y in ((x.replace("\\pm", "+"), x.replace("\\pm", "-")) if "\\pm" in x else (x,))]


# ---- judge, step 3: normalisation (official normalize_answer, then MATH's _strip_string)

_UGP_SIGNALS = [("\\left", ""), ("\\right", ""), ("∶", ":"), ("，", ","), ("$", ""), ("\\approx", "="),
                ("\\simeq", "="), ("\\sim", "="), ("^\\prime", "'"), ("^{\\prime}", "'"), ("^\\circ", ""), ("%", "")]


def _ugp_normalize(s):
    for old, new in _UGP_SIGNALS:
        s = s.replace(old, new)
    s = re.sub(r"\\(?:mathrm|mathbf)\{~?([^}]*)\}", r"\1", s)  # \mathrm{~m} -> m
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    s = re.sub(r"\\textbf\{(.*?)\}", r"\1", s)
    s = re.sub(r"frac([^{])(.)", r"frac{\1}{\2}", s)  # \frac12 -> \frac{1}{2}
    s = re.sub(r"sqrt([^{])", r"sqrt{\1}", s)  # \sqrt2 -> \sqrt{2}
    s = s.strip().strip("$").strip().replace("\\,", " ")
    return _ugp_strip_string(s).rstrip("\\")


def _ugp_strip_string(s):
    """MATH's (Hendrycks et al.) _strip_string, as UGPhysics codes/math_equivalence.py uses it."""
    for old, new in [("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"), ("\\left", ""),
                     ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")]:
        s = s.replace(old, new)
    s = s.split("\\text{ ")[0]  # a unit on the right
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    s = "0" + s if s[0] == "." else s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 5" -> " 5"
        s = sides[1]
    pieces = s.split("\\sqrt")  # \sqrt3 -> \sqrt{3}
    s = pieces[0] + "".join("\\sqrt" + (p if not p or p[0] == "{" else "{" + p[0] + "}" + p[1:]) for p in pieces[1:])
    s = s.replace(" ", "")
    s = _ugp_fix_fracs(s)
    if s == "0.5":
        return "\\frac{1}{2}"
    parts = s.split("/")  # 3/4 -> \frac{3}{4}, integers only
    if len(parts) == 2:
        with contextlib.suppress(ValueError):
            a, b = int(parts[0]), int(parts[1])
            if s == f"{a}/{b}":
                return f"\\frac{{{a}}}{{{b}}}"
    return s


def _ugp_fix_fracs(s):
    """\\frac12 -> \\frac{1}{2}, \\frac1{72} -> \\frac{1}{72}; a \\frac with fewer than two characters after it
    leaves the string as it was."""
    pieces = s.split("\\frac")
    out = pieces[0]
    for p in pieces[1:]:
        out += "\\frac"
        if p[:1] == "{":
            out += p
        elif len(p) < 2:
            return s
        elif p[1] != "{":
            out += "{" + p[0] + "}{" + p[1] + "}" + p[2:]
        else:
            out += "{" + p[0] + "}" + p[1:]
    return out


def ugphysics_answers(text):
    """Steps 1-3 on a response or a gold `answers` string: its final answer as a list of normalised items
    ([] when it states none). "So the final answer is \\boxed{1, \\pm 2}" -> ["1", "+2", "-2"]."""
    s = _ugp_extract(text) if isinstance(text, str) else ""
    return [_ugp_normalize(x) for x in _ugp_split(s)] if s else []


# ---- judge, step 4 (worker side): each answer type's test, tried in turn on every (gold, prediction) pair,
# with and without the physical constants

# official utils.py PHY_CONST, in its order: each is deleted wherever it occurs (so `e` also leaves \beta as \bta)
PHY_CONST = ("G", "N_A", "N_{A}", "R", "V_m", "V_{m}", "e", "m_e", "m_{e}", "m_p", "m_{p}", "m_n", "m_{n}",
             "\\varepsilon_0", "\\varepsilon_{0}", "\\epsilon_0", "\\epsilon_{0}", "\\mu_0", "\\mu_{0}", "\\mu_e",
             "\\mu_{e}", "\\mu_p", "\\mu_{p}", "a_0", "a_{0}", "\\mu_B", "\\mu_{B}", "\\mu_N", "\\mu_{N}", "\\hbar",
             "h", "\\alpha", "R_\\infty", "R_{\\infty}")


def _ugp_remove_const(s):
    for c in PHY_CONST:
        s = s.replace(c, "")
    return re.sub(r"\s+", " ", s).strip() if s.strip() else "1"


class _TypeTimeout(BaseException):
    """One answer type's test ran out of time. A BaseException: sympy's own `except Exception` cannot swallow it."""


@contextlib.contextmanager
def _type_time_limit(seconds):
    """SIGALRM after `seconds` (the official per-type limit); a no-op outside the main thread, where the
    watchdog's per-item limit is the only one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _TypeTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# How sympy's parse_latex tokenises (its LaTeX.g4): a backslash and ALL the letters after it are one token, a
# command when the whole run is one of these, else a symbol named by the run. UGPhysics's normalisation removes every
# space, so "\omega t" reaches the parser as \omegat (the symbol omegat to parse_latex; omega*t to latex2sympy2,
# which splits runs at the commands it knows, so "\times e" = \timese is times Euler's number there).
_UGP_KEYWORDS = frozenset(
    "left right quad qquad negmedspace negthickspace thinspace medspace thickspace negthinspace lim to rightarrow "
    "Rightarrow longrightarrow Longrightarrow int sum prod exp log lg ln sin cos tan csc sec cot arcsin arccos arctan "
    "arccsc arcsec arccot sinh cosh tanh arsinh arcosh artanh lfloor rfloor lceil rceil sqrt overline times cdot div "
    "frac dfrac tfrac binom dbinom tbinom mathit neq leq le leqq leqslant geq ge geqq geqslant langle rangle infty pi "
    "dot ddot hat bar vec tilde widehat widetilde mathbf mathrm boldsymbol".split())
# an accent on a group (kept whole: \vec{E} is one symbol to latex2sympy2), a command run, or a lone e / E
_UGP_RUN = re.compile(r"(?P<accent>\\(?:dot|ddot|hat|bar|vec|tilde|widehat|widetilde|mathbf|boldsymbol)\{[^{}]*\})"
                      r"|\\(?P<run>[a-zA-Z]+)|[eE]")


@functools.lru_cache(maxsize=4096)
def _ugp_one_symbol(name):
    """Does latex2sympy2 read \\name as the one symbol `name` (Greek letters, \\hbar), as parse_latex does?"""
    import sympy

    with contextlib.suppress(Exception):
        return _ugp_latex2sympy("\\" + name) == sympy.Symbol(name)
    return False


def _ugp_token(m):
    run = m.group("run")
    if m.group("accent"):
        return m.group(0)
    if run is None:  # a lone e or E: a symbol (parse_latex); latex2sympy2 reads e as Euler's number and cannot
        return f"\\mathrm{{{m.group(0)}}}"  # subscript E (E_k is a syntax error there)
    if run in _UGP_KEYWORDS or _ugp_one_symbol(run):
        return "\\ln" if run == "log" else m.group(0)  # parse_latex's \log is the natural log
    return f"\\mathrm{{{run}}}"  # \omegat: one symbol, as parse_latex reads it


def _ugp_latex2sympy(s):
    from latex2sympy2_extended import latex2sympy
    from latex2sympy2_extended.latex2sympy2 import ConversionConfig

    return latex2sympy(s, normalization_config=None,
                       conversion_config=ConversionConfig(interpret_as_mixed_fractions=False, lowercase_symbols=False))


def _ugp_parse(s):
    """LaTeX -> a sympy expression or equation, read as sympy's parse_latex reads it (difference U2)."""
    import sympy

    if not isinstance(s, str):  # the EX test hands NV sympy values: parse_latex rejects those too
        raise TypeError("not a LaTeX string")
    # \( \) \[ \]: parse_latex fails on them (where it keeps a valid prefix, "x\]" as x, depends on the rest: not
    # mimicked); latex2sympy2 would strip them
    if re.search(r"\\[()\[\]]", s):
        raise ValueError("math delimiters in an answer")
    # primes: parse_latex drops them after a command (\Phi' is \Phi) and keeps them after a letter (x' is not x,
    # where latex2sympy2 would drop them); \log_2 keeps its base
    s = re.sub(r"(\\[a-zA-Z]+(?:_\{[^{}]*\}|_\w)?)'+", r"\1", s)
    s = _UGP_RUN.sub(_ugp_token, s).replace("\\ln_", "\\log_").replace("'", "^{\\prime}")
    expr = _ugp_latex2sympy(s)
    if not isinstance(expr, (sympy.Expr, sympy.Equality)):  # an interval, a set, a tuple, a matrix
        raise TypeError(f"not an expression: {type(expr).__name__}")
    return expr


def _ugp_decimals(x):
    # digits after the "." of str(x), the exponent's characters included (str(4.88e23) = "4.88e+23": 6), as upstream
    text = str(x)
    return len(text.split(".")[1]) if "." in text else 0


def _ugp_sci(expr):
    """(mantissa, exponent) of a parsed `m \\times 10^{k}` (upstream's is_scientific_notation), else None."""
    import sympy

    if isinstance(expr, sympy.Mul) and len(expr.args) > 1 and isinstance(expr.args[1], sympy.Pow) \
            and expr.args[1].args[0] == 10:
        return sympy.N(expr.args[0]), sympy.N(expr.args[1].args[1])
    return None


def _ugp_sci_latex(x):
    # upstream's to_scientific_notation_latex: 48800.0 -> "4.88\times 10^{4}"
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa}\\times 10^{{{int(exponent)}}}"


def _ugp_mantissas_close(a, b, official):
    """Two (mantissa, exponent) pairs: mantissas within 0.1 (upstream's test); the exponents equal too, unless
    official (difference U1). A side that is not of the form m \\times 10^k (None: a negative number) fails."""
    return abs(a[0] - b[0]) <= 0.1 * 1.01 and (official or a[1] == b[1])


def _ugp_nv(pred, gold, official, precision):
    """NV: one number. Exact text; else as Python floats: pred rounded to gold's decimals, then the relative
    error within precision, then the "{:.2e}" mantissas; else as parsed LaTeX: the same two tests, else equal
    values. pred and gold may be sympy numbers (from EX): then the LaTeX step fails, as upstream."""
    import sympy

    if pred == gold:
        return True
    with contextlib.suppress(Exception):
        p, g = float(pred), float(gold)
        if abs((round(p, _ugp_decimals(g)) - g) / g) <= precision * 1.01:
            return True
        # |p - g| / |g| = (m_p 10^{e_p} - m_g 10^{e_g}) / (m_g 10^{e_g}): only the mantissas, unless ours (U1)
        if _ugp_mantissas_close(_ugp_sci(_ugp_parse(_ugp_sci_latex(p))), _ugp_sci(_ugp_parse(_ugp_sci_latex(g))),
                                official):
            return True
    with contextlib.suppress(Exception):
        ep, eg = _ugp_parse(pred), _ugp_parse(gold)
        np_, ng = sympy.N(ep), sympy.N(eg)
        if abs((round(np_, _ugp_decimals(ng)) - ng) / ng) <= precision * 1.01:
            return True
        if (_ugp_sci(ep) is None) != (_ugp_sci(eg) is None):  # one side written m \times 10^k: so is the other
            if _ugp_sci(ep) is None:
                ep = _ugp_parse(_ugp_sci_latex(float(pred)))
            else:
                eg = _ugp_parse(_ugp_sci_latex(float(gold)))
        if _ugp_sci(ep) is not None and _ugp_sci(eg) is not None:
            return _ugp_mantissas_close(_ugp_sci(ep), _ugp_sci(eg), official)
        return bool(sympy.N(ep) == sympy.N(eg))
    return False


def _ugp_mc(pred, gold, official, precision):
    """MC: the same text, or "[X]" / "X: ..." naming option X (an empty answer raises, as upstream)."""
    if pred == gold:
        return True
    if pred.startswith("[") and pred.endswith("]"):
        pred = pred.strip("[]")
    return pred[0] in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" and len(pred) > 1 and pred[1] == ":" and pred[0] == gold


_UGP_TRUE, _UGP_FALSE = ("TRUE", "YES", "T", "Y"), ("FALSE", "NO", "F", "N")
_UGP_ZH = {"是": "TRUE", "对": "TRUE", "正确": "TRUE", "能": "TRUE", "否": "FALSE", "错": "FALSE", "错误": "FALSE",
           "不能": "FALSE"}


def _ugp_tf(pred, gold, official, precision):
    """TF: true/false words, English in any case or Chinese (是/对/正确/能, 否/错/错误/不能)."""
    if any("\u4e00" <= c <= "\u9fff" for c in pred):
        pred = _UGP_ZH.get(pred, pred)
    else:
        pred = pred.upper()
    gold = gold.upper()
    if gold not in _UGP_TRUE + _UGP_FALSE:
        raise ValueError("the gold is not a true/false word")  # upstream asserts: this type does not apply
    return pred in _UGP_TRUE + _UGP_FALSE and (pred in _UGP_TRUE) == (gold in _UGP_TRUE)


def _ugp_rhs(s):
    # upstream's extract_expression: of "a = b" only b (what lies between the first and a second "=")
    return s.split("=")[1].strip() if "=" in s else s.strip()


def _ugp_ex(pred, gold, official, precision):
    """EX: one expression. Equal as parsed; else, pi replaced by its float: with symbols on one side only, False;
    with none, NV on the values; else |simplify(pred - gold)| < precision. A parse error raises."""
    import sympy

    a, b = _ugp_parse(_ugp_rhs(pred)), _ugp_parse(_ugp_rhs(gold))
    if a == b:
        return True
    pi = {sympy.pi: math.pi, sympy.Symbol("pi"): math.pi}  # parse_latex reads \pi as a symbol named pi
    a, b = a.subs(pi), b.subs(pi)
    if a.has(sympy.Symbol) != b.has(sympy.Symbol):
        return False
    try:
        if not a.has(sympy.Symbol):
            return _ugp_nv(a, b, official, precision)
        return bool(abs(sympy.simplify(a - b).evalf()) < precision)
    except Exception:
        return False


def _ugp_eq(pred, gold, official, precision):
    """EQ: one equation. The same lhs - rhs after simplify, or one a nonzero integer multiple of the other."""
    import sympy

    def difference(equation):
        lhs, rhs = equation.split("=")  # exactly one "="
        eq = sympy.Eq(_ugp_parse(lhs), _ugp_parse(rhs))  # evaluates to True/False when it is decided: no .lhs
        return sympy.simplify(eq.lhs - eq.rhs)

    try:
        a, b = difference(pred), difference(gold)
        if sympy.simplify(a - b) == 0:
            return True
        ratios = sympy.simplify(a / b), sympy.simplify(b / a)
        return any(r.is_Integer and r != 0 for r in ratios)
    except Exception:
        return False


def _ugp_in(pred, gold, official, precision):
    """IN: intervals joined by \\cup, in any order: the same bracket types and both ends equal by EX."""

    def intervals(s):
        out = []
        for part in s.split("\\cup"):
            part = part.strip()
            out.append((part.strip("()[]").split(","), part.startswith("("), part.endswith(")")))
        return out

    left, right = intervals(pred), intervals(gold)
    if len(left) != len(right):
        return False
    for ends, *brackets in left:
        j = next((j for j, (ends2, *brackets2) in enumerate(right) if brackets == brackets2
                  and _ugp_ex(ends[0], ends2[0], official, precision)
                  and _ugp_ex(ends[1], ends2[1], official, precision)), None)
        if j is None:
            return False
        del right[j]
    return True


def _ugp_tup(pred, gold, official, precision):
    """TUP: (x, y, z): as many elements, each equal by NV, in order."""
    p, g = _ugp_split(pred.strip("()"), pm=False), _ugp_split(gold.strip("()"), pm=False)
    return len(p) == len(g) and all(_ugp_nv(a, b, official, precision) for a, b in zip(p, g))


# the tests in the order upstream's is_equal tries them; the record's answer_type is not consulted, as upstream
_UGP_CHECKS = {"MC": _ugp_mc, "TF": _ugp_tf, "NV": _ugp_nv, "IN": _ugp_in, "EX": _ugp_ex, "EQ": _ugp_eq,
               "TUP": _ugp_tup}


def _ugp_equal(gold, pred, official, precision):
    """One gold item and one predicted item: does some answer type's test accept them, as written or with the
    physical constants removed from both? Each type gets UGPHYSICS_TYPE_TIMEOUT seconds; an error is a no."""
    for check in _UGP_CHECKS.values():
        try:
            with _type_time_limit(UGPHYSICS_TYPE_TIMEOUT):
                if check(pred, gold, official, precision) or \
                        check(_ugp_remove_const(pred), _ugp_remove_const(gold), official, precision):
                    return True
        except (Exception, _TypeTimeout):
            continue
    return False


def _ugp_match(gold, pred, official, precision):
    """Step 4, worker side: as many predicted items as gold items (checked by the caller), and each gold item
    paired with a distinct predicted one, greedily, visiting the gold items in upstream's order."""
    gold, pred = list(gold), list(pred)
    i = -1
    while gold:
        i = (i + 1) % len(gold)
        item = gold[i]
        match = next((k for k, q in enumerate(pred) if _ugp_equal(item, q, official, precision)), None)
        if match is None:
            return False
        del gold[i], pred[match]
    return True


def grade_ugphysics(response, gold, judge="ours", timeout=None, precision=UGPHYSICS_PRECISION):
    """Step 5: True when `response` states the answer(s) of `gold` (a UGPhysics `answers` string such as
    "\\boxed{4.88 \\times 10^{23}}") under the rule-based judge: `judge` "ours" (the default) or "official"
    (difference U1), relative `precision` (1e-2, the paper's), at most `timeout` seconds (UGPHYSICS_TIMEOUT) for the
    whole item. `gold` may be another response: upstream's self-consistency votes with this judge, response i as
    the prediction and response j as the gold, at its default precision 1e-8 (self_consistency_utils.py)."""
    if judge not in JUDGES:
        raise InputError(f"judge {judge!r} is not one of {', '.join(JUDGES)}")
    pred, golds = ugphysics_answers(response), ugphysics_answers(gold)
    if not pred or len(pred) != len(golds):  # no answer, or another number of answers
        return False
    if len(pred) == 1 and pred == golds:  # the same text: MC accepts it before anything else
        return True
    key = ("ugphysics", judge, precision, tuple(golds), tuple(pred))
    if key not in _CACHE:
        verdict = _GRADER.ask({"ugphysics": judge, "gold": golds, "pred": pred, "precision": precision},
                              UGPHYSICS_TIMEOUT if timeout is None else timeout)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = verdict
    return _CACHE[key]


# ----------------------------------------------------------------------------------------------------------------
# Code grading: extraction here, execution in sandbox.py (run_code: LiveCodeBench's protocol; run_program: one
# whole program, for LeetCode), isolated

LEETCODE_TIMEOUT = 10.0  # seconds for the whole program, all its asserts (official evaluate_functional_correctness)
LCB_TEST_TIMEOUT = 6.0  # seconds per test of the official LiveCodeBench run (lcb_runner --timeout 6)
# the official IMPORT_HELPER["python"] (EM_PT eval/utils/evaluation_leetcode.py, from DeepSeek-Coder's harness):
# the first lines of every LeetCode program
LEETCODE_IMPORTS = ("import math", "import re", "import sys", "import copy", "import datetime", "import itertools",
                    "import collections", "import heapq", "import functools", "import hashlib", "import numpy",
                    "import numpy as np", "import string", "from typing import *", "from collections import *",
                    "from functools import *")


def extract_code(text):
    """The last ```python (or bare ```) block of a response; the whole text when there is no fence (ours)."""
    blocks = re.findall(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", text or "", flags=re.S | re.I)
    return blocks[-1] if blocks else (text or "")


def match_code(text):
    """The official code extraction (EM_PT's match_code, used for LeetCode and LiveCodeBench alike):
      1. of the ```python blocks, the last one that contains "def ", else the last one;
      2. else the same over bare ``` blocks;
      3. else the text before the first ``` (all of it when there is none).
    A block keeps what follows its opening fence on that line ("```python3" leaves a "3")."""
    text = text or ""
    for pattern in (r"```python(.*?)```", r"```(.*?)```"):
        blocks = re.findall(pattern, text, flags=re.S)
        if blocks:
            return next((b for b in reversed(blocks) if "def " in b), blocks[-1])
    return text.split("```")[0]


def extract_leetcode_code(text):
    """The program body the official LeetCode evaluation runs for a response: match_code, fenced again; when
    "class Solution:" is absent, every line (backticks removed) indented 4 under `class Solution:`; then the first
    ```python ... ``` block of that, after mapping [PYTHON] tags to fences (its extract_python_code)."""
    fenced = "```python\n" + match_code(text) + "\n```"
    if "class Solution:" not in fenced:  # a bare method (or anything else): it becomes the class body
        body = fenced.replace("```python", "").replace("```", "")
        fenced = "```python\nclass Solution:\n" + "\n".join("    " + line for line in body.split("\n")) + "\n```"
    fenced = fenced.replace("[PYTHON]", "```python").replace("[/PYTHON]", "```")
    return re.findall(r"```python\n(.*?)\n```", fenced, flags=re.S)[0]  # the text always ends in "\n```"


def leetcode_program(code, tests):
    """The whole program of one LeetCode check: the official import lines, the code, the problem's asserts."""
    return "\n".join(LEETCODE_IMPORTS) + "\n" + code + "\n" + tests + "\n"


def grade_leetcode(response, tests, timeout=LEETCODE_TIMEOUT):
    """True when the official LeetCode check of `response` passes: leetcode_program(extract_leetcode_code(response),
    tests) runs to its end with no exception within `timeout` seconds (pass@1 = the mean over the 180 problems).

    As the official harness (DeepSeek-Coder's human_eval/execution.py, run by EM_PT), the program is exec'd in a
    fresh, empty namespace, so `__name__` is the builtins module's and an `if __name__ == "__main__":` block does
    not run; output is swallowed and reading stdin raises (its swallow_io). must_finish=True makes a program that
    exits before its asserts fail, as there (sys.exit raises SystemExit, which that harness counts as a failure;
    os._exit leaves no result, which it reads as "timed out"). Differences, all from running it in sandbox.py:
      1. isolation: namespaces, an unprivileged uid and rlimits instead of a forked process with reliability_guard;
      2. time: `timeout` is wall time for a fresh interpreter, including its `import numpy` (~0.2 s); the official
         10 s timer starts inside a worker forked from a parent that had numpy imported already;
      3. memory: CODE_MEMORY_MB of address space per process; the official harness sets no limit.
    """
    if importlib.util.find_spec("numpy") is None:  # every program imports it: without it everything would fail
        raise GraderUnavailable("LeetCode programs start with `import numpy` (the official import lines): "
                                "pip install numpy")
    if not isinstance(tests, str) or not tests.strip():
        return False  # nothing to check is not a pass
    program = leetcode_program(extract_leetcode_code(response), tests)
    runner = ("import io, sys\n"
              "sys.stdout = sys.stderr = io.StringIO()\n"  # swallow_io: the output goes nowhere ...
              "sys.stdin = io.StringIO()\n"
              "sys.stdin.close()\n"  # ... and reading input raises
              f"exec(compile({program!r}, 'leetcode_program.py', 'exec'), {{}})\n")
    code, _ = run_program(runner, timeout=timeout, must_finish=True)
    return code == 0


def pass_at_k(n, c, k):
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), n samples of which c are correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i): a product of numbers in (0, 1], no overflow
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def grade(record, response, timeout=None, judge=None):
    """Grade one response against a problem record (or a results-file record) by its "grading":
      - leetcode: grade_leetcode (LEETCODE_TIMEOUT for the whole program);
      - livecodebench (the official protocol): match_code, then run_code with LCB_TEST_TIMEOUT per test
        (call-based tests share one process here, so they get LCB_TEST_TIMEOUT x their number in all);
      - other records with tests (ours): extract_code, then run_code with 10 s per run;
      - ugphysics: grade_ugphysics with `judge` ("ours"/"official"; when given it overrides the record's own
        `judge` field; without either: "ours");
      - last_number: grade_last_number; otherwise grade_math.
    `timeout` replaces the code time limit (per run_code / run_program call). SciCode problems are graded
    per step from their codes (grade_scicode), so they are refused here."""
    grading, tests = record.get("grading"), record.get("tests")
    if grading == "scicode":
        raise ValueError("a SciCode problem is graded per step: evaluate.grade_scicode(record, codes, data_dir)")
    if grading == "leetcode":
        return grade_leetcode(response, tests, timeout=LEETCODE_TIMEOUT if timeout is None else timeout)
    if tests and grading == "livecodebench":
        if timeout is None:
            calls = sum(line.startswith("assert ") for line in tests.splitlines()) if isinstance(tests, str) else 1
            timeout = LCB_TEST_TIMEOUT * max(calls, 1)
        return run_code(match_code(response), tests, timeout=timeout)
    if tests:
        return run_code(extract_code(response), tests, timeout=10.0 if timeout is None else timeout)
    if grading == "ugphysics":
        return grade_ugphysics(response, record.get("answer", record.get("gold")),
                               judge or record.get("judge") or "ours", timeout)
    if grading == "last_number":
        return grade_last_number(response, record.get("answer", record.get("gold")))
    return grade_math(response, record.get("answer", record.get("gold")))


# ----------------------------------------------------------------------------------------------------------------
# SciCode (Tian et al. 2024; the paper's Table 3, "with background"): each main problem is a chain of steps, each
# step one function. Step k is prompted with the code of steps 0..k-1, and graded by running all of that code plus
# step k's test cases against targets stored in SciCode's test_data.h5. The protocol below is the official code's
# (shivamag125/EM_PT eval/SciCode, a fork of scicode-bench/SciCode: eval/scripts/gencode.py for prompts,
# src/scicode/gen/models.py for extraction, eval/scripts/test_generated_code.py for grading). Where it changes a
# number, what we do instead (or also) is said at the line, and listed in the module docstring.

# steps whose code SciCode gives (eval/data/{step}.txt): never generated, never tested (gencode.py's main loop)
SCICODE_GIVEN_STEPS = ("13.6", "62.1", "76.3")
SCICODE_SYSTEM_PROMPT = "You are a helpful assistant."  # the official baselines' system message (models.py)
SCICODE_PROMPT_FORMATS = ("chat", "raw")  # chat: system + user turn (official baselines); raw: official EM-INF
SCICODE_TIMEOUT = 300.0  # seconds per step (EM_PT test_generated_code.py; upstream SciCode: 1800)
# RLIMIT_AS per step program (ours): numpy + scipy + sympy take ~0.3 GB of address space when imported; the 2 GB
# of the code benchmarks would leave ~1.7 GB for a scientific step's arrays and their temporaries (3-D grids, dense
# Hamiltonians, FFTs of large images), which SciCode's reference solutions can exceed. Upstream sets no limit;
# 8 GB is what a third-party SciCode harness allows, and it still stops a runaway allocation before it takes the host.
SCICODE_MEMORY_MB = 8192
SCICODE_TARGETS_FILE = "scicode_targets.pkl"  # the step's targets, beside its program in the sandbox folder
SCICODE_H5 = "test_data.h5"
_SCICODE_DRIVE = "https://drive.google.com/drive/folders/1W5GZW6_bdiDAiipuFMqdUhvUaHIj6-pR"  # SciCode README
_SCICODE_REPO_DATA = "https://github.com/scicode-bench/SciCode/tree/main/eval/data"

# eval/data/multistep_template.txt (gencode.py's BACKGOUND_PROMPT_TEMPLATE, used with --with-background, the
# paper's setting), exactly, without a final newline
SCICODE_TEMPLATE = """PROBLEM DESCRIPTION:
You will be provided with problem steps along with background knowledge necessary for solving the problem. Your task will be to develop a Python solution focused on the next step of the problem-solving process.

PROBLEM STEPS AND FUNCTION CODE:
Here, you'll find the Python code for the initial steps of the problem-solving process. This code is integral to building the solution.

{problem_steps_str}

NEXT STEP - PROBLEM STEP AND FUNCTION HEADER:
This part will describe the next step in the problem-solving process. A function header will be provided, and your task is to develop the Python code for this next step based on the provided description and function header.

{next_step_str}

DEPENDENCIES:
Use only the following dependencies in your solution. Do not include these dependencies at the beginning of your code.

{dependencies}

RESPONSE GUIDELINES:
Now, based on the instructions and information provided above, write the complete and executable Python program for the next step in a single block.
Your response should focus exclusively on implementing the solution for the next step, adhering closely to the specified function header and the context provided by the initial steps.
Your response should NOT include the dependencies and functions of all previous steps. If your next step function calls functions from previous steps, please make sure it uses the headers provided without modification.
DO NOT generate EXAMPLE USAGE OR TEST CODE in your response. Please make sure your response python code in format of ```python```."""

# eval/data/background_comment_template.txt (gencode.py's DEFAULT_PROMPT_TEMPLATE: no step background given, the
# model writes its own), exactly, with its final newline
SCICODE_TEMPLATE_NO_BACKGROUND = """PROBLEM DESCRIPTION:
You will be provided with the main description of the problem, previous steps, and the next step. Your task will be to generate the disciplinary knowledge necessary for solving the next step and then develop a Python solution focused on this step.

PREVIOUS STEPS DESCRIPTION:
{problem_steps_str}

NEXT STEP - PROBLEM DESCRIPTION AND FUNCTION HEADER:
This part will describe the next step in the problem-solving process. First, provide the necessary scientific background knowledge as a comment at the beginning of your response, starting with 'Background: '. Then, a function header will be provided, and your task is to develop the Python code for this next step based on the provided description and function header.

{next_step_str}

DEPENDENCIES:
Use only the following dependencies in your solution. Do not include these dependencies at the beginning of your code.
{dependencies}

RESPONSE GUIDELINES:
1. Start with the scientific background required for the next step, formatted as a comment.
2. Then write the complete and executable Python program for the next step in a single block.
3. Your response should focus exclusively on implementing the solution for the next step, adhering closely to the specified function header and the context provided by the initial steps.
4. DO NOT include previous function code, example usage or test code in your response.
5. Ensure your response is in the format of ```python``` and includes the necessary background as a comment at the top.

Example:
```python
# Background: [Here, insert the necessary scientific knowledge required for the next step.]

[Insert the Python code here based on the provided function header and dependencies.]
```
"""


def _scicode_record(row):
    """One SciCode main problem (hub problems_test.jsonl / problems_dev.jsonl layout) -> our record:
    {id: problem_id, problem: problem_name, answer: "", grading: "scicode", sub_steps, required_dependencies}.
    The steps are kept as SciCode has them (step_number, step_description_prompt, step_background, function_header,
    return_line, test_cases, ...); a field SciCode always has that is missing is a ValueError (one line upstream)."""
    steps = row["sub_steps"]
    if not isinstance(steps, list) or not steps:
        raise ValueError("sub_steps must be a non-empty list of steps")
    deps = row.get("required_dependencies") or ""
    if not isinstance(deps, str):
        raise ValueError("required_dependencies must be a string (the import lines)")
    out = []
    for j, step in enumerate(steps):
        if not isinstance(step, dict):
            raise ValueError(f"sub_steps[{j}] is a {type(step).__name__}, not an object")
        missing = [f for f in ("step_number", "step_description_prompt", "function_header") if not step.get(f)]
        if missing:
            raise ValueError(f"sub_steps[{j}] has no {', '.join(missing)}")
        tests = step.get("test_cases") or []
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise ValueError(f"sub_steps[{j}].test_cases must be a list of strings")
        # the hub's JSON loader fills a field absent from a row with null; SciCode's own empty background is ""
        out.append({**step, "step_number": str(step["step_number"]), "test_cases": tests,
                    "step_background": step.get("step_background") or "", "return_line": step.get("return_line") or ""})
    if len({s["step_number"] for s in out}) < len(out):
        raise ValueError("two sub_steps have the same step_number")
    pid = str(row["problem_id"])
    return {"id": pid, "problem": str(row.get("problem_name") or pid), "answer": "", "grading": "scicode",
            "sub_steps": out, "required_dependencies": deps}


def scicode_is_given(step):
    """True for the three steps whose code SciCode gives (13.6, 62.1, 76.3): never generated, never tested."""
    return str(step["step_number"]) in SCICODE_GIVEN_STEPS


def _h5py():
    try:
        import h5py
    except ImportError:
        raise InputError("SciCode grading needs h5py (and numpy, scipy, sympy for the problems' code): "
                         "pip install -r requirements-scicode.txt") from None
    return h5py


def check_scicode_data(data_dir, records=None):
    """Raise InputError (one line) unless `data_dir` (--scicode-data) holds what SciCode needs; call it before a model
    loads. Always test_data.h5 (the targets, read with h5py); with `records`, also the given-step code files
    ({step}.txt) those problems use, and a test1 group in the h5 for each of their tested steps (so a wrong or
    truncated h5 is named now, not after hours of decoding). records=None: re-grading a results file, whose rows
    carry the given code they used."""
    if not data_dir:
        raise InputError(f"SciCode needs --scicode-data DIR: SciCode's eval/data folder, with {SCICODE_H5} (download "
                         f"it from the Google Drive folder in SciCode's README, {_SCICODE_DRIVE}) and "
                         f"{', '.join(s + '.txt' for s in SCICODE_GIVEN_STEPS)} ({_SCICODE_REPO_DATA})")
    if not os.path.isdir(data_dir):
        raise InputError(f"--scicode-data {data_dir}: no such folder (it is SciCode's eval/data: {SCICODE_H5} from "
                         f"the Google Drive folder in SciCode's README, {_SCICODE_DRIVE}, and the given-step code "
                         f"{', '.join(s + '.txt' for s in SCICODE_GIVEN_STEPS)} from {_SCICODE_REPO_DATA})")
    h5py = _h5py()
    given = sorted({s["step_number"] for r in records or [] for s in r["sub_steps"] if scicode_is_given(s)})
    lacking = [f"{n}.txt" for n in given if not os.path.isfile(os.path.join(data_dir, f"{n}.txt"))]
    h5 = os.path.join(data_dir, SCICODE_H5)
    where = []
    if not os.path.isfile(h5):
        where.append(f"{SCICODE_H5} (SciCode's ~1 GB test targets: a manual download from the Google Drive folder "
                     f"in SciCode's README, {_SCICODE_DRIVE})")
    if lacking:
        where.append(f"{', '.join(lacking)} (the code of SciCode's given steps: its repository's eval/data folder, "
                     f"{_SCICODE_REPO_DATA})")
    if where:
        raise InputError(f"--scicode-data {data_dir}: missing {' and '.join(where)}")
    try:
        with h5py.File(h5, "r") as f:
            for r in records or []:
                for s in r["sub_steps"]:
                    if not scicode_is_given(s) and s["test_cases"] and f"{s['step_number']}/test1" not in f:
                        raise InputError(f"{h5}: no targets for step {s['step_number']} (group "
                                         f"{s['step_number']}/test1): is it SciCode's test_data.h5, for these "
                                         f"problems?")
    except OSError as e:
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise InputError(f"{h5}: not a readable HDF5 file ({why}): download it again") from None


def _scicode_function_name(header):
    """SciCode's extract_function_name (parse.py): the first `def name(`, else the first `class name(` of a header.
    The def comes first, so for a class header (`class Maxwell:\\n    def __init__(...)`) it is `__init__`."""
    m = re.search(r"\bdef\s+(\w+)\s*\(", header) or re.search(r"\bclass\s+(\w+)\s*\(", header)
    if m is None:
        raise ValueError(f"no function or class name in the header {header[:60]!r}")
    return m.group(1)


def scicode_given_code(step, data_dir, official=False):
    """The code of a given step (SCICODE_GIVEN_STEPS): `{data_dir}/{step_number}.txt`.

    official=False (ours, the default): the whole file, so the class of 13.6 (Maxwell) and 62.1 (Block,
    EnlargedBlock) is intact in later steps' prompts and test programs.
    official=True: what gencode.py puts there, ast.unparse of the first def/class (ast.walk order) named by the
    step's header (_scicode_function_name). For a class step that is the first method `__init__` alone, so the class
    itself is missing from every later prompt and test program, and 13.8-13.14, 62.2, 62.4-62.6 fail with a
    NameError unless the model redefines it (upstream SciCode has the same bug)."""
    path = os.path.join(data_dir, f"{step['step_number']}.txt")
    try:
        with open(path, encoding="utf-8") as f:
            code = f.read()
    except OSError:
        raise InputError(f"{path}: missing: the code of SciCode's given step {step['step_number']} is in SciCode's "
                         f"repository, eval/data ({_SCICODE_REPO_DATA})") from None
    if not official:
        return code
    name = _scicode_function_name(step["function_header"])
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code  # get_function_from_code returns the whole text when it does not parse
    node = next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name), None)
    if node is None:
        raise InputError(f"{path}: no def or class {name} (from the step's function header)")
    return ast.unparse(node)


def scicode_prompt(problem, k, previous_codes, with_background=True):
    """The exact user text SciCode's gencode.py sends for step k (0-based) of a problem record.

    previous_codes: the code of steps 0..k-1 (the extracted code of generated steps, scicode_given_code for given
    ones); a longer list is cut at k. gencode.py's process_problem_steps / generate_prompt_with_steps:
        desc(i)           = step_description_prompt + "\\n" + step_background   (without background: the prompt alone)
        problem_steps_str = "\\n\\n".join([desc(0), code(0), "------", ..., desc(k-1), code(k-1)])  ("" for k = 0)
        next_step_str     = desc(k) + "\\n\\n" + function_header + "\\n\\n" + return_line
        {dependencies}    = required_dependencies, verbatim
    in SCICODE_TEMPLATE (with background: the paper's setting) or SCICODE_TEMPLATE_NO_BACKGROUND. The problem's
    main description, I/O and main background never appear (as upstream)."""
    steps = problem["sub_steps"]
    if not 0 <= k < len(steps):
        raise ValueError(f"step {k} out of range: problem {problem['id']} has {len(steps)} steps")
    if scicode_is_given(steps[k]):
        raise ValueError(f"step {steps[k]['step_number']} is given (scicode_given_code), not generated")
    if len(previous_codes) < k or not all(isinstance(c, str) for c in previous_codes[:k]):
        raise ValueError(f"step {k} needs the code (str) of the {k} steps before it, got {len(previous_codes)}")

    def desc(step):
        text = step["step_description_prompt"]
        return text + "\n" + step["step_background"] if with_background else text

    parts = []
    for step, code in zip(steps[:k], previous_codes[:k]):
        parts += [desc(step), code, "------"]
    step = steps[k]
    template = SCICODE_TEMPLATE if with_background else SCICODE_TEMPLATE_NO_BACKGROUND
    # str.format substitutes once: braces inside the steps' text or code are not read as fields
    return template.format(problem_steps_str="\n\n".join(parts[:-1]),  # the last "------" is dropped
                           next_step_str=desc(step) + "\n\n" + step["function_header"] + "\n\n" + step["return_line"],
                           dependencies=problem["required_dependencies"])


def scicode_step_prompt(tokenizer, problem, k, previous_codes, with_background=True, prompt_format="chat"):
    """The full prompt text of step k for a tokenizer: scicode_prompt's text in the chat template with the system
    message "You are a helpful assistant." (prompt_format="chat", the default), or the raw template text with no
    chat template (prompt_format="raw").

    The official code gave EM-INF and its baselines different prompts and token caps: greedy, T=0.1 and adaptive
    temperature went through a vLLM chat endpoint (system message + chat template, the server's token cap), while
    EM-INF (min_entropy.py) tokenized the raw template text with no chat template and capped it at 4096 new tokens.
    Here every mode gets the same prompt and the same --max-new-tokens, so a difference between modes is the
    decoding's alone; prompt_format="raw" reproduces the official EM-INF prompt (for any mode)."""
    text = scicode_prompt(problem, k, previous_codes, with_background)
    if prompt_format == "raw":
        return text
    if prompt_format != "chat":
        raise ValueError(f"prompt_format must be one of {', '.join(SCICODE_PROMPT_FORMATS)}, got {prompt_format!r}")
    return _chat(tokenizer, SCICODE_SYSTEM_PROMPT, text)


# an import line anywhere, indented ones (inside functions) included: the import-stripping of extract_python_script
_SCICODE_IMPORT = re.compile(r"^\s*(import .*|from .*\s+import\s+.*)", flags=re.MULTILINE)


def scicode_extract(response):
    """SciCode's code extraction (EM_PT's src/scicode/gen/models.py extract_python_script), then its import removal.

    The block is the text after the FIRST "```python" up to the next "```"; without "```python", the text between
    the first two "```" (a language tag such as "py" stays in it, as upstream); with no fence at all, the text
    from the first `def name(...):` line on; else the whole response. Then every import line is deleted, indented
    ones too: the dependencies are prepended at grading, and an alias imported inside a function is lost (as upstream).
    Not extract_code, which takes the LAST block (LiveCodeBench's rule)."""
    response = response or ""
    if "```python" in response:
        block = response.partition("```python")[2].partition("```")[0]
    elif "```" in response:
        block = response.partition("```")[2].partition("```")[0]
    else:
        # extract_function_regex: (def\s+\w+\(.*?\):(?:\n\s+.*)+) under re.DOTALL matches from the first such def
        # to the end of the stripped text
        text = response.strip()
        m = re.search(r"def\s+\w+\(.*?\):\n\s", text, flags=re.DOTALL)
        block = text[m.start():] if m else response
    return _SCICODE_IMPORT.sub("", block)


def _scicode_steps(problem):
    """[{step_number, test_cases, given}] of a problem record (sub_steps) or of a results row (steps)."""
    if "sub_steps" in problem:
        return [{"step_number": s["step_number"], "test_cases": s["test_cases"], "given": scicode_is_given(s)}
                for s in problem["sub_steps"]]
    return [{"step_number": str(s["step_number"]), "test_cases": s["test_cases"], "given": bool(s["given"])}
            for s in problem["steps"]]


def scicode_step_program(problem, k, codes):
    """The test program of step k, as test_generated_code.py writes it: gencode.py's step file
    (dependencies + "\\n" + the code of steps 0..k-1 joined by "\\n" + "\\n\\n" + step k's code), then the targets
    (process_hdf5_to_tuple, SciCode's helper, from our shim) and each test case after `target = targets[i]`."""
    step = _scicode_steps(problem)[k]
    program = problem["required_dependencies"] + "\n" + "\n".join(codes[:k]) + "\n" + "\n" + codes[k]
    program += "\n\nfrom scicode.parse.parse import process_hdf5_to_tuple\n\n"
    program += f"targets = process_hdf5_to_tuple('{step['step_number']}', {len(step['test_cases'])})\n"
    for i, case in enumerate(step["test_cases"]):
        program += f"target = targets[{i}]\n\n" + "".join(line + "\n" for line in case.split("\n"))
    return program


def scicode_helpers(targets):
    """The helpers SciCode's test cases import, re-implemented with SciCode's semantics (src/scicode/compare/cmp.py,
    src/scicode/parse/parse.py): {module name: {name: function}}. It runs inside the sandbox as part of every step
    program's header (its source is copied there), so it imports only numpy up front; sympy and scipy.sparse are
    looked up in sys.modules, since an object of their classes cannot exist unless they were imported.

    targets: {"step": step number, "targets": [value of test 1, ...], "error": None or why they could not be read},
    read from the h5 by the grader (_scicode_targets); process_hdf5_to_tuple returns them, or raises the error."""
    import sys

    import numpy as np

    def classes(module, *names):  # the classes, or () while their module is not imported (isinstance(x, ()) is False)
        m = sys.modules.get(module)
        return tuple(getattr(m, n) for n in names) if m else ()

    def process_hdf5_to_tuple(step_id, test_num, h5py_file=None):
        if targets["error"]:
            raise KeyError(targets["error"])
        if str(step_id) != targets["step"] or test_num > len(targets["targets"]):
            raise KeyError(f"no {test_num} targets for step {step_id} in this program")
        return list(targets["targets"][:test_num])

    def process_symbol_in_dict(d):
        # sympy Symbols become their names, in values and in keys (a renamed key keeps its original value)
        symbol, out = classes("sympy", "Symbol"), {}
        for key, value in d.items():
            out[key] = str(value) if isinstance(value, symbol) else value
            if isinstance(key, symbol):
                out[str(key)] = d[key]
                del out[key]
        return out

    def are_dicts_close(dict1, dict2, atol=1e-8, rtol=1e-5):
        dict1, dict2 = process_symbol_in_dict(dict1), process_symbol_in_dict(dict2)
        if dict1.keys() != dict2.keys():
            return False
        sparse = classes("scipy.sparse", "csr_matrix", "csc_matrix", "bsr_matrix", "coo_matrix")
        for key, value1 in dict1.items():
            value2 = dict2[key]
            if isinstance(value1, (str,) + classes("sympy", "Symbol")):
                close = value1 == value2
            elif isinstance(value1, sparse):
                close = np.allclose(value1.toarray(), value2.toarray(), atol=atol, rtol=rtol)
            else:
                try:
                    close = np.allclose(value1, value2, atol=atol, rtol=rtol)
                except ValueError:  # shapes that do not broadcast, ...: plain equality (only ValueError, as upstream)
                    close = value1 == value2
            if not close:
                return False
        return True

    def are_csc_matrix_close(matrix1, matrix2):
        return np.allclose(matrix1.toarray(), matrix2.toarray())

    def cmp_tuple_or_list(var1, var2):
        if len(var1) != len(var2):
            return False
        for v1, v2 in zip(var1, var2):  # the type of the FIRST argument (the model's value) picks the comparison
            if isinstance(v1, dict):
                close = are_dicts_close(v1, v2)
            elif isinstance(v1, classes("scipy.sparse", "csr_matrix", "csc_matrix")):  # coo/bsr: np.allclose below
                close = are_csc_matrix_close(v1, v2)
            elif isinstance(v1, bool):
                close = v1 == v2
            else:
                try:
                    close = np.allclose(v1, v2)
                except ValueError:
                    close = v1 == v2
            if not close:
                return False
        return True

    return {"scicode.parse.parse": {"process_hdf5_to_tuple": process_hdf5_to_tuple},
            "scicode.compare.cmp": {"are_dicts_close": are_dicts_close, "cmp_tuple_or_list": cmp_tuple_or_list,
                                    "process_symbol_in_dict": process_symbol_in_dict,
                                    "are_csc_matrix_close": are_csc_matrix_close}}


def scipy_simps():
    """Give scipy.integrate back `simps`, which SciPy 1.14 removed and SciCode's problems 2 and 28 import
    (`from scipy.integrate import simps` in their dependencies, so all 4 of their steps fail at import without it).
    It runs inside the sandbox, in the header of a step program that mentions simps; a SciPy that has simps keeps it.
    simps(y, x=None, dx=1.0, axis=-1, even=None) had simpson's signature: even=None (or "simpson") is simpson's own
    rule since SciPy 1.11; "first", "last" and "avg" (SciPy < 1.11's default) are the older rules for an even
    number of samples: Simpson on N-1 of them plus the trapezoid on the interval left over (the last, the first,
    or the mean of both)."""
    import numpy as np
    import scipy.integrate as integrate

    if hasattr(integrate, "simps"):
        return

    def simps(y, x=None, dx=1.0, axis=-1, even=None):
        if even not in (None, "simpson", "avg", "first", "last"):
            raise ValueError("Parameter 'even' must be 'simpson', 'avg', 'last', or 'first'.")
        y = np.asarray(y)
        n = y.shape[axis]
        if even in (None, "simpson") or n % 2 == 1:
            return integrate.simpson(y, x=x, dx=dx, axis=axis)

        def piece(lo, hi, rule):  # the rule on samples lo..hi-1 along axis (x: 1-D, or the shape of y)
            xs = None if x is None else np.take(np.asarray(x), range(lo, hi), axis=axis if np.ndim(x) > 1 else 0)
            return rule(np.take(y, range(lo, hi), axis=axis), x=xs, dx=dx, axis=axis)

        first = piece(0, n - 1, integrate.simpson) + piece(n - 2, n, integrate.trapezoid)
        last = piece(0, 2, integrate.trapezoid) + piece(1, n, integrate.simpson)
        return {"first": first, "last": last, "avg": (first + last) / 2}[even]

    integrate.simps = simps


def _scicode_install(helpers, targets_file, simps):
    """The first lines of every step program (run_program's header: in the sandbox, before the program and before
    the guard that disables os.remove): load this step's targets and delete their file (the program cannot read
    them from disk), register the helpers as the modules scicode.parse.parse and scicode.compare.cmp (and their
    parent packages) in sys.modules, and install the simps shim when the program needs it."""
    import os
    import pickle
    import sys
    import types

    with open(targets_file, "rb") as f:
        targets = pickle.load(f)
    os.remove(targets_file)
    for name, functions in helpers(targets).items():
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            module = sys.modules.setdefault(".".join(parts[:depth]), types.ModuleType(".".join(parts[:depth])))
            if depth > 1:  # `import scicode.compare.cmp` then `scicode.compare.cmp.f` needs the attributes
                setattr(sys.modules[".".join(parts[:depth - 1])], parts[depth - 1], module)
        vars(module).update(functions)
    if simps is not None:
        simps()


@functools.lru_cache(maxsize=2)
def _scicode_header(with_simps):
    """The header source: our functions' own source, then one call; `del` leaves the program's globals empty."""
    parts = [inspect.getsource(scicode_helpers), inspect.getsource(_scicode_install)]
    if with_simps:
        parts.append(inspect.getsource(scipy_simps))
    call = f"_scicode_install(scicode_helpers, {SCICODE_TARGETS_FILE!r}, {'scipy_simps' if with_simps else 'None'})\n"
    names = "scicode_helpers, _scicode_install" + (", scipy_simps" if with_simps else "")
    return "\n".join(parts) + "\n" + call + f"del {names}\n"


def _h5_sparse(group):
    """SciCode's process_hdf5_sparse_matrix: coo (row, col), bsr (blocksize) or csr."""
    import scipy.sparse

    data, shape = group["data"][()], tuple(group["shape"][()])
    if "row" in group and "col" in group:
        return scipy.sparse.coo_matrix((data, (group["row"][()], group["col"][()])), shape=shape)
    if "blocksize" in group:
        return scipy.sparse.bsr_matrix((data, group["indices"][()], group["indptr"][()]), shape=shape,
                                       blocksize=tuple(group["blocksize"][()]))
    return scipy.sparse.csr_matrix((data, group["indices"][()], group["indptr"][()]), shape=shape)


def _h5_value(h5py, node):
    """One variable of a test (SciCode's process_hdf5_to_tuple / process_hdf5_datagroup): a dataset is its value,
    bytes decoded; a group is decided by its FIRST key in h5py's (name) order: "list" -> the list of its members'
    raw values, "sparse_matrix" -> the matrix, anything else -> a dict whose keys become floats where they parse
    (a bytes value keeps its key and is decoded; a subgroup is a sparse matrix)."""
    if not isinstance(node, h5py.Group):
        value = node[()]
        return value.decode("utf-8", errors="strict") if isinstance(value, bytes) else value
    keys = list(node.keys())
    if not keys:
        return None
    if keys[0] == "list":
        return [member[()] for member in node["list"].values()]
    if keys[0] == "sparse_matrix":
        return _h5_sparse(node["sparse_matrix"])
    out = {}
    for key, obj in node.items():
        if isinstance(obj, h5py.Group):
            out[key] = _h5_sparse(obj["sparse_matrix"])
            continue
        value = obj[()]
        if isinstance(value, bytes):
            out[key] = value.decode("utf-8", errors="strict")
            continue
        try:
            out[float(key)] = value
        except ValueError:
            out[key] = value
    return out


def _scicode_targets(h5py, f, step_number, n_tests):
    """{"step", "targets", "error"} of one step from the open h5: test j's group "{step}/test{j}" (j = 1..n) holds
    one variable (-> its value) or several (-> a tuple, in h5py's name order: var1, var10, var2). What upstream
    could not read either (a missing group, a list member that is a group, bad UTF-8) becomes the error that
    process_hdf5_to_tuple raises inside the program, so that step fails, as its test file does upstream."""
    values = []
    try:
        for j in range(1, n_tests + 1):
            name = f"{step_number}/test{j}"
            if not isinstance(f.get(name), h5py.Group):
                raise KeyError(f"no group {name}")
            group = f[name]
            tests = [_h5_value(h5py, group[key]) for key in group.keys()]
            values.append(tests[0] if len(tests) == 1 else tuple(tests))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return {"step": step_number, "targets": None, "error": f"{SCICODE_H5}: {type(e).__name__}: {e}"}
    return {"step": step_number, "targets": values, "error": None}


def grade_scicode(problem, codes, data_dir, timeout=SCICODE_TIMEOUT, memory_mb=SCICODE_MEMORY_MB, must_finish=True,
                  workers=None):
    """Run each tested step of one problem in the sandbox -> [True / False per step, None for given steps].

    problem: a record (sub_steps) or a results row (steps, as scicode_row writes it); codes: one code string per
    step, given steps included (what their prompts showed); codes=None takes a row's saved codes. Step k's program
    is scicode_step_program(problem, k, codes); its targets are read here from {data_dir}/test_data.h5 with h5py
    and handed to the program as a file (the sandbox never needs the 1 GB h5). Pass = exit code 0 within `timeout`
    seconds (SciCode's rule: any test's failed assert or exception fails the step), with memory_mb of address space.
    must_finish=True (ours): the program must also run to its last line, so code that calls sys.exit(0) before
    the tests fails; must_finish=False is upstream's plain exit-status check. Steps are independent programs
    (each holds the code of all earlier steps), so up to `workers` (default: the CPU count) run at once; each
    program is single-threaded (the sandbox sets OMP_NUM_THREADS=1)."""
    steps = _scicode_steps(problem)
    if codes is None and "steps" not in problem:
        raise ValueError(f"problem {problem.get('id')}: a record has no saved code: pass codes (one per step)")
    codes = [s["code"] for s in problem["steps"]] if codes is None else list(codes)
    if len(codes) != len(steps) or not all(isinstance(c, str) for c in codes):
        raise ValueError(f"problem {problem.get('id')}: {len(steps)} steps need {len(steps)} code strings, "
                         f"got {len(codes)}")
    h5py = _h5py()
    scored = [k for k, s in enumerate(steps) if not s["given"]]
    path = os.path.join(data_dir, SCICODE_H5)
    try:
        with h5py.File(path, "r") as f:  # read here, in one thread: h5py serialises access anyway
            targets = {k: _scicode_targets(h5py, f, steps[k]["step_number"], len(steps[k]["test_cases"]))
                       for k in scored}
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({str(e).splitlines()[0][:120]})") from None

    def run(k):
        program = scicode_step_program(problem, k, codes)
        rc, _ = run_program(program, timeout=timeout, memory_mb=memory_mb, header=_scicode_header("simps" in program),
                            files={SCICODE_TARGETS_FILE: pickle.dumps(targets[k])}, must_finish=must_finish)
        return rc == 0

    workers = max(1, min(len(scored), workers or os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        verdicts = dict(zip(scored, pool.map(run, scored)))
    return [None if s["given"] else verdicts[k] for k, s in enumerate(steps)]


def _scicode_counts(verdicts):
    """(main problem correct, steps passed, steps scored) of one problem's verdicts; given steps (None) excluded.
    A problem is correct when every scored step passed (test_generated_code.py: correct_prob == tot_prob, where
    only generated, tested steps are counted); a problem with no scored step is not correct."""
    scored = [v for v in verdicts if v is not None]
    return bool(scored) and all(scored), sum(map(bool, scored)), len(scored)


def scicode_row(record, steps, verdicts):
    """The SciCode fields of a results row (one row per main problem):
        id, problem, grading "scicode", required_dependencies,
        steps: [{step_number, prompt, response, code, correct, given, test_cases}] in step order (given steps:
               prompt/response None, code = the given code used, correct None: never scored),
        correct (every scored step passed), sub_correct, sub_total (scored steps).
    steps: one {prompt, response, code} per step of the record (step_number optional; checked when present);
    verdicts: grade_scicode's list. The row holds what re-grading needs (codes, test cases, step numbers,
    dependencies), so `python evaluate.py FILE --scicode-data DIR` re-grades it without the dataset."""
    subs = record["sub_steps"]
    if not len(steps) == len(verdicts) == len(subs):
        raise ValueError(f"problem {record['id']}: {len(subs)} steps, got {len(steps)} steps and "
                         f"{len(verdicts)} verdicts")
    out = []
    for sub, step, verdict in zip(subs, steps, verdicts):
        if str(step.get("step_number", sub["step_number"])) != sub["step_number"]:
            raise ValueError(f"step {step['step_number']} given where {sub['step_number']} was expected")
        given = scicode_is_given(sub)
        if given != (verdict is None):
            kind = "given" if given else "tested"
            raise ValueError(f"step {sub['step_number']}: verdict {verdict!r} for a {kind} step")
        out.append({"step_number": sub["step_number"], "prompt": None if given else step.get("prompt"),
                    "response": None if given else step.get("response"), "code": step["code"],
                    "correct": None if given else bool(verdict), "given": given, "test_cases": list(sub["test_cases"])})
    correct, sub_correct, sub_total = _scicode_counts(verdicts)
    return {"id": record["id"], "problem": record["problem"], "grading": "scicode",
            "required_dependencies": record["required_dependencies"], "steps": out, "correct": correct,
            "sub_correct": sub_correct, "sub_total": sub_total}


def scicode_scores(rows):
    """SciCode's two numbers over rows (scicode_row's fields correct / sub_correct / sub_total):
    accuracy = main problems whose every scored step passed / problems, subproblem_accuracy = steps passed / steps
    scored; given steps count in neither. On the whole test split that is x/65 and y/288, the denominators of
    EM_PT's test_generated_code.py and of the paper (inspect_ai's variant uses 291 steps and never credits
    problems 13, 62, 76)."""
    n, sub_total = len(rows), sum(r["sub_total"] for r in rows)
    correct, sub_correct = sum(bool(r["correct"]) for r in rows), sum(r["sub_correct"] for r in rows)
    return {"problems": n, "correct": correct, "accuracy": correct / n if n else None, "sub_correct": sub_correct,
            "sub_total": sub_total, "subproblem_accuracy": sub_correct / sub_total if sub_total else None}


# ----------------------------------------------------------------------------------------------------------------
# Plots: `python evaluate.py plot RUN_DIR... | RESULTS.jsonl... [--out FILE.png]` (matplotlib, optional)

# metrics.jsonl keys drawn against "step" (em_ft.py / em_rl.py write them), in panel order; absent keys are skipped
PLOT_METRICS = [("entropy", "entropy of the training samples (nats/token)"), ("loss", "loss"),
                ("reward", "reward (mean over rollouts)"), ("response_length", "response length (tokens)"),
                ("eval_accuracy", "held-out greedy accuracy")]


def _pyplot():
    """matplotlib.pyplot with the file-only Agg backend, imported only when a plot is asked for."""
    try:
        import matplotlib
    except ImportError:
        raise InputError("plots need matplotlib, which is optional: pip install matplotlib") from None
    matplotlib.use("Agg")  # no display needed (CI, ssh)
    import matplotlib.pyplot as plt

    return plt


def _grid(plt, n_panels, title):
    """A figure with n_panels axes, at most three per row; returns (figure, list of axes)."""
    cols = min(3, n_panels)
    rows = -(-n_panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, list(axes.flat[:n_panels])


def plot_runs(run_dirs, out):
    """Training curves: one panel per metric of PLOT_METRICS that some run logged, one line per run."""
    runs = {}
    for d in run_dirs:
        path = os.path.join(d, "metrics.jsonl")
        if not os.path.isfile(path):
            raise InputError(f"{d}: no metrics.jsonl (a run folder of em_ft.py or em_rl.py --out)")
        with open(path) as f:  # a line cut off by a crash is skipped, like a resumed run does
            runs[os.path.basename(os.path.normpath(d))] = [r for r in map(_json_or_none, f) if r and "step" in r]
    keys = [(k, label) for k, label in PLOT_METRICS if any(k in r for rows in runs.values() for r in rows)]
    if not keys:
        raise InputError(f"{', '.join(run_dirs)}: no step with any of {', '.join(k for k, _ in PLOT_METRICS)}")
    plt = _pyplot()
    fig, axes = _grid(plt, len(keys), "training runs")
    for ax, (key, label) in zip(axes, keys):
        for i, (name, rows) in enumerate(runs.items()):
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                # one colour per run in every panel; eval_accuracy exists on a few steps only: markers show them
                ax.plot(*zip(*points), marker="o" if key == "eval_accuracy" or len(points) < 10 else None,
                        color=f"C{i}", label=name)
        ax.set_xlabel("step")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _json_or_none(line):
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def plot_results(files, out):
    """Bar charts per results file: accuracy (as stored by the run that wrote it, re-graded where it stored
    none) and mean entropy per token, the model's and the sampled distribution's."""
    names, acc, ent, sampled = [], [], [], []
    for path in files:
        recs = [rec for _, rec in _read_results(path, [])]
        if not recs:
            raise InputError(f"{path}: no gradable records (a results file of em_inf.py --out)")
        correct = [bool(r["correct"]) if "correct" in r else grade(r, r.get("response") or "") for r in recs]

        def mean(key):
            vals = [r[key] for r in recs if isinstance(r.get(key), (int, float))]
            return sum(vals) / len(vals) if vals else float("nan")  # not recorded: no bar

        names.append(os.path.splitext(os.path.basename(path))[0])
        acc.append(sum(correct) / len(correct))
        ent.append(mean("entropy"))
        sampled.append(mean("sampled_entropy"))
    plt = _pyplot()
    fig, (ax_acc, ax_ent) = _grid(plt, 2, "results files")
    x = list(range(len(names)))
    ax_acc.bar_label(ax_acc.bar(x, acc, color="tab:blue"), fmt="%.2f", fontsize=8)
    ax_acc.set_title("accuracy", fontsize=10)
    ax_acc.set_ylim(0, 1)
    width = 0.4  # grouped bars: the model's entropy and the entropy of what was sampled from
    ax_ent.bar([i - width / 2 for i in x], ent, width, label="model", color="tab:orange")
    ax_ent.bar([i + width / 2 for i in x], sampled, width, label="sampled", color="tab:green")
    ax_ent.set_title("mean entropy per token (nats)", fontsize=10)
    ax_ent.legend(fontsize=8)
    for ax in (ax_acc, ax_ent):
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.set_size_inches(max(8.4, 1.1 * len(names) * 2), 4.2)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_main(argv):
    """`plot` subcommand: run folders -> training curves, results files -> bar charts (never both at once)."""
    parser = argparse.ArgumentParser(prog="evaluate.py plot", description="Draw training curves of run folders "
                                     "(metrics.jsonl) or bar charts of results files, into one PNG.")
    parser.add_argument("paths", nargs="+", help="em_ft.py / em_rl.py run folders, or em_inf.py results .jsonl files")
    parser.add_argument("--out", default="plot.png", help="PNG file to write (default: plot.png)")
    args = parser.parse_args(argv)
    try:
        missing = [p for p in args.paths if not os.path.exists(p)]
        if missing:
            raise InputError(f"{missing[0]}: no such file or folder")
        folders = [os.path.isdir(p) for p in args.paths]
        if any(folders) and not all(folders):
            raise InputError("pass either run folders or results files, not both: they make different plots")
        (plot_runs if all(folders) else plot_results)(args.paths, args.out)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# CLI: re-grade results files and compare them side by side


def _read_results(path, skipped):
    """Yield (line number, record) for the usable lines of a results file; append (line, why) to `skipped`."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                skipped.append((lineno, f"not valid JSON ({e.msg})"))
                continue
            if isinstance(rec, dict) and set(rec) == {"config"}:
                continue  # the first line: the arguments of the run that wrote the file
            if isinstance(rec, dict) and rec.get("grading") == "scicode":  # one main problem (scicode_row)
                why = _scicode_row_problem(rec)
                if why:
                    skipped.append((lineno, why))
                else:
                    yield lineno, rec
                continue
            if not isinstance(rec, dict) or not ("response" in rec or "responses" in rec) \
                    or not ("gold" in rec or "answer" in rec or rec.get("tests")):
                fields = ", ".join(rec) if isinstance(rec, dict) else type(rec).__name__
                skipped.append((lineno, f"needs response(s) and gold (or tests), has: {fields}"))
                continue
            yield lineno, rec


def _scicode_row_problem(rec):
    """Why a SciCode results row cannot be re-graded from what it carries, or None."""
    steps = rec.get("steps")
    if not isinstance(rec.get("required_dependencies"), str) or not isinstance(steps, list) or not steps:
        return "a SciCode row needs required_dependencies and steps (scicode_row's fields)"
    for s in steps:
        if not (isinstance(s, dict) and s.get("step_number") and isinstance(s.get("code"), str)
                and isinstance(s.get("test_cases"), list) and isinstance(s.get("given"), bool)):
            return "a SciCode row's steps each need step_number, code, test_cases and given"
    return None


def _summarize_scicode(path, recs, skipped, scicode_data, timeout):
    """summarize() of a SciCode results file: every row re-graded from its saved code (grade_scicode)."""
    if not scicode_data:
        raise InputError(f"{path}: SciCode results are re-graded by running their code on SciCode's targets: pass "
                         f"--scicode-data DIR (SciCode's eval/data folder, with {SCICODE_H5})")
    regraded, flips, tokens, entropy = [], 0, [], []
    for lineno, rec in recs:
        if rec.get("grading") != "scicode":
            skipped.append((lineno, "not a SciCode row in a file of SciCode rows"))
            continue
        verdicts = grade_scicode(rec, None, scicode_data, timeout=timeout)
        # a flip: a scored step whose stored verdict differs from the re-grade
        flips += sum(s.get("correct") != v for s, v in zip(rec["steps"], verdicts) if v is not None)
        correct, sub_correct, sub_total = _scicode_counts(verdicts)
        regraded.append({"correct": correct, "sub_correct": sub_correct, "sub_total": sub_total})
        if isinstance(rec.get("tokens"), (int, float)):
            tokens.append(rec["tokens"])
        if isinstance(rec.get("entropy"), (int, float)):
            entropy.append(rec["entropy"])
    scores = scicode_scores(regraded)
    return {"file": path, "n": len(regraded), "accuracy": scores["accuracy"], "pass@1": None, "pass@k": None,
            "k": None, "tokens": sum(tokens) / len(tokens) if tokens else None,
            "entropy": sum(entropy) / len(entropy) if entropy else None, "flips": flips, "skipped": skipped,
            "main_correct": scores["correct"], "subproblem_accuracy": scores["subproblem_accuracy"],
            "sub_correct": scores["sub_correct"], "sub_total": scores["sub_total"]}


def summarize(path, scicode_data=None, scicode_timeout=SCICODE_TIMEOUT, judge=None):
    """Re-grade one results file -> dict of the table's columns (None: not recorded) and the skipped lines.

    A file of SciCode rows (scicode_row) is re-graded from the rows' saved code with the targets in `scicode_data`
    (InputError without it); its dict adds main_correct, subproblem_accuracy, sub_correct, sub_total
    (scicode_scores), and its flips count scored steps, not problems. `judge` ("ours"/"official") re-grades
    UGPhysics rows with that judge instead of each row's own; the row's "judges" lists the UGPhysics judges that
    ran."""
    skipped = []
    recs = list(_read_results(path, skipped))
    if any(rec.get("grading") == "scicode" for _, rec in recs):
        return _summarize_scicode(path, recs, skipped, scicode_data, scicode_timeout)
    correct, flips, tokens, entropy, samples, judges = [], 0, [], [], [], set()
    for lineno, rec in recs:
        responses = rec.get("responses") or [rec.get("response") or ""]
        main = rec.get("response", responses[0]) or ""
        ok = grade(rec, main, judge=judge)
        correct.append(ok)
        flips += "correct" in rec and bool(rec["correct"]) != ok
        if rec.get("grading") == "ugphysics":
            judges.add(judge or rec.get("judge") or "ours")
        if len(responses) > 1:  # several samples of one problem: (n, c) for pass@k
            samples.append((len(responses), sum(grade(rec, r, judge=judge) for r in responses)))
        if isinstance(rec.get("tokens"), (int, float)):
            tokens.append(rec["tokens"])
        if isinstance(rec.get("entropy"), (int, float)):
            entropy.append(rec["entropy"])
    row = {"file": path, "n": len(correct), "accuracy": None, "pass@1": None, "pass@k": None, "k": None,
           "tokens": None, "entropy": None, "flips": flips, "skipped": skipped, "judges": sorted(judges)}
    if correct:
        row["accuracy"] = sum(correct) / len(correct)
    if samples and len(samples) == len(correct):  # pass@k only when every problem has several samples
        k = min(n for n, _ in samples)
        row["k"] = k
        row["pass@1"] = sum(pass_at_k(n, c, 1) for n, c in samples) / len(samples)
        row["pass@k"] = sum(pass_at_k(n, c, k) for n, c in samples) / len(samples)
    if tokens:
        row["tokens"] = sum(tokens) / len(tokens)
    if entropy:
        row["entropy"] = sum(entropy) / len(entropy)
    return row


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["plot"]:  # python evaluate.py plot ...: the Plots section
        return plot_main(argv[1:])
    parser = argparse.ArgumentParser(description="Re-grade results files (one JSON record per problem) and "
                                                 "print one comparison row per file. Plots: evaluate.py plot --help.")
    parser.add_argument("files", nargs="+", help="results .jsonl files, one record per problem, as em_inf.py writes them")
    parser.add_argument("--scicode-data", metavar="DIR", default=None,
                        help="SciCode's eval/data folder (test_data.h5, from the Google Drive folder in SciCode's "
                             "README): needed to re-grade SciCode results (default: none; SciCode files then fail)")
    parser.add_argument("--scicode-timeout", type=float, default=SCICODE_TIMEOUT,
                        help=f"seconds each SciCode step program may run (default: {SCICODE_TIMEOUT:g}, official "
                             f"EM_PT test_generated_code.py; upstream SciCode: 1800)")
    parser.add_argument("--judge", choices=JUDGES, default=None,
                        help="UGPhysics rows: re-grade with this rule-based judge, 'ours' (numbers compared with "
                             "their exponents) or 'official' (the paper's: mantissas only) (default: each row's own "
                             "`judge` field, else ours)")
    args = parser.parse_args(argv)
    if args.scicode_data is not None:
        try:  # before any grading: a missing h5 is one line, now
            check_scicode_data(args.scicode_data)
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    rows = []
    for path in args.files:
        if not os.path.isfile(path):
            print(f"error: {path}: no such file", file=sys.stderr)
            continue
        try:
            row = summarize(path, args.scicode_data, args.scicode_timeout, judge=args.judge)
        except InputError as e:  # e.g. a row whose judge field is neither ours nor official
            print(f"error: {path}: {e}", file=sys.stderr)
            continue
        skipped = row["skipped"]
        if row["n"] == 0 and skipped and all(why.startswith("needs response") for _, why in skipped) \
                and "problem" in skipped[0][1]:  # a problems file (problem, answer), not a results file
            print(f"error: {path} holds problems, not responses: decode it first (python em_inf.py --dataset {path}) "
                  f"and grade the results file that writes", file=sys.stderr)
            continue
        if skipped:  # one line per file, naming the first bad line
            (lineno, why), more = skipped[0], len(skipped) - 1
            print(f"{'error' if row['n'] == 0 else 'warning'}: {path}:{lineno}: {why}"
                  f"{f' (and {more} more bad lines)' if more else ''}; {'nothing to grade' if row['n'] == 0 else 'skipped'}",
                  file=sys.stderr)
        elif row["n"] == 0:
            print(f"error: {path}: no records to grade", file=sys.stderr)
        if row["n"]:
            rows.append(row)
    if not rows:  # each file has had its one-line error
        return 1
    plain = [r for r in rows if "sub_total" not in r]
    if plain:
        print("| file | problems | accuracy | pass@1 | pass@k | mean tokens | mean entropy | regraded != stored |")
        print("|---|---|---|---|---|---|---|---|")
    for r in plain:
        passk = f"{_fmt(r['pass@k'], '.1%')} (k={r['k']})" if r["k"] else "-"
        print(f"| {r['file']} | {r['n']} | {_fmt(r['accuracy'], '.1%')} | {_fmt(r['pass@1'], '.1%')} | {passk} "
              f"| {_fmt(r['tokens'], '.0f')} | {_fmt(r['entropy'], '.3f')} | {r['flips']} |")
    scicode = [r for r in rows if "sub_total" in r]
    if scicode:  # SciCode: main problems and scored steps (scicode_scores), as the paper's two columns
        print("| file | problems | accuracy (main) | subproblem_accuracy | mean tokens | mean entropy "
              "| steps regraded != stored |")
        print("|---|---|---|---|---|---|---|")
    for r in scicode:
        print(f"| {r['file']} | {r['n']} | {_fmt(r['accuracy'], '.1%')} ({r['main_correct']}/{r['n']}) "
              f"| {_fmt(r['subproblem_accuracy'], '.1%')} ({r['sub_correct']}/{r['sub_total']}) "
              f"| {_fmt(r['tokens'], '.0f')} | {_fmt(r['entropy'], '.3f')} | {r['flips']} |")
    for r in rows:  # which UGPhysics judge produced the numbers above (they differ on numbers, U1)
        if r.get("judges"):
            print(f"{r['file']}: UGPhysics rows graded by the rule-based judge {' and '.join(r['judges'])} "
                  f"({'; '.join(_JUDGE_NOTES[j] for j in r['judges'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
