"""A newcomer's bad input: every case gets one clear line (what is wrong, what to do), no traceback.

The library-level checks are called directly; the scripts' command lines run as subprocesses, the way a
user types them, and must fail before any model is loaded where the check does not need the model.
"""
import evaluate
import pytest


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
