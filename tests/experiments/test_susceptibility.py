"""Susceptibility estimator against planted covariances; constant observables; opposite responders."""

import numpy as np
import pytest

from codedyn.experiments.susceptibility import (
    bootstrap_susceptibilities,
    distribution_losses,
    opposite_responders,
    susceptibilities,
    susceptibility_replicates,
)


def _planted(seed: int = 0, chains: int = 4, draws: int = 500):
    """Losses of 6 samples (3 correct, 3 incorrect) and 3 observables: one rises with the correct-code loss and falls
    with the incorrect one, one is constant, one is independent noise."""
    rng = np.random.default_rng(seed)
    factor_c = rng.normal(size=(chains, draws, 1))
    factor_i = rng.normal(size=(chains, draws, 1))
    sample_loss = np.concatenate([factor_c + 0.1 * rng.normal(size=(chains, draws, 3)),
                                  factor_i + 0.1 * rng.normal(size=(chains, draws, 3))], axis=-1)
    observed = np.concatenate([
        2.0 * factor_c - 1.5 * factor_i,
        np.full((chains, draws, 1), 3.0),
        rng.normal(size=(chains, draws, 1)),
    ], axis=-1)
    groups = {"correct": np.array([1, 1, 1, 0, 0, 0], bool), "incorrect": np.array([0, 0, 0, 1, 1, 1], bool)}
    return observed, distribution_losses(sample_loss, groups)


def test_chi_is_minus_the_covariance():
    observed, losses = _planted()
    chi = susceptibilities(observed, losses)
    pooled_phi, pooled_loss = observed.reshape(-1, 3), losses.reshape(-1, 2)
    for k in range(3):
        for j in range(2):
            expected = -np.cov(pooled_phi[:, k], pooled_loss[:, j])[0, 1]
            assert chi[k, j] == pytest.approx(expected, abs=1e-12)
    # Planted: Cov(2 f_c - 1.5 f_i, f_c) = 2, Cov(., f_i) = -1.5  ->  chi = -2, +1.5
    assert chi[0, 0] == pytest.approx(-2.0, abs=0.15) and chi[0, 1] == pytest.approx(1.5, abs=0.15)


def test_constant_observable_has_zero_chi_with_an_interval_covering_zero():
    observed, losses = _planted()
    chi, low, high = bootstrap_susceptibilities(observed, losses, n_boot=200, seed=1)
    assert (chi[1] == 0).all() and (low[1] <= 0).all() and (high[1] >= 0).all()
    assert (low[2] <= 0).all() and (high[2] >= 0).all()  # independent noise: covers zero too
    standardised = susceptibilities(observed, losses, standardised=True)
    assert (standardised[1] == 0).all()
    assert standardised[0, 0] == pytest.approx(chi[0, 0] / observed[..., 0].std(ddof=1), rel=1e-9)


def test_opposite_responders_are_found_and_ranked():
    observed, losses = _planted()
    chi, low, high = bootstrap_susceptibilities(observed, losses, n_boot=200, seed=2)
    table = opposite_responders(["mixed", "constant", "noise"], chi, low, high)
    assert table.loc[0, "component"] == "mixed" and bool(table.loc[0, "opposite"])
    assert not table.set_index("component").loc[["constant", "noise"], "opposite"].any()


def test_empty_distribution_is_an_error():
    with pytest.raises(ValueError, match="selects no samples"):
        distribution_losses(np.zeros((2, 3)), {"none": np.zeros(3, bool)})


# ------------------------------------------------------------------------------------- weight-restricted estimator

def test_restricted_estimator_matches_its_definition():
    """χ_C = -(E_C[φ Δ] - E_C[φ] E_full[Δ]), i.e. -Cov_C(φ, Δ) - E_C[φ] (E_C[Δ] - E_full[Δ]), from planted draws."""
    from codedyn.experiments.susceptibility import restricted_susceptibilities

    rng = np.random.default_rng(4)
    phi = rng.gamma(2.0, 0.1, size=(3, 400))  # a loss increase: positive
    delta = np.stack([-0.8 * phi + 0.05 * rng.normal(size=phi.shape), 0.3 + 0.05 * rng.normal(size=phi.shape)], -1)
    delta_full_mean = np.array([-0.1, 0.2])
    chi = restricted_susceptibilities(phi, delta, delta_full_mean)
    flat_phi, flat_delta = phi.reshape(-1), delta.reshape(-1, 2)
    for j in range(2):
        cov = np.mean(flat_phi * flat_delta[:, j]) - flat_phi.mean() * flat_delta[:, j].mean()
        expected = -cov - flat_phi.mean() * (flat_delta[:, j].mean() - delta_full_mean[j])
        assert chi[j] == pytest.approx(expected, rel=1e-10)
    assert chi[0] > 0  # Δ falls as φ rises: upweighting that distribution raises φ
    # With the restricted and full means equal the second term vanishes: -Cov_C (population normalisation).
    same = restricted_susceptibilities(phi, delta, flat_delta.mean(axis=0))
    assert same[0] == pytest.approx(-np.cov(flat_phi, flat_delta[:, 0], ddof=0)[0, 1], rel=1e-10)


def test_restricted_constant_observable_gives_zero_with_an_interval_covering_it():
    """A component whose weights the corpus loss does not use has φ_C = L(w) - L(w*) = 0 at every draw."""
    from codedyn.experiments.susceptibility import bootstrap_restricted

    rng = np.random.default_rng(5)
    delta = rng.normal(size=(2, 100, 3))
    delta_full = rng.normal(size=(2, 100, 3)) + 1.0
    for standardised in (False, True):
        chi, low, high = bootstrap_restricted(np.zeros((2, 100)), delta, delta_full, n_boot=100, seed=0,
                                              standardised=standardised)
        assert (chi == 0).all() and (low <= 0).all() and (high >= 0).all()
    # An observable independent of Δ, with the full posterior's mean equal to the restricted one: covers zero.
    chi, low, high = bootstrap_restricted(rng.normal(size=(2, 100)), delta, delta, n_boot=200, seed=1)
    assert ((low <= 0) & (high >= 0)).all()


def test_trajectories_follow_only_components_measured_at_every_checkpoint():
    """Each checkpoint records its own SAE's latents: a latent seen at one step has no trajectory."""
    import pandas as pd

    from codedyn.experiments.susceptibility import tracked_components, trajectory_figure

    rows = []
    for step in (0, 10, 20):
        for component in ("L0.H0", "L1.MLP", f"L1.SAE{step}"):
            for distribution in ("correct", "incorrect"):
                chi = 5.0 if component.startswith("L1.SAE") else float(step)
                rows.append({"step": step, "component": component, "distribution": distribution,
                             "variant": "standardised", "chi": chi, "low": chi - 1, "high": chi + 1})
    table = pd.DataFrame(rows)
    assert tracked_components(table) == ["L0.H0", "L1.MLP"]
    ranked = pd.DataFrame({"component": ["L1.SAE10", "L0.H0", "L1.MLP"], "gap": [9.0, 1.0, 0.5]})
    figure = trajectory_figure(table, ranked, top=3)  # the one-step latent with the largest gap is left out
    labels = [text.get_text() for ax in figure.axes for text in (ax.get_legend().get_texts() if ax.get_legend()
                                                                else [])]
    labels += [line.get_label() for ax in figure.axes for line in ax.get_lines()]
    assert not any("SAE" in label for label in labels)
    assert any("L0.H0" in label for label in labels)


# ------------------------------------------------------------------ correctness contrast with family-wise control
#
# L_correct = s + c, L_incorrect = s + i (a shared mode s, and one factor per distribution); component 0 reads the
# incorrect factor only: Cov(φ_0, L_I) = β, Cov(φ_0, L_C) = 0, so χ_I - χ_C = -β. Every other component reads the
# shared mode: large, collinear χ_correct ≈ χ_incorrect, and a zero contrast.

def _contrast_draws(rng, n_components, beta, chains=4, draws=150, opposite=False):
    shape = (chains, draws, 1)
    shared, c, i = rng.normal(size=shape), rng.normal(size=shape), rng.normal(size=shape)
    losses = np.concatenate([shared + c, shared + i], axis=-1)
    loading = rng.uniform(0.5, 1.5, size=n_components)
    observed = loading * shared + rng.normal(size=(chains, draws, n_components))
    observed[..., 0] = beta * ((i - c) if opposite else i)[..., 0] + rng.normal(size=(chains, draws))
    return observed, losses


def _family(rng, n_components, n_steps, beta, n_boot=200, opposite=False):
    from codedyn.experiments.susceptibility import susceptibility_replicates

    per_step = []
    for step in range(n_steps):
        observed, losses = _contrast_draws(rng, n_components, beta if step == n_steps - 1 else 0.0,
                                           opposite=opposite)
        chi, reps = susceptibility_replicates(observed, losses, n_boot, seed=int(rng.integers(1 << 30)))
        per_step.append((step, [f"C{k}" for k in range(n_components)], chi, reps))
    return per_step


def test_contrast_is_minus_the_covariance_with_the_distribution_difference():
    from codedyn.experiments.susceptibility import contrast_tables

    rng = np.random.default_rng(20)
    per_step = _family(rng, 4, 1, beta=0.8)
    table, _ = contrast_tables(per_step)
    (_, _, chi, _), = per_step
    np.testing.assert_allclose(table["contrast"], chi[:, 1] - chi[:, 0], rtol=1e-12)
    assert table.loc[0, "contrast"] == pytest.approx(-0.8, abs=0.15)  # χ_I - χ_C = -β
    # the simultaneous interval is wider than the pointwise one
    assert ((table["fw_high"] - table["fw_low"]) > (table["high"] - table["low"])).all()


def test_max_t_finds_the_planted_contrast_among_collinear_components():
    from codedyn.experiments.susceptibility import contrast_tables

    rng = np.random.default_rng(21)
    hits, others = 0, 0
    for _ in range(10):
        table, _ = contrast_tables(_family(rng, 8, 3, beta=0.8))
        planted = (table["component"] == "C0") & (table["step"] == 2)
        hits += bool(table.loc[planted, "significant"].iloc[0])
        others += int(table.loc[~planted, "significant"].sum())
    assert hits >= 9 and others <= 1


def test_max_t_keeps_the_family_wise_error_rate_on_null_data():
    """Calibration: 8 components x 3 checkpoints with no contrast anywhere (yet χ_correct and χ_incorrect are large
    and collinear); a false positive anywhere in the family counts once."""
    from codedyn.experiments.susceptibility import contrast_tables

    rng = np.random.default_rng(22)
    trials, errors, pointwise = 60, 0, 0
    for _ in range(trials):
        table, _ = contrast_tables(_family(rng, 8, 3, beta=0.0))
        errors += bool(table["significant"].any())
        pointwise += bool(((table["low"] > 0) | (table["high"] < 0)).any())
    assert errors / trials <= 0.08
    assert pointwise / trials > 0.3  # without the control, 24 tests at 5% flag something most of the time


def test_opposite_responders_under_family_wise_control():
    from codedyn.experiments.susceptibility import contrast_tables

    rng = np.random.default_rng(23)
    _, responders = contrast_tables(_family(rng, 6, 2, beta=1.0, opposite=True))
    found = responders[responders["opposite"]]
    assert list(zip(found["step"], found["component"], strict=True)) == [(1, "C0")]
    row = found.iloc[0]
    assert row["chi_a"] > 0 > row["chi_b"]  # φ falls with the correct-code loss, rises with the incorrect one


def test_max_t_with_a_constant_observable_flags_nothing_for_it():
    from codedyn.experiments.susceptibility import max_t

    rng = np.random.default_rng(24)
    points = np.array([5.0, 0.0, 0.1])
    reps = points + rng.normal(size=(500, 3))  # bootstrap replicates scatter around their estimates
    reps[:, 1] = 0.0
    found = max_t(points, reps)
    assert found["significant"].tolist() == [True, False, False]
    assert found["p"][1] == 1.0 and found["critical"] > 1.96  # three comparisons: above the pointwise quantile


def _trials(make, seed: int, trials: int):
    """``trials`` planted read-out sets from ``make(rng)`` -> (φ, losses, units), each with the one distribution
    of all its programs: ``(trial, (φ, losses, units, groups))``."""
    rng = np.random.default_rng(seed)
    for trial in range(trials):
        phi, losses, units = make(rng)
        yield trial, (phi, losses, units, {"all": np.ones(units.size, dtype=bool)})


def _covers_one(replicates: np.ndarray) -> bool:
    """Whether the 95% percentile interval of the first χ's replicates [B, K, G] covers the population χ, 1."""
    low, high = np.quantile(replicates[:, 0, 0], [0.025, 0.975])
    return bool(low <= 1.0 <= high)


def _unit_slopes(rng, n_units=12, per_unit=2, chains=4, draws=200):
    """φ per draw and sample losses ℓ_i = -a_u(i) φ + noise, a_u ~ N(1, 1) per unit: the population χ is 1, a
    read-out set of 12 units carries its own mean slope (sd 0.29), far more than the Monte Carlo error."""
    slopes = rng.normal(1.0, 1.0, size=n_units)
    units = np.repeat(np.arange(n_units), per_unit)
    phi = rng.normal(size=(chains, draws, 1))
    losses = -slopes[units] * phi + 0.3 * rng.normal(size=(chains, draws, units.size))
    return phi, losses, units


def test_intervals_that_resample_the_readout_units_cover_the_population_value():
    """χ over a resample of the read-out programs' units: the interval covers the population χ at about its level,
    where chains and draws alone give an interval around the fixed read-out set's own value that rarely covers it."""
    from codedyn.experiments.susceptibility import unit_susceptibility_replicates

    covered = {"units": 0, "draws": 0}
    trials = 30
    for trial, (phi, losses, units, groups) in _trials(_unit_slopes, seed=0, trials=trials):
        point, reps = unit_susceptibility_replicates(phi, losses, groups, units, 200, trial)
        covered["units"] += _covers_one(reps)
        chi, draw_reps = susceptibility_replicates(phi, distribution_losses(losses, groups), 200, trial)
        assert chi[0, 0] == pytest.approx(point[0, 0])
        covered["draws"] += _covers_one(draw_reps)
    assert covered["units"] / trials >= 0.8, covered
    assert covered["draws"] / trials <= 0.4, covered


def _per_program_slopes(rng, n_units=12, per_unit=2, chains=4, draws=200):
    """Per-program readings φ_i = b_u(i) s + noise and losses ℓ_i = -s + noise of one shared posterior direction
    s ~ N(0, 1), with b_u ~ N(1, 1) per unit: the population χ = -Cov(mean φ, mean ℓ) is E[b] = 1, and a read-out
    set of 12 units carries its own b̄ (sd 0.29), all of it in the observable."""
    b = rng.normal(1.0, 1.0, size=n_units)
    units = np.repeat(np.arange(n_units), per_unit)
    shared = rng.normal(size=(chains, draws, 1))
    phi = (b[units] * shared + 0.3 * rng.normal(size=(chains, draws, units.size)))[..., None]  # [c, d, N, 1]
    losses = -shared + 0.3 * rng.normal(size=(chains, draws, units.size))
    return phi, losses, units


def test_per_program_observables_are_resampled_with_the_programs():
    """With the observable read per program, a replicate's φ is the mean over the same resample of programs as its
    L_j: the interval then covers the population χ at about its level, where holding φ at the read-out set's own
    mean (only L_j resampled) leaves out the observable's share of the readout set's sampling error."""
    from codedyn.experiments.susceptibility import unit_susceptibility_replicates

    covered = {"with": 0, "fixed": 0}
    trials = 30
    for trial, (phi, losses, units, groups) in _trials(_per_program_slopes, seed=3, trials=trials):
        point, reps = unit_susceptibility_replicates(phi, losses, groups, units, 200, trial)
        fixed_point, fixed_reps = unit_susceptibility_replicates(phi.mean(axis=2), losses, groups, units, 200, trial)
        assert point[0, 0] == pytest.approx(fixed_point[0, 0])  # the same estimate, only the interval differs
        covered["with"] += _covers_one(reps)
        covered["fixed"] += _covers_one(fixed_reps)
    assert covered["with"] / trials >= 0.8, covered
    assert covered["fixed"] / trials <= 0.4, covered


def test_resampled_observables_are_the_weighted_program_means_across_chunks():
    from codedyn.experiments.susceptibility import _resampled_observables
    from codedyn.resample import multiplicities

    rng = np.random.default_rng(4)
    observed = rng.normal(size=(3, 5, 8, 2))
    units = np.array([0, 0, 1, 2, 2, 3, 4, 4])
    weights = multiplicities(rng, 5, 7)
    got = list(_resampled_observables(observed, weights, units, chunk=3))  # chunks of 3, 3 and 1 replicates
    assert len(got) == 7
    for b, phi in enumerate(got):
        w = weights[b, units]
        np.testing.assert_allclose(phi, np.einsum("n,cdnk->cdk", w, observed) / w.sum(), rtol=1e-12)
