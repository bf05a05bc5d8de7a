"""Cross-seed interval coverage (codedyn.analysis.coverage): its known value for honest intervals, and that it
exposes intervals too narrow for the seed-to-seed spread."""

import numpy as np
import pytest

from codedyn.analysis.coverage import HONEST_CROSS_COVERAGE, cross_seed_coverage


def test_honest_intervals_cover_other_seeds_at_the_known_rate():
    rng = np.random.default_rng(0)
    seeds, quantities, se = 6, 4000, 0.3
    values = 1.0 + se * rng.normal(size=(seeds, quantities))
    share = cross_seed_coverage(values, values - 1.96 * se, values + 1.96 * se)
    assert HONEST_CROSS_COVERAGE == pytest.approx(0.834, abs=1e-3)
    assert share.mean() == pytest.approx(HONEST_CROSS_COVERAGE, abs=0.01)
    # Intervals that hold only a third of the Monte Carlo error cover far fewer of the other seeds.
    narrow = cross_seed_coverage(values, values - 0.65 * se, values + 0.65 * se)
    assert narrow.mean() < 0.5


def test_coverage_counts_only_pairs_of_distinct_seeds_with_numbers():
    values = np.array([0.0, 1.0, 5.0])
    lows, highs = values - 1.5, values + 1.5
    # 0 in [−0.5, 2.5] yes, 0 in [3.5, 6.5] no; 1 in [−1.5, 1.5] yes, 1 in [3.5, 6.5] no; 5: in neither.
    assert cross_seed_coverage(values, lows, highs) == pytest.approx(2 / 6)
    values[2] = np.nan
    assert cross_seed_coverage(values, lows, highs) == pytest.approx(2 / 4)  # seed 2 has an interval, no estimate
    with pytest.raises(ValueError, match="at least two seeds"):
        cross_seed_coverage(values[:1], lows[:1], highs[:1])
