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
    sums = {k: [0.0, 0] for k in ("CC", "CI", "II", "unpaired")}
    for a, b in itertools.product(range(len(expanded)), repeat=2):
        i, j = expanded[a], expanded[b]
        if i == j:
            continue
        ci, cj = structure.is_correct[i], structure.is_correct[j]
        keys = ["CC"] if ci and cj else ["II"] if not ci and not cj else []
        if ci and not cj:
            keys = ["CI"] + (["unpaired"] if structure.problem[i] != structure.problem[j] else [])
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
