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
    from codedyn.config import ToySuiteConfig
    from codedyn.data.corpus import CodeCorpus
    from codedyn.models.toy import train_toy_suite
    from tests.studies import TINY_TOY_FIELDS

    corpus = CodeCorpus.stdlib()
    small = CodeCorpus(corpus.root, corpus.split("train")[:10] + corpus.split("heldout")[:2])
    trained = train_toy_suite(ToySuiteConfig(**TINY_TOY_FIELDS), hub_cache=tmp_path / "hub", corpus=small)
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


# Options that are not config fields: which preset, where results go, the generic setter, refine's count.
NOT_CONFIG = {"preset", "out", "settings", "max_new", "help"}


def commands():
    """(name, click command, its Flags) for every command of the CLI, sub-apps included."""
    import inspect

    from codedyn.cli import app

    found = []

    def walk(typer_app, prefix):
        import typer.main

        group = typer.main.get_command(typer_app)
        for info in typer_app.registered_commands:
            name = info.name or info.callback.__name__.replace("_", "-")
            flags = getattr(inspect.unwrap(info.callback), "flags", ())
            found.append((f"{prefix}{name}", group.commands[name], flags))
        for sub in typer_app.registered_groups:
            walk(sub.typer_instance, f"{prefix}{sub.name} ")

    walk(app, "")
    return found


def test_every_option_sets_exactly_one_config_field_with_its_docstring_as_help():
    from codedyn.cli import field_help, field_info

    found = commands()
    assert {"run", "influence", "data build", "suite prefetch", "refine", "config show"} <= {n for n, _, _ in found}
    for name, command, flags in found:
        options = [p for p in command.params if p.param_type_name == "option"]
        spellings = [o for p in options for o in (*p.opts, *p.secondary_opts)]
        assert len(spellings) == len(set(spellings)), f"{name}: an option spelt twice"
        fields = [p.name.replace("__", ".") for p in options if p.name not in NOT_CONFIG]
        assert len(fields) == len(set(fields)), f"{name}: two options set the same field"
        assert sorted(fields) == sorted(flag.field for flag in flags), name
        for option in options:
            if option.name in NOT_CONFIG:
                continue
            info = field_info(option.name.replace("__", "."))  # raises unless it names one field
            assert option.help == field_help(info) and option.help, f"{name} {option.opts}: help is not the docstring"
        if flags or any(p.name == "preset" for p in options):
            assert any(p.name == "settings" for p in options), f"{name} has no --set"


def test_every_config_field_is_reachable_through_set():
    from codedyn.cli import collect_overrides, config_fields, resolve_config
    from codedyn.config import load_config

    default = load_config("default")
    paths = config_fields()
    assert len(paths) > 150 and "dataset.sandbox.timeout_s" in paths and "rllc.user_corpus" in paths
    for path in paths:
        value = default
        for part in path.split("."):
            value = getattr(value, part)
        text = ("null" if value is None else str(value).lower() if isinstance(value, bool)
                else ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value))
        overrides = collect_overrides({}, [f"{path}={text}"])
        node = overrides
        for part in path.split("."):
            node = node[part]  # the setting lands on exactly its field
        assert resolve_config("default", overrides) == default, path


def test_set_changes_one_field_and_bad_settings_are_one_sentence(tmp_path):
    result = runner.invoke(app, ["config", "show", "--set", "sampling.draws=80", "--set", "suite.steps=0,1000",
                                 "--set", "dataset.limit_problems=null", "--set", "emergence.corpus=a.jsonl:body"])
    assert result.exit_code == 0, result.output
    shown = {line.split(": ", 1)[0]: line.split(": ", 1)[1].split("  # ")[0] for line in result.output.splitlines()[1:]}
    assert shown["sampling.draws"] == "80" and shown["suite.steps"] == "[0, 1000]"
    assert shown["emergence.corpus.paths"] == '["a.jsonl"]' and shown["emergence.corpus.field"] == '"body"'
    assert shown["calibration.draws"] == "null" and shown["sampling.chains"] == "4"
    for args, message in (
        (["--set", "sampling.drawz=3"], "unknown setting 'sampling.drawz': sampling has no field 'drawz'"),
        (["--set", "sampling.draws=1"], "invalid command-line settings (sampling.draws: Input should be greater"),
        (["--set", "sampling.draws"], "expected section.field=value"),
        (["--set", "dataset.splits=1"], "'dataset.splits' is a section"),
        (["--set", "executor.kind=slurm", "--set", "executor.kind=ray"], "executor.kind is given twice"),
    ):
        result = runner.invoke(app, ["config", "show", *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, args
    result = runner.invoke(app, ["refine", str(tmp_path), "--set", "sampling.draws=80"])
    assert result.exit_code == 2 and "only takes the executor section" in result.output


def test_old_spellings_and_implied_settings():
    from codedyn.cli import collect_overrides

    by_name = {name: (command, flags) for name, command, flags in commands()}

    def overrides(name, args):
        command, flags = by_name[name]
        params = command.make_context(name, args).params
        return collect_overrides({flag: params[flag.param] for flag in flags}, params["settings"] or [])

    assert overrides("data build", ["--k", "2", "--limit", "4", "--timeout", "1.5"]) == overrides(
        "data build", ["--mutants-per-problem", "2", "--limit-problems", "4", "--timeout-s", "1.5"]) == {
        "dataset": {"mutants_per_problem": "2", "limit_problems": "4", "sandbox": {"timeout_s": "1.5"}}}
    assert overrides("data build", ["--problems", "p.jsonl"])["dataset"] == {"problems_path": "p.jsonl",
                                                                            "source": "jsonl"}
    assert overrides("data build", ["--problems", "p.jsonl", "--source", "mbpp"])["dataset"]["source"] == "mbpp"
    assert overrides("susceptibility", ["--restricted-draws", "6"]) == {"susceptibility": {"draws": "6"}}
    assert overrides("emergence", ["--fresh"]) == {"emergence": {"init_from_previous": False}}
    assert overrides("rllc", ["--corpus", "x.py"])["rllc"]["distributions"] == ("corpus", "correct", "incorrect",
                                                                                "user")
    run = overrides("run", ["--corpus", "a.py", "--executor", "ray", "--steps", "0,5"])
    assert set(run) == {"sampling", "executor", "suite"} and run["suite"]["steps"] == ["0", "5"]


def test_every_option_the_readme_shows_exists():
    import re
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    by_name = {name: command for name, command, _ in commands()}
    checked = 0
    for line in readme.splitlines():
        for match in re.finditer(r"codedyn ((?:data|suite|config) )?([a-z-]+)([^`#|]*)", line):
            name = (match.group(1) or "") + match.group(2)
            if name not in by_name:
                continue
            try:
                words = shlex.split(match.group(3))
            except ValueError:
                continue
            spellings = {o for p in by_name[name].params for o in (*p.opts, *p.secondary_opts)}
            for word in words:
                if word.startswith("--"):
                    assert word.split("=")[0] in spellings, f"README: codedyn {name} has no option {word}"
                    checked += 1
    assert checked > 30
