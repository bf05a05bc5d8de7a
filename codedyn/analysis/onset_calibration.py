"""Planted curves on the organism's schedule, to calibrate the onset test (:mod:`codedyn.analysis.onset`).

Each curve is measured like a real run measures one: at checkpoint k an estimate ``truth_k + sd_k e`` and ``B``
bootstrap replicates ``estimate_k + sd_k e_b`` (independent posteriors per checkpoint), ``sd_k = sd x U(0.5, 1.5)``
(real bootstrap widths differ by step). Truth is in units of ``sd``, so an effect of 4 is a change of four typical
standard errors; the real runs' effects in these units are in BENCHMARKS.md ("The onset test").

* **flat**: truth 0 everywhere: any onset is a false one (the rate the family-wise level bounds);
* **at the margin**: truth ``margin`` after the onset (a change exactly as large as the equivalence margin): an
  onset is again a false one;
* **step**: truth 0 through the baseline and up to a planted checkpoint, ``effect`` from it on (half mirrored):
  an onset found at the planted checkpoint or one checkpoint either side counts as found;
* **flat with a margin**: truth 0 and a margin of ``effect``: how often the equivalence test calls it flat.

``onset_rates`` runs families of ``family_size`` curves (one planted curve among flat companions, so the Holm
family is as large as a study's) and returns counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from codedyn.analysis.onset import Curve, onset_family

ORGANISM_STEPS = (0, 1000, 2000, 3000, 4000, 5000, 5500, 7000)  # presets/organism.yaml
ORGANISM_ONSET = 1000


def measured(truth: np.ndarray, sd: float, n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(estimates, replicates [n_steps, n_boot]) of a planted curve whose noise is ``sd`` x U(0.5, 1.5) per step."""
    scale = sd * rng.uniform(0.5, 1.5, truth.size)
    values = truth + scale * rng.standard_normal(truth.size)
    return values, values[:, None] + scale[:, None] * rng.standard_normal((truth.size, n_boot))


def planted_truth(kind: str, steps: Sequence[int], onset: int, at: int | None, effect: float) -> np.ndarray:
    """The true curve of one planted kind (in units of the noise sd)."""
    s = np.asarray(steps)
    if kind == "flat":
        return np.zeros(s.size)
    if kind == "margin":
        return np.where(s > onset, effect, 0.0)
    if kind == "step":
        return np.where(s >= at, effect, 0.0)
    raise ValueError(f"unknown planted kind {kind!r}")


@dataclass(frozen=True)
class Rates:
    """Counts over ``n`` planted curves of one kind."""

    kind: str
    effect: float
    n: int
    onsets: int  # curves with an onset call
    found: int  # step: onset within one checkpoint of the planted one
    exact: int  # step: onset at the planted checkpoint
    flat: int  # curves called flat


def onset_rates(kind: str, effect: float, n: int, family_size: int = 1, margin: float = 0.0, n_boot: int = 400,
                seed: int = 0, steps: Sequence[int] = ORGANISM_STEPS, onset: int = ORGANISM_ONSET) -> Rates:
    """Run ``n`` families; the first curve of each is planted (``kind``, ``effect``), the other ``family_size - 1``
    are flat companions. The planted step sits at a post-onset checkpoint drawn uniformly, never the last (so a
    checkpoint after it exists)."""
    rng = np.random.default_rng(seed)
    steps = tuple(int(s) for s in steps)
    post = [s for s in steps if s > onset][:-1]
    counts = {"onsets": 0, "found": 0, "exact": 0, "flat": 0}
    for _ in range(n):
        at = int(rng.choice(post)) if kind == "step" else None
        truth = planted_truth(kind, steps, onset, at, effect) * (1 if rng.random() < 0.5 else -1)
        curves = []
        for j in range(family_size):
            values, reps = measured(truth if j == 0 else np.zeros(len(steps)), 1.0, n_boot, rng)
            curves.append(Curve(f"c{j}", steps, values, reps, margin=margin))
        call = onset_family(curves, onset)["c0"]
        counts["onsets"] += call.kind == "onset"
        counts["flat"] += call.kind == "flat"
        if kind == "step" and call.bracket is not None:
            gap = abs(steps.index(call.bracket[1]) - steps.index(at))
            counts["found"] += gap <= 1
            counts["exact"] += gap == 0
    return Rates(kind, effect, n, **counts)
