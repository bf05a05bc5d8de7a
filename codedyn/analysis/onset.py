"""The yardstick: one onset test for the behaviour and every signal, co-movement with the behaviour, and the
relation of each signal's onset to the behavioural emergence.

Every curve is a sequence of checkpoint values with bootstrap replicates ``[n_steps, n_boot]`` (the noise of each
value). Its **baseline** is the checkpoints at or before the data onset (for the model organism: trained on no
planted program; for a study without a known onset: the first checkpoint). Its **change** at a later checkpoint k
is ``d_k = v_k - mean(v_baseline)``, with replicates ``R[k] - mean(R[baseline])``, so replicates that are paired
over checkpoints (the same resampled units everywhere) keep their covariance and independent ones add variances.

**The onset test.** At each post-baseline checkpoint, H0: |change| <= m (the curve's equivalence margin, in its
own units; 0 where none is calibrated) against |change| > m, studentised by the replicates' standard deviation
(a normal approximation: p = 2 Φ(-(|d_k| - m) / se_k), capped at 1). One family per study: Holm over every
(curve, checkpoint) test of every curve handed in (:func:`onset_family`), so the behaviour, the probe curves and
every signal are judged at one family-wise level. A curve's **onset** is its earliest checkpoint whose adjusted p
is below alpha; its bracket ``(a, b]`` runs from the checkpoint before it (the last one the test does not tell
from the baseline) to it. The behavioural emergence is this test on the verdict contrast.

**No onset** says which: *flat* when an equivalence test passes, else *not detected* (the intervals reach beyond
the margin: the data cannot tell a change of the margin's size from none). The equivalence test is an
intersection-union test of the post-baseline checkpoints: the curve is flat when at every one of them the one-sided
test of |change| >= m rejects at level alpha (``|d_k| + z_(1-alpha) se_k < m``), which controls the error of a
false "flat" at alpha without a multiplicity correction (every checkpoint must pass). Without a margin a curve
cannot be shown flat.

**Relation** to the behavioural emergence, in checkpoints: leads by k, coincides, lags by k (:func:`relation`).

**Co-movement** (:func:`comovement`): the Spearman rank correlation between a signal and the behaviour over the
last baseline checkpoint and every later one, with a percentile interval over index-matched replicates. On the
null twin the same number is computed against the organism's behaviour: a signal that moves with training time
rather than with correctness correlates there too.

Calibration on planted curves with the organism's schedule: ``benchmarks/bench_onset.py`` (BENCHMARKS.md, "The
onset test"); a fast version is in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from codedyn.analysis.transitions import holm

ALPHA = 0.05  # family-wise error rate of every onset family
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Curve:
    """One curve over checkpoints: ``values[k]`` at ``steps[k]`` with bootstrap replicates ``[n_steps, n_boot]``."""

    name: str
    steps: tuple[int, ...]
    values: np.ndarray
    replicates: np.ndarray
    margin: float = 0.0  # equivalence margin in the curve's units (0: none calibrated)
    units: str = ""  # what the values measure, for the table ("nats", "AUROC", ...)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=float)
        reps = np.asarray(self.replicates, dtype=float)
        if values.ndim != 1 or values.size != len(self.steps):
            raise ValueError(f"curve {self.name!r}: one value per checkpoint is needed ({len(self.steps)} steps, "
                             f"{values.size} values)")
        if reps.ndim != 2 or reps.shape[0] != values.size or reps.shape[1] < 2:
            raise ValueError(f"curve {self.name!r}: replicates must be [n_steps, n_boot >= 2], got {reps.shape}")
        if list(self.steps) != sorted(set(self.steps)):
            raise ValueError(f"curve {self.name!r}: steps must be strictly increasing, got {list(self.steps)}")
        if not (np.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"curve {self.name!r}: the margin must be a finite number >= 0, got {self.margin}")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "replicates", reps)


@dataclass(frozen=True)
class Changes:
    """A curve's change from its baseline at every post-baseline checkpoint."""

    baseline: tuple[int, ...]  # the baseline checkpoints' steps
    steps: tuple[int, ...]  # the post-baseline checkpoints' steps
    change: np.ndarray  # [M] point change
    se: np.ndarray  # [M] bootstrap standard deviation of the change
    replicates: np.ndarray  # [M, n_boot]
    p_values: np.ndarray  # [M] raw p-values of |change| > margin


@dataclass
class OnsetCall:
    """The onset call of one curve within its family."""

    name: str
    kind: str  # "onset", "flat", "not_detected", "untestable"
    verdict: str  # one sentence
    bracket: list[int] | None = None  # (a, b]: departs after checkpoint a, by checkpoint b
    onset_index: int | None = None  # position of b in the curve's steps
    direction: int = 0  # sign of the change at the onset
    change: float | None = None  # the change at the onset (or the largest |change| when none)
    change_low: float | None = None  # its two-sided 1 - alpha interval
    change_high: float | None = None
    p_adjusted: float | None = None  # smallest family-wise adjusted p over the curve's checkpoints
    margin: float = 0.0
    reach: float | None = None  # largest one-sided 1 - alpha bound of |change| (the equivalence test's number)
    baseline: list[int] = field(default_factory=list)
    family: str = ""  # the family, in words
    noise: float | None = None  # smallest one-sided bound width z·SE over the post-baseline checkpoints

    @property
    def resolves(self) -> bool | None:
        """Whether the curve's noise is below its margin at its quietest checkpoint: when it is not, no checkpoint
        can be shown inside the margin nor a change just past it told from noise (None without a margin or a noise
        figure). The smallest, not a typical, width: a capability's own curve is noisier where it has grown."""
        if self.noise is None or not self.margin:
            return None
        return self.noise < self.margin

    def to_dict(self) -> dict:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self.__dict__.items()}


def baseline_indices(steps: Sequence[int], onset: int | None) -> np.ndarray:
    """Checkpoints at or before the data onset (steps <= onset); the first checkpoint alone without one. A
    schedule with no checkpoint after the onset has nothing to test and raises."""
    steps = np.asarray(steps)
    base = np.flatnonzero(steps <= onset) if onset is not None else np.array([0])
    if base.size == 0:
        base = np.array([0])
    if base[-1] == steps.size - 1:
        raise ValueError(f"no checkpoint after the baseline (onset {onset}, steps {list(steps)}): nothing to test")
    return base


def changes(curve: Curve, onset: int | None) -> Changes:
    """The change of ``curve`` from its baseline at every later checkpoint, with its replicates and raw p-values."""
    base = baseline_indices(curve.steps, onset)
    after = np.arange(base[-1] + 1, len(curve.steps))
    reps = curve.replicates[after] - curve.replicates[base].mean(axis=0)
    change = curve.values[after] - curve.values[base].mean()
    with np.errstate(invalid="ignore"):
        se = np.nanstd(reps, axis=1, ddof=1)
    excess = np.abs(change) - curve.margin
    p = np.ones(after.size)
    for k in range(after.size):
        if not np.isfinite(change[k]) or not np.isfinite(se[k]):
            continue
        if se[k] == 0:
            p[k] = 0.0 if excess[k] > 0 else 1.0
        else:
            p[k] = min(1.0, 2 * _NORMAL.cdf(-excess[k] / se[k]))
    return Changes(tuple(int(curve.steps[i]) for i in base), tuple(int(curve.steps[i]) for i in after),
                   change, se, reps, p)


def onset_family(curves: Sequence[Curve], onset: int | None, alpha: float = ALPHA) -> dict[str, OnsetCall]:
    """The onset call of every curve, Holm-adjusted over every (curve, post-baseline checkpoint) of the family.

    ``onset``: the data onset step (the baseline's last step), or None for a study without one (baseline: the
    first checkpoint). Curve names must be distinct."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    names = [c.name for c in curves]
    if len(set(names)) != len(names):
        raise ValueError("onset_family needs distinct curve names")
    found = {c.name: changes(c, onset) for c in curves}
    flat_p = np.concatenate([found[c.name].p_values for c in curves]) if curves else np.array([])
    adjusted = holm(flat_p)
    tests = flat_p.size
    family = f"Holm over {tests} (curve, checkpoint) tests of {len(curves)} curves, family-wise level {alpha:g}"
    calls, start = {}, 0
    for curve in curves:
        ch = found[curve.name]
        adj = adjusted[start:start + ch.p_values.size]
        start += ch.p_values.size
        calls[curve.name] = _call(curve, ch, adj, alpha, family)
    return calls


def _interval(change: float, se: float, z: float) -> tuple[float, float]:
    return change - z * se, change + z * se


def _call(curve: Curve, ch: Changes, adjusted: np.ndarray, alpha: float, family: str) -> OnsetCall:
    finite_se = ch.se[np.isfinite(ch.se)]
    common = {"name": curve.name, "margin": float(curve.margin), "baseline": list(ch.baseline), "family": family,
              "p_adjusted": float(adjusted.min()) if adjusted.size else None,
              "noise": float(_NORMAL.inv_cdf(1 - alpha) * finite_se.min()) if finite_se.size else None}
    if not np.all(np.isfinite(ch.change)) or not np.all(np.isfinite(ch.se)):
        return OnsetCall(kind="untestable", verdict="not tested: a checkpoint has no finite value or interval",
                         **common)
    hits = np.flatnonzero(adjusted < alpha)
    z1 = _NORMAL.inv_cdf(1 - alpha / 2)
    if hits.size:
        k = int(hits[0])
        index = len(ch.baseline) + k
        before = int(curve.steps[index - 1])
        low, high = _interval(float(ch.change[k]), float(ch.se[k]), z1)
        direction = 1 if ch.change[k] > 0 else -1
        word = "rises" if direction > 0 else "falls"
        beyond = f" by more than its margin ±{curve.margin:.3g}" if curve.margin > 0 else ""
        return OnsetCall(kind="onset", bracket=[before, ch.steps[k]], onset_index=index, direction=direction,
                         change=float(ch.change[k]), change_low=low, change_high=high,
                         verdict=f"{word} from its baseline{beyond} within ({before}, {ch.steps[k]}]", **common)
    reach = float(np.max(np.abs(ch.change) + _NORMAL.inv_cdf(1 - alpha) * ch.se))  # the equivalence test's bound
    largest = int(np.argmax(np.abs(ch.change)))
    low, high = _interval(float(ch.change[largest]), float(ch.se[largest]), z1)
    common.update(change=float(ch.change[largest]), change_low=low, change_high=high, reach=reach)
    if curve.margin > 0 and reach < curve.margin:
        return OnsetCall(kind="flat", verdict=f"flat: every change within ±{curve.margin:.3g} (intervals reach "
                         f"±{reach:.3g})", **common)
    why = (f"intervals reach ±{reach:.3g}, beyond the margin ±{curve.margin:.3g}" if curve.margin > 0
           else f"intervals reach ±{reach:.3g}; no equivalence margin calibrated, so it cannot be shown flat")
    return OnsetCall(kind="not_detected", verdict=f"no onset detected ({why})", **common)


def relation(signal: OnsetCall, emergence: OnsetCall | None, steps: Sequence[int]) -> str:
    """How a signal's onset relates to the behavioural emergence, in checkpoints of the run's schedule ``steps``
    (curves may skip checkpoints: the LLC has none where the checkpoint is no local minimum): "leads by k",
    "coincides", "lags by k"; or why there is nothing to relate."""
    if emergence is None or emergence.bracket is None:
        return "no behavioural emergence to compare with"
    if signal.bracket is None:
        return {"flat": "does not find the emergence: flat", "not_detected":
                "does not find the emergence: not detected"}.get(signal.kind, "not tested")
    order = [int(s) for s in steps]
    gap = order.index(int(emergence.bracket[1])) - order.index(int(signal.bracket[1]))
    if gap == 0:
        return "coincides with the emergence"
    unit = "checkpoint" if abs(gap) == 1 else "checkpoints"
    return f"leads the emergence by {gap} {unit}" if gap > 0 else f"lags the emergence by {-gap} {unit}"


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank)."""
    order = np.argsort(x, axis=-1, kind="stable")
    ranks = np.empty_like(x, dtype=float)
    np.put_along_axis(ranks, order, np.arange(x.shape[-1], dtype=float) * np.ones_like(x), axis=-1)
    # ties: replace by the mean rank of equal values (rare for continuous estimates; exact for constant curves)
    for idx in np.ndindex(x.shape[:-1]):
        row = x[idx]
        if np.unique(row).size < row.size:
            _, inverse = np.unique(row, return_inverse=True)
            sums = np.bincount(inverse, weights=ranks[idx])
            counts = np.bincount(inverse)
            ranks[idx] = (sums / counts)[inverse]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of x and y along the last axis (NaN where either is constant)."""
    rx, ry = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=-1) / np.sqrt((rx ** 2).sum(axis=-1) * (ry ** 2).sum(axis=-1))


@dataclass(frozen=True)
class Comovement:
    """How closely a signal follows the behaviour after the data onset."""

    rho: float
    low: float
    high: float
    n_checkpoints: int

    @property
    def tracks(self) -> int:
        """+1 when the interval lies above 0 (follows), -1 below (mirrors), 0 when it covers 0."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def text(self) -> str:
        return f"ρ = {self.rho:.2f} [{self.low:.2f}, {self.high:.2f}]"


def comovement(signal: Curve, behaviour: Curve, onset: int | None, level: float = 0.95) -> Comovement | None:
    """Spearman ρ between ``signal`` and ``behaviour`` over their shared checkpoints from the last baseline one on,
    with a percentile interval over index-matched replicates; None when fewer than three such checkpoints exist."""
    shared = sorted(set(signal.steps) & set(behaviour.steps))
    if not shared:
        return None
    base = baseline_indices(shared, onset) if shared[-1] > (onset if onset is not None else shared[0]) else None
    if base is None:
        return None
    keep = shared[int(base[-1]):]
    if len(keep) < 3:
        return None
    mine = [list(signal.steps).index(s) for s in keep]
    theirs = [list(behaviour.steps).index(s) for s in keep]
    n = min(signal.replicates.shape[1], behaviour.replicates.shape[1])
    rho = float(spearman(signal.values[mine], behaviour.values[theirs]))
    reps = spearman(signal.replicates[mine, :n].T, behaviour.replicates[theirs, :n].T)
    reps = reps[np.isfinite(reps)]
    if not np.isfinite(rho) or reps.size < 2:
        return None
    low, high = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return Comovement(rho, float(low), float(high), len(keep))
