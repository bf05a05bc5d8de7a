"""How much of a probe's direction an SAE keeps: planted directions kept, dropped and spread over latents."""

import numpy as np
import pandas as pd
import pytest

from codedyn.analysis.classifier import Labels, fit_probe, problem_weights, raw_direction
from codedyn.analysis.direction import QUANTITIES, direction_kept

D, N = 16, 600


def _planted(seed: int = 0):
    """Residuals with very different feature scales and a correctness shift along a planted unit direction."""
    rng = np.random.default_rng(seed)
    planted = rng.normal(size=D)
    planted /= np.linalg.norm(planted)
    is_correct = np.arange(N) % 2 == 0
    scales = np.geomspace(0.1, 10, D)  # standardisation matters: the raw direction is not the standardised one
    x = rng.normal(size=(N, D)) * scales + np.where(is_correct, 1.5, -1.5)[:, None] * planted[None, :]
    frame = pd.DataFrame({"problem_id": [f"P{k // 2}" for k in range(N)], "sample_id": [str(k) for k in range(N)],
                          "is_correct": is_correct,
                          "split": np.where(np.arange(N) < N // 2, "analysis",
                                            np.where(np.arange(N) < N * 6 // 10, "tuning", "validation")),
                          "operator": [None if c else "off_by_one" for c in is_correct]})
    return x, planted, is_correct, Labels.from_samples(frame)


def _orthogonal_decoder(m: int, u: np.ndarray, seed: int) -> np.ndarray:
    """m unit rows orthogonal to u."""
    rows = np.random.default_rng(seed).normal(size=(m, D))
    rows -= np.outer(rows @ u, u)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_raw_direction_undoes_the_standardisation():
    coef, scale = np.array([1.0, 0.0, 2.0]), np.array([2.0, 1.0, 0.5])
    assert raw_direction(coef, scale) == pytest.approx(np.array([0.5, 0.0, 4.0]) / np.hypot(0.5, 4.0))
    with pytest.raises(ValueError, match="no direction"):
        raw_direction(np.zeros(3), scale)


def test_the_probe_direction_points_along_the_planted_shift_in_raw_coordinates():
    x, planted, _, labels = _planted()
    u = fit_probe(x, labels, c=1.0, seed=0).direction
    # The best linear discriminant is Σ⁻¹ shift, Σ the noise covariance: compare with that (not with the shift).
    ideal = planted / np.geomspace(0.1, 10, D) ** 2
    assert u @ ideal / np.linalg.norm(ideal) > 0.95  # points towards the correct samples, in raw coordinates


def test_a_reconstruction_that_keeps_the_direction_reads_one_and_one_that_drops_it_reads_zero():
    x, planted, is_correct, labels = _planted()
    u = fit_probe(x, labels, c=1.0, seed=0).direction
    rows = labels.rows("validation")
    x, is_correct = x[rows], is_correct[rows]
    weights = problem_weights(labels.problem[rows], 200, 0)
    # "Latents": one carries the whole projection on u, the rest hold the orthogonal part.
    others = _orthogonal_decoder(D, u, 1)
    rest = x - np.outer(x @ u, u)
    coeffs = rest @ np.linalg.pinv(others)  # [n, D]: rest = coeffs @ others
    keep_latents = np.column_stack([x @ u, coeffs])
    keep_decoder = np.vstack([u, others])
    kept = direction_kept(x, x.copy(), u, is_correct, keep_latents, keep_decoder, weights)  # x_hat = x exactly
    assert set(kept) == set(QUANTITIES)
    assert kept["variance_kept"][0] == pytest.approx(1, abs=1e-6)
    assert kept["separation_kept"][0] == pytest.approx(1, abs=1e-6)
    assert kept["auroc_reconstruction"][0] == pytest.approx(kept["auroc_resid"][0])
    assert kept["auroc_resid"][0] > 0.85 and kept["cohen_d_resid"][0] > 1.5
    assert kept["auroc_error"][0] == 0.5  # no error at all: every pair ties
    assert kept["max_decoder_cosine"][0] == pytest.approx(1)
    assert kept["top_latent_gap_share"][0] == pytest.approx(1) and kept["latents_for_half_gap"][0] == 1
    assert kept["explained_variance"][0] == pytest.approx(1, abs=1e-6)
    low, high = np.quantile(kept["auroc_resid"][1], [0.025, 0.975])
    assert low < kept["auroc_resid"][0] < high and kept["variance_kept"][1].shape == (200,)

    # The same SAE without its u latent: along u the reconstruction holds only a little label-free noise.
    drop_latents, drop_decoder = coeffs, others
    noise = 0.01 * np.random.default_rng(3).normal(size=x.shape[0])
    dropped = direction_kept(x, rest + np.outer(noise, u), u, is_correct, drop_latents, drop_decoder, weights)
    assert dropped["variance_kept"][0] == pytest.approx(0, abs=0.01)
    assert abs(dropped["separation_kept"][0]) < 0.01 and abs(dropped["auroc_reconstruction"][0] - 0.5) < 0.12
    # the signal is all in the error
    assert dropped["auroc_error"][0] == pytest.approx(dropped["auroc_resid"][0], abs=0.01)
    assert dropped["max_decoder_cosine"][0] < 1e-6
    assert np.isnan(dropped["top_latent_gap_share"][0]) and np.isnan(dropped["latents_for_half_gap"][0])
    assert dropped["explained_variance"][0] < kept["explained_variance"][0]


def test_a_direction_spread_over_four_latents_needs_two_for_half_its_gap():
    x, planted, is_correct, labels = _planted()
    u = fit_probe(x, labels, c=1.0, seed=0).direction
    # Four latents, each with decoder row at cosine 0.5 to u, share the projection equally (and fire on every row).
    others = _orthogonal_decoder(4, u, 2)
    decoder = 0.5 * u[None, :] + np.sqrt(0.75) * others
    latents = np.repeat((x @ u)[:, None] / 2, 4, axis=1)  # Σ_i z_i (decoder_i·u) = x·u
    found = direction_kept(x, latents @ decoder, u, is_correct, latents, decoder)
    assert found["top_latent_gap_share"][0] == pytest.approx(0.25)
    assert found["latents_for_half_gap"][0] == 2
    assert found["max_decoder_cosine"][0] == pytest.approx(0.5)
    assert found["separation_kept"][0] == pytest.approx(1)  # the projection is kept, spread over latents
    assert found["variance_kept"][1].size == 0  # no weights, no replicates


def test_shapes_that_disagree_are_refused():
    x, planted, is_correct, _ = _planted()
    with pytest.raises(ValueError, match="shapes disagree"):
        direction_kept(x, x[:, :-1], planted, is_correct, np.zeros((N, 2)), np.zeros((2, D)))
