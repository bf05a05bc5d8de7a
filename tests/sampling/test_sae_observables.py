"""SAE latents as susceptibility components: chosen from Experiment 2's unit, recorded by the shared posterior,
keyed by the SAE unit's key (an analysis-only change of Experiment 2 never retrains an SAE nor resamples a
posterior)."""


import numpy as np
import pandas as pd
import pytest

from tests.studies import TINY_EMERGENCE

SAE_STUDY = {
    **TINY_EMERGENCE,
    "suite": {"steps": [4, 12]},
    "emergence": {**TINY_EMERGENCE["emergence"], "init_from_previous": False},
    "sampling": {"chains": 2, "draws": 6, "burn_in": 2, "batch_size": 8, "sampling_windows": 64, "window_length": 33,
                 "n_bootstrap": 50, "max_problems": None},
    "susceptibility": {"sae_latents": 5},
}


@pytest.fixture(scope="module")
def sae_study(tmp_path_factory, shared_home):
    from codedyn.config import load_config
    from codedyn.experiments.posteriors import sample_checkpoints
    from codedyn.experiments.study import prepare_study

    home = shared_home  # datasets and toy suites built once per session
    mp = pytest.MonkeyPatch()
    mp.setenv("CODEDYN_HOME", str(home))
    study = prepare_study(load_config("default", SAE_STUDY), tmp_path_factory.mktemp("sae_study") / "run")
    sample_checkpoints(study)  # trains each checkpoint's SAE unit first, then samples with its latents observed
    yield study, home
    mp.undo()


def test_chosen_latents_start_with_experiment_2s_choice_and_follow_welch_t(sae_study):
    from codedyn.experiments.emergence import latent_choices, step_analysis
    from codedyn.sampling.sae_observables import choose_latents

    study, _ = sae_study
    choices = latent_choices(study, 12)
    chosen = choose_latents(choices, 5)
    analysed = step_analysis(study, 12)  # the cheap choice is the analysis' own selection
    for layer, latents in chosen.items():
        scores, selection = choices[layer]
        assert {k: analysed[layer].selection[k] for k in selection} == selection
        pd.testing.assert_frame_equal(scores, analysed[layer].scores)
        assert len(latents) == 5 and list(latents) == sorted(set(latents))
        assert int(selection["best_latent"]) in latents
        rest = [i for i in latents if i not in {int(selection[k]) for k in
                                                ("best_latent", "correct_latent", "incorrect_latent")}]
        part = scores[~scores["general"].astype(bool)].set_index("latent")
        strength = part["welch_t"].abs().fillna(0)
        # every added latent is at least as strong as every eligible latent left out
        left_out = strength.drop(index=list(latents), errors="ignore")
        assert strength.loc[rest].min() >= left_out.max() - 1e-12


def test_posterior_records_the_sae_latents_beside_heads_and_mlps(sae_study):
    import torch

    from codedyn.data.tokenize import encode_sample
    from codedyn.experiments.posteriors import posterior_folder, study_sae_latents
    from codedyn.models.activations import final_token_residuals
    from codedyn.models.hooks import ComponentNorms
    from codedyn.models.sae import SaeLatentMeans, TopKSAE
    from codedyn.sampling.observables import OBSERVED_BY_SAMPLE
    from codedyn.sampling.posterior import posterior_readout
    from codedyn.sampling.traces import load_traces

    study, _ = sae_study
    latents = study_sae_latents(study, 12)
    traces = load_traces(posterior_folder(study, 12))
    names = [str(n) for n in traces["observable"].values]
    assert names[:6] == ["L0.H0", "L0.H1", "L0.MLP", "L1.H0", "L1.H1", "L1.MLP"]
    assert names[6:] == [name for layer in (0, 1) for name in
                         [f"L{layer}.SAE{i}" for i in latents.latents[layer]]
                         + [f"L{layer}.SAE{i}.all_tokens" for i in latents.latents[layer]]]
    # The readings stored per read-out program at w* (taken by hooks in the readout's batched, padded forward
    # passes) equal direct computations on each program alone: the final-token reading from the residual
    # Experiment 2 reads (its final token, same windows), the all-token one and the component norms from a
    # forward pass of that one program.
    checkpoint = study.suite.load(12)
    readout = posterior_readout(checkpoint, study.dataset, study.config.sampling)
    samples = readout.samples
    assert traces["sample"].values.tolist() == samples["sample_id"].tolist()
    init = traces[f"init_{OBSERVED_BY_SAMPLE}"].values  # [N, K]
    column = {name: k for k, name in enumerate(names)}
    resid = final_token_residuals(checkpoint.model, checkpoint.tokenizer, samples["prompt"].tolist(),
                                  samples["solution"].tolist(), list(latents.latents), readout.lengths)
    saes = {layer: TopKSAE.load(latents.unit, layer) for layer in latents.latents}
    for layer, indices in latents.latents.items():
        with torch.no_grad():
            final = saes[layer].encode(torch.as_tensor(resid[layer])).numpy()[:, list(indices)]
        np.testing.assert_allclose(init[:, [column[f"L{layer}.SAE{i}"] for i in indices]], final,
                                   rtol=1e-5, atol=1e-6)
    for row in (0, len(samples) // 2, len(samples) - 1):
        one = encode_sample(checkpoint.tokenizer, samples["prompt"][row], samples["solution"][row],
                            max_length=int(readout.lengths[row]))
        ids = torch.as_tensor(one.input_ids)[None]
        mask = torch.ones_like(ids)
        np.testing.assert_allclose(init[row, :6], ComponentNorms(ids, mask)(checkpoint.model).numpy(),
                                   rtol=1e-5, atol=1e-6)
        for layer, indices in latents.latents.items():
            all_tokens = SaeLatentMeans(saes[layer], layer, ids, mask)(checkpoint.model).numpy()[list(indices)]
            np.testing.assert_allclose(init[row, [column[f"L{layer}.SAE{i}.all_tokens"] for i in indices]],
                                       all_tokens, rtol=1e-5, atol=1e-7)
    # φ of the read-out set is the mean of its programs' readings, at w* and at every draw.
    np.testing.assert_allclose(traces["init_observed"].values, init.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(traces["observed"].values, traces[OBSERVED_BY_SAMPLE].mean("sample").values,
                               rtol=1e-6)
    observed = traces[OBSERVED_BY_SAMPLE].values[traces["healthy"].values]
    assert observed.shape[2:] == (len(samples), len(names)) and np.isfinite(observed).all()
    # Readouts stay inside the toy suite's training context, and the posterior says how many mutants did not fit.
    assert readout.lengths.max() <= study.suite.context == traces.attrs["readout_context"]
    assert traces.attrs["readout_excluded"] == len(readout.excluded)


def test_susceptibility_table_has_sae_components(sae_study):
    from codedyn.experiments.susceptibility import compute_susceptibility

    study, _ = sae_study
    table = compute_susceptibility(study).table
    sae_rows = table[table["component"].str.contains(".SAE", regex=False)]
    assert set(sae_rows["step"]) == {4, 12}
    assert sae_rows["chi"].notna().all()


def test_analysis_only_emergence_change_keeps_posteriors_and_retraining_changes_them(sae_study, monkeypatch):
    from codedyn.config import load_config
    from codedyn.experiments.posteriors import posterior_folder, sample_checkpoints
    from codedyn.experiments.study import prepare_study
    from codedyn.sampling import posterior

    study, home = sae_study
    monkeypatch.setenv("CODEDYN_HOME", str(home))
    before = posterior_folder(study, 12)

    def forbidden(*args, **kwargs):
        raise AssertionError("a posterior was resampled")

    # more shuffled-label controls: an analysis setting, so the same SAE unit and the same posterior
    changed = {**SAE_STUDY, "emergence": {**SAE_STUDY["emergence"], "shuffles": 3}}
    other = prepare_study(load_config("default", changed), study.run_dir)
    monkeypatch.setattr(posterior, "run_posterior", forbidden)
    sample_checkpoints(other)
    assert posterior_folder(other, 12) == before
    # a different SAE (another width) is another observable: another posterior key
    wider = {**SAE_STUDY, "emergence": {**SAE_STUDY["emergence"], "width": 48}}
    third = prepare_study(load_config("default", wider), study.run_dir)
    from codedyn.experiments.emergence import emergence_unit

    class Notes:
        def __init__(self):
            self.lines = []

        def task(self, description, total):
            from codedyn.progress import SILENT

            return SILENT.task(description, total)

        def log(self, message):
            self.lines.append(message)

    notes = Notes()
    emergence_unit(third, 12, notes)
    assert posterior_folder(third, 12) != before
    # the new SAE unit says why it is new: the width, nothing else (closest stored neighbour: the fixture's unit)
    (line,) = [n for n in notes.lines if n.startswith("sae-step12: new unit")]
    assert line.endswith("in emergence.width: 32 -> 48")


def test_missing_sae_unit_is_one_clear_error(sae_study, tmp_path, monkeypatch):
    from codedyn.config import load_config
    from codedyn.experiments.posteriors import posterior_folder, posterior_unit
    from codedyn.experiments.study import prepare_study

    study, home = sae_study
    monkeypatch.setenv("CODEDYN_HOME", str(home))
    fresh = prepare_study(load_config("default", SAE_STUDY), tmp_path / "other-run")
    # the posterior's folder is known before its SAE exists (its key holds the SAE unit's key, not its outputs)
    assert posterior_folder(fresh, 12).name == posterior_folder(study, 12).name
    with pytest.raises(FileNotFoundError, match="codedyn emergence"):
        posterior_unit(fresh, 12)
