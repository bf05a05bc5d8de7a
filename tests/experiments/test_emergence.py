"""Experiment 2: planted and null signals, metric estimators against references, split hygiene, end to end."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from codedyn.analysis.classifier import Labels, Predictor, problem_weights
from codedyn.experiments.emergence import analyse_layer, operator_breakdown
from codedyn.models.sae import train_sae
from tests.studies import TINY_EMERGENCE

D, FEATURES, PLANTED_P_GENERAL = 32, 24, 0.02


def _dictionary(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dictionary = rng.normal(size=(FEATURES, D))
    return dictionary / np.linalg.norm(dictionary, axis=1, keepdims=True)


def _activations(rng, n: int, planted_p: np.ndarray, dictionary: np.ndarray) -> np.ndarray:
    """Sparse sums of dictionary directions (each active with p 0.06, amplitude U(1, 2)); feature 0, the planted
    direction, is active with the per-row probability ``planted_p``."""
    p = np.full((n, FEATURES), 0.06)
    p[:, 0] = planted_p
    active = rng.random((n, FEATURES)) < p
    return (active * rng.uniform(1, 2, (n, FEATURES))) @ dictionary + 0.02 * rng.normal(size=(n, D))


def _frame(n_problems: int, seed: int) -> pd.DataFrame:
    """Two samples (correct, incorrect) per problem; problems split 50 / 10 / 40."""
    rng = np.random.default_rng(seed)
    splits = rng.permutation(np.repeat(["analysis", "tuning", "validation"],
                                       [n_problems // 2, n_problems // 10, n_problems - n_problems // 2
                                        - n_problems // 10]))
    operators = ["off_by_one", "comparison_swap", "return_value"]
    rows = []
    for k in range(n_problems):
        rows.append({"problem_id": f"P{k}", "sample_id": f"P{k}/ref", "is_correct": True, "split": splits[k],
                     "operator": None})
        rows.append({"problem_id": f"P{k}", "sample_id": f"P{k}/mut", "is_correct": False, "split": splits[k],
                     "operator": operators[k % 3]})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def trained():
    """One SAE trained on "general" activations in which the planted direction is rare (2%)."""
    torch.manual_seed(0)
    dictionary = _dictionary()
    rng = np.random.default_rng(1)
    corpus = _activations(rng, 4000, np.full(4000, PLANTED_P_GENERAL), dictionary)
    general = _activations(rng, 1500, np.full(1500, PLANTED_P_GENERAL), dictionary)
    sae, _ = train_sae(torch.as_tensor(corpus, dtype=torch.float32), 64, 4, epochs=6, batch_size=128, lr=4e-3,
                       aux_k=16, aux_coef=1 / 32, dead_tokens=1000, seed=0)
    with torch.no_grad():
        general_freq = (sae.encode(torch.as_tensor(general, dtype=torch.float32)) > 0).float().mean(0).numpy()
    return sae, dictionary, general_freq


def _analyse(trained, p_correct: float, p_incorrect: float, seed: int, n_problems: int = 300):
    sae, dictionary, general_freq = trained
    frame = _frame(n_problems, seed)
    labels = Labels.from_samples(frame)
    rng = np.random.default_rng(seed + 100)
    x = _activations(rng, len(frame), np.where(labels.is_correct, p_correct, p_incorrect), dictionary)
    with torch.no_grad():
        latents = sae.encode(torch.as_tensor(x, dtype=torch.float32)).numpy()
    # General latents fire on > 10% of general windows here (4 of 64 latents fire per row by construction).
    result = analyse_layer(latents, x.astype(np.float32), general_freq, labels, general_threshold=0.1, probe_c=1.0,
                           shuffles=3, n_boot=400, seed=0)
    return result, labels, latents


def _metric(result, predictor: str, metric: str = "auroc", split: str = "validation") -> dict:
    rows = [r for r in result.metrics if r["predictor"] == predictor and r["metric"] == metric and r["split"] == split]
    assert len(rows) == 1
    return rows[0]


def test_planted_direction_is_recovered_with_the_analytic_auroc(trained):
    sae, dictionary, _ = trained
    p_correct, p_incorrect = 0.7, 0.1
    # The latent fires with the planted feature; active amplitudes are identically distributed in both classes and
    # ties (both inactive or both active ranks) count 1/2, so AUROC = 0.5 + (p_correct - p_incorrect) / 2.
    analytic = 0.5 + (p_correct - p_incorrect) / 2
    result, _, _ = _analyse(trained, p_correct, p_incorrect, seed=0)
    chosen = result.selection
    assert chosen["best_latent"] == chosen["correct_latent"] and chosen["best_predicts"] == "correct"
    decoder = sae.W_dec[chosen["best_latent"]].numpy()
    assert abs(decoder @ dictionary[0]) > 0.9
    best = _metric(result, "best_latent")
    assert abs(best["value"] - analytic) < 0.07
    assert best["low"] < analytic < best["high"]
    assert _metric(result, "probe")["value"] > 0.7  # the information is linearly there too
    shuffled = _metric(result, "shuffled")
    assert shuffled["low"] < 0.5 + 0.1 and shuffled["value"] < best["low"]  # selection on noise finds nothing
    assert chosen["separation"]["correct_latent"] == pytest.approx(p_correct - p_incorrect, abs=0.12)


def test_null_signal_gives_chance_with_an_interval_covering_half(trained):
    result, _, _ = _analyse(trained, 0.4, 0.4, seed=1)
    for predictor in ("best_latent", "probe", "shuffled", "random_latent"):
        row = _metric(result, predictor)
        assert row["low"] <= 0.5 <= row["high"], (predictor, row)


def test_selection_never_sees_tuning_or_validation_labels(trained):
    """Permuting the labels of the tuning and validation problems cannot change which latents are chosen; permuting
    validation labels cannot change the thresholds either."""
    result, labels, latents = _analyse(trained, 0.7, 0.1, seed=0)
    sae, dictionary, general_freq = trained
    rng = np.random.default_rng(5)
    for split, keep_thresholds in (("validation", True), ("tuning", False)):
        rows = labels.rows(split)
        flipped = labels.is_correct.copy()
        flipped[rows] = rng.permutation(flipped[rows])
        other = Labels(flipped, labels.split, labels.problem, labels.operator)
        again = analyse_layer(latents, latents[:, :4], general_freq, other, 0.1, 1.0, 3, 50, 0).selection
        for key in ("correct_latent", "incorrect_latent", "best_latent", "random_latent", "shuffled_latents"):
            assert again[key] == result.selection[key], (split, key)
        if keep_thresholds:
            for name in ("correct_latent", "incorrect_latent", "best_latent"):
                assert again["thresholds"][name] == result.selection["thresholds"][name]


def test_operator_breakdown_counts_flagged_incorrect_samples():
    frame = _frame(30, 3)
    labels = Labels.from_samples(frame)
    # The score flags (predicts incorrect) exactly the off_by_one mutants and nothing else.
    flagged = (frame["operator"] == "off_by_one").to_numpy()
    predictor = Predictor("best_latent", flagged.astype(float), positive_correct=False, threshold=0.5)
    weights = problem_weights(labels.problem[labels.rows("validation")], 100, 0)
    rows = {r["operator"]: r for r in operator_breakdown([predictor], labels, weights)}
    assert rows["off_by_one"]["value"] == 1.0 and rows["off_by_one"]["low"] == 1.0
    assert rows["comparison_swap"]["value"] == 0.0 and rows["return_value"]["high"] == 0.0
    assert rows["correct (false alarm)"]["value"] == 0.0
    in_validation = (frame["operator"] == "off_by_one") & (frame["split"] == "validation")
    assert rows["off_by_one"]["n"] == int(in_validation.sum())


# ------------------------------------------------------------------------------------------ end to end



@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_home):
    from codedyn.config import load_config
    from codedyn.experiments.emergence import run_emergence
    from codedyn.experiments.study import prepare_study

    mp = pytest.MonkeyPatch()
    mp.setenv("CODEDYN_HOME", str(shared_home))  # datasets and toy suites built once per session
    study = prepare_study(load_config("default", TINY_EMERGENCE), tmp_path_factory.mktemp("emergence") / "run")
    yield study, run_emergence(study)
    mp.undo()


def test_run_emergence_writes_units_tables_figures_and_calls(tiny):
    from codedyn.experiments.emergence import emergence_unit_dir

    study, result = tiny
    folder = result.folder
    table = pd.read_parquet(folder / "emergence.parquet")
    assert sorted(set(table["step"])) == [0, 4, 12] and sorted(set(table["layer"])) == [0, 1]
    assert {"best_latent", "probe", "shuffled", "random_latent", "correct_latent", "incorrect_latent"} == set(
        table["predictor"])
    finite = table.dropna(subset=["low", "high"])
    assert ((finite["low"] <= finite["value"] + 1e-12) & (finite["value"] <= finite["high"] + 1e-12)).all()
    auc = table[table["metric"] == "auroc"]["value"].dropna()
    assert auc.between(0, 1).all()
    sae = pd.read_parquet(folder / "sae_metrics.parquet")
    assert len(sae) == 6 and (sae["l0"] <= 4 + 1e-9).all() and sae["explained_variance"].lt(1).all()
    assert sae[sae["step"] > 0]["decoder_cosine_mean"].notna().all()  # init from previous: drift reported
    for name in ("emergence_auroc_L0", "emergence_f1_L1", "operator_detection_L0", "sae_quality"):
        assert (folder / f"{name}.png").stat().st_size > 0 and (folder / f"{name}.pdf").is_file()
    calls = json.loads((folder / "transitions.json").read_text())
    assert {"L0/best_latent/auroc", "L1/probe/auroc", "L1/shuffled/auroc"} <= set(calls)
    from codedyn.analysis.transitions import verdict_text

    for found in calls.values():
        assert found["verdict"] == verdict_text(found["kind"], found["bracket"])
    # The verdicts themselves: ten problems give validation intervals too wide for any two of the three checkpoints
    # to differ, controls included, so every curve reads "no change" (and three checkpoints never make a sharp one).
    assert {name: found["kind"] for name, found in calls.items() if found["kind"] != "no_change"} == {}
    assert (folder / "operators.parquet").is_file()
    for step in (0, 4, 12):
        unit = emergence_unit_dir(study, step)
        assert unit.name.startswith(f"sae-step{step}-") and (unit / "completed").is_file()
        # the unit holds what needs the model; scoring, selection and intervals are the analysis'
        assert {"sae_L0.safetensors", "sae_L1.json", "arrays.npz", "sae_metrics.json", "unit.json"} <= {
            p.name for p in unit.iterdir()}
        assert not {"scores.parquet", "selection.json", "metrics.parquet", "replicates.npz"} & {
            p.name for p in unit.iterdir()}
    assert {"scores.parquet", "selection.parquet", "emergence.parquet"} <= {p.name for p in folder.iterdir()}
    # How much of the probe's direction each SAE keeps: every quantity at every step and layer; u·x ranks the
    # validation samples as the probe does, so its AUROC is the probe's validation AUROC.
    from codedyn.analysis.direction import QUANTITIES

    direction = pd.read_parquet(folder / "probe_direction.parquet")
    assert len(direction) == 3 * 2 * len(QUANTITIES) and set(direction["quantity"]) == set(QUANTITIES)
    probe = table[(table["predictor"] == "probe") & (table["split"] == "validation") & (table["metric"] == "auroc")]
    resid = direction[direction["quantity"] == "auroc_resid"]
    merged = probe.merge(resid, on=["step", "layer"], suffixes=("_probe", "_direction"))
    assert len(merged) == 6 and np.allclose(merged["value_probe"], merged["value_direction"], atol=1e-9)
    assert direction[direction["quantity"] == "max_decoder_cosine"]["value"].between(0, 1 + 1e-9).all()
    assert (folder / "probe_direction_L1.png").stat().st_size > 0


def test_compute_reruns_from_stored_units_without_training(tiny, monkeypatch):
    import codedyn.models.sae as sae_module
    from codedyn.experiments.emergence import compute_emergence, emergence_unit, emergence_unit_dir

    study, result = tiny

    def forbidden(*args, **kwargs):
        raise AssertionError("a stored SAE unit was trained again")

    monkeypatch.setattr(sae_module, "train_sae", forbidden)
    pd.testing.assert_frame_equal(compute_emergence(study).table, result.table)
    for step in study.steps:  # what run_emergence does first: every unit is found, none is trained
        assert emergence_unit(study, step) == emergence_unit_dir(study, step)


def test_an_analysis_setting_never_retrains_an_sae(tiny, monkeypatch):
    """shuffles, probe_c and general_threshold are read by the analysis only: same SAE units, new analysis."""
    import codedyn.models.sae as sae_module
    from codedyn.experiments.emergence import compute_emergence, emergence_unit, emergence_unit_dir

    study, result = tiny
    monkeypatch.setattr(sae_module, "train_sae", lambda *a, **k: pytest.fail("an analysis setting retrained an SAE"))
    update = {"shuffles": 3, "probe_c": 1.0, "general_threshold": 0.3}
    changed = study.config.model_copy(update={"emergence": study.config.emergence.model_copy(update=update)})
    other = type(study)(changed, study.run_dir, study.dataset, study.suite, study.steps, study.suite_record)
    for step in study.steps:
        assert emergence_unit(other, step) == emergence_unit_dir(study, step)
    table = compute_emergence(other).table
    assert set(table["step"]) == set(study.steps)
    probe = ["step", "layer", "split", "metric"]
    a = table[table["predictor"] == "probe"].set_index(probe)["value"]
    b = result.table[result.table["predictor"] == "probe"].set_index(probe)["value"]
    assert not np.allclose(a.sort_index().to_numpy(), b.sort_index().to_numpy(), equal_nan=True)  # probe_c used
    compute_emergence(study)  # the study's own outputs back in place for the tests after this one


def test_unit_keys_chain_when_initialised_from_previous(tiny):
    from codedyn.experiments.emergence import emergence_key

    study, _ = tiny
    changed = study.config.model_copy(update={"emergence": study.config.emergence.model_copy(update={"k": 3})})
    other = type(study)(changed, study.run_dir, study.dataset, study.suite, study.steps, study.suite_record)
    assert all(emergence_key(other, s) != emergence_key(study, s) for s in study.steps)
    # Dropping the first checkpoint changes the later units' keys (their SAE started from another one) ...
    later = type(study)(study.config, study.run_dir, study.dataset, study.suite, (4, 12), study.suite_record)
    assert emergence_key(later, 4) != emergence_key(study, 4)
    assert emergence_key(later, 12) != emergence_key(study, 12)


def test_load_sae_and_latent_observable_on_a_real_checkpoint(tiny):
    from codedyn.data.tokenize import collate, encode_sample
    from codedyn.experiments.emergence import emergence_unit_dir, load_sae
    from codedyn.models.sae import SaeLatentMeans

    study, _ = tiny
    saes = load_sae(study, 12)
    assert set(saes) == {0, 1}
    assert load_sae(emergence_unit_dir(study, 12), layer=1).width == 32
    checkpoint = study.suite.load(12)
    sample = study.dataset.samples.iloc[0]
    batch = collate([encode_sample(checkpoint.tokenizer, sample["prompt"], sample["solution"], max_length=32)], 0)
    ids, mask = torch.as_tensor(batch["input_ids"]), torch.as_tensor(batch["attention_mask"])
    values = SaeLatentMeans(saes[1], 1, ids, mask)(checkpoint.model)
    assert values.shape == (32,) and torch.isfinite(values).all() and (values >= 0).all()
    stored = np.load(emergence_unit_dir(study, 12) / "arrays.npz")
    # Every sample is captured but the mutants whose change does not fit the readout window (counted in unit.json).
    excluded = json.loads((emergence_unit_dir(study, 12) / "unit.json").read_text())["readout_excluded"]
    assert stored["latents_L1"].shape == (len(study.dataset.samples) - excluded, 32)
    with pytest.raises(FileNotFoundError, match="codedyn emergence"):
        load_sae(study.run_dir / "units" / "sae-step99-none")


def test_cli_prints_verdicts(tiny, tmp_path, monkeypatch, shared_home):
    import yaml
    from typer.testing import CliRunner

    import codedyn.models.sae as sae_module
    from codedyn.cli import app

    study, result = tiny
    monkeypatch.setenv("CODEDYN_HOME", str(shared_home))  # the tiny study's dataset and suite caches
    monkeypatch.setattr(sae_module, "train_sae", lambda *a, **k: pytest.fail("the CLI retrained a stored unit"))
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(json.loads(json.dumps(TINY_EMERGENCE))))
    outcome = CliRunner().invoke(app, ["emergence", "--preset", str(preset), "--out", str(study.run_dir)])
    assert outcome.exit_code == 0, outcome.output
    assert outcome.stdout.strip().endswith(str(result.folder))
    assert "L1/best_latent/auroc:" in outcome.output and "L0/probe/auroc:" in outcome.output
    bad = CliRunner().invoke(app, ["emergence", "--preset", str(preset), "--layers", "7", "--out",
                                   str(tmp_path / "x")])
    assert bad.exit_code == 2 and "layer 7" in bad.output


def test_llc_of_experiment_one_is_read_when_every_step_has_it(tiny):
    from codedyn.experiments.emergence import _llc_curve, compute_emergence, emergence_figure

    study, _ = tiny
    folder = study.output_dir("influence")
    rows = [{"step": s, "quantity": "LLC", "variant": "llc", "value": 1.0 + s, "low": 0.5 + s, "high": 1.5 + s,
             "level": 0.95} for s in (0, 4)]
    pd.DataFrame(rows).to_parquet(folder / "influence.parquet", index=False)
    try:
        assert _llc_curve(study, [0, 4, 12]) is None  # step 12 missing: no partial LLC curve
        rows.append({**rows[0], "step": 12, "value": 13.0, "low": 12.5, "high": 13.5})
        pd.DataFrame(rows).to_parquet(folder / "influence.parquet", index=False)
        values, lows, highs, _ = _llc_curve(study, [0, 4, 12])
        np.testing.assert_array_equal(values, [1.0, 5.0, 13.0])
        np.testing.assert_array_equal(lows, [0.5, 4.5, 12.5])
        result = compute_emergence(study)
        table = result.table
        figure = emergence_figure(table[table["split"] == "validation"], 1, "auroc", result.calls, study,
                                  [0, 4, 12], (values, lows, highs))
        assert any(line.get_gid() == "llc" for ax in figure.axes for line in ax.get_lines())  # own LLC panel
    finally:
        (folder / "influence.parquet").unlink()
