"""Experiments 1 and 3 end to end on a tiny study: dataset -> toy suite -> shared posteriors -> tables, calls,
figures."""

import json

import pandas as pd
import pytest

from codedyn.config import load_config
from codedyn.experiments.influence import compute_influence, run_influence
from codedyn.experiments.study import prepare_study

TINY_STUDY = {  # HumanEval pairs and the plain toy suite (the default preset's organism needs thousands of steps)
    "dataset": {"source": "humaneval", "limit_problems": 6, "candidates_per_operator": 1},
    "toy": {"vocab_size": 300, "d_model": 16, "n_heads": 2, "d_ff": 32, "context": 32, "batch_size": 4,
            "steps": 12, "checkpoint_every": 6, "span_max": 8, "eval_span": 8, "eval_sequences": 4,
            "planted": {"enabled": False}},
    "suite": {"steps": [0, 4, 12]},
    "sampling": {"chains": 2, "draws": 8, "burn_in": 4, "batch_size": 8, "sampling_windows": 64,
                 "window_length": 33, "max_sample_tokens": 64, "n_bootstrap": 50, "lr": 1e-4},
    "susceptibility": {"sae_latents": 0},  # heads and MLPs only: this study trains no SAEs
}


@pytest.fixture(scope="module")
def study_result(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("CODEDYN_HOME", str(home))
    config = load_config("default", TINY_STUDY)
    study = prepare_study(config, home / "run")
    yield study, run_influence(study)
    mp.undo()


def test_tables_cover_every_checkpoint_and_aggregate(study_result):
    study, result = study_result
    table = pd.read_parquet(result["folder"] / "influence.parquet")
    assert sorted(set(table["step"])) == [0, 4, 12]
    assert set(table["quantity"]) == {"CC", "CI", "II", "paired", "unpaired", "LLC"}
    finite = table.dropna(subset=["value"])
    assert len(finite) == len(table)
    assert (finite["low"] <= finite["value"]).all() and (finite["value"] <= finite["high"]).all()
    corr = table[table["variant"] == "corr"]
    assert corr["value"].between(-1, 1).all()


def test_figures_and_calls_are_written(study_result):
    _, result = study_result
    folder = result["folder"]
    for name in ("influence_cov", "influence_corr", "bif_matrix_step0", "bif_matrix_step12"):
        assert (folder / f"{name}.png").stat().st_size > 0 and (folder / f"{name}.pdf").stat().st_size > 0
    calls = json.loads((folder / "transitions.json").read_text())
    assert {"CC/cov", "CI/cov", "II/cov", "paired/corr", "LLC/llc"} <= set(calls)
    for found in calls.values():
        assert found["verdict"] in {"gradual", "no change"} or found["verdict"].startswith("phase transition at step")
        assert all(e["detail"] for e in found["events"])


@pytest.fixture()
def no_sampling(monkeypatch):
    """Any attempt to sample a posterior fails the test: analyses must reuse the stored units."""
    import codedyn.sampling.posterior as posterior

    def forbidden(*args, **kwargs):
        raise AssertionError("a stored posterior unit was sampled again")

    monkeypatch.setattr(posterior, "sample_posterior", forbidden)


def test_analysis_reruns_from_stored_traces_without_sampling(study_result, no_sampling):
    study, result = study_result
    again = compute_influence(study)
    pd.testing.assert_frame_equal(again["table"], result["table"])
    # The run entry point also finds every posterior unit cached.
    pd.testing.assert_frame_equal(run_influence(study)["table"], result["table"])


def test_diagnostics_and_loss_traces_per_checkpoint(study_result):
    _, result = study_result
    diagnostics = pd.read_parquet(result["folder"] / "diagnostics.parquet")
    assert len(diagnostics) == 3 * 2  # checkpoints x chains
    assert diagnostics["healthy"].all()
    assert diagnostics["fraction_below_init"].between(0, 1).all()
    assert (diagnostics["drift_to_noise"] > 0).all()
    for step in (0, 4, 12):
        assert (result["folder"] / "traces" / f"loss_traces_step{step}.png").is_file()


def test_cli_runs_the_experiment_from_a_preset_file(study_result, tmp_path):
    """`codedyn influence --preset file.yaml --out DIR`: the same study, found cached, prints verdicts."""
    import yaml
    from typer.testing import CliRunner

    from codedyn.cli import app

    study, result = study_result
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(json.loads(json.dumps(TINY_STUDY))))
    outcome = CliRunner().invoke(app, ["influence", "--preset", str(preset), "--out", str(study.run_dir)])
    assert outcome.exit_code == 0, outcome.output
    assert outcome.stdout.strip().endswith(str(result["folder"]))
    assert "CC/cov:" in outcome.output and "LLC/llc:" in outcome.output


def test_susceptibilities_come_from_the_same_posteriors(study_result, no_sampling):
    from codedyn.experiments.susceptibility import run_susceptibility

    study, _ = study_result
    result = run_susceptibility(study)
    table = pd.read_parquet(result["folder"] / "susceptibility.parquet")
    components = set(table["component"])
    assert {"L0.H0", "L0.H1", "L0.MLP", "L1.H0", "L1.H1", "L1.MLP"} == components  # 2 layers x (2 heads + MLP)
    assert {"correct", "incorrect"} <= set(table["distribution"])
    assert sorted(set(table["step"])) == [0, 4, 12]
    assert (table["low"] <= table["chi"] + 1e-12).all() and (table["chi"] <= table["high"] + 1e-12).all()
    responders = pd.read_parquet(result["folder"] / "opposite_responders.parquet")
    assert len(responders) == 3 * len(components)
    assert (result["folder"] / "susceptibility_trajectories.png").is_file()
