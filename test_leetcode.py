"""Tests of the code benchmarks' official protocols in evaluate.py: LeetCode (a hand-made file in DeepSeek-Coder's
format, its verdicts through the sandbox), LiveCodeBench's official prompt and extraction against ours, and
chat-list prompts (Eurus-2-RL-Data rows, jsonl and parquet) that must reach the model exactly as the chat template
renders them. The golden strings are typed here from the official texts, not built with evaluate's constants."""
import json
import shutil
import subprocess

import pytest

import evaluate
from evaluate import InputError, grade, load_problems

# ----------------------------------------------------------------------------------------------------------------
# the official texts, typed from EM_PT's evaluate_leetcode.py / system_prompt_original.md / lcb_runner

EURUS_SYSTEM = ("\nWhen tackling complex reasoning tasks, you have access to the following actions. Use them as "
                "needed to progress through your thought process.\n\n[ASSESS]\n\n[ADVANCE]\n\n[VERIFY]\n\n[SIMPLIFY]"
                "\n\n[SYNTHESIZE]\n\n[PIVOT]\n\n[OUTPUT]\n\nYou should strictly follow the format below:\n\n"
                "[ACTION NAME]\n\n# Your action step 1\n\n# Your action step 2\n\n# Your action step 3\n\n...\n\n"
                "Next action: [NEXT ACTION NAME]\n")
# system_prompt_original.md: the same words, every newline written as backslash + n, no final newline
EURUS_SYSTEM_LITERAL = (r"\nWhen tackling complex reasoning tasks, you have access to the following actions. Use them "
                        r"as needed to progress through your thought process.\n\n[ASSESS]\n\n[ADVANCE]\n\n[VERIFY]\n\n"
                        r"[SIMPLIFY]\n\n[SYNTHESIZE]\n\n[PIVOT]\n\n[OUTPUT]\n\nYou should strictly follow the format "
                        r"below:\n\n[ACTION NAME]\n\n# Your action step 1\n\n# Your action step 2\n\n# Your action "
                        r"step 3\n\n...\n\nNext action: [NEXT ACTION NAME]\n")
SUFFIX = "\n\nWrite Python code to solve the problem. Present the code in \n```python\nYour code\n```\nat the end."


def chatml(*turns):
    """The conftest tokenizer's ChatML rendering of (role, content) turns, with the generation prompt."""
    return "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns) + "<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


# ----------------------------------------------------------------------------------------------------------------
# LeetCode: a hand-made file in DeepSeek-Coder's 20240121-Jul.jsonl format

ADD_SFT = ("Given two integers a and b, return a + b.\n\nPlease complete the code below to solve above prblem:\n"
           "```python\nclass Solution:\n    def addTwo(self, a: int, b: int) -> int:\n        \n```")
ADD_TEST = ('\nmy_solution = Solution()\n\ntest_input = { "a": 1, "b": 2 }\n'
            'assert my_solution.addTwo(**test_input) == 3'
            '\n\ntest_input = { "a": -5, "b": 5 }\nassert my_solution.addTwo(**test_input) == 0\n')
MODE_TEST = ('\nmy_solution = Solution()\n\ntest_input = { "nums": [1, 3, 3, 2] }\n'
             'assert my_solution.mostFrequent(**test_input) == 3\n')
LEETCODE_ROWS = [
    {"task_id": "weekly-contest-1-add-two", "url": "https://leetcode.com/problems/add-two", "title": "add-two",
     "meta": {"questionId": "1", "difficulty": "Easy", "categoryTitle": "Algorithms"},
     "prompt": '"""\nGiven two integers a and b, return a + b.\n"""\nclass Solution:\n    def addTwo(self, a, b):\n',
     "prompt_sft": ADD_SFT, "test": ADD_TEST, "start_time": 1705804200},
    {"task_id": "biweekly-contest-2-most-frequent", "url": "https://leetcode.com/problems/most-frequent",
     "title": "most-frequent", "meta": {"questionId": "2", "difficulty": "Hard"},
     "prompt": '"""\nReturn the most frequent number.\n"""\n', "test": MODE_TEST, "start_time": 1705804300,
     "prompt_sft": ("Return the most frequent number.\n\nPlease complete the code below to solve above prblem:\n"
                    "```python\nclass Solution:\n    def mostFrequent(self, nums: List[int]) -> int:\n        \n```")},
]


@pytest.fixture
def leetcode_file(tmp_path):
    path = tmp_path / "20240121-Jul.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in LEETCODE_ROWS))
    return str(path)


def test_leetcode_file_records(leetcode_file):
    add, mode = load_problems(leetcode_file)
    assert add == {"id": "weekly-contest-1-add-two", "problem": ADD_SFT, "answer": "", "grading": "leetcode",
                   "tests": ADD_TEST, "difficulty": "Easy"}
    assert mode["difficulty"] == "Hard" and mode["tests"] == MODE_TEST


def test_leetcode_hub_copy_is_checked_by_its_git_blob_hash(leetcode_file, monkeypatch):
    monkeypatch.setattr(evaluate, "_hub_file", lambda repo, name: leetcode_file)
    # the real file's hash is DeepSeek-Coder's: this hand-made stand-in must be refused
    with pytest.raises(InputError, match="has git blob .* the hub copy changed") as e:
        load_problems("leetcode")
    assert "\n" not in str(e.value)
    if shutil.which("git") is None:
        pytest.skip("git is needed for the independent hash")
    blob = subprocess.run(["git", "hash-object", leetcode_file], capture_output=True, text=True).stdout.strip()
    monkeypatch.setitem(evaluate.BENCHMARKS["leetcode"], "blob", blob)
    assert [r["id"] for r in load_problems("leetcode", limit=1)] == ["weekly-contest-1-add-two"]


def test_leetcode_official_prompt(leetcode_file, tok):
    add = load_problems(leetcode_file)[0]
    assert evaluate.build_prompt(tok, add) == chatml(("system", EURUS_SYSTEM), ("user", ADD_SFT + SUFFIX))


GOOD = "class Solution:\n    def addTwo(self, a: int, b: int) -> int:\n        return a + b\n"


def fence(code):
    return f"```python\n{code}```"


@pytest.mark.parametrize("response,passed", [
    ("Add them.\n" + fence(GOOD), True),
    (fence(GOOD.replace("a + b", "a - b")), False),
    (fence("def addTwo(self, a, b):\n    return a + b\n"), True),  # no class: wrapped in `class Solution:`
    (fence(GOOD) + "\nCheck it:\n" + fence("print(Solution().addTwo(1, 2))\n"), True),  # the last block with def
    (fence(GOOD.replace("a + b", "a - b")) + "\nFixed:\n" + fence(GOOD), True),  # the LAST block with def
    (fence(GOOD) + "\nOops:\n" + fence(GOOD.replace("a + b", "a * b")), False),
    (fence("import sys\n" + GOOD + "sys.exit(0)\n"), False),  # exits before the asserts
    (fence("import os\n" + GOOD + "os._exit(0)\n"), False),
    (fence(GOOD + 'if __name__ == "__main__":\n    print(Solution().addTwo(int(input()), 1))\n'), True),  # not run
    (fence(GOOD + "print('x' * 100000)\n"), True),  # output is swallowed
    (fence(GOOD + "input()\n"), False),  # reading stdin raises
    (GOOD, True),  # no fence at all: the whole text is the program
    ("Here is my answer: " + GOOD, False),  # ... prose included
    ("", False),
])
def test_leetcode_verdicts(leetcode_file, response, passed):
    add = load_problems(leetcode_file)[0]
    assert grade(add, response) is passed


def test_leetcode_program_has_the_official_imports(leetcode_file):
    mode = load_problems(leetcode_file)[1]  # List, Counter and np come from the import lines
    code = "class Solution:\n    def mostFrequent(self, nums: List[int]) -> int:\n"
    assert grade(mode, fence(code + "        return Counter(nums).most_common(1)[0][0]\n"))
    assert grade(mode, fence(code + "        return int(np.bincount(nums).argmax())\n"))
    assert not grade(mode, fence(code + "        return min(nums)\n"))


def test_leetcode_time_limit(leetcode_file):
    add = load_problems(leetcode_file)[0]
    slow = fence(GOOD.replace("return a + b", "while True:\n            pass"))
    assert grade(add, slow, timeout=1.5) is False
    assert evaluate.grade_leetcode(fence(GOOD), ADD_TEST, timeout=5.0)
    assert not evaluate.grade_leetcode(fence(GOOD), "   ")  # no asserts: not a pass


@pytest.mark.parametrize("text,code", [
    (fence("def f():\n    return 1\n"), "\ndef f():\n    return 1\n"),
    (fence("def f():\n    return 1\n") + fence("f()\n"), "\ndef f():\n    return 1\n"),
    (fence("def f():\n    return 1\n") + fence("def g():\n    return 2\n"), "\ndef g():\n    return 2\n"),
    (fence("x = 1\n") + fence("y = 2\n"), "\ny = 2\n"),  # no block has def: the last one
    ("```\ndef f(): pass\n``` ```\nf()\n```", "\ndef f(): pass\n"),  # bare fences, same rule
    ("```py\nx = 1\n```", "py\nx = 1\n"),  # not "```python": a bare block, its language tag kept
    ("```python3\nx = 1\n```", "3\nx = 1\n"),
    ("x = 1\nprint(x)", "x = 1\nprint(x)"),  # no fence: all of it
    ("Sure:\n```python\ndef f(", "Sure:\n"),  # cut-off block: the text before the first fence
])
def test_match_code(text, code):
    assert evaluate.match_code(text) == code


@pytest.mark.parametrize("text,code", [
    (fence("class Solution:\n    def f(self):\n        return 1\n"),
     "\nclass Solution:\n    def f(self):\n        return 1\n"),
    (fence("def f(self):\n    return 1\n"),
     "class Solution:\n    \n    \n    def f(self):\n        return 1\n    \n    "),
    ("def f(self): return 1", "class Solution:\n    \n    def f(self): return 1\n    "),
])
def test_extract_leetcode_code(text, code):
    assert evaluate.extract_leetcode_code(text) == code


# ----------------------------------------------------------------------------------------------------------------
# LiveCodeBench: the official prompt (default) and ours (prompt_style="ours")

LCB_ROWS = [
    {"question_title": "sum", "question_content": "Read a and b, print a+b.", "platform": "atcoder",
     "question_id": "abc001_a", "contest_id": "abc001", "contest_date": "2023-08-01T00:00:00", "starter_code": "",
     "difficulty": "easy", "metadata": "{}",
     "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
     "private_test_cases": json.dumps([{"input": "5 7\n", "output": "12\n", "testtype": "stdin"}])},
    {"question_title": "twice", "question_content": "Return twice x.", "platform": "leetcode",
     "question_id": "3000", "contest_id": "weekly-1", "contest_date": "2023-08-01T00:00:00",
     "starter_code": "class Solution:\n    def twice(self, x: int) -> int:\n        ", "difficulty": "easy",
     "public_test_cases": json.dumps([{"input": "3", "output": "6", "testtype": "functional"}]),
     "private_test_cases": json.dumps([{"input": "-4", "output": "-8", "testtype": "functional"}]),
     "metadata": json.dumps({"func_name": "twice"})},
]


@pytest.fixture
def lcb_file(tmp_path):
    path = tmp_path / "lcb.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in LCB_ROWS))
    return str(path)


def test_livecodebench_official_prompt(lcb_file, tok):
    stdin_rec, func_rec = load_problems(lcb_file)
    assert stdin_rec["grading"] == func_rec["grading"] == "livecodebench"
    stdin_user = ("### Question:\nRead a and b, print a+b.\n\n### Format: Read the inputs from stdin solve the problem "
                  "and write the answer to stdout (do not directly test on the sample inputs). Enclose your code "
                  "within delimiters as follows.\n```python\n# YOUR CODE HERE\n```\n\n"
                  "### Answer: (use the provided format with backticks)\n\n")
    func_user = ("### Question:\nReturn twice x.\n\n### Format: You will use the following starter code to write the "
                 "solution to the problem and enclose your code within delimiters.\n```python\nclass Solution:\n"
                 "    def twice(self, x: int) -> int:\n        \n```\n\n"
                 "### Answer: (use the provided format with backticks)\n\n")
    for rec, user in ((stdin_rec, stdin_user), (func_rec, func_user)):
        assert evaluate.build_prompt(tok, rec) == chatml(("system", EURUS_SYSTEM_LITERAL), ("user", user + SUFFIX))


def test_livecodebench_our_prompt_behind_the_switch(lcb_file, tok):
    stdin_rec, func_rec = load_problems(lcb_file, prompt_style="ours")
    assert "grading" not in stdin_rec and "grading" not in func_rec
    ours = ("You are an expert Python programmer. You will be given a question (problem specification) and will "
            "generate a correct Python program that matches the specification and passes all tests. Put the "
            "complete program in a single ```python code block.")
    user = ("Return twice x.\n\nYou will use the following starter code to write the solution to the problem:\n"
            "```python\nclass Solution:\n    def twice(self, x: int) -> int:\n```")
    assert evaluate.build_prompt(tok, func_rec) == chatml(("system", ours), ("user", user))
    with pytest.raises(InputError, match="prompt style 'theirs' is not one of official, ours"):
        load_problems(lcb_file, prompt_style="theirs")


def test_livecodebench_extraction_follows_the_switch(lcb_file):
    official, ours = load_problems(lcb_file)[1], load_problems(lcb_file, prompt_style="ours")[1]
    solution = fence("class Solution:\n    def twice(self, x):\n        return 2 * x\n")
    response = solution + "\nExample:\n" + fence("print(Solution().twice(3))\n")
    assert grade(official, response) and grade(ours, solution)
    assert not grade(ours, response)  # ours takes the last block, which alone has no Solution


def test_livecodebench_time_limits(lcb_file, monkeypatch):
    calls = []
    monkeypatch.setattr(evaluate, "run_code", lambda code, tests, timeout: calls.append(timeout) or True)
    stdin_rec, func_rec = load_problems(lcb_file)
    grade(stdin_rec, "x")
    grade(func_rec, "x")  # two call-based tests in one process: 6 s each
    grade(load_problems(lcb_file, prompt_style="ours")[1], "x")
    assert calls == [6.0, 12.0, 10.0]


# ----------------------------------------------------------------------------------------------------------------
# chat-list prompts: Eurus-2-RL-Data rows and any local file whose prompt is a list of messages

EURUS_FILE_SYSTEM = EURUS_SYSTEM + "\n"  # the dataset's copy ends in two newlines
CODE_USER = "Write a function that reverses a string." + SUFFIX
EURUS_ROWS = [
    {"data_source": "taco", "ability": "code", "prompt": [{"role": "system", "content": EURUS_FILE_SYSTEM},
                                                          {"role": "user", "content": CODE_USER}],
     "reward_model": {"style": "rule", "ground_truth": json.dumps({"inputs": ["ab\n"], "outputs": ["ba\n"]})},
     "extra_info": {"split": "train", "index": 7}},
    {"data_source": "numina_olympiads", "ability": "math",
     "prompt": [{"role": "system", "content": EURUS_FILE_SYSTEM},
                {"role": "user",
                 "content": "What is 2+3?\n\nPresent the answer in LaTex format: \\boxed{Your answer}"}],
     "reward_model": {"style": "rule", "ground_truth": "5"}, "extra_info": {"split": "train", "index": 8}},
    {"data_source": "codecontests", "ability": "code", "prompt": [{"role": "system", "content": EURUS_FILE_SYSTEM},
                                                                  {"role": "user", "content": "Print 1." + SUFFIX}],
     "reward_model": {"style": "rule", "ground_truth": "{}"}, "extra_info": {"split": "train", "index": 9}},
]


def _eurus_file(tmp_path, kind):
    path = tmp_path / f"train.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in EURUS_ROWS))
    else:
        import datasets

        datasets.Dataset.from_list(EURUS_ROWS).to_parquet(str(path))
    return str(path)


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_eurus_code_rows_render_as_the_chat_template(tmp_path, tok, kind):
    path = _eurus_file(tmp_path, kind)
    code = load_problems(f"{path}:ability=code", require_answer=False)
    assert [r["id"] for r in code] == ["taco/7", "codecontests/9"] and {r["ability"] for r in code} == {"code"}
    first = code[0]
    assert first["messages"] == EURUS_ROWS[0]["prompt"] and first["problem"] == CODE_USER and first["answer"] == ""
    prompt = evaluate.build_prompt(tok, first)
    assert prompt == tok.apply_chat_template(first["messages"], tokenize=False, add_generation_prompt=True)
    assert prompt == chatml(("system", EURUS_FILE_SYSTEM), ("user", CODE_USER))  # no math prompt, no suffix added
    # a training script that appends its math suffix to `problem` changes nothing: the messages are the prompt
    assert evaluate.build_prompt(tok, {**first, "problem": first["problem"] + " Let us think"}) == prompt
    assert load_problems(path, limit=2, require_answer=False)[1]["id"] == "numina_olympiads/8"  # no selection


def test_eurus_selection_and_labels(tmp_path):
    path = _eurus_file(tmp_path, "jsonl")
    (math,) = load_problems(f"{path}:ability=math")  # math rows are gradable: the ground truth is the answer
    assert math["answer"] == "5" and math["problem"].startswith("What is 2+3?")
    with pytest.raises(InputError, match="2 of 3 rows have no answer graded here"):
        load_problems(path)
    with pytest.raises(InputError, match=r"no row has ability == 'physics' \(it has: code, math\)"):
        load_problems(f"{path}:ability=physics", require_answer=False)
    with pytest.raises(InputError, match="no field 'kind' to select rows by"):
        load_problems(f"{path}:kind=code", require_answer=False)


def test_eurus2_code_hub_reads_the_pinned_train_parquet(monkeypatch):
    import datasets

    calls = []

    class FakeDatasets:
        @staticmethod
        def load_dataset(path, name=None, split=None, data_files=None):
            calls.append((path, data_files))
            return datasets.Dataset.from_list(EURUS_ROWS)

    monkeypatch.setattr(evaluate, "_datasets", lambda: FakeDatasets)
    recs = load_problems("eurus2_code", require_answer=False)
    assert calls == [("parquet", ["hf://datasets/PRIME-RL/Eurus-2-RL-Data@9776b13264b5aaa0b16495fcf086a0a8d86fd655"
                                  "/train.parquet"])]
    assert [r["id"] for r in recs] == ["taco/7", "codecontests/9"]
    with pytest.raises(InputError, match="eurus2_code holds training prompts only"):
        load_problems("eurus2_code")


def test_any_chat_list_file_keeps_its_messages(tmp_path, tok):
    messages = [{"role": "user", "content": "What is 1+1?"}]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"prompt": messages, "answer": "2"}) + "\n")
    (rec,) = load_problems(str(path))
    assert rec == {"id": "0", "problem": "What is 1+1?", "messages": messages, "answer": "2"}
    assert evaluate.build_prompt(tok, rec) == chatml(("user", "What is 1+1?"))  # no system prompt added
    path.write_text(json.dumps({"prompt": ["What is 1+1?"], "answer": "2"}) + "\n")
    with pytest.raises(InputError, match=r"row 0: unexpected layout .*chat messages") as e:
        load_problems(str(path))
    assert "\n" not in str(e.value)
    base = type("Base", (), {"chat_template": None})()
    with pytest.raises(InputError, match="need a tokenizer with a chat template"):
        evaluate.build_prompt(base, rec)


def test_results_rows_regrade(leetcode_file, tmp_path):
    # what em_inf.py writes per problem (its result_row copies tests and grading): enough to grade again
    add = load_problems(leetcode_file)[0]
    rows = [{"id": add["id"], "problem": add["problem"], "gold": "", "response": fence(GOOD), "correct": True,
             "tests": add["tests"], "grading": add["grading"]},
            {"id": "b", "problem": "p", "gold": "", "response": fence("def addTwo(self, a, b):\n    return b\n"),
             "correct": True, "tests": add["tests"], "grading": "leetcode"}]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    row = evaluate.summarize(str(path))
    assert row["n"] == 2 and row["accuracy"] == 0.5 and row["flips"] == 1
