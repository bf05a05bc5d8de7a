"""Experiments 1 and 3 end to end on a tiny study: dataset -> toy suite -> shared posteriors -> tables, calls,
figures."""

import json

import pandas as pd
import pytest

from codedyn.experiments.influence import compute_influence, run_influence
from tests.studies import TINY_STUDY, home


@pytest.fixture(scope="module")
def study_result(tiny_study, shared_home):
    """The session's tiny study (posteriors sampled once for every module that analyses it), its influence run."""
    with home(shared_home):
        yield tiny_study, run_influence(tiny_study)


def test_tables_cover_every_checkpoint_and_aggregate(study_result):
    study, result = study_result
    table = pd.read_parquet(result.folder / "influence.parquet")
    assert sorted(set(table["step"])) == [0, 4, 12]
    assert {"CC", "CI", "II", "paired", "delta", "bug_influence", "pc1_share", "LLC"} <= set(table["quantity"])
    finite = table.dropna(subset=["value"])
    # The only values allowed to be missing: the LLC of a checkpoint that is not a local minimum, which says so.
    no_llc = table[(table["quantity"] == "LLC") & ~table["local_minimum"].astype(bool)]
    assert len(finite) + len(no_llc) == len(table)
    assert no_llc["llc_status"].str.contains("not a local minimum").all()
    assert table.groupby("step")["local_minimum"].nunique().eq(1).all()  # one flag per checkpoint, on every row
    assert (finite["low"] <= finite["value"]).all() and (finite["value"] <= finite["high"]).all()
    corr = table[(table["variant"] == "corr") & table["quantity"].isin(["CC", "CI", "II", "paired"])]
    assert corr["value"].between(-1, 1).all()


def test_figures_and_calls_are_written(study_result):
    _, result = study_result
    folder = result.folder
    for name in ("influence_cov", "influence_corr", "influence_contrasts_cov", "bif_matrix_step0",
                 "bif_matrix_step12"):
        assert (folder / f"{name}.png").stat().st_size > 0 and (folder / f"{name}.pdf").stat().st_size > 0
    windows = json.loads((folder / "readout.json").read_text())
    assert set(windows) == {"0", "4", "12"} and all(w["readout_context"] == 128 for w in windows.values())
    calls = json.loads((folder / "transitions.json").read_text())
    assert {"CC/cov", "CI/cov", "II/cov", "paired/corr", "delta/cov", "bug_gap/corr"} <= set(calls)
    from codedyn.analysis.transitions import verdict_text

    for found in calls.values():
        assert found["verdict"] == verdict_text(found["kind"], found["bracket"])
        assert all(e["detail"] for e in found["events"])
    # The verdicts themselves. Three checkpoints cannot bracket a sharp transition (the jump scan needs two on each
    # side after step 0), so nothing is "sharp"; at this tiny study's 2 chains x 8 draws no curve shows a
    # significant change (pinned for the sampler's seeds: before the chains' noise streams were made independent of
    # neighbouring seeds, CI/cov and II/cov read "unresolved in (4, 12]").
    kinds = {name: (found["kind"], found["bracket"]) for name, found in calls.items()}
    assert {name: kind for name, kind in kinds.items() if kind[0] != "no_change"} == {}


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
    pd.testing.assert_frame_equal(again.table, result.table)
    # The run entry point also finds every posterior unit cached.
    pd.testing.assert_frame_equal(run_influence(study).table, result.table)


def test_diagnostics_and_loss_traces_per_checkpoint(study_result):
    _, result = study_result
    diagnostics = pd.read_parquet(result.folder / "diagnostics.parquet")
    assert len(diagnostics) == 3 * 2  # checkpoints x chains
    assert diagnostics["healthy"].all()
    assert diagnostics["fraction_below_init"].between(0, 1).all()
    assert (diagnostics["drift_to_noise"] > 0).all()
    mixing = pd.read_parquet(result.folder / "mixing.parquet")
    assert {"excess_loss", "mean_loss", "loss_pc1", "phi:L0.H0"} <= set(mixing["quantity"])
    assert sorted(set(mixing["step"])) == [0, 4, 12]
    # 2 chains x 8 draws are far too few effective draws: the table must say so rather than pass.
    assert not mixing["passed"].all() and mixing.loc[~mixing["passed"], "problem"].str.len().gt(0).all()
    for step in (0, 4, 12):
        assert (result.folder / "traces" / f"loss_traces_step{step}.png").is_file()


def test_cli_runs_the_experiment_from_a_preset_file(study_result, tmp_path, monkeypatch, shared_home):
    """`codedyn influence --preset file.yaml --out DIR`: the same study, found cached, prints verdicts."""
    import yaml
    from typer.testing import CliRunner

    from codedyn.cli import app

    study, result = study_result
    monkeypatch.setenv("CODEDYN_HOME", str(shared_home))  # the study's dataset and suite, already built
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(json.loads(json.dumps(TINY_STUDY))))
    outcome = CliRunner().invoke(app, ["influence", "--preset", str(preset), "--out", str(study.run_dir)])
    assert outcome.exit_code == 0, outcome.output
    assert outcome.stdout.strip().endswith(str(result.folder))
    assert "CC/cov:" in outcome.output and "LLC/llc:" in outcome.output


def test_susceptibilities_come_from_the_same_posteriors(study_result, no_sampling):
    from codedyn.experiments.susceptibility import run_susceptibility

    study, _ = study_result
    result = run_susceptibility(study)
    table = pd.read_parquet(result.folder / "susceptibility.parquet")
    components = set(table["component"])
    assert {"L0.H0", "L0.H1", "L0.MLP", "L1.H0", "L1.H1", "L1.MLP"} == components  # 2 layers x (2 heads + MLP)
    assert {"correct", "incorrect"} <= set(table["distribution"])
    assert sorted(set(table["step"])) == [0, 4, 12]
    assert (table["low"] <= table["chi"] + 1e-12).all() and (table["chi"] <= table["high"] + 1e-12).all()
    responders = pd.read_parquet(result.folder / "opposite_responders.parquet")
    assert len(responders) == 3 * len(components)
    assert (result.folder / "susceptibility_trajectories.png").is_file()
    contrast = pd.read_parquet(result.folder / "correctness_contrast.parquet")
    assert len(contrast) == 2 * 3 * len(components)  # raw and standardised, every component at every checkpoint
    assert (contrast["fw_high"] - contrast["fw_low"]).mean() > (contrast["high"] - contrast["low"]).mean()
    assert {"incorrect-correct"} <= set(table["distribution"])
