"""Tests for evaluate.py's UGPhysics support and for datasets as users have them.

The judge's verdicts are derived by hand from the rules of the official rule-based judge (YangLabHKUST/UGPhysics
codes/judge.py, summarised in evaluate.py's UGPhysics section): each case says which rule decides it. The
prompts are written out here, literally, from the official make_prompt (codes/utils.py). Then: UGPhysics files and
the dataset name syntax, the per-item time limit, the CLI's judge, and two ways datasets arrive from users (a
UTF-8 byte-order mark; OlympiadBench golds with $ inside)."""
import json
import threading
import time

import pytest

import evaluate
from evaluate import InputError, grade, grade_math, grade_ugphysics, load_problems, ugphysics_answers


def final(answer):
    return f"... so the carrier density follows. So the final answer is \\boxed{{{answer}}}."


# ----------------------------------------------------------------------------------------------------------------
# the judge: (response, gold answers, verdict of judge="official", verdict of judge="ours")

NUMBERS = [
    # relative error |p - g| / |g| <= 1.01e-2 after rounding p to gold's decimals: 0.8% in, 1.2% out
    (final("9.95"), "\\boxed{9.87}", True, True),
    (final("9.99"), "\\boxed{9.87}", False, False),  # and mantissas 9.99 vs 9.87: 0.12 > 0.101
    # the mantissa test (both judges): "{:.2e}" mantissas 1.30 vs 1.23 within 0.101, same exponent: accepted (5.7%)
    (final("1.30"), "\\boxed{1.23}", True, True),
    # LaTeX scientific notation: 4.9e23 vs 4.88e23 is 0.4%; 5.0e23 is 2.5% off and its mantissa 0.12 away
    (final("4.9 \\times 10^{23}"), "\\boxed{4.88 \\times 10^{23}}", True, True),
    (final("5.0 \\times 10^{23}"), "\\boxed{4.88 \\times 10^{23}}", False, False),
    # a wrong exponent: mantissas equal, exponents 20 vs 23. Official ignores exponents (accepts), ours does not
    (final("4.88 \\times 10^{20}"), "\\boxed{4.88 \\times 10^{23}}", True, False),
    (final("0.0512"), "\\boxed{0.00512}", True, False),  # the same on plain decimals: 5.12e-2 vs 5.12e-3
    # one side plain, the other m \times 10^k: the values are compared (equal)
    (final("48800"), "\\boxed{4.88 \\times 10^{4}}", True, True),
    (final("4.88 \\times 10^{4}"), "\\boxed{48800}", True, True),
    # Python's 4.88e23 is no LaTeX number: e is a symbol (the elementary charge), so 4.88e - 23 is no number
    (final("4.88e23"), "\\boxed{4.88 \\times 10^{23}}", False, False),
    # gold 0.5 has one decimal: 0.48 rounds to 0.5 (upstream's rounding to the gold's precision)
    (final("0.48"), "\\boxed{0.5}", True, True),
]

EXPRESSIONS = [
    (final("\\frac{m v^2}{2}"), "\\boxed{\\frac{1}{2} m v^{2}}", True, True),  # simplify(p - g) = 0
    (final("m v^2"), "\\boxed{\\frac{1}{2} m v^{2}}", False, False),  # difference m v^2 / 2
    (final("2"), "\\boxed{2x}", False, False),  # a symbol on one side only
    (final("\\frac{\\mu_0 n \\mu^2}{3 k_B T}"), "\\boxed{\\frac{n \\mu^{2} \\mu_0}{3 k_B T}}", True, True),
    (final("\\frac{n \\mu^{2} \\mu_0}{2 k_B T}"), "\\boxed{\\frac{n \\mu^{2} \\mu_0}{3 k_B T}}", False, False),
    # the physical constants removal: \mu_0 deleted from both sides, then they are the same expression
    (final("\\frac{n \\mu^2}{3 k_B T}"), "\\boxed{\\frac{n \\mu^{2} \\mu_0}{3 k_B T}}", True, True),
    (final("2"), "\\boxed{2\\hbar}", True, True),  # \hbar removed: 2 == 2
    (final("3"), "\\boxed{2\\hbar}", False, False),
    # equations: the same lhs - rhs up to a nonzero integer factor (-1, 2); a wrong one is not
    (final("\\frac{1}{2} m v^{2} = E_k"), "\\boxed{E_k = \\frac{1}{2} m v^{2}}", True, True),
    (final("2E_k = m v^2"), "\\boxed{E_k = \\frac{1}{2} m v^{2}}", True, True),
    (final("E_k = m v^2"), "\\boxed{E_k = \\frac{1}{2} m v^{2}}", False, False),
    # "y = ..." with a left side of <= 2 characters is normalised to its right side (MATH's _strip_string)
    (final("y = 2x + 1"), "\\boxed{2x+1}", True, True),
    # EX compares what follows the first "=": the left side is not looked at
    (final("\\frac{2 e V}{h}"), "\\boxed{\\nu = \\frac{2eV}{h}}", True, True),
    # spaces are removed, so "\\times e" becomes \\timese: one symbol, as parse_latex reads it (not times Euler's
    # number, which would make both sides numbers 10x apart, equal mantissas: official would accept)
    (final("\\frac{10^{-7}}{10^{6} \\times e}"), "\\boxed{\\frac{10^{-8}}{10^{6} \\times e}}", False, False),
]

SEVERAL = [
    (final("3, 2"), "\\boxed{2, 3}", True, True),  # order-free pairing
    (final("9.95, 4.9 \\times 10^{23}"), "\\boxed{4.88 \\times 10^{23}, 9.87}", True, True),
    (final("2"), "\\boxed{2, 3}", False, False),  # a count mismatch is False
    (final("2, 3, 4"), "\\boxed{2, 3}", False, False),
    (final("2, -2"), "\\boxed{\\pm 2}", True, True),  # \pm 2 is two answers, +2 and -2
    (final("(1.001, 2, 3)"), "\\boxed{(1, 2, 3)}", True, True),  # TUP: element-wise NV (1.001 rounds to 1.0)
    (final("(2, 1, 3)"), "\\boxed{(1, 2, 3)}", False, False),  # a tuple keeps its order
]

WORDS = [
    # TF: English in any case, Chinese words of the official list
    (final("正确"), "\\boxed{True}", True, True), (final("是"), "\\boxed{True}", True, True),
    (final("错误"), "\\boxed{True}", False, False), (final("不能"), "\\boxed{False}", True, True),
    (final("yes"), "\\boxed{True}", True, True), (final("F"), "\\boxed{True}", False, False),
    # MC: the same letter (case-sensitive: UGPhysics golds are mostly lower case), "B: ..." names B
    (final("b"), "\\boxed{b}", True, True), (final("B"), "\\boxed{b}", False, False),
    (final("B: 5 m/s"), "\\boxed{B}", True, True), (final("[B: the second]"), "\\boxed{B}", True, True),
    (final("[B]"), "\\boxed{B}", True, True), (final("C"), "\\boxed{B}", False, False),
    # IN: bracket types must match, ends compared as expressions, unions in any order
    (final("(0, 1.0]"), "\\boxed{(0, 1]}", True, True), (final("[0, 1]"), "\\boxed{(0, 1]}", False, False),
    (final("(1, \\infty) \\cup (-\\infty, 0)"), "\\boxed{(-\\infty, 0) \\cup (1, \\infty)}", True, True),
]

EXTRACTION = [
    ("\\boxed{3}. Therefore the answer is 7.", "\\boxed{7}", True, True),  # only text after the last "therefore"
    ("\\boxed{3} and then \\boxed{4", "\\boxed{3}", True, True),  # the last box is cut off: the first one
    ("The final answer: 12", "\\boxed{12}", True, True),  # no box: after "answer:"
    # the trailing ' is stripped from the response; a prime after a command is dropped anyway (parse_latex)
    ("The answer is \\Phi'", "\\boxed{\\Phi'}", True, True),
    ("I do not know.", "\\boxed{12}", False, False),  # no answer at all
    ("The answer is \\(6.02 \\times 10^{23}\\)", "\\boxed{6.02 \\times 10^{23}}", False, False),  # \( \) stays: no parse
]


@pytest.mark.parametrize("response,gold,official,ours", NUMBERS + EXPRESSIONS + SEVERAL + WORDS + EXTRACTION)
def test_judge_hand_derived(response, gold, official, ours):
    assert grade_ugphysics(response, gold, judge="official") is official
    assert grade_ugphysics(response, gold) is ours  # judge="ours" is the default


@pytest.mark.parametrize("text,items", [
    ("So the final answer is \\boxed{1, \\pm 2}.", ["1", "+2", "-2"]),
    ("first \\boxed{3}, finally \\boxed{4.88 \\times 10^{23}}$.", ["4.88\\times10^{23}"]),  # last box, spaces gone
    ("\\boxed{f(x, y), [1, 2]}", ["f(x,y)", "[1,2]"]),  # commas inside () and [] do not split
    ("\\boxed{k = \\dfrac12 \\, \\mathrm{m}}", ["\\frac{1}{2}m"]),  # short left side, \dfrac12, \mathrm{}
    ("\\boxed{0.5}", ["\\frac{1}{2}"]), ("\\boxed{3/4}", ["\\frac{3}{4}"]), ("\\boxed{90^\\circ}", ["90"]),
    ("\\boxed{a}. Therefore we are done.", []),  # the text after "therefore" states nothing
    ("the answer is $5$", ["5"]), ("\\boxed{}", []), (None, []),
])
def test_answer_extraction(text, items):
    assert ugphysics_answers(text) == items


def test_precision_is_a_parameter():
    # 10.05 for 9.99: 0.6% off (within 1e-2), and across a power of ten, so no mantissa test can accept it
    # (ours: exponents 1 vs 0; official: mantissas 1.00 vs 9.99). Upstream's self-consistency votes at 1e-8.
    assert grade_ugphysics(final("10.05"), "\\boxed{9.99}") is True
    assert grade_ugphysics(final("10.05"), "\\boxed{9.99}", precision=1e-8) is False
    assert grade_ugphysics(final("10.05"), "\\boxed{9.99}", judge="official", precision=1e-8) is False


def test_grade_reads_the_record_and_the_switch_overrides_it():
    row = {"id": "en-1", "gold": "\\boxed{4.88 \\times 10^{23}}", "grading": "ugphysics", "judge": "official"}
    wrong_exponent = final("4.88 \\times 10^{20}")
    assert grade(row, wrong_exponent) is True  # a results row graded as it was: official
    assert grade(row, wrong_exponent, judge="ours") is False
    assert grade({**row, "judge": None}, wrong_exponent) is False  # no judge recorded: ours
    with pytest.raises(InputError, match="judge 'strict' is not one of ours, official"):
        grade(row, wrong_exponent, judge="strict")


def test_per_item_time_limit_and_recovery():
    # 2^(2^34) makes sympy build a 2 GB integer: one C-level computation no alarm interrupts. The watchdog kills
    # the worker after `timeout` seconds; the verdict is False and the next item gets a fresh worker.
    t0 = time.monotonic()
    assert grade_ugphysics(final("2^{2^{34}}"), "\\boxed{1}", timeout=2) is False
    assert time.monotonic() - t0 < 15 and evaluate._GRADER.proc is None  # killed, not finished
    assert grade_ugphysics(final("1.0"), "\\boxed{1}") is True


def test_per_type_alarm_only_in_the_main_thread():
    t0 = time.monotonic()
    with pytest.raises(evaluate._TypeTimeout):
        with evaluate._type_time_limit(0.2):
            while time.monotonic() - t0 < 5:
                pass
    assert time.monotonic() - t0 < 2
    errors = []

    def other_thread():  # signal handlers exist in the main thread only: here the limit is a no-op, not an error
        try:
            with evaluate._type_time_limit(0.01):
                time.sleep(0.05)
        except BaseException as e:  # noqa: B036 (the test wants to see anything at all)
            errors.append(e)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert errors == []


# ----------------------------------------------------------------------------------------------------------------
# prompts: the official texts, written out (codes/utils.py make_prompt), in both languages


class ChatTokenizer:
    """Just enough of a tokenizer: the chat template returns the messages as JSON."""
    chat_template = "messages as JSON"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return json.dumps(messages, ensure_ascii=False)


EN_HEAD = "The following is an open-ended problem from Semiconductor Physics of the undergraduate-level Physics. "
EN_TAIL = ("Please calculate the answer according to the given requirements and the information provided. Please use "
           "LaTeX format to represent the variables and formulas used in the solution process and results. Please end "
           "your solution with \"So the final answer is \\boxed{%s}(unit).\" and give the result explicitly, note "
           "that the unit of the answers should not be included in \\boxed{}.")
ZH_HEAD = "以下是大学物理的Semiconductor Physics科目中的解答题"
ZH_TAIL = ("。请根据题目的要求和所提供的信息计算得出答案。解答过程和结果中使用的变量和公式请使用LaTeX格式表示。"
           "请在最后以“所以最终答案是\\boxed{%s}(单位)。”显式给出结果。注意答案的单位不要放在\\boxed{}中。")


@pytest.mark.parametrize("language,answer_type,multiple,instruction", [
    ("EN", "NV", False, EN_HEAD + "The answer of The problem should be a numerical value without units. "
     + EN_TAIL % "answer"),
    ("EN", "\\\nMC", False, EN_HEAD + "The answer of The problem should be one option of a multiple choice question. "
     + EN_TAIL % "answer"),
    ("EN", "NV, NV", True, EN_HEAD + "The problem has multiple answers, each of them should be a numerical value "
     "without units. " + EN_TAIL % "multiple answers connected with commas"),
    ("EN", "EQ, NV, TF", True, EN_HEAD + "The problem has multiple answers, with the answers in order being an "
     "equation, a numerical value without units, either True or False. " + EN_TAIL % "multiple answers connected "
     "with commas"),
    ("EN", "IN", False, EN_HEAD + "The answer of The problem should be a range inteval. " + EN_TAIL % "answer"),
    ("ZH", "EX", False, ZH_HEAD + "，答案类型为表达式" + ZH_TAIL % "答案"),
    ("ZH", "TUP", False, ZH_HEAD + "，答案类型为由逗号隔开的若干元素的元组，比如 (x, y, z)" + ZH_TAIL % "答案"),
    ("ZH", "EX, EX", True, ZH_HEAD + "，题目有多个答案，答案类型均为表达式" + ZH_TAIL % "用英文逗号连接的多个答案"),
    ("ZH", "NV, EX, TF", True, ZH_HEAD + "，题目有多个答案，答案类型分别为数值、表达式、是或否"
     + ZH_TAIL % "用英文逗号连接的多个答案"),
])
def test_official_prompts(language, answer_type, multiple, instruction):
    record = {"problem": "Find n.", "answer": "\\boxed{1}", "grading": "ugphysics", "answer_type": answer_type,
              "is_multiple_answer": multiple, "language": language, "subject": "Semiconductor Physics"}
    messages = json.loads(evaluate.build_prompt(ChatTokenizer(), record))
    assert messages == [{"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": instruction + "\n\nFind n."}]


# ----------------------------------------------------------------------------------------------------------------
# datasets: local UGPhysics files, the name syntax, the hub


def ugp_row(index, language, answers, answer_type, multiple=False, problem=None):
    return {"index": index, "domain": "Modern Physics", "subject": "Semiconductor Physics", "topic": "Transport",
            "problem": problem or f"Problem {index} ({language})", "solution": "...", "answers": answers,
            "answer_type": answer_type, "unit": None, "is_multiple_answer": multiple, "language": language,
            "level": "Laws Application"}


ROWS = {"en": [ugp_row(3784, "EN", "\\boxed{4.88 \\times 10^{23}}", "NV"),
               ugp_row(3785, "EN", "\\boxed{c_{V} \\sim T^{-2}, \\text{constant}}", "EX, EX", True)],
        "zh": [ugp_row(3784, "ZH", "\\boxed{4.88 \\times 10^{23}}", "NV", problem="对厚为 0.08 cm 的 n 型 GaAs"),
               ugp_row(3785, "ZH", "\\boxed{c_{V} \\sim T^{-2}, \\text{constant}}", "EX, EX", True)]}


def write_jsonl(path, rows, encoding="utf-8"):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding=encoding)
    return str(path)


def test_local_ugphysics_file_en_and_zh(tmp_path):
    path = write_jsonl(tmp_path / "semi.jsonl", ROWS["en"] + ROWS["zh"])
    recs = load_problems(path)
    assert [r["id"] for r in recs] == ["en-3784", "en-3785", "zh-3784", "zh-3785"]  # unique across languages
    en, multi, zh = recs[0], recs[1], recs[2]
    assert en == {"id": "en-3784", "problem": "Problem 3784 (EN)", "answer": "\\boxed{4.88 \\times 10^{23}}",
                  "grading": "ugphysics", "judge": "ours", "answer_type": "NV", "is_multiple_answer": False,
                  "language": "EN", "subject": "Semiconductor Physics", "unit": None, "topic": "Transport",
                  "level": "Laws Application", "index": 3784}
    assert zh["language"] == "ZH" and zh["problem"] == "对厚为 0.08 cm 的 n 型 GaAs"
    assert multi["is_multiple_answer"] is True and multi["answer_type"] == "EX, EX"
    assert grade(en, final("4.9 \\times 10^{23}")) and not grade(en, final("4.88 \\times 10^{20}"))
    assert grade(multi, final("constant, c_{V} = T^{-2}"))  # two answers, in the other order
    assert grade(load_problems(path, judge="official")[0], final("4.88 \\times 10^{20}"))
    assert [r["id"] for r in load_problems(path, limit=3)] == ["en-3784", "en-3785", "zh-3784"]
    with pytest.raises(InputError, match="judge 'lenient' is not one of ours, official"):
        load_problems(path, judge="lenient")


@pytest.mark.parametrize("rows,message", [
    ([{"problem": "p", "answers": "\\boxed{1}", "answer_type": "NV"}],
     "a UGPhysics file needs problem, answers, answer_type, is_multiple_answer, language, subject; it lacks "
     "is_multiple_answer, language, subject"),
    ([ugp_row(1, "EN", "\\boxed{1}", "NUM")], "row 1: not a UGPhysics row (ValueError: answer_type 'NUM' names none"),
    ([ugp_row(1, "FR", "\\boxed{1}", "NV")], "row 1: not a UGPhysics row (ValueError: language 'FR' is not EN or ZH)"),
    ([ugp_row(1, "EN", "\\boxed{1}", "NV"), ugp_row(1, "EN", "\\boxed{2}", "NV")],
     "rows 1 and 2 have the same language and index (en-1)"),
])
def test_bad_ugphysics_files(tmp_path, rows, message):
    with pytest.raises(InputError) as e:
        load_problems(write_jsonl(tmp_path / "bad.jsonl", rows))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.fixture
def fake_hub(monkeypatch):
    """load_dataset for UGPhysics/ugphysics from ROWS (any subject), recording (path, config, split)."""
    import datasets

    calls = []

    class FakeDatasets:
        @staticmethod
        def load_dataset(path, name=None, split=None):
            calls.append((path, name, split))
            return datasets.Dataset.from_list(ROWS[split])

    monkeypatch.setattr(evaluate, "_datasets", lambda: FakeDatasets)
    return calls


@pytest.mark.parametrize("name,split,configs,ids", [
    ("ugphysics", None, [("SemiconductorPhysics", "en"), ("SemiconductorPhysics", "zh")],
     ["en-3784", "en-3785", "zh-3784", "zh-3785"]),  # the paper's 372: both languages, English first
    ("ugphysics:zh", None, [("SemiconductorPhysics", "zh")], ["zh-3784", "zh-3785"]),
    ("ugphysics:Electrodynamics:en", None, [("Electrodynamics", "en")], ["en-3784", "en-3785"]),
    ("ugphysics:EN:solid-statephysics", None, [("Solid-StatePhysics", "en")], ["en-3784", "en-3785"]),
    ("ugphysics", "zh", [("SemiconductorPhysics", "zh")], ["zh-3784", "zh-3785"]),  # split= names the language
])
def test_dataset_name_syntax(fake_hub, name, split, configs, ids):
    recs = load_problems(name, split=split)
    assert fake_hub == [("UGPhysics/ugphysics", c, s) for c, s in configs]
    assert [r["id"] for r in recs] == ids and all(r["grading"] == "ugphysics" for r in recs)


def test_limit_reads_only_what_it_needs(fake_hub):
    assert [r["id"] for r in load_problems("ugphysics", limit=2)] == ["en-3784", "en-3785"]
    assert fake_hub == [("UGPhysics/ugphysics", "SemiconductorPhysics", "en")]


@pytest.mark.parametrize("name,split,message", [
    ("ugphysics:Electro", None, "ugphysics:Electro: 'Electro' is not a UGPhysics subject or language"),
    ("ugphysics:en:zh", None, "'zh' is not a UGPhysics subject or language (or is given twice)"),
    ("ugphysics:zh", "en", "split 'en' is not en or zh, or contradicts the language in the name"),
])
def test_dataset_name_errors(fake_hub, name, split, message):
    with pytest.raises(InputError) as e:
        load_problems(name, split=split)
    msg = str(e.value)
    assert message in msg and "\n" not in msg and fake_hub == []
    if "subject or language" in msg:  # the error lists the 13 subjects
        assert all(s in msg for s in evaluate.UGPHYSICS_SUBJECTS) and len(evaluate.UGPHYSICS_SUBJECTS) == 13


def test_hub_failure_is_one_line_input_error():
    # conftest sets HF_HUB_OFFLINE=1: the download fails fast, as without network
    with pytest.raises(InputError) as e:
        load_problems("ugphysics:en")
    msg = str(e.value)
    assert msg.startswith("cannot download UGPhysics/ugphysics (SemiconductorPhysics, en): no network? pass a local "
                          "file") and "\n" not in msg


# ----------------------------------------------------------------------------------------------------------------
# the CLI says which judge ran, and --judge re-grades with the other one


def test_cli_reports_and_switches_the_judge(tmp_path, capsys):
    rows = [{"config": {"dataset": "ugphysics"}},
            {"id": "en-1", "problem": "p", "gold": "\\boxed{4.88 \\times 10^{23}}", "grading": "ugphysics",
             "judge": "ours", "response": final("4.88 \\times 10^{20}"), "correct": False},
            {"id": "en-2", "problem": "p", "gold": "\\boxed{b}", "grading": "ugphysics", "judge": "ours",
             "response": final("b"), "correct": True}]
    path = write_jsonl(tmp_path / "ugp.jsonl", rows, encoding="utf-8-sig")  # a results file with a byte-order mark
    assert evaluate.main([path]) == 0
    out = capsys.readouterr().out
    assert "| 2 | 50.0% |" in out and f"{path}: UGPhysics rows graded by the rule-based judge ours (numbers compared " \
                                      f"with their exponents)" in out
    assert evaluate.main([path, "--judge", "official"]) == 0
    out = capsys.readouterr().out
    assert "| 2 | 100.0% |" in out and "judge official (the paper's: exponents ignored)" in out
    assert out.split("|")[-2].strip() == "1"  # one stored verdict flips under the official judge


# ----------------------------------------------------------------------------------------------------------------
# datasets as users have them: a byte-order mark, OlympiadBench golds with $ inside


def test_byte_order_mark_jsonl_json_and_joined_files(tmp_path):
    recs = [{"problem": "What is 2 + 3?", "answer": "5"}, {"problem": "What is 1 + 1?", "answer": "2"}]
    path = write_jsonl(tmp_path / "bom.jsonl", recs, encoding="utf-8-sig")
    assert open(path, "rb").read(3) == b"\xef\xbb\xbf"
    assert [r["answer"] for r in load_problems(path)] == ["5", "2"]
    (tmp_path / "bom.json").write_text(json.dumps(recs), encoding="utf-8-sig")
    assert [r["problem"] for r in load_problems(str(tmp_path / "bom.json"))][0] == "What is 2 + 3?"
    joined = tmp_path / "joined.jsonl"  # `cat a.jsonl b.jsonl`: a mark at the start of a middle line
    joined.write_bytes(open(path, "rb").read() * 2)
    assert len(load_problems(str(joined))) == 4
    ugp = write_jsonl(tmp_path / "ugp_bom.jsonl", ROWS["zh"], encoding="utf-8-sig")  # Chinese rows saved on Windows
    assert [r["id"] for r in load_problems(ugp)] == ["zh-3784", "zh-3785"]


def test_olympiadbench_golds_with_inner_dollars(tmp_path):
    rows = [{"id": 1, "question": "q1", "final_answer": "$69$,$84$"},
            {"id": 2, "question": "q2", "final_answer": ["$69$", "$84$"]},
            {"id": 3, "question": "q3", "final_answer": ["$\\frac{1}{2}$"]}]
    recs = load_problems(write_jsonl(tmp_path / "ob.jsonl", rows))
    assert [r["answer"] for r in recs] == ["69,84", "69, 84", "\\frac{1}{2}"]  # every $ removed, as Qwen's harness
    for rec in recs[:2]:
        assert grade_math(final("84, 69"), rec["answer"]) and not grade_math(final("69"), rec["answer"])
    # results rows written before the rule (gold still with $) grade the same: both sides of a comparison
    assert grade({"gold": "$69$,$84$"}, final("69, 84")) and not grade({"gold": "$69$,$84$"}, final("69, 85"))


def test_math_style_escaped_dollars_still_grade(tmp_path):
    # MATH-500 golds write money as \$18.90: an escaped dollar is not a math delimiter and stays
    recs = load_problems(write_jsonl(tmp_path / "m.jsonl", [{"problem": "Cost?", "answer": "\\$18.90"}]))
    assert recs[0]["answer"] == "\\$18.90"
    assert grade_math(final("18.90"), recs[0]["answer"]) and grade_math(final("\\$18.90"), recs[0]["answer"])
    assert not grade_math(final("18.91"), recs[0]["answer"])
