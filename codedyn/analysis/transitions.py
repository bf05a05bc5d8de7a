"""Developmental calls on a curve measured over training checkpoints: sign flips, peaks, non-monotonicity, jumps.

Input: checkpoint ``steps`` (strictly increasing ints, 0 allowed) and, at each step, either bootstrap replicates of
the measured quantity, ``replicates`` [n_steps, B] (preferred), or an interval (value, low, high). Replicates carry
the whole sampling distribution; an interval can be turned into replicates with ``replicates_from_intervals``, which
assumes a symmetric normal sampling distribution. Optional ``values`` are the point estimates (the statistic on the
original data); without them the replicate means are used.

Assumptions. Replicate ``b`` at different steps is combined column by column to get the sampling distribution of a
difference between steps. That is right when the steps were resampled independently (separate SGLD chains per
checkpoint) and also when the same resampling of shared units (the same bootstrap draw of data samples) was used at
every step, which then keeps their correlation. Replicates must come from the estimator's sampling distribution, i.e.
be centred near the estimate with the right spread; bias of the estimator is not corrected.

Tests. Every significance statement controls the family-wise error over the comparisons it searches, with a
single-step max-T bootstrap (Westfall & Young 1993; Romano & Wolf 2005): for contrasts ``d_c`` (differences
between two steps) with bootstrap standard deviation ``s_c``, ``T_b = max_c |d*_cb - d_c| / s_c`` is the null
distribution of the largest studentised error, and a contrast's adjusted p-value is ``P(T >= |d_c| / s_c)``. So a
flat noisy curve with 20 checkpoints is called non-flat in at most about 1 - level of cases, not in most of them.

* ``sign_flips``: intervals taken as given; ``sign_flips_from_replicates`` builds a simultaneous sup-t band over the
  steps by default, so no step excludes zero by chance alone (at the family-wise level).
* ``interior_peaks``: a peak at k needs both adjacent differences significant with the right sign (max-T over the
  n - 1 adjacent differences); its p-value is the larger of the two adjusted p-values (intersection-union test).
* ``monotonicity``: non-monotonic when some pair of steps (not necessarily adjacent) rises and another falls
  significantly (max-T over all pairs); p-value = the larger of the best rise's and the best fall's.
* ``change_test``: is the curve flat? max-T over all pairs; the p-value of the most significant pair.
* ``largest_jump``: sharp or gradual? The share of the curve's range taken by its largest adjacent change is compared
  with the same share on null curves: a straight line in x (weighted least squares fit to the values) plus the
  bootstrap noise. A gradual change spread over the checkpoints the way a linear-in-x trend would spread it gives a
  share like the null's; a transition packed into one checkpoint interval gives a larger one. "Sharp" is relative
  to the chosen axis: a curve linear in step puts half its change into the last doubling of a log-spaced schedule
  and is called sharp there on the log axis (use ``log_steps=False`` to ask the linear-axis question).

The x axis for trends is ``log1p(step) = log(step + 1)`` (``log_steps=True``): finite at step 0, equal to log(step)
up to < 1/step for later checkpoints, so "linear in log-step" is the usual log-axis picture; it places steps 0, 1, 2
at 0, 0.69, 1.10.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

KINDS = ("sign_flip", "peak", "trough", "non_monotonic", "jump")


@dataclass(frozen=True)
class Call:
    """One detected event and the statistics behind it."""

    kind: str  # one of KINDS
    step: int  # flip: first step past it; peak/trough: the extremum; jump: the step after it; non_monotonic: turn
    between: tuple[int, int]  # the checkpoints bracketing the event
    statistic: float
    p_value: float | None
    detail: str  # one human sentence stating the evidence and the test

    def to_dict(self) -> dict:
        out = asdict(self)
        out["between"] = list(self.between)
        return out


# ---------------------------------------------------------------------------------------------------------- inputs


def _check_steps(steps: Sequence[int] | np.ndarray, log_steps: bool = False) -> np.ndarray:
    s = np.asarray(steps)
    if s.ndim != 1 or s.size < 2:
        raise ValueError("steps must be a 1-d sequence of at least two checkpoints")
    if not np.issubdtype(s.dtype, np.integer):
        if not np.all(s == np.round(s)):
            raise ValueError("steps must be integers")
        s = s.astype(np.int64)
    if np.any(np.diff(s) <= 0):
        raise ValueError("steps must be strictly increasing")
    if log_steps and s[0] < 0:
        raise ValueError("steps must be >= 0 on a log axis")
    return s


def _check_replicates(replicates: np.ndarray, n_steps: int) -> np.ndarray:
    r = np.asarray(replicates, dtype=float)
    if r.ndim != 2 or r.shape[0] != n_steps:
        raise ValueError(f"replicates must be [n_steps={n_steps}, B], got shape {r.shape}")
    if r.shape[1] < 10:
        raise ValueError("need at least 10 bootstrap replicates per step")
    if not np.all(np.isfinite(r)):
        raise ValueError("replicates must be finite")
    return r


def _values(replicates: np.ndarray, values: Sequence[float] | np.ndarray | None) -> np.ndarray:
    if values is None:
        return replicates.mean(axis=1)
    v = np.asarray(values, dtype=float)
    if v.shape != (replicates.shape[0],):
        raise ValueError("values must have one entry per step")
    return v


def _alpha(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return 1 - level


def step_axis(steps: Sequence[int] | np.ndarray, log_steps: bool = True) -> np.ndarray:
    """x coordinate of each checkpoint: ``log1p(step)`` (finite at step 0) or the step itself."""
    s = _check_steps(steps, log_steps).astype(float)
    return np.log1p(s) if log_steps else s


def replicates_from_intervals(
    values: Sequence[float] | np.ndarray,
    lows: Sequence[float] | np.ndarray,
    highs: Sequence[float] | np.ndarray,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """Synthetic replicates [n_steps, n_boot] for curves known only as intervals.

    Assumes each interval is a symmetric normal interval at ``level`` (sd = width / (2 z)) and the steps are
    independent. Asymmetric intervals are symmetrised by their width. Use real replicates when you have them.
    """
    v, lo, hi = (np.asarray(a, dtype=float) for a in (values, lows, highs))
    if not (v.shape == lo.shape == hi.shape) or v.ndim != 1:
        raise ValueError("values, lows and highs must be 1-d and of equal length")
    if np.any(hi < lo):
        raise ValueError("every interval needs low <= high")
    sd = (hi - lo) / (2 * NormalDist().inv_cdf(1 - _alpha(level) / 2))
    rng = np.random.default_rng(seed)
    return v[:, None] + sd[:, None] * rng.standard_normal((v.size, n_boot))


def intervals_of(estimates: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, lows, highs)`` from Estimate-like objects (attributes ``value``, ``low``, ``high``)."""
    return tuple(np.array([getattr(e, name) for e in estimates], dtype=float) for name in ("value", "low", "high"))


# ------------------------------------------------------------------------------------------------ max-T contrasts


@dataclass(frozen=True)
class Contrasts:
    """Differences ``values[j] - values[i]`` with bootstrap SDs and max-T family-wise adjusted p-values."""

    i: np.ndarray
    j: np.ndarray
    diff: np.ndarray
    sd: np.ndarray
    t: np.ndarray
    p_adjusted: np.ndarray


def contrasts(replicates: np.ndarray, values: np.ndarray, i: np.ndarray, j: np.ndarray) -> Contrasts:
    """Max-T adjusted tests of ``values[j] - values[i]`` over the family of pairs (i, j) given."""
    n_boot = replicates.shape[1]
    diff = values[j] - values[i]
    sd = np.empty(diff.shape)
    t_max = np.zeros(n_boot)
    # Chunks over contrasts keep memory at ~4M floats for long checkpoint suites (all pairs of 150 steps x 2000 reps).
    chunk = max(1, 2**22 // n_boot)
    for start in range(0, diff.size, chunk):
        sl = slice(start, start + chunk)
        d_rep = replicates[j[sl]] - replicates[i[sl]]
        sd[sl] = d_rep.std(axis=1, ddof=1)
        err = np.abs(d_rep - diff[sl, None])
        # A contrast without bootstrap spread (deterministic) adds no noise to the null maximum.
        scaled = np.divide(err, sd[sl, None], out=np.zeros_like(err), where=sd[sl, None] > 0)
        t_max = np.maximum(t_max, scaled.max(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(sd > 0, diff / np.where(sd > 0, sd, 1), np.sign(diff) * np.inf)
    t = np.nan_to_num(t, nan=0.0)
    p = (1 + (t_max[None, :] >= np.abs(t)[:, None]).sum(axis=1)) / (n_boot + 1)
    return Contrasts(i, j, diff, sd, t, p)


def _adjacent(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n - 1), np.arange(1, n)


def _all_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, 1)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


# ----------------------------------------------------------------------------------------------------- sign flips


def _interval_text(low: float, high: float, step: int) -> str:
    side = "above" if low > 0 else "below"
    return f"CI [{_fmt(low)}, {_fmt(high)}] at step {step} excludes 0 {side}"


def sign_flips(
    steps: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    lows: Sequence[float] | np.ndarray,
    highs: Sequence[float] | np.ndarray,
) -> list[Call]:
    """Sign flips: an interval entirely on one side of 0 followed (maybe after zero-covering ones) by one on the other.

    ``step`` is the first checkpoint past the flip, ``between`` the last checkpoint on the old side and that one.
    The intervals are taken as given: pointwise intervals over many steps will flip by chance; see
    ``sign_flips_from_replicates``. ``statistic`` is the change of value across the flip.
    """
    s = _check_steps(steps)
    v, lo, hi = (np.asarray(a, dtype=float) for a in (values, lows, highs))
    if not (v.shape == lo.shape == hi.shape == s.shape):
        raise ValueError("steps, values, lows and highs must have equal length")
    signs = np.where(lo > 0, 1, np.where(hi < 0, -1, 0))
    calls, last = [], None
    for k in np.flatnonzero(signs):
        if last is not None and signs[k] != signs[last]:
            detail = f"{_interval_text(lo[last], hi[last], s[last])}; {_interval_text(lo[k], hi[k], s[k])}"
            between = (int(s[last]), int(s[k]))
            calls.append(Call("sign_flip", int(s[k]), between, float(v[k] - v[last]), None, detail))
        last = k
    return calls


def pointwise_intervals(
    replicates: np.ndarray, level: float = 0.95, values: Sequence[float] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, lows, highs)``: percentile intervals at each step, each at ``level`` on its own."""
    r = np.asarray(replicates, dtype=float)
    tail = _alpha(level) / 2
    lows, highs = np.quantile(r, [tail, 1 - tail], axis=1)
    return _values(r, values), lows, highs


def simultaneous_band(
    replicates: np.ndarray, level: float = 0.95, values: Sequence[float] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, lows, highs)``: a sup-t band that covers the whole curve at once with probability ``level``.

    ``value_k +- c sd_k`` where ``c`` is the ``level`` quantile of ``max_k |r_kb - value_k| / sd_k`` over replicates.
    """
    r = np.asarray(replicates, dtype=float)
    v = _values(r, values)
    sd = r.std(axis=1, ddof=1)
    err = np.abs(r - v[:, None])
    scaled = np.divide(err, sd[:, None], out=np.zeros_like(err), where=sd[:, None] > 0)
    c = float(np.quantile(scaled.max(axis=0), level))
    return v, v - c * sd, v + c * sd


def sign_flips_from_replicates(
    steps: Sequence[int] | np.ndarray,
    replicates: np.ndarray,
    level: float = 0.95,
    values: Sequence[float] | np.ndarray | None = None,
    simultaneous: bool = True,
) -> list[Call]:
    """``sign_flips`` on intervals from replicates: a simultaneous sup-t band (default) or pointwise percentiles."""
    s = _check_steps(steps)
    r = _check_replicates(replicates, s.size)
    band = simultaneous_band if simultaneous else pointwise_intervals
    v, lows, highs = band(r, level, values)
    calls = sign_flips(s, v, lows, highs)
    kind = "simultaneous sup-t band" if simultaneous else "pointwise percentile intervals"
    return [_with_suffix(c, f" ({kind}, level {level:g})") for c in calls]


def _with_suffix(call: Call, suffix: str) -> Call:
    return Call(call.kind, call.step, call.between, call.statistic, call.p_value, call.detail + suffix)


# ------------------------------------------------------------------------------------------- peaks, monotonicity


def interior_peaks(
    steps: Sequence[int] | np.ndarray,
    replicates: np.ndarray,
    level: float = 0.95,
    values: Sequence[float] | np.ndarray | None = None,
) -> list[Call]:
    """Interior local maxima ("peak") and minima ("trough") that both neighbouring differences confirm.

    At interior k, ``value[k] - value[k-1]`` and ``value[k] - value[k+1]`` must both be significantly > 0 (peak) or
    < 0 (trough), max-T adjusted over the n - 1 adjacent differences. ``p_value`` is the larger of the two adjusted
    p-values (both must hold, so the weaker one is the evidence); ``statistic`` the smaller of the two rises/falls.
    Only immediate neighbours count: a plateau of two equal checkpoints is not a peak.
    """
    s = _check_steps(steps)
    r = _check_replicates(replicates, s.size)
    v, alpha = _values(r, values), _alpha(level)
    adj = contrasts(r, v, *_adjacent(s.size))  # adj.diff[k] = v[k+1] - v[k]
    calls = []
    for k in range(1, s.size - 1):
        rise, fall = adj.diff[k - 1], -adj.diff[k]  # value[k] - value[k-1], value[k] - value[k+1]
        p = max(adj.p_adjusted[k - 1], adj.p_adjusted[k])
        if p >= alpha or np.sign(rise) != np.sign(fall) or rise == 0:
            continue
        kind = "peak" if rise > 0 else "trough"
        detail = (
            f"{kind} {_fmt(v[k])} at step {s[k]}: {_fmt(v[k - 1])} at step {s[k - 1]} "
            f"(difference {_fmt(rise)}, adjusted p={_fmt(adj.p_adjusted[k - 1])}) and {_fmt(v[k + 1])} at step "
            f"{s[k + 1]} (difference {_fmt(fall)}, adjusted p={_fmt(adj.p_adjusted[k])}); max-T bootstrap over "
            f"{s.size - 1} adjacent differences, level {level:g}"
        )
        statistic = float(min(abs(rise), abs(fall)))
        calls.append(Call(kind, int(s[k]), (int(s[k - 1]), int(s[k + 1])), statistic, float(p), detail))
    return calls


def _best(c: Contrasts, mask: np.ndarray) -> int | None:
    """Index of the most significant contrast among ``mask`` (largest |t|), or None."""
    idx = np.flatnonzero(mask)
    return None if idx.size == 0 else int(idx[np.argmax(np.abs(c.t[idx]))])


def monotonicity(
    steps: Sequence[int] | np.ndarray,
    replicates: np.ndarray,
    level: float = 0.95,
    values: Sequence[float] | np.ndarray | None = None,
) -> Call | None:
    """A "non_monotonic" call when some pair of steps rises and another falls significantly; else None.

    All pairs i < j are tested together (max-T), so a noisy monotone curve is not called non-monotonic more often
    than 1 - level. ``step`` is the turning point: the extreme value between the best rise and the best fall;
    ``between`` its neighbouring checkpoints; ``statistic`` the smaller |t| of the two; the detail names both pairs.
    """
    s = _check_steps(steps)
    r = _check_replicates(replicates, s.size)
    v, alpha = _values(r, values), _alpha(level)
    c = contrasts(r, v, *_all_pairs(s.size))
    up, down = _best(c, c.diff > 0), _best(c, c.diff < 0)
    if up is None or down is None:
        return None
    p = float(max(c.p_adjusted[up], c.p_adjusted[down]))
    if p >= alpha:
        return None
    lo = int(min(c.i[up], c.i[down]))
    hi = int(max(c.j[up], c.j[down]))
    # Rise first then fall: the turn is the maximum in between; fall first then rise: the minimum.
    segment = v[lo : hi + 1]
    turn = lo + int(np.argmax(segment) if c.i[up] <= c.i[down] else np.argmin(segment))
    detail = (
        f"rise {_fmt(c.diff[up])} from step {s[c.i[up]]} to {s[c.j[up]]} (adjusted p={_fmt(c.p_adjusted[up])}) and "
        f"fall {_fmt(c.diff[down])} from step {s[c.i[down]]} to {s[c.j[down]]} "
        f"(adjusted p={_fmt(c.p_adjusted[down])}); max-T bootstrap over all {c.diff.size} pairs of checkpoints, "
        f"level {level:g}"
    )
    statistic = float(min(abs(c.t[up]), abs(c.t[down])))
    between = (int(s[max(turn - 1, 0)]), int(s[min(turn + 1, s.size - 1)]))
    return Call("non_monotonic", int(s[turn]), between, statistic, p, detail)


def change_test(
    steps: Sequence[int] | np.ndarray, replicates: np.ndarray, values: Sequence[float] | np.ndarray | None = None
) -> float:
    """p-value of "the curve is flat": max-T over all pairs of checkpoints (the most significant pair's p)."""
    s = _check_steps(steps)
    r = _check_replicates(replicates, s.size)
    c = contrasts(r, _values(r, values), *_all_pairs(s.size))
    return float(c.p_adjusted.min())


# ------------------------------------------------------------------------------------------------------- jumps


def _largest_share(curves: np.ndarray) -> np.ndarray:
    """Per curve (columns of [n_steps, m]): largest |adjacent change| / (max - min). NaN for a constant curve."""
    jumps = np.abs(np.diff(curves, axis=0)).max(axis=0)
    span = curves.max(axis=0) - curves.min(axis=0)
    return np.divide(jumps, span, out=np.full(jumps.shape, np.nan), where=span > 0)


def _linear_fit(x: np.ndarray, v: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Weighted least squares line through (x, v), weights 1 / var: noisy checkpoints pull the trend less."""
    w = 1 / np.maximum(var, 1e-12 * max(float(var.max()), 1e-300))
    design = np.stack([np.ones_like(x), x], axis=1) * np.sqrt(w)[:, None]
    coef, *_ = np.linalg.lstsq(design, v * np.sqrt(w), rcond=None)
    return coef[0] + coef[1] * x


def largest_jump(
    steps: Sequence[int] | np.ndarray,
    replicates: np.ndarray,
    log_steps: bool = True,
    level: float = 0.95,
    values: Sequence[float] | np.ndarray | None = None,
) -> Call:
    """The largest |change| between adjacent checkpoints, with a sharp-vs-gradual test.

    ``statistic`` is the share S of the curve's range (max - min of the values) taken by that jump. ``p_value``
    compares S with the largest share on null curves "linear trend in x + bootstrap noise" (x = log1p(step) or step):
    the fraction of null curves whose largest share is at least S. The jump is "sharp" when that p-value and the
    jump's own max-T adjusted p-value (over the n - 1 adjacent differences) are both below 1 - level. The detail
    also gives the percentile interval of S over the replicates (jump fixed at the same checkpoints) and the share a
    linear trend would give that interval.
    """
    s = _check_steps(steps, log_steps)
    r = _check_replicates(replicates, s.size)
    return _jump_test(s, r, log_steps, level, _values(r, values))[0]


def _jump_test(s: np.ndarray, r: np.ndarray, log_steps: bool, level: float, v: np.ndarray) -> tuple[Call, bool]:
    """``largest_jump`` on checked inputs; also returns whether the jump is sharp."""
    alpha = _alpha(level)
    x = step_axis(s, log_steps)
    adj = contrasts(r, v, *_adjacent(s.size))
    k = int(np.argmax(np.abs(adj.diff)))
    share = float(_largest_share(v[:, None])[0])

    # Null: the fitted trend plus the estimation noise as the replicates show it (centred per step).
    noise = r - r.mean(axis=1, keepdims=True)
    null = _linear_fit(x, v, r.var(axis=1, ddof=1))[:, None] + noise
    null_share = _largest_share(null)
    null_share = null_share[np.isfinite(null_share)]
    p_sharp = float((1 + np.sum(null_share >= share)) / (null_share.size + 1)) if np.isfinite(share) else 1.0

    jump_reps = np.abs(r[k + 1] - r[k])
    span_reps = r.max(axis=0) - r.min(axis=0)
    share_reps = np.divide(jump_reps, span_reps, out=np.full(jump_reps.shape, np.nan), where=span_reps > 0)
    tail = alpha / 2
    share_lo, share_hi = np.nanquantile(share_reps, [tail, 1 - tail])
    linear_share = (x[k + 1] - x[k]) / (x[-1] - x[0])

    sharp = p_sharp < alpha and adj.p_adjusted[k] < alpha
    axis = "log(step + 1)" if log_steps else "step"
    detail = (
        f"{'sharp' if sharp else 'gradual'}: largest adjacent change {_fmt(adj.diff[k])} from step {s[k]} to "
        f"{s[k + 1]} (max-T adjusted p={_fmt(adj.p_adjusted[k])}) is {_fmt(100 * share)}% of the range "
        f"(bootstrap {level:g} CI [{_fmt(100 * share_lo)}, {_fmt(100 * share_hi)}]%); a linear trend in {axis} puts "
        f"{_fmt(100 * linear_share)}% there, and linear trend + noise reaches a largest share >= "
        f"{_fmt(100 * share)}% with p={_fmt(p_sharp)}"
    )
    return Call("jump", int(s[k + 1]), (int(s[k]), int(s[k + 1])), share, p_sharp, detail), bool(sharp)


# --------------------------------------------------------------------------------------------------- verdict

TEST_DESCRIPTION = (
    "No change if no pair of checkpoints differs significantly (max-T bootstrap over all pairs, family-wise level "
    "{level:g}); otherwise a phase transition at X if the largest adjacent change (ending at step X) is significant "
    "and takes a larger share of the curve's range than a linear trend in {axis} plus the bootstrap noise would give "
    "(p < {alpha:g}); otherwise gradual. Evidence also lists sign flips (simultaneous band), peaks/troughs and "
    "non-monotonicity found at the same level."
)


def classify_trajectory(
    steps: Sequence[int] | np.ndarray,
    replicates: np.ndarray,
    level: float = 0.95,
    log_steps: bool = True,
    values: Sequence[float] | np.ndarray | None = None,
) -> dict:
    """``{"verdict", "step", "change_p_value", "evidence", "test"}`` for one curve.

    verdict: "phase transition at step X" | "gradual" | "no change"; step: X or None; evidence: the calls (as dicts)
    from the tests above.
    """
    s = _check_steps(steps, log_steps)
    r = _check_replicates(replicates, s.size)
    alpha = _alpha(level)
    p_change = change_test(s, r, values)
    evidence: list[Call] = list(sign_flips_from_replicates(s, r, level, values))
    if s.size >= 3:
        evidence += interior_peaks(s, r, level, values)
        turn = monotonicity(s, r, level, values)
        evidence += [turn] if turn is not None else []
    verdict, step = "no change", None
    if p_change < alpha:
        jump, sharp = _jump_test(s, r, log_steps, level, _values(r, values))
        evidence.append(jump)
        verdict, step = (f"phase transition at step {jump.step}", jump.step) if sharp else ("gradual", None)
    axis = "log(step + 1)" if log_steps else "step"
    return {
        "verdict": verdict,
        "step": step,
        "change_p_value": p_change,
        "evidence": [c.to_dict() for c in evidence],
        "test": TEST_DESCRIPTION.format(level=level, axis=axis, alpha=alpha),
    }
