"""The onset test, its family, the relation to the emergence and co-movement: known answers and a fast calibration
on planted curves with the organism's schedule (the full one: benchmarks/bench_onset.py)."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from codedyn.analysis.onset import Curve, OnsetCall, comovement, onset_family, relation, spearman
from codedyn.analysis.onset_calibration import ORGANISM_ONSET, ORGANISM_STEPS, onset_rates

STEPS = ORGANISM_STEPS


def _curve(name, truth, sd=1.0, margin=0.0, seed=0, n_boot=400):
    rng = np.random.default_rng(seed)
    truth = np.asarray(truth, dtype=float)
    values = truth + sd * rng.standard_normal(truth.size)
    reps = values[:, None] + sd * rng.standard_normal((truth.size, n_boot))
    return Curve(name, STEPS, values, reps, margin=margin)


def test_a_clear_step_is_bracketed_where_it_was_planted():
    truth = [0, 0, 0, 0, 10, 10, 10, 10]  # rises between 3000 and 4000
    call = onset_family([_curve("c", truth)], ORGANISM_ONSET)["c"]
    assert call.kind == "onset"
    assert call.bracket == [3000, 4000]
    assert call.direction == 1
    assert call.change_low < 10 < call.change_high + 3


def test_a_fall_is_an_onset_with_negative_direction():
    call = onset_family([_curve("c", [0, 0, -8, -8, -8, -8, -8, -8])], ORGANISM_ONSET)["c"]
    assert (call.kind, call.bracket, call.direction) == ("onset", [1000, 2000], -1)


def test_a_change_inside_the_margin_is_no_onset_and_a_precise_one_is_flat():
    truth = [0, 0, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
    precise = onset_family([_curve("c", truth, sd=0.01, margin=0.5)], ORGANISM_ONSET)["c"]
    assert precise.kind == "flat" and precise.reach < 0.5
    noisy = onset_family([_curve("c", truth, sd=1.0, margin=0.5)], ORGANISM_ONSET)["c"]
    assert noisy.kind == "not_detected" and noisy.reach > 0.5
    unmargined = onset_family([_curve("c", np.zeros(8), sd=0.01)], ORGANISM_ONSET)["c"]
    assert unmargined.kind == "not_detected"  # without a margin nothing is ever shown flat
    assert "no equivalence margin" in unmargined.verdict


def test_the_family_is_one_holm_family_over_every_curve_and_checkpoint():
    curves = [_curve(f"c{i}", np.zeros(8), seed=i) for i in range(5)]
    calls = onset_family(curves, ORGANISM_ONSET)
    assert all("Holm over 30 (curve, checkpoint) tests of 5 curves" in c.family for c in calls.values())
    with pytest.raises(ValueError, match="distinct"):
        onset_family([curves[0], curves[0]], ORGANISM_ONSET)


def test_without_a_known_onset_the_baseline_is_the_first_checkpoint():
    call = onset_family([_curve("c", [0, 9, 9, 9, 9, 9, 9, 9])], None)["c"]
    assert call.baseline == [0] and call.bracket == [0, 1000]


def test_bad_curves_are_refused_in_one_sentence():
    with pytest.raises(ValueError, match="one value per checkpoint"):
        Curve("c", STEPS, np.zeros(3), np.zeros((3, 10)))
    with pytest.raises(ValueError, match="strictly increasing"):
        Curve("c", (0, 2, 1), np.zeros(3), np.zeros((3, 10)))
    with pytest.raises(ValueError, match="nothing to test"):
        onset_family([_curve("c", np.zeros(8))], 7000)


def test_relation_counts_checkpoints_of_the_schedule():
    def call(bracket):
        return OnsetCall("x", "onset", "", bracket=bracket)

    emergence = call([3000, 4000])
    assert relation(emergence, emergence, STEPS) == "coincides with the emergence"  # by construction
    assert relation(call([1000, 2000]), emergence, STEPS) == "leads the emergence by 2 checkpoints"
    assert relation(call([4000, 5000]), emergence, STEPS) == "lags the emergence by 1 checkpoint"
    assert relation(OnsetCall("x", "flat", ""), emergence, STEPS) == "does not find the emergence: flat"
    assert relation(call([1000, 2000]), None, STEPS) == "no behavioural emergence to compare with"


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 4, 9).astype(float), rng.standard_normal(9)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)


def test_comovement_finds_a_follower_and_not_an_independent_curve():
    rise = [0, 0, 1, 2, 4, 6, 7, 8]
    behaviour = _curve("b", rise, sd=0.1, seed=1)
    follower = _curve("f", np.asarray(rise) * 0.5, sd=0.1, seed=2)
    assert comovement(follower, behaviour, ORGANISM_ONSET).tracks == 1
    covered = sum(comovement(_curve("n", np.zeros(8), seed=s), behaviour, ORGANISM_ONSET).tracks == 0
                  for s in range(40))
    assert covered >= 32  # ~95% of independent flat curves cover 0


def test_fast_calibration_on_planted_curves():
    """False onsets on flat curves and on changes exactly at the margin <= 5% (+ Monte Carlo slack); a step of 5
    noise sd found within one checkpoint >= 80% (the full grid: benchmarks/bench_onset.py)."""
    flat = onset_rates("flat", 0.0, 200, seed=11)
    assert flat.onsets / flat.n <= 0.08
    at_margin = onset_rates("margin", 1.0, 200, margin=1.0, seed=12)
    assert at_margin.onsets / at_margin.n <= 0.08
    step = onset_rates("step", 5.0, 200, seed=13)
    assert step.found / step.n >= 0.80


def test_the_noise_is_the_one_sided_bound_of_a_change_and_says_whether_the_margin_can_be_resolved():
    """Replicates of a change from a two-checkpoint baseline have sd·√(1 + 1/2); the noise is z_0.95 times that
    (at the quietest of the six checkpoints after the baseline, each SE from 400 replicates).
    A curve noisier than its margin is never shown flat, whatever it does; a precise one resolves its margin."""
    from statistics import NormalDist

    expected = NormalDist().inv_cdf(0.95) * 0.2 * np.sqrt(1.5)
    precise = onset_family([_curve("c", np.zeros(8), sd=0.2, margin=1.0)], ORGANISM_ONSET)["c"]
    assert precise.noise == pytest.approx(expected, rel=0.1)
    assert precise.resolves and precise.kind == "flat"
    for seed in range(20):
        noisy = onset_family([_curve("c", np.zeros(8), sd=0.2, margin=0.3, seed=seed)], ORGANISM_ONSET)["c"]
        assert noisy.resolves is False and noisy.kind != "flat"
    assert onset_family([_curve("c", np.zeros(8), sd=0.2)], ORGANISM_ONSET)["c"].resolves is None  # no margin
