"""Developmental calls on planted curves: flips, peaks, non-monotonicity, sharp / gradual / unresolved verdicts,
false-call rates, and family-wise control over a verdict table."""

import json

import numpy as np
import pytest

from codedyn.analysis.transitions import (
    TEST_DESCRIPTION,
    TEST_ID,
    VERDICT_KINDS,
    Call,
    adjust_verdicts,
    change_test,
    classify_trajectory,
    holm,
    interior_peaks,
    jump_scan,
    monotonicity,
    pointwise_intervals,
    replicates_from_intervals,
    sign_flips,
    sign_flips_from_replicates,
    simultaneous_band,
    smooth_basis,
    verdict_text,
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


def test_smooth_basis_frees_step_zero_and_keeps_residual_dof():
    toy = np.array([0, 1000, 3000, 5000, 5500, 6000, 7000])
    basis = smooth_basis(toy)
    # Step 0 alone in its own column; on the six later steps 1, log step and step (6 - 3 columns).
    assert basis.shape == (7, 4) and np.array_equal(basis[:, 0], [1, 0, 0, 0, 0, 0, 0])
    assert np.all(basis[0, 1:] == 0) and np.allclose(basis[1:, 1], 1)
    assert np.allclose(basis[1:, 2], np.log(toy[1:] / 1000) / np.log(7))
    assert np.allclose(basis[1:, 3], (toy[1:] - 1000) / 6000)
    # 19 positive checkpoints over a factor 128000 (11.8 log units): 1, u, t and four bends.
    assert smooth_basis(STEPS[1:]).shape == (18, 7)
    assert smooth_basis(STEPS).shape == (19, 8)


def test_jump_scan_finds_planted_jump_and_tests_only_intervals_with_neighbours():
    values, reps = noisy_curve(sigmoid(7.25, 20.0), 0.05, seed=5)
    scan = jump_scan(STEPS, reps, values=values)
    assert STEPS[scan.index] == 1000 and scan.p_value < 1e-6 and scan.share > 0.8
    assert scan.low < scan.jump < scan.high and scan.low > 0.8  # the planted jump is 1
    # 0 -> 1 is infinitely long on a log axis; 1 -> 2 and 64000 -> 128000 have one checkpoint after step 0 on one
    # side, where a jump and a smooth change fit alike.
    assert scan.testable.tolist() == [False, False] + [True] * 15 + [False]
    values, reps = noisy_curve(0.1 * X, 0.02, seed=5)  # a straight line in log step: smooth
    assert jump_scan(STEPS, reps, values=values).p_value > 0.05


def verdict_rates(truth: np.ndarray, sd: float, n_seeds: int = 100, steps: np.ndarray = STEPS) -> dict[str, float]:
    """How often each verdict comes out over independent noisy copies of one planted curve."""
    verdicts = [
        classify_trajectory(steps, reps, values=values)["verdict"]
        for values, reps in (noisy_curve(truth, sd, seed, n_boot=200) for seed in range(n_seeds))
    ]
    return {v: verdicts.count(v) / n_seeds for v in set(verdicts)}


def test_classify_sharp_sigmoid_is_bracketed_by_its_checkpoints():
    # Planted between steps 1000 and 2000 (x0 = 7.25): the bracket is (1000, 2000], never "at" a step.
    assert verdict_rates(sigmoid(7.25, 20.0), 0.05, n_seeds=50) == {"sharp transition within (1000, 2000]": 1.0}


def test_classify_straight_line_in_log_step_is_gradual():
    assert verdict_rates(0.1 * X, 0.02, n_seeds=50) == {"gradual": 1.0}


def test_classify_flat_noisy_curve_is_no_change():
    assert verdict_rates(np.zeros(STEPS.size), 0.1).get("no change", 0.0) >= 0.9


TOY = np.array([0, 1000, 3000, 5000, 5500, 6000, 7000])


def test_fast_early_change_on_toy_schedule_is_unresolved_not_sharp():
    # 1 - exp(-s/400) puts 92% of its change between steps 0 and 1000, where the schedule has nothing: the old
    # test called it a sharp transition "at" step 1000 in 10 of 10 draws.
    truth = 1 - np.exp(-TOY / 400)
    rates = verdict_rates(truth, 0.04, n_seeds=10, steps=TOY)
    assert rates == {"change within (0, 1000], not resolved by this schedule": 1.0}
    values, reps = noisy_curve(truth, 0.04, seed=0)
    out = classify_trajectory(TOY, reps, values=values)
    assert out["kind"] == "unresolved" and out["bracket"] == [0, 1000] and out["p_value"] < 0.05
    assert out["effect_low"] < out["effect"] < out["effect_high"] and abs(out["effect"] - truth[1]) < 0.2
    assert [e["kind"] for e in out["evidence"] if e["kind"] == "unresolved"] == ["unresolved"]


def test_half_range_jump_late_on_toy_schedule_is_sharp():
    # Half the range between 5500 and 6000 on top of a linear rise: the old test called it gradual 9 of 10 times.
    truth = 0.5 * (TOY >= 5750) + 0.5 * TOY / 7000
    assert verdict_rates(truth, 0.04, n_seeds=10, steps=TOY) == {"sharp transition within (5500, 6000]": 1.0}


def test_rise_and_fall_is_non_monotonic_verdict():
    truth = np.concatenate([np.linspace(0, 1, 10), np.linspace(1, 0, 10)[1:]])
    values, reps = noisy_curve(truth, 0.05, seed=4)
    out = classify_trajectory(STEPS, reps, values=values)
    assert (out["kind"], out["verdict"], out["bracket"]) == ("non_monotonic", "non-monotonic", None)
    assert out["effect_low"] < out["effect"] < out["effect_high"] and abs(out["effect"] - 1) < 0.2


def test_classify_one_curve_of_each_kind_and_schema():
    keys = {"kind", "verdict", "bracket", "effect", "effect_low", "effect_high", "p_value", "change_p_value",
            "p_adjusted", "candidates", "evidence", "test"}
    values, reps = noisy_curve(sigmoid(7.25, 20.0), 0.05, seed=0)
    out = classify_trajectory(STEPS, reps, values=values)
    assert set(out) == keys and "step" not in out
    assert (out["kind"], out["verdict"], out["bracket"]) == ("sharp", "sharp transition within (1000, 2000]",
                                                             [1000, 2000])
    assert all(type(b) is int for b in out["bracket"]) and out["p_adjusted"] is None and out["test"] == TEST_ID
    assert out["effect_low"] < 1.0 < out["effect_high"] and out["p_value"] < 1e-6
    total = out["candidates"]["gradual"]  # what a downgrade to gradual would report: last minus first
    assert total["effect_low"] < total["effect"] < total["effect_high"] and abs(total["effect"] - 1) < 0.1
    assert set(out["candidates"]) == {"sharp", "gradual", "non_monotonic", "unresolved"}
    assert out["candidates"]["unresolved"]["bracket"] == [1000, 2000]  # the same interval, resolved here
    assert [e["kind"] for e in out["evidence"]] == ["jump"]
    values, reps = noisy_curve(0.1 * X, 0.02, seed=0)
    out = classify_trajectory(STEPS, reps, values=values)
    assert (out["kind"], out["bracket"]) == ("gradual", None) and out["change_p_value"] < 0.01
    assert out["p_value"] == out["change_p_value"] and out["effect_low"] < 0.1 * X[-1] < out["effect_high"]
    values, reps = noisy_curve(np.zeros(STEPS.size), 0.1, seed=0)
    out = classify_trajectory(STEPS, reps, values=values)
    assert (out["kind"], out["verdict"], out["bracket"]) == ("no_change", "no change", None)
    assert out["change_p_value"] >= 0.05 and out["evidence"] == []
    assert set(VERDICT_KINDS) == {"sharp", "gradual", "non_monotonic", "no_change", "unresolved"}
    assert "phase transition" not in TEST_DESCRIPTION and "at step" not in TEST_DESCRIPTION


def test_classify_from_intervals_and_output_is_json():
    truth = sigmoid(7.25, 20.0)
    values, reps = noisy_curve(truth, 0.05, seed=6)
    _, lows, highs = pointwise_intervals(reps, values=values)
    synthetic = replicates_from_intervals(values, lows, highs, n_boot=B)
    assert np.allclose(synthetic.std(axis=1), 0.05, rtol=0.2)  # sd recovered from the 95% interval width
    out = classify_trajectory(STEPS, synthetic, values=values)
    assert out["verdict"] == "sharp transition within (1000, 2000]"
    kinds = [c["kind"] for c in out["evidence"]]
    assert "jump" in kinds and "sign_flip" not in kinds  # 0 -> 1 never changes sign
    assert json.loads(json.dumps(out)) == out


def test_holm_known_values():
    assert np.allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    assert np.allclose(holm([0.5, 0.001]), [0.5, 0.002]) and holm([]).size == 0
    assert np.allclose(holm([0.01, 0.02, 0.5]), [0.03, 0.04, 0.5])
    assert np.allclose(holm([0.9, 0.8]), [1.0, 1.0])  # 2 x 0.8 capped at 1, and monotone in the sorted order


def _candidate(p: float, bracket: list[int] | None = None, effect: float = 1.0) -> dict:
    return {"p_value": p, "bracket": bracket, "effect": effect, "effect_low": effect - 0.2,
            "effect_high": effect + 0.2}


def _call(kind: str, change_p: float, **candidates: dict) -> dict:
    """A verdict as classify_trajectory writes it, with the raw call already chosen."""
    candidates = {"gradual": _candidate(change_p), **candidates}
    chosen = candidates["gradual" if kind == "no_change" else kind]
    return {"kind": kind, "verdict": verdict_text(kind, chosen["bracket"]), "bracket": chosen["bracket"],
            "effect": chosen["effect"], "effect_low": chosen["effect_low"], "effect_high": chosen["effect_high"],
            "p_value": chosen["p_value"], "change_p_value": change_p, "p_adjusted": None, "candidates": candidates,
            "evidence": [], "test": TEST_ID}


def test_adjust_verdicts_holm_per_kind_downgrades_and_says_so():
    jump = {"bracket": [4, 8], "effect": 0.7}
    calls = {"a": _call("sharp", 0.001, sharp=_candidate(0.001, **jump)),
             "b": _call("sharp", 0.001, sharp=_candidate(0.03, **jump)),
             "c": _call("gradual", 0.02), "d": _call("no_change", 0.6),
             "e": _call("sharp", 0.001, sharp=_candidate(0.04, **jump), unresolved=_candidate(0.001, **jump)),
             "other": {"verdict": "not run"}}
    out = adjust_verdicts(calls)
    assert calls["b"]["kind"] == "sharp" and calls["b"]["p_adjusted"] is None  # inputs untouched
    assert out["other"] == {"verdict": "not run"}
    # Sharp p-values over all 5 curves (1 where a curve has none): 0.001, 0.03, 0.04 -> Holm 0.005, 0.12, 0.12.
    assert out["a"]["kind"] == "sharp" and out["a"]["p_adjusted"] == pytest.approx(0.005)
    assert out["a"]["fwer"] == "Holm over 5 curves per kind, family-wise level 0.95"
    b = out["b"]
    assert (b["kind"], b["verdict"], b["bracket"], b["effect"]) == ("gradual", "gradual", None, 1.0)
    assert b["fwer"].endswith('"sharp transition within (4, 8]" did not survive (adjusted p=0.12)')
    assert b["p_adjusted"] == pytest.approx(0.005)  # its change: 0.001 x 5
    # e's jump does not survive, but most of its change within (4, 8] does: not resolved by this schedule.
    e = out["e"]
    assert (e["kind"], e["verdict"], e["bracket"]) == ("unresolved", "change within (4, 8], not resolved by this "
                                                       "schedule", [4, 8])
    assert e["p_adjusted"] == pytest.approx(0.005) and "did not survive" in e["fwer"]
    # Change p-values 0.001 (x3), 0.02, 0.6: Holm gives c 0.04, so c stays gradual; d stays no change.
    assert out["c"]["kind"] == "gradual" and out["c"]["p_adjusted"] == pytest.approx(0.04)
    assert out["d"]["kind"] == "no_change" and out["d"]["p_adjusted"] == pytest.approx(0.6)
    # The same gradual call among 10 curves does not survive: its change is no longer significant.
    many = {**{str(i): _call("no_change", 0.9) for i in range(9)}, "c": _call("gradual", 0.02)}
    c = adjust_verdicts(many)["c"]
    assert (c["kind"], c["verdict"]) == ("no_change", "no change") and '"gradual" did not survive' in c["fwer"]


def test_adjust_verdicts_tests_every_curve_for_sharpness():
    # 90 curves that all change (tiny change p-values), one called sharp at raw p = 0.02: Holm over the sharp
    # p-values of all 90 curves (not only those called sharp) needs 0.05 / 90, so it becomes gradual.
    calls = {str(i): _call("gradual", 1e-30, sharp=_candidate(0.5, [4, 8])) for i in range(89)}
    calls["x"] = _call("sharp", 1e-30, sharp=_candidate(0.02, [4, 8]))
    assert adjust_verdicts(calls)["x"]["kind"] == "gradual"
    calls["x"] = _call("sharp", 1e-30, sharp=_candidate(1e-5, [4, 8]))
    assert adjust_verdicts(calls)["x"]["kind"] == "sharp"


def test_call_to_dict_and_input_checks():
    call = Call("peak", 5, (4, 6), 1.0, 0.01, "x")
    expected = {"kind": "peak", "step": 5, "between": [4, 6], "statistic": 1.0, "p_value": 0.01, "detail": "x"}
    assert call.to_dict() == expected
    with pytest.raises(ValueError):
        interior_peaks(STEPS, np.zeros((STEPS.size - 1, B)))
    with pytest.raises(ValueError):
        classify_trajectory(STEPS[::-1], np.zeros((STEPS.size, B)))
    with pytest.raises(ValueError):
        classify_trajectory([-1, 2, 3], np.zeros((3, B)))
    with pytest.raises(ValueError):
        replicates_from_intervals([0.0], [1.0], [0.0])


