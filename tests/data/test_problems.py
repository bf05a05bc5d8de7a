import json

import pytest

from codedyn.data.problems import (
    DataSourceError,
    completions_from_jsonl,
    humaneval_problems,
    problems_from_jsonl,
)


def test_humaneval_ships_164_problems_offline():
    problems = humaneval_problems()
    assert len(problems) == 164
    assert len({p.problem_id for p in problems}) == 164
    first = problems[0]
    program = first.program()
    assert program.startswith(first.prompt + first.solution)
    assert program.rstrip().endswith(f"check({first.entry_point})")


def test_problems_jsonl_accepts_humaneval_field_names(tmp_path):
    path = tmp_path / "p.jsonl"
    record = {"task_id": "T/1", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
              "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}
    path.write_text(json.dumps(record) + "\n\n")
    (problem,) = problems_from_jsonl(path)
    assert problem.problem_id == "T/1" and problem.solution == "    return 1\n"


GOOD = {"task_id": "a", "prompt": "p", "solution": "s", "test": "t", "entry_point": "f"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (json.dumps(GOOD) + '\n{not json\n', r"p.jsonl:2: malformed JSON"),
        ('[1, 2]\n', r"p.jsonl:1: expected a JSON object"),
        ('{"task_id": "a", "prompt": "x"}\n', r"p.jsonl:1: missing or non-string field"),
        ("", r"no records"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(DataSourceError, match=message):
        problems_from_jsonl(path)


def test_missing_file_and_duplicate_ids(tmp_path):
    with pytest.raises(DataSourceError, match="no such file"):
        problems_from_jsonl(tmp_path / "absent.jsonl")
    record = {"task_id": "T/1", "prompt": "p", "solution": "s", "test": "t", "entry_point": "f"}
    path = tmp_path / "dup.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataSourceError, match="duplicate problem id 'T/1'"):
        problems_from_jsonl(path)


def test_completions_get_stable_ids(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps({"task_id": "T/1", "completion": c}) for c in ("a", "b")) + "\n")
    completions = completions_from_jsonl(path)
    assert [c.completion_id for c in completions] == ["T/1:gen0", "T/1:gen1"]
