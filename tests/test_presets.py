"""Presets: shipped inside the package, one source of defaults, and `codedyn config show`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from codedyn.config import CONFIG_DIR, CodedynConfig, load_config

REPO = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))

# Class defaults that describe the toy suite (its context, its SAE-latent budget): a preset on another suite must
# say what it uses instead of inheriting them silently.
TOY_SPECIFIC = ("sampling.window_length", "emergence.window_length", "susceptibility.sae_latents")


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_presets_live_in_the_package():
    assert CONFIG_DIR.parent == Path(__import__("codedyn").__file__).resolve().parent
    assert {"default", "smoke", "organism", "null", "pythia-14m", "pythia-70m", "pythia-160m"} <= set(PRESETS)


def test_the_default_preset_is_the_class_defaults():
    """One source of defaults: presets/default.yaml writes out (some of) the classes' defaults and changes none."""
    preset = flat(load_config("default").model_dump(mode="json"))
    classes = flat(CodedynConfig().model_dump(mode="json"))
    differ = {k: (preset[k], classes.get(k)) for k in preset if preset[k] != classes.get(k)}
    assert not differ, ("presets/default.yaml and the config classes disagree (preset, class default); change the "
                        f"class default with the preset: {differ}")


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_states_the_toy_specific_settings_it_relies_on(name):
    raw = flat(yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text()))
    config = load_config(name)
    classes = flat(CodedynConfig().model_dump(mode="json"))
    assert set(raw) <= set(classes), f"{name}: keys that are no config field: {set(raw) - set(classes)}"
    if config.suite.name != "toy":
        missing = [k for k in TOY_SPECIFIC if k not in raw]
        assert not missing, f"{name} runs {config.suite.name} but inherits the toy suite's {missing}"


def test_pythia_presets_keep_their_measured_settings():
    """Moving a default never changes a preset's study: the Pythia presets keep 65-token windows and no SAE
    latents, as before the toy-specific defaults were written into them."""
    for size in ("14m", "70m", "160m"):
        config = load_config(f"pythia-{size}")
        assert config.sampling.window_length == 65 and config.susceptibility.sae_latents == 0
        assert config.suite.steps[-1] == 143000


def test_config_show_prints_every_field_with_its_docstring():
    from typer.testing import CliRunner

    from codedyn.cli import app, describe_config

    result = CliRunner().invoke(app, ["config", "show", "--preset", "smoke"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("# preset ") and lines[0].endswith("smoke.yaml")
    fields = flat(load_config("smoke").model_dump(mode="json"))
    shown = {line.split(": ", 1)[0]: line for line in lines[1:]}
    assert set(fields) <= set(shown)  # also the fields the stored form leaves out while unset (user corpora)
    assert "emergence.corpus" in shown
    assert shown["dataset.limit_problems"].startswith("dataset.limit_problems: 40  # ")
    assert shown["suite.steps"].startswith("suite.steps: [0, 500, 1000]  # Checkpoints the experiments run on")
    assert all("  # " in line for line in lines[1:])  # every field has its docstring
    assert describe_config(load_config("default")) == describe_config(CodedynConfig())


def test_config_show_of_an_unknown_preset_is_one_sentence():
    from typer.testing import CliRunner

    from codedyn.cli import app

    result = CliRunner().invoke(app, ["config", "show", "--preset", "no-such-preset"])
    assert result.exit_code == 2
    assert "unknown preset 'no-such-preset'" in result.output and "Traceback" not in result.output


def test_a_preset_given_as_a_path_still_loads(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nsampling:\n  draws: 7\n")
    config = load_config(str(path))
    assert (config.name, config.sampling.draws) == ("mine", 7)


@pytest.mark.slow
def test_a_built_wheel_ships_the_presets_and_an_installed_copy_loads_them(tmp_path):
    """Build a wheel from a copy of the source (no build files in the checkout), install it into a folder of its
    own and load a preset from there, outside the source tree."""
    source = tmp_path / "src"
    shutil.copytree(REPO / "codedyn", source / "codedyn", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(wheels)],
                   check=True, capture_output=True)
    (wheel,) = wheels.glob("codedyn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"codedyn/presets/{p}.yaml" for p in PRESETS} <= names
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True,
                   capture_output=True)
    code = ("import codedyn, codedyn.config as c; print(codedyn.__file__); "
            "print(c.load_config('smoke').suite.steps, c.load_config('default') == c.CodedynConfig())")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0].startswith(str(target))
    assert out[1] == "(0, 500, 1000) True"
    shown = subprocess.run([sys.executable, "-m", "codedyn.cli", "config", "show", "--preset", "smoke"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert shown.splitlines()[0] == f"# preset {target / 'codedyn' / 'presets' / 'smoke.yaml'}"


def test_the_sandbox_limits_default_to_the_dataset_configs_sandbox_section():
    """One default per limit: a program run directly (run_program) and one run for a dataset get the same."""
    from codedyn.config import DatasetConfig, SandboxConfig
    from codedyn.data.pairs import sandbox_limits
    from codedyn.data.sandbox import SandboxLimits

    limits, config = SandboxLimits(), SandboxConfig()
    for name in ("timeout_s", "cpu_s", "memory_mb", "file_size_mb"):
        assert getattr(limits, name) == getattr(config, name), name
    assert sandbox_limits(DatasetConfig()) == limits
