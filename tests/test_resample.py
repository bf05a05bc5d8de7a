"""Bootstrap multiplicities: the one resampling primitive (codedyn.resample)."""

import numpy as np
import pytest

from codedyn.resample import group_multiplicities, multiplicities


def test_multiplicities_count_draws_with_replacement():
    one = multiplicities(np.random.default_rng(3), 7)
    picks = np.random.default_rng(3).integers(0, 7, 7)
    np.testing.assert_array_equal(one, np.bincount(picks, minlength=7))
    many = multiplicities(np.random.default_rng(3), 7, 500)
    assert many.shape == (500, 7) and many.dtype == np.float64
    np.testing.assert_array_equal(many.sum(axis=1), 7)
    # the first resample of many is the one of a single call with the same stream
    picks = np.random.default_rng(3).integers(0, 7, (500, 7))
    np.testing.assert_array_equal(many[0], np.bincount(picks[0], minlength=7))


def test_multiplicities_are_one_on_average_and_multinomial_in_spread():
    many = multiplicities(np.random.default_rng(0), 10, 40000)
    np.testing.assert_allclose(many.mean(axis=0), 1.0, atol=0.03)
    np.testing.assert_allclose(many.var(axis=0), 10 * 0.1 * 0.9, rtol=0.05)  # Binomial(n, 1/n)


def test_group_multiplicities_are_shared_within_a_group():
    groups = np.array(["b", "a", "b", "c", "a", "b"])
    weights = group_multiplicities(groups, 200, seed=5)
    assert weights.shape == (200, 6)
    np.testing.assert_array_equal(weights[:, 0], weights[:, 2])
    np.testing.assert_array_equal(weights[:, 1], weights[:, 4])
    # three groups drawn three times each replicate: their multiplicities sum to 3
    np.testing.assert_array_equal(weights[:, [1, 0, 3]].sum(axis=1), 3)
    np.testing.assert_array_equal(weights, group_multiplicities(groups, 200, seed=5))


def test_nothing_to_resample_is_an_error():
    with pytest.raises(ValueError, match="cannot resample 0 items"):
        multiplicities(np.random.default_rng(0), 0)
