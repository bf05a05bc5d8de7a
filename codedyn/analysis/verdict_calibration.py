"""Planted curves on real checkpoint schedules, to calibrate :func:`~codedyn.analysis.transitions.classify_trajectory`.

Every curve is planted in units of its own range (0 at the first checkpoint, 1 at the last for a monotone rise;
half of them are mirrored to fall) and measured like a real run measures one: at each checkpoint an estimate
``truth + sd e`` and ``B`` bootstrap replicates ``estimate + sd e_b`` (independent posteriors per checkpoint), with
``sd = noise x range`` scaled per checkpoint by a factor in [0.5, 1.5] (real bootstrap widths differ by step).

* Smooth curves: exponential ``1 - exp(-s / tau)``, power law ``1 - (1 + s / s0)^-a``, log-linear ``log(1 + s / s0)``
  and linear ``s``, with tau / s0 spread log-uniformly over the schedule's range. A smooth curve is *resolved* by a
  schedule when no interval between adjacent checkpoints holds more than half of its change; only resolved ones
  count for the false-"sharp" rate (the others should come out "unresolved" or "gradual").
* Jumps: a step of ``jump`` (share of the range) at a point inside one interval (both neighbours of it measured:
  at least two checkpoints either side, never the interval from step 0) plus ``1 - jump`` of a smooth curve.

``calibration_table`` runs the verdicts over schedules x noise levels and returns the rates the benchmark and the
test check: false sharp, power, bracket coverage; ``table_fwer`` the family-wise error of ``adjust_verdicts`` on
tables of flat (or smooth) curves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from codedyn.analysis.transitions import adjust_verdicts, classify_trajectory

SCHEDULES: dict[str, tuple[int, ...]] = {
    # The toy suite's default checkpoints (config.SuiteConfig.steps) and the 7-step list the issue measured on.
    "toy default": (0, 500, 2000, 4000, 5000, 5500, 6000, 7000),
    "toy 7-step": (0, 1000, 3000, 5000, 5500, 6000, 7000),
    # presets/pythia-*.yaml: 9 revisions.
    "pythia preset": (1000, 2000, 4000, 8000, 16000, 32000, 64000, 100000, 143000),
    # Pythia's log-spaced list: 1, 2, 4, ..., 512, then 1000, 2000, ..., 64000, 100000, 143000.
    "19-checkpoint": (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 100000,
                      143000),
    # The toy default after `codedyn refine`-style densification with the toy suite's saved steps (powers of
    # two and every 500).
    "toy refined": (0, 16, 64, 256, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000, 5500, 6000, 6500,
                    7000),
}
NOISE_LEVELS = (0.02, 0.04, 0.08)
SMOOTH_FAMILIES = ("exponential", "power-law", "log-linear", "linear")
JUMP_SIZES = (0.5, 0.7, 0.9)


def _scale_grid(steps: np.ndarray, rng: np.random.Generator) -> float:
    """A time scale log-uniform between the first positive checkpoint / 2 and twice the last."""
    lo, hi = max(float(steps[steps > 0].min()), 1.0) / 2, 2.0 * float(steps.max())
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def smooth_curve(family: str, steps: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """One smooth monotone curve of ``family`` at ``steps``, rescaled to 0 at the first step and 1 at the last."""
    s = np.asarray(steps, dtype=float)
    scale = _scale_grid(s, rng)
    if family == "exponential":
        f = 1 - np.exp(-s / scale)
    elif family == "power-law":
        f = 1 - (1 + s / scale) ** -rng.uniform(0.3, 1.0)
    elif family == "log-linear":
        f = np.log1p(s / scale)
    elif family == "linear":
        f = s.copy()
    else:
        raise ValueError(f"unknown smooth family {family!r}; known: {', '.join(SMOOTH_FAMILIES)}")
    return (f - f[0]) / (f[-1] - f[0])


def max_share(truth: np.ndarray) -> float:
    """Largest share of the curve's range taken by one interval between adjacent checkpoints."""
    return float(np.abs(np.diff(truth)).max() / (truth.max() - truth.min()))


def jump_intervals(steps: Sequence[int]) -> list[int]:
    """Intervals k (between checkpoints k and k+1) a jump is planted in: two checkpoints after step 0 either side."""
    s = np.asarray(steps)
    positive = np.flatnonzero(s > 0)
    return [k for k in range(s.size - 1) if np.sum(positive <= k) >= 2 and s.size - 1 - k >= 2]


def jump_curve(steps: Sequence[int], k: int, jump: float, rng: np.random.Generator) -> np.ndarray:
    """``jump`` x a step inside (steps[k], steps[k+1]] plus (1 - jump) x a random smooth curve."""
    s = np.asarray(steps, dtype=float)
    at = rng.uniform(s[k], s[k + 1])
    smooth = smooth_curve(SMOOTH_FAMILIES[rng.integers(len(SMOOTH_FAMILIES))], steps, rng)
    return jump * (s >= at) + (1 - jump) * smooth


def measured(truth: np.ndarray, noise: float, n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(estimates, replicates [n_steps, n_boot]) of a planted curve at ``noise`` x its range (per-step factor)."""
    sd = noise * (truth.max() - truth.min() if truth.max() > truth.min() else 1.0) * rng.uniform(0.5, 1.5,
                                                                                                 truth.size)
    values = truth + sd * rng.standard_normal(truth.size)
    return values, values[:, None] + sd[:, None] * rng.standard_normal((truth.size, n_boot))


@dataclass(frozen=True)
class Cell:
    """Rates on one schedule at one noise level (counts, so the reader can judge the binomial error)."""

    schedule: str
    noise: float
    smooth_n: int  # resolved smooth curves
    false_sharp: int
    smooth_gradual: int  # of those called gradual
    unresolved_smooth_n: int  # smooth curves with > half their change in one interval
    unresolved_called_sharp: int
    jump_n: int  # planted jumps that meet the power condition (>= 3 x the interval's half-width)
    detected: int
    bracket_hits: int  # of the detected, bracket contains the planted jump

    def rates(self) -> dict[str, float]:
        def rate(a: int, b: int) -> float:
            return a / b if b else float("nan")

        return {"false_sharp": rate(self.false_sharp, self.smooth_n), "power": rate(self.detected, self.jump_n),
                "coverage": rate(self.bracket_hits, self.detected)}


def _flip(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return truth if rng.random() < 0.5 else 1 - truth


def calibrate_cell(name: str, steps: Sequence[int], noise: float, n_curves: int, n_boot: int, seed: int) -> Cell:
    """``n_curves`` smooth curves (families in turn) and ``n_curves`` jumps (sizes in turn) through the verdicts."""
    rng = np.random.default_rng(seed)
    s = np.asarray(steps)
    smooth_n = false_sharp = gradual = unres_n = unres_sharp = 0
    for i in range(n_curves):
        truth = _flip(smooth_curve(SMOOTH_FAMILIES[i % len(SMOOTH_FAMILIES)], s, rng), rng)
        values, reps = measured(truth, noise, n_boot, rng)
        kind = classify_trajectory(s, reps, values=values)["kind"]
        if max_share(truth) <= 0.5:
            smooth_n += 1
            false_sharp += kind == "sharp"
            gradual += kind == "gradual"
        else:
            unres_n += 1
            unres_sharp += kind == "sharp"
    jump_n = detected = hits = 0
    intervals = jump_intervals(s)
    for i in range(n_curves):
        jump = JUMP_SIZES[i % len(JUMP_SIZES)]
        k = intervals[rng.integers(len(intervals))]
        truth = _flip(jump_curve(s, k, jump, rng), rng)
        half_width = 1.96 * np.sqrt(2) * noise * (truth.max() - truth.min())
        if jump < 3 * half_width:  # the power target's condition; weaker jumps are not counted
            continue
        values, reps = measured(truth, noise, n_boot, rng)
        out = classify_trajectory(s, reps, values=values)
        jump_n += 1
        if out["kind"] == "sharp":
            detected += 1
            hits += out["bracket"] == [int(s[k]), int(s[k + 1])]
    return Cell(name, noise, smooth_n, false_sharp, gradual, unres_n, unres_sharp, jump_n, detected, hits)


def table_fwer(steps: Sequence[int], n_tables: int, n_curves: int, noise: float, n_boot: int, seed: int,
               smooth: bool = False) -> tuple[int, int]:
    """(tables with a false call after ``adjust_verdicts``, tables), ``n_curves`` curves per table.

    Flat tables (``smooth=False``): every curve is flat; any call but "no change" is false. Smooth tables: every
    curve is a resolved smooth curve (no interval with more than half its change); any "sharp" call is false.
    """
    rng = np.random.default_rng(seed)
    s = np.asarray(steps)
    errors = 0
    for _ in range(n_tables):
        calls = {}
        for c in range(n_curves):
            truth = np.zeros(s.size)
            while smooth:
                truth = _flip(smooth_curve(SMOOTH_FAMILIES[rng.integers(len(SMOOTH_FAMILIES))], s, rng), rng)
                if max_share(truth) <= 0.5:
                    break
            values, reps = measured(truth, noise, n_boot, rng)
            calls[str(c)] = classify_trajectory(s, reps, values=values)
        kinds = [call["kind"] for call in adjust_verdicts(calls).values()]
        errors += ("sharp" in kinds) if smooth else any(kind != "no_change" for kind in kinds)
    return errors, n_tables


def calibration_table(n_curves: int, n_boot: int, seed: int = 0, schedules: dict | None = None,
                      noise_levels: Sequence[float] = NOISE_LEVELS) -> list[Cell]:
    """``calibrate_cell`` over every schedule x noise level (independent seeds per cell)."""
    cells = []
    for i, (name, steps) in enumerate((schedules or SCHEDULES).items()):
        for j, noise in enumerate(noise_levels):
            cells.append(calibrate_cell(name, steps, noise, n_curves, n_boot, seed + 1000 * i + j))
    return cells
