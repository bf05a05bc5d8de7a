"""BIF estimator: sign convention, closed-form covariance, block aggregates against brute force."""

import itertools

import numpy as np
import pandas as pd
import pytest

from codedyn.experiments.influence import SampleStructure, bif_matrix, block_means


def test_bif_is_minus_the_posterior_covariance():
    """Draws from a Gaussian with known covariance: BIF -> -Sigma, -Corr for the normalised variant."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    sigma = a @ a.T + 0.5 * np.eye(5)
    draws = rng.multivariate_normal(np.zeros(5), sigma, size=(4, 20_000))  # [chains, draws, N]
    bif = bif_matrix(draws)
    np.testing.assert_allclose(bif, -sigma, atol=0.05 * np.abs(sigma).max())
    corr = sigma / np.sqrt(np.outer(np.diag(sigma), np.diag(sigma)))
    np.testing.assert_allclose(bif_matrix(draws, normalised=True), -corr, atol=0.02)


def test_bif_matches_numpy_cov_exactly():
    rng = np.random.default_rng(1)
    draws = rng.normal(size=(3, 7, 4))
    np.testing.assert_allclose(bif_matrix(draws), -np.cov(draws.reshape(-1, 4), rowvar=False), rtol=1e-12)
    with pytest.raises(ValueError, match="two posterior draws"):
        bif_matrix(draws[:1, :1])


def test_constant_sample_has_zero_influence_not_nan():
    rng = np.random.default_rng(2)
    draws = rng.normal(size=(50, 3))
    draws[:, 1] = 1.5
    corr = bif_matrix(draws, normalised=True)
    assert np.isfinite(corr).all() and (corr[1] == 0).all()


def _structure(n_problems: int) -> SampleStructure:
    rows = []
    for p in range(n_problems):
        rows.append({"sample_id": f"P{p}:reference", "problem_id": f"P{p}", "is_correct": True, "paired_with": None})
        rows.append({"sample_id": f"P{p}:mutant0", "problem_id": f"P{p}", "is_correct": False,
                     "paired_with": f"P{p}:reference"})
    return SampleStructure.from_frame(pd.DataFrame(rows))


def _brute_force(bif, structure, weights):
    """Expand every sample by its problem's multiplicity; average entries between different original samples."""
    expanded = [i for i in range(len(structure.problem)) for _ in range(int(weights[structure.problem[i]]))]
    sums = {k: [0.0, 0] for k in ("CC", "CI", "II")}
    for a, b in itertools.product(range(len(expanded)), repeat=2):
        i, j = expanded[a], expanded[b]
        if i == j:
            continue
        ci, cj = structure.is_correct[i], structure.is_correct[j]
        keys = ["CC"] if ci and cj else ["II"] if not ci and not cj else []
        if ci and not cj:
            keys = ["CI"] if structure.problem[i] != structure.problem[j] else []  # CI: different problems only
        for key in keys:
            sums[key][0] += bif[i, j]
            sums[key][1] += 1
    out = {k: s / n for k, (s, n) in sums.items()}
    pair_vals = [bif[c, m] for c, m in structure.pairs for _ in range(int(weights[structure.problem[c]]))]
    out["paired"] = float(np.mean(pair_vals))
    return out


def test_block_means_match_brute_force_with_bootstrap_weights():
    rng = np.random.default_rng(3)
    structure = _structure(6)
    bif = rng.normal(size=(12, 12))
    bif = (bif + bif.T) / 2
    for weights in (np.ones(6), np.array([2, 0, 1, 3, 1, 1])):
        ours = block_means(bif, structure, weights)
        reference = _brute_force(bif, structure, weights)
        for key, value in reference.items():
            assert ours[key] == pytest.approx(value), key


def test_planted_block_structure_is_recovered():
    """Losses driven by one factor for correct code and an opposite one for buggy code."""
    rng = np.random.default_rng(4)
    structure = _structure(20)
    factor = rng.normal(size=(2, 2000, 1))
    sign = np.where(structure.is_correct, 1.0, -1.0)
    losses = factor * sign + 0.5 * rng.normal(size=(2, 2000, 40))
    means = block_means(bif_matrix(losses), structure)
    assert means["CC"] == pytest.approx(-1.0, abs=0.1)
    assert means["II"] == pytest.approx(-1.0, abs=0.1)
    assert means["CI"] == pytest.approx(1.0, abs=0.1)


# ------------------------------------------------------------------------- contrasts against planted covariances
#
# Losses of P problems (a reference and one mutant each) built from independent standard normal factors:
#   ℓ_i = m u + [correct] a f_c + [incorrect] b f_i + q g_problem(i) + σ e_i,   f_i = κ f_c + sqrt(1 - κ²) f'
# so Cov(ℓ_i, ℓ_j) is m² + a² (CC), m² + b² (II), m² + abκ (CI, different problems), m² + abκ + q² (paired), and
# with BIF = -Cov: delta = (CC + II)/2 - CI = abκ - (a² + b²)/2; δ_p = ℓ_mut - ℓ_ref = b f_i - a f_c + noise (the
# shared mode u and the problem factor g cancel), so -Cov(δ_p, ℓ_j) is a² - abκ for a correct j and abκ - b² for an
# incorrect one of another problem.

PLANTED = {"m": 1.0, "a": 0.6, "b": 0.8, "kappa": 0.3, "q": 0.5, "sigma": 0.5}
NULL = {"m": 1.0, "a": 0.0, "b": 0.0, "kappa": 0.0, "q": 0.5, "sigma": 0.5}


def _planted_losses(params, n_problems, chains, draws, rng):
    m, a, b, kappa, q, sigma = (params[k] for k in ("m", "a", "b", "kappa", "q", "sigma"))
    structure = _structure(n_problems)
    shape = (chains, draws)
    u, f_c, f_other = (rng.normal(size=(*shape, 1)) for _ in range(3))
    f_i = kappa * f_c + np.sqrt(1 - kappa**2) * f_other
    g = rng.normal(size=(*shape, n_problems))[..., structure.problem]
    correct = structure.is_correct
    losses = m * u + np.where(correct, a * f_c, b * f_i) + q * g + sigma * rng.normal(size=(*shape, correct.size))
    return structure, losses


def _true_covariance(params, structure):
    m, a, b, kappa, q, sigma = (params[k] for k in ("m", "a", "b", "kappa", "q", "sigma"))
    load_shared = np.full(structure.is_correct.size, m)
    load_c = np.where(structure.is_correct, a, 0.0)
    load_i = np.where(structure.is_correct, 0.0, b)
    same = structure.problem[:, None] == structure.problem[None, :]
    cov = (np.outer(load_shared, load_shared) + np.outer(load_c, load_c) + np.outer(load_i, load_i)
           + kappa * (np.outer(load_c, load_i) + np.outer(load_i, load_c)) + q**2 * same)
    return cov + sigma**2 * np.eye(cov.shape[0])


def _closed_form(params):
    m, a, b, kappa, q = (params[k] for k in ("m", "a", "b", "kappa", "q"))
    cc, ii, ci = -(m**2 + a**2), -(m**2 + b**2), -(m**2 + a * b * kappa)
    correct, incorrect = a**2 - a * b * kappa, a * b * kappa - b**2
    return {("CC", "cov"): cc, ("II", "cov"): ii, ("CI", "cov"): ci, ("paired", "cov"): ci - q**2,
            ("delta", "cov"): (cc + ii) / 2 - ci, ("bug_influence_correct", "cov"): correct,
            ("bug_influence_incorrect", "cov"): incorrect, ("bug_influence", "cov"): (correct + incorrect) / 2,
            ("bug_gap", "cov"): incorrect - correct}


def test_contrasts_of_the_true_covariance_are_the_closed_form():
    from codedyn.experiments.influence import influence_quantities

    structure = _structure(10)
    values = influence_quantities(_true_covariance(PLANTED, structure), structure)
    for key, expected in _closed_form(PLANTED).items():
        assert values[key] == pytest.approx(expected, abs=1e-12), key
    assert values[("delta", "cov")] == pytest.approx(0.6 * 0.8 * 0.3 - 0.5, abs=1e-12)
    # Normalised CC by hand: -(m² + a²) / Var(ℓ_correct), Var = m² + a² + q² + σ².
    assert values[("CC", "corr")] == pytest.approx(-1.36 / 1.86, abs=1e-12)
    # The first principal component is the shared mode: removing it leaves CC and II near zero.
    assert values[("pc1_share", "share")] > 0.5
    assert abs(values[("CC", "cov_no_pc1")]) < abs(values[("CC", "cov")]) / 4


def test_estimates_converge_to_the_planted_values():
    from codedyn.experiments.influence import influence_quantities, posterior_covariance, quantity_names

    rng = np.random.default_rng(10)
    structure, losses = _planted_losses(PLANTED, 12, 4, 5000, rng)
    truth = influence_quantities(_true_covariance(PLANTED, structure), structure)
    estimate = influence_quantities(posterior_covariance(losses), structure)
    for key in quantity_names():
        assert estimate[key] == pytest.approx(truth[key], abs=0.06), key


def _coverage(params, target, n_sets=30, seed=11):
    """Share of planted data sets whose 95% interval covers ``target[key]``, per key, and of those excluding 0."""
    from codedyn.analysis.stats import percentile_ci
    from codedyn.experiments.influence import bootstrap_influence, influence_quantities, posterior_covariance

    rng = np.random.default_rng(seed)
    covered, excludes = {k: 0 for k in target}, {k: 0 for k in target}
    for trial in range(n_sets):
        structure, losses = _planted_losses(params, 12, 4, 150, rng)
        point = influence_quantities(posterior_covariance(losses), structure)
        replicates = bootstrap_influence(losses, structure, n_boot=200, seed=trial)
        for key, value in target.items():
            interval = percentile_ci(replicates[key], point[key])
            covered[key] += interval.low <= value <= interval.high
            excludes[key] += interval.excludes_zero()
    return {k: v / n_sets for k, v in covered.items()}, {k: v / n_sets for k, v in excludes.items()}


def test_joint_bootstrap_intervals_cover_the_planted_contrasts():
    from codedyn.experiments.influence import influence_quantities

    structure = _structure(12)
    truth = influence_quantities(_true_covariance(PLANTED, structure), structure)
    keys = [("delta", "cov"), ("delta", "corr"), ("bug_influence", "cov"), ("bug_gap", "cov"),
            ("bug_gap", "corr"), ("CI", "cov"), ("paired", "cov"), ("pc1_share", "share"), ("delta", "cov_no_pc1")]
    covered, excludes = _coverage(PLANTED, {k: truth[k] for k in keys})
    for key in keys:
        assert covered[key] >= 0.85, (key, covered[key])
    # ... and they are not vacuous: the planted delta and bug gap are found in most data sets.
    assert excludes[("delta", "cov")] >= 0.8 and excludes[("bug_gap", "cov")] >= 0.8


def test_null_structure_gives_contrast_intervals_covering_zero():
    """Only a shared mode, a problem factor and noise: no correctness structure, every contrast is 0."""
    keys = [("delta", "cov"), ("delta", "corr"), ("bug_influence", "cov"), ("bug_influence", "corr"),
            ("bug_gap", "cov"), ("bug_gap", "corr")]
    covered, _ = _coverage(NULL, {k: 0.0 for k in keys}, seed=12)
    for key in keys:
        assert covered[key] >= 0.85, (key, covered[key])


def _per_replicate_bootstrap(losses, structure, n_boot, seed):
    """The bootstrap written out one replicate at a time (the definition :func:`bootstrap_influence` batches):
    resample chains and blocks of draws, then problems, and evaluate :func:`influence_quantities` on that
    replicate's covariance."""
    from codedyn.analysis.stats import autocorrelation_block, bootstrap_draws
    from codedyn.experiments.influence import influence_quantities, posterior_covariance, quantity_names
    from codedyn.resample import multiplicities

    rng = np.random.default_rng(seed)
    chains, draws, _ = losses.shape
    chain_idx, draw_idx = bootstrap_draws(chains, draws, n_boot, rng, block=autocorrelation_block(losses))
    out = {key: np.empty(n_boot) for key in quantity_names()}
    for b in range(n_boot):
        weights = multiplicities(rng, structure.n_problems)
        resampled = losses[chain_idx[b][:, None], draw_idx[b]]
        for key, value in influence_quantities(posterior_covariance(resampled), structure, weights).items():
            out[key][b] = value
    return out


@pytest.mark.parametrize("case", ["pairs", "uneven"])
def test_batched_bootstrap_equals_the_per_replicate_definition(case, monkeypatch):
    """Random losses with a shared mode; "uneven": problems of one to four samples, a constant sample, samples
    without a pair, batches that do not divide the replicates. Every replicate of every quantity agrees with the
    per-replicate definition to rounding (relative to the quantity's scale), NaNs in the same places."""
    import codedyn.experiments.influence as influence

    rng = np.random.default_rng(7)
    if case == "pairs":
        structure, n = _structure(25), 50
    else:
        n = 31
        problem = np.sort(rng.integers(0, 10, n))
        correct = rng.random(n) < 0.4
        pairs = [(i, j) for i in range(n) for j in range(n)
                 if problem[i] == problem[j] and correct[i] and not correct[j]]
        structure = SampleStructure(correct, np.unique(problem, return_inverse=True)[1],
                                    np.asarray(pairs, dtype=np.int64).reshape(-1, 2))
        monkeypatch.setattr(influence, "BOOTSTRAP_BATCH_ENTRIES", 7 * n * n)
    losses = rng.normal(size=(4, 30, n)) + 3 * rng.normal(size=(4, 30, 1)) + rng.normal(size=(1, 1, n))
    if case == "uneven":
        losses[:, :, 3] = 1.0
    batched = influence.bootstrap_influence(losses, structure, n_boot=60, seed=3)
    reference = _per_replicate_bootstrap(losses, structure, n_boot=60, seed=3)
    assert set(batched) == set(reference)
    for key, expected in reference.items():
        np.testing.assert_array_equal(np.isnan(batched[key]), np.isnan(expected), err_msg=str(key))
        scale = np.nanmax(np.abs(expected)) if np.isfinite(expected).any() else 1.0
        np.testing.assert_allclose(batched[key], expected, rtol=0, atol=1e-10 * scale, err_msg=str(key))


def test_top_eigenpairs_agree_with_a_full_eigendecomposition():
    """Clear leading eigenvalue, two nearly equal leading eigenvalues (falls back to eigh), and a start subspace
    orthogonal to the leading eigenvector: the eigenvalue and v vᵀ as numpy's eigh."""
    from codedyn.experiments.influence import top_eigenpairs

    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.normal(size=(20, 20)))[0]
    spectra = [np.r_[50.0, rng.uniform(0.1, 5, 19)], np.r_[10.0, 10.0 - 1e-9, rng.uniform(0.1, 5, 18)]]
    covs = np.stack([(basis * s) @ basis.T for s in spectra] + [np.cov(rng.normal(size=(40, 20)), rowvar=False)])
    start = basis[:, 1:7]  # misses the leading eigenvector of the first two matrices entirely
    for subspace in (None, start):
        lam, vec = top_eigenpairs(covs, subspace)
        values, vectors = np.linalg.eigh(covs)
        np.testing.assert_allclose(lam, values[:, -1], rtol=1e-12)
        for b in (0, 2):  # a well-separated leading eigenvalue determines v vᵀ
            np.testing.assert_allclose(np.outer(vec[b], vec[b]), np.outer(vectors[b, :, -1], vectors[b, :, -1]),
                                       atol=1e-10)
        np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0)


def test_lean_free_contrast_cancels_an_opposite_mode_and_keeps_a_shared_one():
    """Verdict readouts: a lean towards one verdict moves correct and incorrect samples' losses in opposite
    directions (loadings +l, -l), a capability mode moves them together (c, c). delta reads the lean (2 l² + ...),
    (CC + II)/2 + CI cancels it and reads -2 c², whatever the lean's size."""
    from codedyn.experiments.influence import influence_quantities

    structure = _structure(10)
    sign = np.where(structure.is_correct, 1.0, -1.0)
    for lean, capability in ((1.0, 0.0), (1.0, 0.4), (3.0, 0.4)):
        load_lean, load_cap = lean * sign, np.full(sign.size, capability)
        cov = np.outer(load_lean, load_lean) + np.outer(load_cap, load_cap) + 0.3 * np.eye(sign.size)
        values = influence_quantities(cov, structure)
        assert values[("lean_free_contrast", "cov")] == pytest.approx(-2 * capability**2, abs=1e-12)
        assert values[("delta", "cov")] == pytest.approx(-2 * lean**2, abs=1e-12)


def test_verdict_readouts_get_their_own_quantities_and_calls():
    """A posterior that stored verdict losses and margins gets every quantity once more per verdict readout (the
    odds readout is minus the margin), and its lean-free curves get calls whose names the validation table reads."""
    import xarray as xr

    from codedyn.experiments.influence import (
        readout_losses,
        readout_summary,
        readouts_of,
        transition_calls,
        verdict_curves,
    )

    rng = np.random.default_rng(3)
    structure, losses = _planted_losses(PLANTED, 8, 3, 60, rng)
    margin = rng.normal(size=losses.shape)
    traces = xr.Dataset({"sample_loss": (("chain", "draw", "sample"), losses),
                         "verdict_loss": (("chain", "draw", "sample"), 2 * losses),
                         "verdict_margin": (("chain", "draw", "sample"), margin),
                         "healthy": (("chain",), np.array([True, False, True]))}, attrs={"step": 5})
    assert readouts_of(traces) == ["code", "verdict", "odds"]
    np.testing.assert_allclose(readout_losses(traces, "odds"), -margin[[0, 2]])
    rows, replicates = [], {}
    for step in (0, 100, 200):
        traces.attrs["step"] = step
        for readout in ("verdict", "odds"):
            found, more = readout_summary(traces, structure, n_boot=20, seed=0, readout=readout)
            rows += found
            replicates.update(more)
    table = pd.DataFrame(rows)
    # Twice the losses: covariance blocks four times the code readout's, correlations the same.
    code = influence_quantities_of(losses[[0, 2]], structure)
    part = table[(table["step"] == 0) & (table["quantity"] == "CC")].set_index("variant")["value"]
    assert part["verdict_cov"] == pytest.approx(4 * code[("CC", "cov")])
    assert part["verdict_corr"] == pytest.approx(code[("CC", "corr")])
    assert ("delta", "odds_corr_no_pc1") in verdict_curves(table)
    replicates = {(q, v): np.tile(r, (3, 1)) for (q, v), r in replicates.items()}
    calls = transition_calls(table.assign(local_minimum=True), replicates)
    assert "delta/verdict_corr_no_pc1" in calls and "lean_free_contrast/odds_corr" in calls
    assert "lean_free_contrast/corr" not in calls  # on code tokens it is the shared mode, not a signal


def influence_quantities_of(losses, structure):
    from codedyn.experiments.influence import influence_quantities, posterior_covariance

    return influence_quantities(posterior_covariance(losses), structure)


def _planted_frame(n_problems: int):
    """Samples of ``n_problems`` held-out planted programs (a reference and its buggy twin each), as a dataset
    stores them: several problems share a group, their operation pair."""
    from codedyn.config import load_config
    from codedyn.data.problems import planted_problems

    rows = []
    for problem in planted_problems(n_problems, seed=0, planted=load_config("organism").toy.planted):
        reference = f"{problem.problem_id}:ref"
        rows.append({"sample_id": reference, "problem_id": problem.problem_id, "group": problem.group,
                     "is_correct": True, "paired_with": None})
        rows.append({"sample_id": f"{problem.problem_id}:mut", "problem_id": problem.problem_id,
                     "group": problem.group, "is_correct": False, "paired_with": reference})
    return pd.DataFrame(rows)


def test_planted_samples_are_resampled_by_their_operation_pair():
    """On planted data the unit is the group: two programs of one operation pair share a bootstrap weight, and
    their entries enter neither CI nor the bug influence (a covariance that only couples samples of one group
    leaves every cross-unit mean at zero)."""
    from codedyn.experiments.influence import bug_influence

    frame = _planted_frame(60)
    structure = SampleStructure.from_frame(frame)
    groups = frame["group"].nunique()
    assert groups < frame["problem_id"].nunique()  # programs share operation pairs, so the test means something
    assert structure.n_problems == groups
    same_group = (frame["group"].to_numpy()[:, None] == frame["group"].to_numpy()[None, :]).astype(float)
    cov = 5.0 * same_group + np.eye(len(frame))
    assert block_means(-cov, structure)["CI"] == pytest.approx(0.0)
    assert bug_influence(cov, structure)["bug_influence"] == pytest.approx(0.0)
    # A weight per group: zeroing one group's weight removes every one of its programs from the means.
    weights = np.ones(groups)
    weights[structure.problem[0]] = 0.0
    kept = structure.problem != structure.problem[0]
    bif = -np.random.default_rng(0).normal(size=(len(frame), len(frame)))
    sub = SampleStructure(structure.is_correct[kept], np.unique(structure.problem[kept], return_inverse=True)[1],
                          np.empty((0, 2), dtype=np.int64))
    assert block_means(bif, structure, weights)["CC"] == pytest.approx(block_means(bif[np.ix_(kept, kept)], sub)["CC"])
