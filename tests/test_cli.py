"""The command line: real commands on small inputs, and one clear sentence (exit 2) for user mistakes."""


from typer.testing import CliRunner

from codedyn.cli import app

runner = CliRunner()


def test_data_build_small_and_info(tmp_path):
    result = runner.invoke(app, ["data", "build", "--limit", "4", "--candidates-per-operator", "1",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    path = result.stdout.strip().splitlines()[-1]
    assert path.startswith(str(tmp_path))
    info = runner.invoke(app, ["data", "info", path])
    assert info.exit_code == 0 and "| analysis |" in info.stdout
    listed = runner.invoke(app, ["data", "list", "--out", str(tmp_path)])
    assert path in listed.stdout


def test_malformed_problems_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "problems.jsonl"
    bad.write_text('{"task_id": "x", "prompt": "p", "solution": "s", "test": "t", "entry_point": "f"}\n{oops\n')
    result = runner.invoke(app, ["data", "build", "--problems", str(bad), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "problems.jsonl:2: malformed JSON" in result.output
    assert "Traceback" not in result.output


def test_bad_config_value_is_one_clear_error(tmp_path):
    result = runner.invoke(app, ["data", "build", "--operators", "flip_everything", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown mutation operator" in result.output


def test_suite_info_and_list_for_a_trained_toy_suite(tmp_path):
    from codedyn.data.corpus import CodeCorpus
    from codedyn.models.toy import train_toy_suite
    from tests.models.test_toy import TINY

    corpus = CodeCorpus.stdlib()
    small = CodeCorpus(corpus.root, corpus.split("train")[:10] + corpus.split("heldout")[:2])
    trained = train_toy_suite(TINY, hub_cache=tmp_path / "hub", corpus=small)
    info = runner.invoke(app, ["suite", "info", trained.suite.name, "--out", str(tmp_path)])
    assert info.exit_code == 0, info.output
    assert f"{len(trained.suite.schedule)} cached" in info.stdout
    listed = runner.invoke(app, ["suite", "list", "--out", str(tmp_path)])
    assert trained.suite.name in listed.stdout


def test_unknown_suite_and_bad_step_are_clear_errors():
    result = runner.invoke(app, ["suite", "info", "toy-doesnotexist"])
    assert result.exit_code == 2 and "unknown suite 'toy-doesnotexist'" in result.output
    result = runner.invoke(app, ["suite", "prefetch", "pythia-160m", "--steps", "1500"])
    assert result.exit_code == 2 and "nearest saved steps: [1000, 2000]" in result.output
