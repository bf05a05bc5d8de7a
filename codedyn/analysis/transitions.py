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
* ``jump_scan``: sharp or gradual? The share of the curve's range taken by its largest adjacent change is compared
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

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

KINDS = ("sign_flip", "peak", "trough", "non_monotonic", "jump", "unresolved")


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


# ------------------------------------------------------------------------------------------------ max-T contrasts


def _tail_bound(t: float, m: int, n_boot: int) -> float:
    """Bonferroni bound on P(max of m studentised |t| >= t) when each SD comes from ``n_boot`` replicates: m times
    the two-sided Student-t tail with n_boot - 1 degrees of freedom (Wallace's normal approximation of it)."""
    if not np.isfinite(t):
        return 0.0 if t > 0 else 1.0
    nu = n_boot - 1
    z = (8 * nu + 1) / (8 * nu + 3) * math.sqrt(nu * math.log1p(t * t / nu))
    return float(min(1.0, m * math.erfc(z / math.sqrt(2))))


def _tail_p(exceed: int, n_boot: int, t: float, m: int) -> float:
    """Bootstrap max-T p-value (1 + exceed) / (B + 1); when no null draw reached t, the tail bound instead (if
    smaller): a p-value below the bootstrap's resolution, which Holm over a whole verdict table needs. At every
    level >= 1 / (B + 1) it rejects exactly when the bootstrap p-value does."""
    p = (1 + exceed) / (n_boot + 1)
    return min(p, _tail_bound(t, m, n_boot)) if exceed == 0 else p


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
    exceed = (t_max[None, :] >= np.abs(t)[:, None]).sum(axis=1)
    p = np.array([_tail_p(int(e), n_boot, abs(float(x)), diff.size) for e, x in zip(exceed, t, strict=True)])
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
    return _monotonicity(s, r, _values(r, values), level)[1]


def _monotonicity(s: np.ndarray, r: np.ndarray, v: np.ndarray, level: float) -> tuple[float, Call | None]:
    """(p-value of "monotone", the non_monotonic Call when p < 1 - level) on checked inputs."""
    alpha = _alpha(level)
    c = contrasts(r, v, *_all_pairs(s.size))
    up, down = _best(c, c.diff > 0), _best(c, c.diff < 0)
    if up is None or down is None:
        return 1.0, None
    p = float(max(c.p_adjusted[up], c.p_adjusted[down]))
    if p >= alpha:
        return p, None
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
    return p, Call("non_monotonic", int(s[turn]), between, statistic, p, detail)


def change_test(
    steps: Sequence[int] | np.ndarray, replicates: np.ndarray, values: Sequence[float] | np.ndarray | None = None
) -> float:
    """p-value of "the curve is flat": max-T over all pairs of checkpoints (the most significant pair's p)."""
    s = _check_steps(steps)
    r = _check_replicates(replicates, s.size)
    c = contrasts(r, _values(r, values), *_all_pairs(s.size))
    return float(c.p_adjusted.min())


# ------------------------------------------------------------------------------------------------- change points

# The smooth part of a curve lives on u = log(step): a trend in log step, one in step itself (linear and
# exponential-in-step curves bend late on a log axis), and more shape (u^2, u^3, cubic spline knots) the longer the
# log range is: one extra column per KNOT_SPACING log units (a factor e^2.75 = 16 in step). So a smooth curve may
# bend once per ~4 doublings but cannot put a large change between two neighbouring checkpoints. The value was chosen
# on the planted-curve benchmark (benchmarks/bench_verdicts.py): more bends absorb real jumps on short schedules,
# fewer misfit exponentials on long ones.
KNOT_SPACING = 2.75
# The jump null is "no jump larger than this share of the curve's range (max - min of the values)": a significant
# but small jump on top of a smooth rise is a wiggle (or a misfit) of the smooth part, not a transition.
SHARP_SHARE = 0.15
# A change the schedule cannot resolve: more than this share of the range between two adjacent checkpoints that
# the jump test cannot separate from the smooth part (step 0 -> first checkpoint: infinitely long on a log axis).
UNRESOLVED_SHARE = 0.5
TEST_ID = "changepoint-scan"

VERDICT_KINDS = ("sharp", "gradual", "non_monotonic", "no_change", "unresolved")

TEST_DESCRIPTION = (
    "No change when no pair of checkpoints differs significantly (max-T bootstrap over all pairs). Otherwise the "
    "curve is fitted on u = log(step), weighted by the bootstrap variance, as a smooth part (a trend in log step "
    "and in step, plus one more bend per factor ~16 in step; step 0, infinitely far from step 1 on that axis, gets "
    "a free value of its own) plus a jump between two adjacent checkpoints. The jump's t statistic (its SD from the "
    "bootstrap replicates) is scanned over every interval with two checkpoints after step 0 on either side, and the "
    "jump's excess over 15% of the curve's range is "
    "compared with the largest |t| the bootstrap noise reaches over all intervals (below the bootstrap's "
    "resolution, a Bonferroni Student-t tail bound). \"Sharp transition within (a, b]\" when that p-value is below "
    "1 - level; else \"non-monotonic\" when some pair of checkpoints rises and another falls significantly; else "
    "\"change within (a, b], not resolved by this schedule\" when more than half the range changes significantly "
    "between two adjacent checkpoints (a jump inside and a smooth change across fit the data alike; always so from "
    "step 0 to the first checkpoint); else \"gradual\". The data only bracket a jump: (a, b] is all a verdict says "
    "about where. Effects are in the curve's units with bootstrap percentile intervals: the jump (sharp), the "
    "adjacent change (unresolved), last minus first (gradual), max minus min (non-monotonic). Over a study's "
    "verdict table, Holm's step-down procedure controls the family-wise error; a call that does not survive it is "
    "downgraded, and says so."
)


def verdict_text(kind: str, bracket: Sequence[int] | None = None) -> str:
    """The verdict sentence for a kind (and its bracket [a, b] for "sharp" and "unresolved")."""
    if kind not in VERDICT_KINDS:
        raise ValueError(f"unknown verdict kind {kind!r}; known: {', '.join(VERDICT_KINDS)}")
    if kind in ("sharp", "unresolved"):
        if bracket is None or len(bracket) != 2:
            raise ValueError(f"a {kind} verdict needs its bracket [a, b]")
        a, b = (int(x) for x in bracket)
        return f"sharp transition within ({a}, {b}]" if kind == "sharp" else (
            f"change within ({a}, {b}], not resolved by this schedule")
    return {"gradual": "gradual", "non_monotonic": "non-monotonic", "no_change": "no change"}[kind]


def smooth_basis(steps: Sequence[int] | np.ndarray) -> np.ndarray:
    """Columns [n_steps, p] spanning the smooth part of a curve over checkpoints (see KNOT_SPACING).

    Positive steps: 1, u, t, then u^2, u^3 and cubic truncated powers at knots equally spaced in u, one extra
    column per KNOT_SPACING of log range, u = log(step) and t = step, both rescaled to [0, 1]; at most
    (positive steps - 3) columns so the fit with a jump keeps two residual degrees of freedom. Step 0 gets an
    indicator column of its own: on a log axis it is infinitely far from step 1, so no smoothness links it to
    the rest.
    """
    s = _check_steps(steps, log_steps=True)
    pos = s > 0
    n_pos = int(pos.sum())
    cols: list[np.ndarray] = []
    if not pos.all():
        cols.append((~pos).astype(float))
    shape = [pos.astype(float)]
    if n_pos >= 2:
        def scaled(a: np.ndarray) -> np.ndarray:
            out = np.zeros(s.size)
            out[pos] = (a - a.min()) / (a.max() - a.min())
            return out

        log_s = np.log(s[pos].astype(float))
        u, t = scaled(log_s), scaled(s[pos].astype(float))
        extra = int((log_s[-1] - log_s[0]) // KNOT_SPACING)
        knots = np.linspace(0, 1, max(extra - 2, 0) + 2)[1:-1]
        bends = [u**2, u**3] + [np.where(pos, np.clip(u - k, 0, None) ** 3, 0.0) for k in knots]
        shape += [u, t] + bends[:extra]
    cols += shape[: max(1, n_pos - 3)]
    return np.stack(cols, axis=1)


@dataclass(frozen=True)
class JumpScan:
    """The change-point scan of one curve: the best jump interval and its statistics."""

    index: int | None  # k: the jump lies in (steps[k], steps[k+1]]; None when no interval is testable
    jump: float  # fitted jump on top of the smooth part (curve units)
    low: float  # bootstrap percentile interval of the jump (same k)
    high: float
    t: float  # jump / its bootstrap SD
    p_value: float  # of the largest |t| over the testable intervals
    share: float  # |jump| / (max - min of the values)
    testable: np.ndarray  # bool per interval: the jump there can be told apart from the smooth part


def _sd_weights(r: np.ndarray) -> np.ndarray:
    """1 / bootstrap SD per step; a noise-free step gets the largest weight the others have, not infinity."""
    sd = r.std(axis=1, ddof=1)
    if not np.any(sd > 0):
        return np.ones(sd.size)
    return 1 / np.maximum(sd, 1e-6 * sd.max())


def jump_scan(
    steps: Sequence[int] | np.ndarray,
    replicates: np.ndarray,
    level: float = 0.95,
    values: Sequence[float] | np.ndarray | None = None,
    margin: float | None = None,
) -> JumpScan:
    """Scan every interval between adjacent checkpoints for a jump on top of the smooth part (``smooth_basis``).

    For the jump column h_k (1 after checkpoint k), weighted least squares of the values on [smooth, h_k] gives
    the jump J_k (Frisch-Waugh: a fixed linear functional c_k of the values), so J_k on every bootstrap replicate
    is c_k applied to it, and its SD is the bootstrap SD (correlation between steps included). The smooth part is
    projected out exactly, so the null of "smooth curve + noise" is the maximum of |c_k noise_b| / sd_k over the
    centred replicates: p = (1 + #{T_b >= T}) / (B + 1); when no null draw reaches T, a Bonferroni Student-t tail
    bound below 1 / (B + 1) (which family-wise control over a whole verdict table needs), see ``_tail_p``.
    """
    s = _check_steps(steps, log_steps=True)
    r = _check_replicates(replicates, s.size)
    v = _values(r, values)
    alpha = _alpha(level)
    margin = SHARP_SHARE if margin is None else margin
    n = s.size
    basis = smooth_basis(s)
    w = _sd_weights(r)
    u_mat, sing, _ = np.linalg.svd(basis * w[:, None], full_matrices=False)
    u_mat = u_mat[:, sing > 1e-10 * sing.max()]
    h = (np.arange(n)[:, None] > np.arange(n - 1)[None, :]).astype(float) * w[:, None]  # [n, n-1]
    z = h - u_mat @ (u_mat.T @ h)
    zz = (z**2).sum(axis=0)
    # Testable: the jump column is not (nearly) in the smooth span, the smooth part has at least a trend, and two
    # checkpoints after step 0 lie on either side: with one, a jump and a smooth change there fit alike.
    k = np.arange(n - 1)
    before = np.cumsum(s > 0)[:-1]  # positive checkpoints at or before k
    testable = (zz > 1e-8 * (h**2).sum(axis=0)) & (int((s > 0).sum()) >= 5) & (before >= 2) & (n - 1 - k >= 2)
    span = float(v.max() - v.min())
    if not testable.any():
        return JumpScan(None, math.nan, math.nan, math.nan, math.nan, 1.0, math.nan, testable)
    c = z[:, testable] * w[:, None] / zz[testable]  # [n, K]: J_k = c_k . values
    jump = c.T @ v
    noise = c.T @ (r - r.mean(axis=1, keepdims=True))  # [K, B]
    sd = noise.std(axis=1, ddof=1)
    sd = np.where(sd > 0, sd, np.inf)  # a deterministic jump of zero spread: t = 0, never evidence
    t = jump / sd
    # The null is "no jump larger than margin x range anywhere": the excess |J_k| - margin x range, studentised.
    # The jump is located where its t is largest; its excess there is compared with the noise maximum over all
    # intervals (the excess at the located interval is at most the largest excess: conservative).
    best = int(np.argmax(np.abs(t)))
    t_obs = float((abs(jump[best]) - margin * span) / sd[best])
    null_max = (np.abs(noise) / sd[:, None]).max(axis=0)
    p = _tail_p(int(np.sum(null_max >= t_obs)), null_max.size, t_obs, int(testable.sum())) if t_obs > 0 else 1.0
    lo, hi = np.quantile(noise[best], [alpha / 2, 1 - alpha / 2])
    index = int(np.flatnonzero(testable)[best])
    share = abs(float(jump[best])) / span if span > 0 else math.nan
    return JumpScan(index, float(jump[best]), float(jump[best] + lo), float(jump[best] + hi), float(t[best]),
                    float(p), share, testable)


def _jump_call(s: np.ndarray, scan: JumpScan, level: float) -> Call | None:
    if scan.index is None:
        return None
    a, b = int(s[scan.index]), int(s[scan.index + 1])
    detail = (
        f"largest jump on top of the smooth part: {_fmt(scan.jump)} within ({a}, {b}] (bootstrap {level:g} CI "
        f"[{_fmt(scan.low)}, {_fmt(scan.high)}], {_fmt(100 * scan.share)}% of the range, t={_fmt(scan.t)}); "
        f"scan over {int(scan.testable.sum())} intervals, p={_fmt(scan.p_value)}"
    )
    return Call("jump", b, (a, b), scan.share, scan.p_value, detail)


# --------------------------------------------------------------------------------------------------- verdict


def _effect(v: np.ndarray, r: np.ndarray, i: int, j: int, alpha: float) -> tuple[float, float, float]:
    """``v[j] - v[i]`` with its bootstrap percentile interval (replicates centred on the estimate)."""
    d = r[j] - r[i]
    lo, hi = np.quantile(d - d.mean(), [alpha / 2, 1 - alpha / 2])
    est = float(v[j] - v[i])
    return est, est + float(lo), est + float(hi)


def classify_trajectory(
    steps: Sequence[int] | np.ndarray,
    replicates: np.ndarray,
    level: float = 0.95,
    values: Sequence[float] | np.ndarray | None = None,
) -> dict:
    """The verdict on one curve over checkpoints (rules: ``TEST_DESCRIPTION``), a JSON-able dict.

    Keys: ``kind`` (one of VERDICT_KINDS); ``verdict`` ("sharp transition within (a, b]" | "gradual" |
    "non-monotonic" | "no change" | "change within (a, b], not resolved by this schedule"); ``bracket`` [a, b] or
    None; ``effect``, ``effect_low``, ``effect_high`` (jump, adjacent change or total change, see the
    description); ``p_value`` (the deciding test: jump scan, non-monotonicity, adjacent change, or the change
    test for gradual / no change); ``change_p_value`` (is the curve flat?); ``p_adjusted`` (None here, see
    ``adjust_verdicts``); ``candidates`` (for every kind a test could give this curve, its raw p-value, bracket
    and effect: what ``adjust_verdicts`` needs to test every curve for every kind, and to report a downgrade);
    ``evidence`` (the calls, as dicts); ``test`` (TEST_ID).
    """
    s = _check_steps(steps, log_steps=True)
    r = _check_replicates(replicates, s.size)
    v, alpha = _values(r, values), _alpha(level)
    p_change = change_test(s, r, v)
    evidence: list[Call] = list(sign_flips_from_replicates(s, r, level, v))
    p_turn, turn = 1.0, None
    if s.size >= 3:
        evidence += interior_peaks(s, r, level, v)
        p_turn, turn = _monotonicity(s, r, v, level)
        evidence += [turn] if turn is not None else []

    def candidate(p: float, bracket: list[int] | None, effect: tuple[float, float, float]) -> dict:
        return {"p_value": float(p), "bracket": bracket, "effect": effect[0], "effect_low": effect[1],
                "effect_high": effect[2]}

    candidates = {"gradual": candidate(p_change, None, _effect(v, r, 0, s.size - 1, alpha)),
                  "non_monotonic": candidate(p_turn, None, _effect(v, r, int(np.argmin(v)), int(np.argmax(v)),
                                                                   alpha))}
    adj = contrasts(r, v, *_adjacent(s.size))
    span = float(v.max() - v.min())
    shares = np.abs(adj.diff) / span if span > 0 else np.zeros(adj.diff.size)
    scan = jump_scan(s, r, level, v) if p_change < alpha else None
    jump = _jump_call(s, scan, level) if scan is not None else None
    if jump is not None and np.sign(adj.diff[scan.index]) == np.sign(scan.jump):
        candidates["sharp"] = candidate(scan.p_value, list(jump.between), (scan.jump, scan.low, scan.high))
    sharp = "sharp" in candidates and scan.p_value < alpha
    # Unresolved: most of the change between two adjacent checkpoints (significantly) and no sharp call there, so
    # the data fit a jump inside as well as a smooth change across it.
    top = int(np.argmax(shares))
    if shares[top] > UNRESOLVED_SHARE:
        candidates["unresolved"] = candidate(adj.p_adjusted[top], [int(s[top]), int(s[top + 1])],
                                             _effect(v, r, top, top + 1, alpha))
    for k in np.flatnonzero((shares > UNRESOLVED_SHARE) & (adj.p_adjusted < alpha)):
        if sharp and k == scan.index:
            continue
        a, b = int(s[k]), int(s[k + 1])
        why = ("the smooth part cannot be told apart from a jump there" if scan is None or not scan.testable[k]
               else "the jump test does not separate a jump inside from a smooth change across it")
        detail = (f"{_fmt(100 * shares[k])}% of the range changes within ({a}, {b}] ({_fmt(adj.diff[k])}, max-T "
                  f"adjusted p={_fmt(adj.p_adjusted[k])}) with no checkpoint inside; {why}")
        evidence.append(Call("unresolved", b, (a, b), float(shares[k]), float(adj.p_adjusted[k]), detail))
    if jump is not None:
        evidence.append(jump)

    out = {"change_p_value": p_change, "p_adjusted": None, "candidates": candidates,
           "evidence": [c.to_dict() for c in evidence], "test": TEST_ID}
    significant = {k: c["p_value"] < alpha for k, c in candidates.items()}
    return {**_choose(candidates, significant, p_change < alpha), **out}


KIND_ORDER = ("sharp", "non_monotonic", "unresolved", "gradual")


def _choose(candidates: Mapping[str, dict], significant: Mapping[str, bool], changes: bool) -> dict:
    """The verdict fields of the first significant kind in KIND_ORDER (no change when the curve is flat)."""
    kind = next((k for k in KIND_ORDER if changes and significant.get(k)), "no_change")
    c = candidates["gradual" if kind == "no_change" else kind]
    return {"kind": kind, "verdict": verdict_text(kind, c["bracket"]), "bracket": c["bracket"],
            "effect": c["effect"], "effect_low": c["effect_low"], "effect_high": c["effect_high"],
            "p_value": c["p_value"]}


# --------------------------------------------------------------------------------------------- verdict tables


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control under any dependence)."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def adjust_verdicts(calls: Mapping[str, dict], level: float = 0.95) -> dict[str, dict]:
    """Family-wise control over a whole verdict table: every curve is tested for every kind, so Holm runs once per
    kind over all curves' raw p-values for it (``candidates``; a kind a curve had no candidate for counts as p = 1),
    and once over the change p-values. Each curve then gets the first kind, in the order sharp, non-monotonic,
    unresolved, gradual, whose adjusted p-value and adjusted change p-value are below 1 - level; else no change. In
    a table of flat curves no call survives more often than 1 - level, and in a table of smooth curves no "sharp"
    does (up to the calibration of each test). A downgraded call says so in ``fwer``; ``p_adjusted`` is the Holm
    p-value of its kind. Entries without ``kind`` and ``candidates`` (not classify_trajectory output, or a curve too
    short to test) pass through unchanged and do not count. Returns new dicts.
    """
    alpha = _alpha(level)
    names = [k for k, c in calls.items() if isinstance(c, dict) and c.get("kind") in VERDICT_KINDS
             and isinstance(c.get("candidates"), dict) and c.get("change_p_value") is not None]
    out = {k: dict(c) for k, c in calls.items()}
    if not names:
        return out
    adjusted = {kind: holm([calls[n]["candidates"].get(kind, {}).get("p_value", 1.0) for n in names])
                for kind in KIND_ORDER}
    p_change = holm([calls[n]["change_p_value"] for n in names])
    method = f"Holm over {len(names)} curves per kind, family-wise level {level:g}"
    for i, name in enumerate(names):
        call = out[name]
        # A sharp call that does not survive may become "unresolved" on its own bracket: a large change there
        # that the table-wide test no longer resolves.
        significant = {k: adjusted[k][i] < alpha for k in KIND_ORDER if k in call["candidates"]}
        was_kind, was = call["kind"], call["verdict"]
        call.update(_choose(call["candidates"], significant, p_change[i] < alpha))
        kind = call["kind"]
        call["p_adjusted"] = float(p_change[i] if kind in ("gradual", "no_change") else adjusted[kind][i])
        call["fwer"] = method
        if kind != was_kind:
            raw_p = p_change[i] if was_kind in ("gradual", "no_change") else adjusted[was_kind][i]
            call["fwer"] = f'{method}: "{was}" did not survive (adjusted p={_fmt(raw_p)})'
    return out
