"""The verdicts' calibration targets on planted curves (a small version of benchmarks/bench_verdicts.py).

Per schedule, pooled over the three noise levels: false "sharp" <= 5% on smooth curves the schedule resolves,
power >= 80% on jumps of >= 50% of the range (>= 3x the interval's half-width), and the bracket is the planted
interval in >= 95% of detections. Then the family-wise error of adjust_verdicts on tables of flat curves. Seeds
differ from the benchmark's, so the test is not the data the constants were chosen on.
"""

import numpy as np
import pytest

from codedyn.analysis.verdict_calibration import (
    SCHEDULES,
    calibration_table,
    jump_curve,
    jump_intervals,
    max_share,
    smooth_curve,
    table_fwer,
)


@pytest.fixture(scope="module")
def cells():
    return calibration_table(n_curves=30, n_boot=200, seed=7)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_verdict_targets_per_schedule(cells, schedule):
    mine = [c for c in cells if c.schedule == schedule]
    assert len(mine) == 3
    smooth_n, false_sharp = sum(c.smooth_n for c in mine), sum(c.false_sharp for c in mine)
    jump_n, detected, hits = (sum(getattr(c, k) for c in mine) for k in ("jump_n", "detected", "bracket_hits"))
    assert smooth_n >= 60 and jump_n >= 60  # enough curves for the rates to mean something
    assert false_sharp / smooth_n <= 0.05
    assert detected / jump_n >= 0.8
    assert hits / detected >= 0.95


def test_flat_verdict_tables_keep_the_family_wise_error():
    # 30 tables of 90 flat curves at 4% noise: at a 5% FWER, 4 or more errors would happen with probability 6%;
    # without Holm (each curve at 5%) nearly every table would have a false call.
    errors, n = table_fwer(SCHEDULES["toy default"], n_tables=30, n_curves=90, noise=0.04, n_boot=200, seed=3)
    assert n == 30 and errors <= 3


def test_planted_curves_are_what_they_claim():
    rng = np.random.default_rng(0)
    steps = np.asarray(SCHEDULES["toy 7-step"])
    for family in ("exponential", "power-law", "log-linear", "linear"):
        curve = smooth_curve(family, steps, rng)
        assert curve[0] == 0 and curve[-1] == pytest.approx(1) and np.all(np.diff(curve) >= 0)
    # Jumps go only where two checkpoints after step 0 lie on either side: (3000, 5000], (5000, 5500], (5500, 6000].
    assert jump_intervals(steps) == [2, 3, 4]
    curve = jump_curve(steps, 3, 0.7, rng)
    assert curve[4] - curve[3] >= 0.7 and max_share(curve) >= 0.7 / curve.max()
    with pytest.raises(ValueError, match="unknown smooth family"):
        smooth_curve("cubic", steps, rng)
