"""Developmental calls on planted curves: flips, peaks, non-monotonicity, sharp vs gradual, false-call rates."""

import json

import numpy as np
import pytest

from codedyn.analysis.stats import Estimate
from codedyn.analysis.transitions import (
    Call,
    change_test,
    classify_trajectory,
    interior_peaks,
    intervals_of,
    largest_jump,
    monotonicity,
    pointwise_intervals,
    replicates_from_intervals,
    sign_flips,
    sign_flips_from_replicates,
    simultaneous_band,
    step_axis,
)

# Pythia-like schedule: log-spaced early checkpoints, then doubling up to 128k; 19 checkpoints including step 0.
STEPS = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000])
X = np.log1p(STEPS)
B = 500


def noisy_curve(truth: np.ndarray, sd: float, seed: int, n_boot: int = B) -> tuple[np.ndarray, np.ndarray]:
    """(values, replicates [n_steps, n_boot]): one noisy estimate per step and replicates with the same spread."""
    rng = np.random.default_rng(seed)
    values = truth + sd * rng.standard_normal(truth.size)
    return values, values[:, None] + sd * rng.standard_normal((truth.size, n_boot))


def sigmoid(center: float, steepness: float) -> np.ndarray:
    return 1 / (1 + np.exp(-steepness * (X - center)))


def test_step_axis_handles_step_zero():
    x = step_axis([0, 1, 9])
    assert np.allclose(x, np.log([1, 2, 10])) and np.isfinite(x).all()
    assert np.array_equal(step_axis([0, 5], log_steps=False), [0.0, 5.0])
    with pytest.raises(ValueError):
        step_axis([0, 10, 5])
    with pytest.raises(ValueError):
        step_axis([-1, 3])


def test_sign_flip_from_intervals_with_zero_covering_gap():
    steps = [0, 100, 200, 300, 400]
    values = [0.2, 0.25, 0.0, -0.3, -0.2]
    lows = [0.12, 0.1, -0.2, -0.4, -0.3]
    highs = [0.3, 0.4, 0.2, -0.1, -0.1]
    (call,) = sign_flips(steps, values, lows, highs)
    assert (call.kind, call.step, call.between) == ("sign_flip", 300, (100, 300))
    assert call.statistic == pytest.approx(-0.55)
    assert "CI [0.1, 0.4] at step 100 excludes 0 above" in call.detail
    assert "CI [-0.4, -0.1] at step 300 excludes 0 below" in call.detail
    # Two flips (+ to - to +), and none when every interval covers zero.
    assert [c.step for c in sign_flips([0, 1, 2], [1, -1, 1], [0.5, -2, 0.5], [2, -0.5, 2])] == [1, 2]
    assert sign_flips(steps, values, [-1] * 5, [1] * 5) == []


def test_sign_flip_from_estimates():
    estimates = [Estimate(1.0, 0.5, 1.5), Estimate(-1.0, -1.5, -0.5)]
    (call,) = sign_flips([10, 20], *intervals_of(estimates))
    assert call.step == 20 and call.between == (10, 20)


def test_clean_sign_flip_detected_at_planted_step():
    truth = np.where(np.arange(STEPS.size) < 11, 1.0, -1.0)  # first negative checkpoint: step 1000
    values, reps = noisy_curve(truth, 0.05, seed=1)
    for simultaneous in (True, False):
        calls = sign_flips_from_replicates(STEPS, reps, values=values, simultaneous=simultaneous)
        assert [(c.step, c.between) for c in calls] == [(1000, (512, 1000))]


def test_noisy_curve_around_zero_has_no_flips():
    for seed in range(20):
        values, reps = noisy_curve(np.zeros(STEPS.size), 0.1, seed=seed)
        assert sign_flips_from_replicates(STEPS, reps, values=values) == []


def test_simultaneous_band_covers_whole_curve():
    truth = sigmoid(7.25, 2.0)
    covered, pointwise_covered = [], []
    for seed in range(200):
        values, reps = noisy_curve(truth, 0.1, seed=seed)
        _, low, high = simultaneous_band(reps, values=values)
        covered.append(np.all((low <= truth) & (truth <= high)))
        _, low, high = pointwise_intervals(reps, values=values)
        pointwise_covered.append(np.all((low <= truth) & (truth <= high)))
    assert np.mean(covered) >= 0.9
    assert np.mean(pointwise_covered) < 0.6  # 19 pointwise 95% intervals rarely all cover: why the band is default


def test_interior_peak_and_trough_at_planted_step():
    bump = np.zeros(STEPS.size)
    bump[7] = 1.0  # step 64
    values, reps = noisy_curve(bump, 0.1, seed=2)
    (peak,) = interior_peaks(STEPS, reps, values=values)
    assert (peak.kind, peak.step, peak.between) == ("peak", 64, (32, 128))
    assert peak.p_value < 0.05 and peak.statistic > 0.5
    (trough,) = interior_peaks(STEPS, -reps, values=-values)
    assert (trough.kind, trough.step) == ("trough", 64)
    # A monotone ramp and a flat curve have no interior extrema.
    for truth in (np.linspace(0, 1, STEPS.size), np.zeros(STEPS.size)):
        values, reps = noisy_curve(truth, 0.1, seed=3)
        assert interior_peaks(STEPS, reps, values=values) == []


def test_monotone_noisy_curve_is_not_non_monotonic():
    truth = np.linspace(0, 1, STEPS.size)  # adjacent rises (0.056) are smaller than the noise (0.1)
    for seed in range(20):
        values, reps = noisy_curve(truth, 0.1, seed=seed)
        assert np.any(np.diff(values) < 0)  # pointwise, the curve does go down
        assert monotonicity(STEPS, reps, values=values) is None


def test_rise_and_fall_is_non_monotonic():
    truth = np.concatenate([np.linspace(0, 1, 10), np.linspace(1, 0, 10)[1:]])  # apex at index 9: step 256
    values, reps = noisy_curve(truth, 0.1, seed=4)
    call = monotonicity(STEPS, reps, values=values)
    assert call is not None and call.kind == "non_monotonic" and call.p_value < 0.05
    turn = int(np.flatnonzero(STEPS == call.step)[0])
    assert abs(turn - 9) <= 1 and call.between == (STEPS[turn - 1], STEPS[turn + 1])  # the apex is 256 +- noise
    assert "rise" in call.detail and "fall" in call.detail and "max-T" in call.detail


def test_change_test_false_positive_rate():
    p_values = [change_test(STEPS, noisy_curve(np.zeros(STEPS.size), 0.1, seed)[1]) for seed in range(100)]
    assert np.mean(np.array(p_values) < 0.05) <= 0.1
    assert change_test(STEPS, noisy_curve(0.1 * X, 0.05, seed=0)[1]) < 0.01


def test_largest_jump_sharp_vs_gradual():
    values, reps = noisy_curve(sigmoid(7.25, 20.0), 0.05, seed=5)
    jump = largest_jump(STEPS, reps, values=values)
    assert (jump.kind, jump.step, jump.between) == ("jump", 2000, (1000, 2000))
    assert jump.p_value < 0.01 and jump.statistic > 0.7 and jump.detail.startswith("sharp")
    values, reps = noisy_curve(0.1 * X, 0.02, seed=5)
    jump = largest_jump(STEPS, reps, values=values)
    assert jump.p_value > 0.05 and jump.detail.startswith("gradual")


def verdict_rates(truth: np.ndarray, sd: float, n_seeds: int = 100) -> dict[str, float]:
    """How often each verdict comes out over independent noisy copies of one planted curve."""
    verdicts = [
        classify_trajectory(STEPS, reps, values=values)["verdict"]
        for values, reps in (noisy_curve(truth, sd, seed, n_boot=200) for seed in range(n_seeds))
    ]
    return {v: verdicts.count(v) / n_seeds for v in set(verdicts)}


def test_classify_sharp_sigmoid_is_phase_transition_at_planted_step():
    # Planted between steps 1000 and 2000 (x0 = 7.25): X = 2000, and +-1 checkpoint is accepted.
    near = {f"phase transition at step {s}" for s in (1000, 2000, 4000)}
    for steepness in (20.0, 4.0):  # inside one interval, and spread over about two
        rates = verdict_rates(sigmoid(7.25, steepness), 0.05, n_seeds=50)
        assert sum(rates.get(v, 0.0) for v in near) >= 0.95
        assert rates.get("phase transition at step 2000", 0.0) >= 0.9


def test_classify_straight_line_in_log_step_is_gradual():
    # A level-0.05 test calls "sharp" on 5% of null curves by design: check the rate, not one draw.
    assert verdict_rates(0.1 * X, 0.02).get("gradual", 0.0) >= 0.88


def test_classify_flat_noisy_curve_is_no_change():
    assert verdict_rates(np.zeros(STEPS.size), 0.1).get("no change", 0.0) >= 0.88


def test_classify_one_curve_of_each_kind():
    values, reps = noisy_curve(sigmoid(7.25, 20.0), 0.05, seed=0)
    out = classify_trajectory(STEPS, reps, values=values)
    assert out["verdict"] == "phase transition at step 2000" and out["step"] == 2000
    values, reps = noisy_curve(0.1 * X, 0.02, seed=0)
    out = classify_trajectory(STEPS, reps, values=values)
    assert out["verdict"] == "gradual" and out["step"] is None and out["change_p_value"] < 0.01
    values, reps = noisy_curve(np.zeros(STEPS.size), 0.1, seed=0)
    out = classify_trajectory(STEPS, reps, values=values)
    assert out["verdict"] == "no change" and out["step"] is None and out["change_p_value"] >= 0.05
    assert [c["kind"] for c in out["evidence"]] == []


def test_classify_from_intervals_and_output_is_json():
    truth = sigmoid(7.25, 20.0)
    values, reps = noisy_curve(truth, 0.05, seed=6)
    _, lows, highs = pointwise_intervals(reps, values=values)
    synthetic = replicates_from_intervals(values, lows, highs, n_boot=B)
    assert np.allclose(synthetic.std(axis=1), 0.05, rtol=0.2)  # sd recovered from the 95% interval width
    out = classify_trajectory(STEPS, synthetic, values=values)
    assert out["verdict"] == "phase transition at step 2000"
    kinds = [c["kind"] for c in out["evidence"]]
    assert "jump" in kinds and "sign_flip" not in kinds  # 0 -> 1 never changes sign
    assert json.loads(json.dumps(out))["verdict"] == out["verdict"]
    assert out["test"].startswith("No change if")


def test_call_to_dict_and_input_checks():
    call = Call("peak", 5, (4, 6), 1.0, 0.01, "x")
    expected = {"kind": "peak", "step": 5, "between": [4, 6], "statistic": 1.0, "p_value": 0.01, "detail": "x"}
    assert call.to_dict() == expected
    with pytest.raises(ValueError):
        interior_peaks(STEPS, np.zeros((STEPS.size - 1, B)))
    with pytest.raises(ValueError):
        classify_trajectory(STEPS[::-1], np.zeros((STEPS.size, B)))
    with pytest.raises(ValueError):
        replicates_from_intervals([0.0], [1.0], [0.0])
