"""SGLD calibration: the scoring rules on synthetic traces, the scorer on a model with a known answer, and the
`codedyn calibrate` command end to end on a tiny study."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from codedyn.config import CalibrationConfig, SamplingConfig, load_config
from codedyn.experiments.calibration import (
    Setting,
    diverged_metrics,
    rank_settings,
    score_grid,
    score_setting,
    trace_metrics,
)

RULES = CalibrationConfig()
N_PARAMS = 1000  # LLC bound d/2 = 500: far above every synthetic LLC below


def _score(traces, init=1.0, burn_in=10, n_beta=10.0, drift=0.1):
    traces = np.asarray(traces, dtype=float)
    metrics = trace_metrics(traces, init, burn_in, n_beta, N_PARAMS, drift_to_noise=np.full(traces.shape[0], drift))
    return metrics, score_setting({0: metrics}, RULES)


def _noise(rng, chains=2, steps=110, sd=0.02):
    return rng.normal(0, sd, (chains, steps))


def test_a_stationary_trace_above_init_passes_every_criterion():
    rng = np.random.default_rng(0)
    metrics, score = _score(1.2 + _noise(rng))
    assert metrics["fraction_below_init"] == 0.0
    assert metrics["llc"] == pytest.approx(10 * 0.2, rel=0.02)
    assert not score["rejected"] and score["n_failed"] == 0 and score["excess"] == 0.0, score["reasons"]


def test_a_trace_below_init_is_penalised():
    rng = np.random.default_rng(1)
    metrics, score = _score(1.005 + _noise(rng))  # mean just above init, many steps below it
    assert metrics["fraction_below_init"] > 0.3
    assert score["n_failed"] >= 1 and any("fraction_below_init" in r for r in score["reasons"])
    _, below = _score(0.9 + _noise(rng))  # the whole chain sits below w*: LLC < 0
    assert below["rejected"] and any("LLC" in r for r in below["reasons"])


def test_a_drifting_trace_is_penalised():
    rng = np.random.default_rng(2)
    ramp = np.linspace(1.1, 1.6, 110)[None, :] + _noise(rng)
    metrics, score = _score(ramp)
    assert metrics["nonstationarity"] > RULES.max_nonstationarity
    assert any("nonstationarity" in r for r in score["reasons"])
    stationary, _ = _score(1.35 + _noise(rng, sd=0.15))  # same spread, no trend
    assert stationary["nonstationarity"] < RULES.max_nonstationarity


def test_disagreeing_chains_tiny_drift_and_divergence():
    rng = np.random.default_rng(3)
    apart = np.stack([1.1 + _noise(rng)[0], 1.6 + _noise(rng)[0]])
    metrics, score = _score(apart)
    assert metrics["llc_rel_sd"] > RULES.max_llc_rel_sd and any("llc_rel_sd" in r for r in score["reasons"])
    _, lazy = _score(1.2 + _noise(rng), drift=1e-4)
    assert any("drift_to_noise 0.0001 <" in r for r in lazy["reasons"])
    _, coarse = _score(1.2 + _noise(rng), drift=3.0)
    assert any("drift_to_noise 3 >" in r for r in coarse["reasons"])
    diverged = 1.2 + _noise(rng)
    diverged[1, 60:] = np.inf
    metrics, score = _score(diverged)
    assert metrics["diverged_chains"] == 1 and score["rejected"]
    assert score_setting({0: diverged_metrics(2)}, RULES)["rejected"]


def test_a_spiky_trace_is_penalised():
    rng = np.random.default_rng(6)
    spiky = 1.2 + _noise(rng)
    spiky[0, 70] = 1.5  # one step 15 noise sds above the median
    metrics, score = _score(spiky, n_beta=1000.0)
    assert metrics["spikiness"] > RULES.max_spikiness and any("spikiness" in r for r in score["reasons"])
    calm, _ = _score(1.2 + _noise(rng), n_beta=1000.0)
    assert calm["spikiness"] < RULES.max_spikiness
    # At nβ = 10 the same excursion is 3 units of the posterior's own loss scale 1/nβ: a healthy fluctuation of a
    # tempered posterior, not a spike.
    tempered, _ = _score(spiky, n_beta=10.0)
    assert tempered["spikiness"] < RULES.max_spikiness


def test_llc_above_the_regular_bound_fails():
    rng = np.random.default_rng(4)
    traces = 1.0 + 600 / 10.0 + _noise(rng)  # LLC 600 > d/2 = 500
    metrics, score = _score(traces)
    assert metrics["llc_bound_ratio"] == pytest.approx(1.2, rel=0.01)
    assert any("llc_bound_ratio" in r for r in score["reasons"])


def test_ranking_order_and_tie_break_by_effective_sample_size():
    rng = np.random.default_rng(5)
    iid = 1.2 + _noise(rng)
    ar = np.empty_like(iid)  # AR(1), phi 0.9: same level, far fewer effective draws
    ar[:, 0] = 0
    for t in range(1, ar.shape[1]):
        ar[:, t] = 0.9 * ar[:, t - 1] + rng.normal(0, 0.005, 2)
    ar += 1.2
    grid = {
        Setting(1e-3, 10, 100): {0: trace_metrics(ar, 1.0, 10, 10.0, N_PARAMS, drift_to_noise=[0.1, 0.1])},
        Setting(1e-4, 10, 100): {0: trace_metrics(iid, 1.0, 10, 10.0, N_PARAMS, drift_to_noise=[0.1, 0.1])},
        Setting(1e-2, 10, 100): {0: diverged_metrics(2)},
        Setting(1e-5, 10, 100): {0: trace_metrics(iid, 1.0, 10, 10.0, N_PARAMS, drift_to_noise=[1e-4, 1e-4])},
    }
    ranked = score_grid(grid, RULES)
    assert ranked["lr"].tolist() == [1e-4, 1e-3, 1e-5, 1e-2]  # pass (high ESS), pass (low ESS), fails, rejected
    assert ranked["chosen"].tolist() == [True, False, False, False]
    assert ranked["rejected"].tolist() == [False, False, False, True]
    # Exact ties fall back to grid order.
    tie = rank_settings(pd.DataFrame({"rejected": [False, False], "excess": [0.0, 0.0], "ess": [5.0, 5.0],
                                      "grid_index": [1, 0]}))
    assert tie["grid_index"].tolist() == [0, 1]


# ------------------------------------------------------------------------------------------ a known answer


def _poisson_regression(d=5, n=512, seed=0):
    """Poisson regression (log link) fitted exactly by Newton's method: w* is the minimum of the full-batch loss,
    its Hessian gives the Laplace LLC, and exp() overflows once a step throws w far away (true divergence)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * 0.5
    y = torch.poisson(torch.exp(x @ (torch.randn(d, generator=g) * 0.5)), generator=g)
    xd, yd, w = x.double(), y.double(), torch.zeros(d, dtype=torch.float64)
    for _ in range(30):
        mu = torch.exp(xd @ w)
        hessian = xd.T @ (mu[:, None] * xd) / n
        w = w - torch.linalg.solve(hessian, xd.T @ (mu - yd) / n)
    model = torch.nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w.float()[None])
    return model, torch.cat([x, y[:, None]], 1), torch.linalg.eigvalsh(hessian).numpy()


def _poisson_loss(model, batch):
    eta = model(batch[:, :-1])[:, 0]
    return torch.exp(eta) - batch[:, -1] * eta


def test_scorer_rejects_divergence_and_ranks_a_sensible_step_first():
    """Full-batch SGLD (no minibatch noise) on a fitted Poisson regression: ε = 0.1 overflows (diverges), ε = 1e-7
    does not move in 100 steps, ε = 3e-3 mixes; the scorer must reject the first, fail the second and choose the
    third, whose LLC agrees with the Laplace value ½ Σ nβ h / (nβ h + γ) up to the step's discretisation bias."""
    from codedyn.sampling.sgld import SamplingDiverged, sample_posterior

    torch.set_num_threads(1)
    model, data, eigenvalues = _poisson_regression()
    n_beta, gamma = 100.0, 10.0
    grid = {}
    for lr in (0.1, 1e-7, 3e-3):
        config = SamplingConfig(lr=lr, n_beta=n_beta, localization=gamma, chains=2, draws=60, burn_in=40,
                                batch_size=data.shape[0], sampling_windows=data.shape[0])
        try:
            traces = sample_posterior(model, data, lambda m: _poisson_loss(m, data[:8]), config,
                                      loss_fn=_poisson_loss)
            metrics = trace_metrics(traces["sampling_loss"].values, float(traces["init_sampling_loss"]),
                                    config.burn_in, n_beta, 5, traces["healthy"].values,
                                    traces["drift_to_noise"].values)
        except SamplingDiverged:
            metrics = diverged_metrics(config.chains)
        grid[Setting(lr, n_beta, gamma)] = {0: metrics}
    ranked = score_grid(grid, RULES).set_index("lr")
    assert bool(ranked.loc[0.1, "rejected"]) and "diverged" in ranked.loc[0.1, "reasons"]
    assert ranked.loc[1e-7, "n_failed"] >= 1 and "drift_to_noise" in ranked.loc[1e-7, "reasons"]
    assert ranked.loc[3e-3, "rank"] == 1 and ranked.loc[3e-3, "n_failed"] == 0, ranked.loc[3e-3, "reasons"]
    laplace = 0.5 * np.sum(n_beta * eigenvalues / (n_beta * eigenvalues + gamma))
    assert 0.8 < ranked.loc[3e-3, "llc"] / laplace < 1.6


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, shared_home):
    """`codedyn calibrate` on the tiny study: one checkpoint, a 3-setting grid."""
    import yaml
    from typer.testing import CliRunner

    from codedyn.cli import app
    from tests.studies import TINY_STUDY

    mp = pytest.MonkeyPatch()
    mp.setenv("CODEDYN_HOME", str(shared_home))  # the tiny study's dataset and toy suite, built once per session
    folder = tmp_path_factory.mktemp("calibrate")
    preset = folder / "tiny.yaml"
    preset.write_text(yaml.safe_dump(json.loads(json.dumps(TINY_STUDY))))
    run = folder / "run"
    outcome = CliRunner().invoke(app, ["calibrate", "--preset", str(preset), "--out", str(run), "--steps", "12",
                                       "--lr", "1e-6,1e-3,1e30", "--n-beta", "10", "--localization", "100",
                                       "--draws", "16", "--burn-in", "8"])
    yield preset, run, outcome
    mp.undo()


def test_calibrate_command_writes_scores_grid_preset_and_manifest(calibrated):
    preset, run, outcome = calibrated
    assert outcome.exit_code == 0, outcome.output
    written = outcome.stdout.strip().splitlines()[-1]
    assert written == str(run / "calibrated.yaml")
    folder = run / "calibration"
    scores = pd.read_parquet(folder / "scores.parquet")
    assert len(scores) == 3 and scores["rank"].tolist() == [1, 2, 3]
    assert scores.iloc[-1]["lr"] == 1e30 and scores.iloc[-1]["rejected"]  # an absurd step diverges
    per_step = pd.read_parquet(folder / "checkpoint_scores.parquet")
    assert set(per_step["step"]) == {12} and len(per_step) == 3
    for suffix in ("png", "pdf"):
        assert (folder / f"traces_grid_step12.{suffix}").stat().st_size > 0
    chosen = scores.iloc[0]
    loaded = load_config(written)  # the preset loads as a preset, with the chosen values
    assert (loaded.sampling.lr, loaded.sampling.n_beta, loaded.sampling.localization) == (
        chosen["lr"], chosen["n_beta"], chosen["localization"])
    assert loaded.sampling.draws == load_config(str(preset)).sampling.draws  # the study's chain length is kept
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["calibration"]["chosen"]["lr"] == chosen["lr"]
    summary = json.loads((folder / "calibration.json").read_text())
    assert summary["chain_length"] == {"chains": 2, "burn_in": 8, "draws": 16}
    assert "chosen" in outcome.output
    # The step-size check: the chosen setting once more at ε/3, its LLC and mean BIF compared with the chosen ε's.
    check = summary["step_size"]
    assert check["ratio"] == 3.0 and check["lr"] == chosen["lr"] and check["smaller_lr"] == pytest.approx(
        chosen["lr"] / 3)
    assert check["missing"] == [] and check["refused"] == {}
    rows = pd.read_parquet(folder / "step_size.parquet")
    assert rows["quantity"].tolist() == ["LLC", "BIF mean (cov)", "BIF mean (corr)"] and set(rows["step"]) == {12}
    assert (rows["margin"] > 0).all() and rows["comparable"].all()
    assert rows["flagged"].tolist() == [abs(d) > m for d, m in zip(rows["difference"], rows["margin"], strict=True)]
    assert [[12, q] for q in rows.loc[rows["flagged"], "quantity"]] == check["flagged"]
    assert "Step-size check" in outcome.output


def test_rescoring_reuses_the_stored_sweep(calibrated, monkeypatch):
    import codedyn.sampling.sgld as sgld
    from codedyn.experiments.calibration import run_calibration
    from codedyn.experiments.study import prepare_study

    preset, run, _ = calibrated
    monkeypatch.setenv("CODEDYN_HOME", str(run.parent))  # the fixture's cache: dataset and suite are reused

    def forbidden(*args, **kwargs):
        raise AssertionError("a stored calibration unit was sampled again")

    monkeypatch.setattr(sgld, "sample_posterior", forbidden)
    config = load_config(str(preset), {"calibration": {"steps": [12], "lr": [1e-6, 1e-3, 1e30], "n_beta": [10],
                                                      "localization": [100], "draws": 16, "burn_in": 8}})
    before = pd.read_parquet(run / "calibration" / "scores.parquet")
    result = run_calibration(prepare_study(config, run))
    assert result["scores"]["lr"].tolist() == before["lr"].tolist()


class _Lines:
    """A progress that keeps its log lines."""

    def __init__(self):
        from codedyn.progress import SILENT

        self.lines, self._silent = [], SILENT

    def task(self, description, total):
        return self._silent.task(description, total)

    def log(self, message):
        self.lines.append(message)


def test_calibration_units_record_their_key_inputs_and_say_why_they_are_new(calibrated, shared_home, monkeypatch,
                                                                            tmp_path):
    """Each unit's folder is the hash of the key record in its unit.json; a grid value that changed is named
    before its unit is sampled (against the stored setting this sweep no longer has, not against the settings it
    keeps); an analysis-only field (the bootstrap size) reuses every unit and says nothing."""
    import shutil

    import codedyn.sampling.sgld as sgld
    from codedyn.experiments.calibration import calibration_notes, calibration_units, run_calibration
    from codedyn.experiments.study import prepare_study
    from codedyn.runs.units import KEY_INPUTS, unit_key

    preset, fixture_run, _ = calibrated
    run = tmp_path / "run"
    shutil.copytree(fixture_run, run)  # this test adds a unit: not to the fixture's sweep
    monkeypatch.setenv("CODEDYN_HOME", str(shared_home))
    grid = {"steps": [12], "lr": [1e-6, 1e-3, 1e30], "n_beta": [10], "localization": [100], "draws": 16,
            "burn_in": 8}
    study = prepare_study(load_config(str(preset), {"calibration": grid}), run)
    units = calibration_units(study, 12)
    assert [u.setting.lr for u in units] == [1e-6, 1e-3, 1e30]
    for unit in units:
        assert json.loads((unit.folder / "unit.json").read_text())[KEY_INPUTS] == unit.inputs
        assert unit.folder.name == f"calibration-step12-{unit_key(unit.inputs)}"
    assert calibration_notes(units) == []

    changed = prepare_study(load_config(str(preset), {"calibration": {**grid, "lr": [1e-6, 1e-3, 3e-3]}}), run)
    lines = _Lines()
    run_calibration(changed, lines)
    new = calibration_units(changed, 12)
    assert [u.folder for u in new[:2]] == [u.folder for u in units[:2]]  # the kept settings are reused
    # one line, naming a stored setting at this checkpoint that differs only in its step size (the dropped 1e30, or
    # the step-size check's ε/3 of a kept setting: as close, and which of the two is named depends on key order)
    assert len(lines.lines) == 1, lines.lines
    assert re.fullmatch(r"calibration-step12: new unit, differs from the stored calibration-step12-\w+ in "
                        r"sampling\.lr: [0-9.e+-]+ -> 0\.003", lines.lines[0]), lines.lines
    assert json.loads((new[2].folder / "unit.json").read_text())[KEY_INPUTS]["sampling"]["lr"] == 3e-3

    def forbidden(*args, **kwargs):
        raise AssertionError("a stored calibration unit was sampled again")

    monkeypatch.setattr(sgld, "sample_posterior", forbidden)
    config = load_config(str(preset), {"calibration": grid, "sampling": {"n_bootstrap": 17}})
    assert config.sampling.n_bootstrap != study.config.sampling.n_bootstrap
    quiet = _Lines()
    result = run_calibration(prepare_study(config, run), quiet)
    assert quiet.lines == [] and result["scores"]["lr"].tolist()[-1] == 1e30
    assert [u.folder for u in calibration_units(prepare_study(config, run), 12)] == [u.folder for u in units]
