"""The shared grader: benchmarks, prompts, math/code grading and a CLI that re-grades result files.

(First working version: named hub datasets, the code sandbox and the CLI follow in later commits.)
"""
import json
import os
import re
import sys
import threading

MATH_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_SYSTEM_PROMPT = ("You are an expert Python programmer. Write a complete Python program that solves the "
                      "problem. Put the code in a single ```python code block.")


class InputError(ValueError):
    """Bad user input (missing file, unknown benchmark, unusable fields): a one-line message, no traceback."""


# ----------------------------------------------------------------------------------------------------------------
# Datasets

PROBLEM_FIELDS = ("problem", "question", "prompt", "question_content")
ANSWER_FIELDS = ("answer", "gold", "final_answer", "solution")


def _first_field(row, names):
    for name in names:
        if name in row and row[name] is not None:
            return name
    return None


def _load_local(path, split):
    import datasets

    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(ext)
    if builder is None:
        raise InputError(f"{path}: unsupported file type {ext!r} (use .jsonl, .json or .parquet)")
    try:
        ds = datasets.load_dataset(builder, data_files=path, split=split or "train")
    except Exception as e:
        raise InputError(f"{path}: cannot read it as {ext}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    return [dict(row) for row in ds]


def load_problems(name_or_path, split=None, limit=None):
    """Return a list of {"id", "problem", "answer"(, "tests")} records from a local file."""
    rows = _load_local(name_or_path, split)
    if not rows:
        raise InputError(f"{name_or_path}: no records")
    p_field, a_field = _first_field(rows[0], PROBLEM_FIELDS), _first_field(rows[0], ANSWER_FIELDS)
    if p_field is None or (a_field is None and "tests" not in rows[0]):
        raise InputError(f"{name_or_path}: needs a problem field ({'/'.join(PROBLEM_FIELDS)}) and an answer field "
                         f"({'/'.join(ANSWER_FIELDS)}); it has: {', '.join(rows[0])}")
    out = []
    for i, row in enumerate(rows[:limit] if limit else rows):
        rec = {"id": str(row.get("id", row.get("unique_id", i))), "problem": str(row[p_field]),
               "answer": _answer_to_str(row.get(a_field)) if a_field else ""}
        if "tests" in row:
            rec["tests"] = row["tests"]
        out.append(rec)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Prompts


def _chat(tokenizer, system, user):
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # no chat template (base models): a plain-text prompt the model can continue
    return f"{system}\n\nQuestion: {user}\n\nAnswer:"


def math_prompt(tokenizer, problem):
    return _chat(tokenizer, MATH_SYSTEM_PROMPT, problem)


def code_prompt(tokenizer, problem):
    return _chat(tokenizer, CODE_SYSTEM_PROMPT, problem)


def build_prompt(tokenizer, record):
    if record.get("tests"):
        return code_prompt(tokenizer, record["problem"])
    return math_prompt(tokenizer, record["problem"])


# ----------------------------------------------------------------------------------------------------------------
# Math grading

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_boxed(text):
    """Content of the last \\boxed{...} (or \\fbox{...}); None when there is none or it was cut off."""
    if not isinstance(text, str):
        return None
    matches = list(_BOX.finditer(text))
    if not matches:
        return None
    start = matches[-1].end()
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                content = text[start:i].strip()
                return content or None
    return None


def _answer_to_str(gold):
    if gold is None:
        return ""
    if isinstance(gold, bool):
        return str(gold)
    if isinstance(gold, int):
        return str(gold)
    if isinstance(gold, float):
        return str(int(gold)) if gold.is_integer() else repr(gold)
    if isinstance(gold, (list, tuple)):
        return ", ".join(_answer_to_str(g) for g in gold)
    return str(gold).strip()


def _mv_equal(gold, pred):
    from math_verify import parse, verify

    in_main = threading.current_thread() is threading.main_thread()
    t = 5 if in_main else None
    try:
        g = parse("\\boxed{" + gold + "}", parsing_timeout=t)
        p = parse("\\boxed{" + pred + "}", parsing_timeout=t)
        return bool(g and p and verify(g, p, timeout_seconds=t))
    except Exception:
        return False


def answers_equal(a, b):
    a, b = _answer_to_str(a), _answer_to_str(b)
    if not a or not b:
        return False
    return a == b or _mv_equal(a, b) or _mv_equal(b, a)


def grade_math(response, gold):
    pred = extract_boxed(response)
    gold = _answer_to_str(gold)
    if pred is None or not gold:
        return False
    return pred == gold or _mv_equal(gold, pred)


def grade(record, response):
    if record.get("tests"):
        raise NotImplementedError("code grading arrives in the next commit")
    return grade_math(response, record.get("answer", record.get("gold")))
