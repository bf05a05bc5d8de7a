"""Bad input stops a study with one sentence before anything expensive runs: the real CLI, an empty codedyn cache,
and afterwards no dataset or suite folder in it."""

import json

import pytest
from typer.testing import CliRunner

from codedyn.cli import app
from tests.user_errors import built_nothing, one_sentence

runner = CliRunner()


@pytest.mark.parametrize(("command", "nearest"), [("influence", "[6500, 7000]"), ("run", "[6750, 7000]")])
def test_a_step_the_toy_suite_will_not_save_stops_before_dataset_and_training(empty_home, tmp_path, command, nearest):
    # `run` studies the organism (checkpoints every 250 steps), `influence` the default preset (every 500)
    result = runner.invoke(app, [command, "--steps", "0,123457", "--out", str(tmp_path / "run")])
    assert one_sentence(result, "no checkpoint at step 123457", f"nearest saved steps: {nearest}")
    assert built_nothing(empty_home)


def test_a_single_checkpoint_study_stops_before_its_units(empty_home, tmp_path):
    result = runner.invoke(app, ["run", "--steps", "5500", "--out", str(tmp_path / "run")])
    assert one_sentence(result, "a study needs at least two checkpoints", "got only step 5500")
    assert built_nothing(empty_home)


def test_pythia_without_its_revisions_stops_before_the_dataset(empty_home, tmp_path):
    result = runner.invoke(app, ["run", "--preset", "pythia-14m", "--out", str(tmp_path / "run")])
    assert one_sentence(result, "revision step1000 of EleutherAI/pythia-14m is not in the HF cache",
                        "codedyn suite prefetch pythia-14m --steps 1000")
    assert built_nothing(empty_home)


def test_a_problems_file_that_is_not_utf8_names_line_and_byte(empty_home, tmp_path):
    good = {"task_id": "P/0", "prompt": "def f(x):\n", "solution": "    return x\n", "test": "def check(c):\n"
            "    assert c(1) == 1\n", "entry_point": "f"}
    bad = tmp_path / "problems.jsonl"
    first = (json.dumps(good) + "\n").encode()
    second = b'{"task_id": "P/1", "prompt": "caf\xe9"}\n'
    bad.write_bytes(first + second)
    result = runner.invoke(app, ["data", "build", "--problems", str(bad)])
    assert one_sentence(result, "problems.jsonl:2: not UTF-8 text",
                        f"byte 0xe9 at byte offset {len(first) + second.index(0xE9)} of the file")
    assert built_nothing(empty_home)
    # the same file named in a study's preset stops `codedyn run` before its suite is trained
    import yaml

    preset = tmp_path / "study.yaml"
    preset.write_text(yaml.safe_dump({"dataset": {"source": "jsonl", "problems_path": str(bad)}}))
    result = runner.invoke(app, ["run", "--preset", str(preset), "--out", str(tmp_path / "run")])
    assert one_sentence(result, "problems.jsonl:2: not UTF-8 text")
    assert built_nothing(empty_home)


def test_a_reference_that_does_not_parse_is_the_reason_given(empty_home, tmp_path):
    problem = {"task_id": "HumanEval/3", "prompt": "def f(x):\n    \"\"\"Add one.\"\"\"\n",
               "solution": "    y = x +\n    return y\n", "test": "def check(c):\n    assert c(1) == 2\n",
               "entry_point": "f"}
    path = tmp_path / "problems.jsonl"
    path.write_text(json.dumps(problem) + "\n")
    result = runner.invoke(app, ["data", "build", "--problems", str(path), "--out", str(tmp_path / "data")])
    assert one_sentence(result, "no verified samples could be built from", "problems.jsonl",
                        "reference of HumanEval/3 does not parse: line 3 (invalid syntax)")
