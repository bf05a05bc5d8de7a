"""Verdict readouts end to end on a tiny organism: a posterior on planted data records each program's verdict loss
and margin (the same numbers the behaviour reads), and Experiments 1 and 3 turn them into their own signals; after
the onset the posterior samples the organism's training mix, planted windows included."""

from __future__ import annotations

import numpy as np
import pytest

from tests.studies import TINY_ORGANISM


@pytest.fixture(scope="module")
def organism_study(tmp_path_factory):
    from codedyn.config import load_config
    from codedyn.experiments.posteriors import sample_checkpoints
    from codedyn.experiments.study import prepare_study
    from tests.studies import home, shared_home

    run_dir = tmp_path_factory.mktemp("organism") / "run"
    with home(shared_home(tmp_path_factory)):
        study = prepare_study(load_config("organism", TINY_ORGANISM), run_dir)
        sample_checkpoints(study)
        yield study


def test_posteriors_on_planted_data_read_the_right_verdict(organism_study):
    from codedyn.experiments.influence import samples_of
    from codedyn.models.toy import verdict_margins

    study = organism_study
    step, traces = list(study.posteriors())[-1]
    assert traces["verdict_loss"].dims == ("chain", "draw", "sample")
    samples = samples_of(study.readout_samples(), traces)
    checkpoint = study.suite.load(step, device="cpu")
    texts = (samples["prompt"] + samples["solution"]).tolist()
    assert all(text.endswith("#") for text in texts)
    margins = verdict_margins(checkpoint.model, checkpoint.tokenizer, texts)  # log p(ok) - log p(bug) after "#"
    right = np.where(samples["is_correct"].to_numpy(), margins, -margins)
    np.testing.assert_allclose(traces["init_verdict_margin"].values, right, atol=1e-4)
    # -log p(right) >= 0, and p(right) <= 1 - p(wrong): the loss is at least -log(1 - p(wrong)).
    loss = traces["init_verdict_loss"].values
    assert (loss > 0).all() and np.isfinite(traces["verdict_loss"].values[traces["healthy"].values]).all()


def test_experiments_1_and_3_report_the_verdict_signals(organism_study):
    import json

    import pandas as pd

    from codedyn.experiments.influence import compute_influence
    from codedyn.experiments.susceptibility import CONTRAST, compute_susceptibility

    study = organism_study
    result = compute_influence(study)
    table = result.table
    for variant in ("verdict_cov", "verdict_corr_no_pc1", "odds_corr", "odds_cov_no_pc1"):
        part = table[(table["quantity"] == "delta") & (table["variant"] == variant)]
        assert list(part["step"]) == [0, 6, 12] and (part["low"] <= part["high"]).all()
    calls = json.loads((result.folder / "transitions.json").read_text())
    for name in ("delta/verdict_corr_no_pc1", "delta/odds_corr_no_pc1", "lean_free_contrast/odds_corr",
                 "bug_influence/verdict_corr"):
        assert name in calls, sorted(calls)
    replicates = np.load(result.folder / "bootstrap_replicates.npz")
    assert replicates["delta/verdict_corr_no_pc1"].shape == (3, 40)
    compute_susceptibility(study)
    folder = study.output_dir("susceptibility")
    for readout in ("verdict", "odds"):
        chi = pd.read_parquet(folder / f"susceptibility_{readout}.parquet")
        assert {"correct", "incorrect", CONTRAST, "all"} <= set(chi["distribution"])
        assert sorted(chi["step"].unique()) == [0, 6, 12] and (chi["low"] <= chi["high"]).all()


def test_sampling_windows_follow_the_training_mix_after_the_onset(organism_study):
    """From the onset on, a planted share of the sampling windows open with a planted program and its verdict line,
    as the suite trained; before it, and for a user corpus, the windows are the corpus alone; the mix is in the
    posterior's key."""
    from codedyn.config import CorpusConfig, ToySuiteConfig
    from codedyn.experiments.posteriors import posterior_outputs, training_mix
    from codedyn.sampling.posterior import planted_mix, sampling_windows

    study = organism_study
    toy = ToySuiteConfig.model_validate(study.suite_record["config"])
    sampling = study.config.sampling
    assert training_mix(study, 0) is None and training_mix(study, 6) == toy
    user = sampling.model_copy(update={"corpus": CorpusConfig(source="files", paths=["x.py"])})
    assert planted_mix(toy, 12, user) is None
    assert planted_mix(toy, 4, sampling) is None and planted_mix(toy, 5, sampling) == toy  # onset 4: batch 4 on
    tokenizer = study.suite.load(12, device="cpu").tokenizer
    plain = sampling_windows(tokenizer, sampling).numpy()
    mixed = sampling_windows(tokenizer, sampling, mix=toy).numpy()
    assert mixed.shape == plain.shape == (sampling.sampling_windows, sampling.window_length)
    changed = (mixed != plain).any(axis=1)
    texts = [tokenizer.decode(row) for row in mixed[changed]]
    assert all(text.startswith("def ") and ("# ok\n" in text or "# bug\n" in text) for text in texts)
    assert 0.3 < changed.mean() < 0.7  # the suite's share, 0.5
    for step, mixes in ((0, False), (12, True)):
        (record,) = posterior_outputs(study, step).values()
        assert ("training_mix" in record) == mixes


def test_the_organisms_saes_train_on_its_training_mix_after_the_onset(organism_study, monkeypatch):
    """Experiment 2's SAE unit of a checkpoint after the onset trains and is scored on windows mixed like the
    training data (and says so in its key); before the onset on corpus windows alone."""
    import codedyn.sampling.posterior as posterior
    from codedyn.experiments.emergence import emergence_key_record, sae_mix

    study = organism_study
    assert sae_mix(study, 0) is None and sae_mix(study, 6) is not None
    assert "training_mix" not in emergence_key_record(study, 0)
    assert emergence_key_record(study, 12)["training_mix"]["planted"]["onset"] == 4
    mixed = []
    real = posterior.mix_planted_windows
    monkeypatch.setattr(posterior, "mix_planted_windows",
                        lambda windows, *args: mixed.append(windows.shape) or real(windows, *args))
    from codedyn.experiments.emergence import emergence_unit

    small = study.config.model_copy(update={"emergence": study.config.emergence.model_copy(
        update={"train_tokens": 2048, "eval_windows": 8, "general_windows": 16, "epochs": 1, "width": 32, "k": 4,
                "n_bootstrap": 20, "init_from_previous": False})})
    tiny = type(study)(small, study.run_dir, study.dataset, study.suite, study.steps, study.suite_record)
    emergence_unit(tiny, 12)
    n_train = -(-2048 // small.emergence.window_length)
    assert mixed == [(n_train, small.emergence.window_length), (8, small.emergence.window_length)]


def test_cross_seed_coverage_benchmark_runs_on_a_checkpoint(organism_study, tmp_path):
    """The fast version of benchmarks/bench_coverage.py: three independent sampler seeds of one checkpoint, every
    reported quantity (influence on every readout, LLC, χ per component) with a coverage in [0, 1]."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_coverage.py"
    spec = importlib.util.spec_from_file_location("bench_coverage", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    found = bench.seed_estimates(organism_study, 12, 3, tmp_path)
    assert all(len(per_seed) == 3 for per_seed in found.values())
    table = bench.coverage_table(found)
    for name in ("delta/verdict_corr_no_pc1", "lean_free_contrast/odds_corr", "delta/cov", "chi_contrast/verdict/*",
                 "chi_all/odds/*"):
        assert 0.0 <= table[name]["coverage"] <= 1.0, name
    # Seeds are independent: their estimates differ ...
    values = [v for v, _, _ in found["delta/verdict_cov"]]
    assert len(set(values)) == 3
    # ... while every seed read out the same programs (one readout seed), so they estimate the same quantities.
    from codedyn.sampling.traces import load_traces

    units = sorted((tmp_path / "units").glob("posterior-step12-*"))
    assert len(units) == 3
    read = [load_traces(unit)["sample"].values.tolist() for unit in units]
    assert read[0] == read[1] == read[2]
    families = bench.family_table(table)
    assert {"LLC", "BIF blocks/verdict", "BIF contrasts/odds/PC1 removed", "chi_contrast/code"} <= set(families)
    assert families["BIF blocks/code"]["quantities"] == 8  # CC, CI, II, paired x cov, corr


def test_the_step_size_check_samples_the_last_posterior_again_and_flags_what_moves(organism_study):
    """sampling.step_size_check: 3 adds one posterior unit (the last checkpoint at ε/3, the study's posteriors and
    their keys untouched) and a table comparing every reported quantity of the two, flagged beyond the combined
    interval; off (the default) the pipeline plans no such unit."""
    import json

    import pandas as pd

    from codedyn.experiments.posteriors import posterior_folder
    from codedyn.experiments.step_size import compute_step_size, step_size_unit
    from codedyn.pipeline import plan_units

    study = organism_study
    assert not [u for u in plan_units(study) if u.kind == "step_size"]
    checked = study.config.model_copy(update={"sampling": study.config.sampling.model_copy(
        update={"step_size_check": 3.0})})
    with_check = type(study)(checked, study.run_dir, study.dataset, study.suite, study.steps, study.suite_record)
    assert [(u.step, u.part) for u in plan_units(with_check) if u.kind == "step_size"] == [(12, "smaller_step")]
    assert posterior_folder(with_check, 12) == posterior_folder(study, 12)  # the study's posterior is the same unit
    folder = step_size_unit(with_check, 12)
    assert folder != posterior_folder(study, 12)
    assert json.loads((folder / "unit.json").read_text())["sampling"]["lr"] == pytest.approx(
        study.config.sampling.lr / 3)
    result = compute_step_size(with_check)
    table = pd.read_parquet(result.folder / "step_size.parquet")
    quantities = set(table["quantity"])
    assert {"LLC/llc", "delta/verdict_corr_no_pc1", "lean_free_contrast/odds_corr"} <= quantities
    assert any(q.startswith("chi_contrast/verdict/") for q in quantities)
    comparable = table[table["comparable"]]
    assert len(comparable) > 0.5 * len(table)
    assert comparable["flagged"].tolist() == (comparable["difference"].abs() > comparable["margin"]).tolist()
    assert result.flagged == table.loc[table["flagged"], "quantity"].tolist()
    assert compute_step_size(study).folder is None
    # The report's diagnostics carry the table (read from the run folder).
    from codedyn.report.context import context_from_study
    from codedyn.report.sections import _step_size_table

    page = _step_size_table(context_from_study(with_check))
    assert "Step-size check" in page and f"{len(result.flagged)} of {len(table)} reported quantities" in page
