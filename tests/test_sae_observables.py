"""SAE latents as susceptibility components: chosen from Experiment 2's unit, recorded by the shared posterior,
keyed by the SAE weights (an analysis-only change of Experiment 2 never resamples a posterior)."""

import json

import numpy as np
import pandas as pd
import pytest

from tests.test_emergence import TINY_EMERGENCE

SAE_STUDY = {
    **TINY_EMERGENCE,
    "suite": {"steps": [4, 12]},
    "emergence": {**TINY_EMERGENCE["emergence"], "init_from_previous": False},
    "sampling": {"chains": 2, "draws": 6, "burn_in": 2, "batch_size": 8, "sampling_windows": 64, "window_length": 33,
                 "max_readout_tokens": 64, "n_bootstrap": 50, "max_problems": None, "probe_samples": 6},
    "susceptibility": {"sae_latents": 5},
}


@pytest.fixture(scope="module")
def sae_study(tmp_path_factory):
    from codedyn.config import load_config
    from codedyn.experiments.study import prepare_study
    from codedyn.sampling.posterior import sample_checkpoints

    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("CODEDYN_HOME", str(home))
    study = prepare_study(load_config("default", SAE_STUDY), home / "run")
    sample_checkpoints(study)  # trains each checkpoint's SAE unit first, then samples with its latents observed
    yield study, home
    mp.undo()


def test_chosen_latents_start_with_experiment_2s_choice_and_follow_welch_t(sae_study):
    from codedyn.experiments.emergence import emergence_unit_dir
    from codedyn.sampling.sae_observables import choose_latents

    study, _ = sae_study
    unit = emergence_unit_dir(study, 12)
    chosen = choose_latents(unit, 5)
    scores = pd.read_parquet(unit / "scores.parquet")
    selection = json.loads((unit / "selection.json").read_text())
    for layer, latents in chosen.items():
        assert len(latents) == 5 and list(latents) == sorted(set(latents))
        assert int(selection[str(layer)]["best_latent"]) in latents
        rest = [i for i in latents if i not in {int(selection[str(layer)][k]) for k in
                                                ("best_latent", "correct_latent", "incorrect_latent")}]
        part = scores[(scores["layer"] == layer) & ~scores["general"].astype(bool)].set_index("latent")
        strength = part["welch_t"].abs().fillna(0)
        # every added latent is at least as strong as every eligible latent left out
        left_out = strength.drop(index=list(latents), errors="ignore")
        assert strength.loc[rest].min() >= left_out.max() - 1e-12


def test_posterior_records_the_sae_latents_beside_heads_and_mlps(sae_study):
    from codedyn.models.sae import SaeLatentMeans, TopKSAE
    from codedyn.sampling.posterior import posterior_folder, probe_observables, readout_samples
    from codedyn.sampling.sae_observables import study_sae_latents
    from codedyn.sampling.traces import load_traces

    study, _ = sae_study
    latents = study_sae_latents(study, 12)
    traces = load_traces(posterior_folder(study, 12))
    names = [str(n) for n in traces["observable"].values]
    assert names[:6] == ["L0.H0", "L0.H1", "L0.MLP", "L1.H0", "L1.H1", "L1.MLP"]
    assert names[6:] == [f"L{layer}.SAE{i}" for layer in (0, 1) for i in latents.latents[layer]]
    # the stored value at w* equals a direct computation of the latent means on the probe batch
    checkpoint = study.suite.load(12)
    probe = probe_observables(checkpoint.tokenizer, readout_samples(study.dataset, study.config.sampling),
                              study.config.sampling, "cpu")["components"]
    init = dict(zip(names, traces["init_observed"].values, strict=True))
    for layer, indices in latents.latents.items():
        direct = SaeLatentMeans(TopKSAE.load(latents.unit, layer), layer, probe.input_ids, probe.attention_mask)
        expected = direct(checkpoint.model).numpy()[list(indices)]
        got = np.array([init[f"L{layer}.SAE{i}"] for i in indices])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    observed = traces["observed"].values[traces["healthy"].values]
    assert np.isfinite(observed).all()


def test_susceptibility_table_has_sae_components(sae_study):
    from codedyn.experiments.susceptibility import compute_susceptibility

    study, _ = sae_study
    table = compute_susceptibility(study)["table"]
    sae_rows = table[table["component"].str.contains(".SAE", regex=False)]
    assert set(sae_rows["step"]) == {4, 12}
    assert sae_rows["chi"].notna().all()


def test_analysis_only_emergence_change_keeps_posteriors_and_retraining_changes_them(sae_study, monkeypatch):
    from codedyn.config import load_config
    from codedyn.experiments.study import prepare_study
    from codedyn.sampling import posterior
    from codedyn.sampling.posterior import posterior_folder, sample_checkpoints

    study, home = sae_study
    monkeypatch.setenv("CODEDYN_HOME", str(home))
    before = posterior_folder(study, 12)

    def forbidden(*args, **kwargs):
        raise AssertionError("a posterior was resampled")

    # more shuffled-label controls: a new SAE unit (same deterministic weights), the same posterior
    changed = {**SAE_STUDY, "emergence": {**SAE_STUDY["emergence"], "shuffles": 3}}
    other = prepare_study(load_config("default", changed), home / "run")
    monkeypatch.setattr(posterior, "run_posterior", forbidden)
    sample_checkpoints(other)
    assert posterior_folder(other, 12) == before
    # a different SAE (another width) is another observable: another posterior key
    wider = {**SAE_STUDY, "emergence": {**SAE_STUDY["emergence"], "width": 48}}
    third = prepare_study(load_config("default", wider), home / "run")
    from codedyn.experiments.emergence import emergence_unit

    emergence_unit(third, 12)
    assert posterior_folder(third, 12) != before


def test_missing_sae_unit_is_one_clear_error(sae_study, tmp_path, monkeypatch):
    from codedyn.config import load_config
    from codedyn.experiments.study import prepare_study
    from codedyn.sampling.posterior import posterior_folder

    study, home = sae_study
    monkeypatch.setenv("CODEDYN_HOME", str(home))
    fresh = prepare_study(load_config("default", SAE_STUDY), tmp_path / "other-run")
    with pytest.raises(FileNotFoundError, match="codedyn emergence"):
        posterior_folder(fresh, 12)
