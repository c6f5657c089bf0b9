"""A newcomer's bad input: every case gets one clear line (what is wrong, what to do), no traceback.

The library-level checks are called directly; the scripts' command lines run as subprocesses, the way a
user types them, and must fail before any model is loaded where the check does not need the model.
"""
import os
import pathlib
import re
import subprocess
import sys

import evaluate
import pytest

ROOT = pathlib.Path(__file__).parent


@pytest.mark.parametrize("content, expected", [
    ("", "holds no records"),
    ("\n\n", "holds no records"),
    ('{"problem": "1+1", "answer": "2"}\n{bad json\n', ":2: not valid JSON"),
    ('["problem", "answer"]\n', "record 1 is a list, not a JSON object"),
])
def test_local_jsonl_errors_name_the_line_and_the_fix(tmp_path, capfd, content, expected):
    path = tmp_path / "problems.jsonl"
    path.write_text(content)
    with pytest.raises(evaluate.InputError) as e:
        evaluate.load_problems(str(path))
    assert expected in str(e.value) and "\n" not in str(e.value)
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # no library log line before the error


def test_json_array_file_and_missing_fields_in_some_records(tmp_path):
    path = tmp_path / "problems.json"
    path.write_text('[{"problem": "What is 2 + 3?", "answer": 5}, {"problem": "What is 1 + 1?", "answer": "2", "id": "b"}]')
    recs = evaluate.load_problems(str(path))
    assert [r["answer"] for r in recs] == ["5", "2"] and [r["problem"] for r in recs][0] == "What is 2 + 3?"


def _flag_helps(script):
    """{flag: help text} of every option of a script's --help, joined over its wrapped lines."""
    out = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=60,
                         cwd=str(ROOT)).stdout
    helps, flag = {}, None
    for line in out.split("options:", 1)[1].splitlines():
        m = re.match(r"^  (-[-\w]+)", line)
        if m:
            flag = m.group(1)
            helps[flag] = line
        elif flag:
            helps[flag] += " " + line.strip()
    return out, helps


@pytest.mark.parametrize("script", ["em_ft.py", "em_rl.py", "em_inf.py"])
def test_help_states_every_default_and_explains_the_sources(script):
    out, helps = _flag_helps(script)
    assert "(ours: why) = our own choice" in " ".join(out.split())
    missing = [f for f, text in helps.items() if f != "-h" and "default:" not in text]
    assert not missing, f"{script} --help gives no default for {missing}"
    assert not [f for f, text in helps.items() if "default: None" in text]  # say what None means instead


@pytest.mark.parametrize("batch, world, expected", [(512, 1, 128), (512, 4, 128), (4, 1, 1), (4, 2, 2), (6, 1, 2),
                                                    (2, 2, 2), (1, 1, 1)])
def test_em_rl_default_mini_batch_is_a_quarter_of_the_batch_when_it_fits(batch, world, expected):
    import em_rl
    m = em_rl.default_mini_batch_size(batch, world)
    assert m == expected and batch % m == 0 and m % world == 0


def test_evaluate_cli_on_a_problems_file_says_what_to_do_in_one_line(mini_math):
    res = subprocess.run([sys.executable, "evaluate.py", mini_math], capture_output=True, text=True, cwd=str(ROOT),
                         timeout=120)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "holds problems, not responses" in res.stderr and "em_inf.py" in res.stderr


@pytest.mark.parametrize("script", ["em_ft.py", "em_rl.py", "em_inf.py"])
@pytest.mark.parametrize("flags, message", [
    (["--model", "data"], "'data' is not a model folder (no config.json)"),
    (["--model", "README.md"], "'README.md' is not a model folder"),
    (["--device", "tpu"], "--device 'tpu' is not a device torch knows"),
    (["--dataset", "data"], "data: no such file"),
])
def test_scripts_reject_bad_paths_and_devices_in_one_line(script, flags, message, mini_math, tmp_path):
    argv = [sys.executable, script, "--dataset", mini_math, "--max-new-tokens", "4", *flags]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(argv + ["--out", str(tmp_path / ("r.jsonl" if script == "em_inf.py" else "run"))],
                         capture_output=True, text=True, cwd=str(ROOT), timeout=120, env=env)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


@pytest.mark.parametrize("script, out, message", [("em_inf.py", ".", "is a folder: pass a results file"),
                                                  ("em_ft.py", "README.md", "is a file: pass a folder"),
                                                  ("em_rl.py", "README.md", "is a file: pass a folder")])
def test_out_of_the_wrong_kind_is_refused(script, out, message, mini_math):
    res = subprocess.run([sys.executable, script, "--dataset", mini_math, "--out", out], capture_output=True, text=True,
                         cwd=str(ROOT), timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
