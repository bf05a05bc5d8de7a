"""Bootstrap multiplicities, the one resampling primitive every layer shares (numpy only, so data, models and the
experiments can all use it).

Resampling n items with replacement is represented by how often each item was drawn (its multiplicity, a weight):
a weighted mean with these weights is the mean over the resample, and items that belong together (the samples of one
problem) share their group's multiplicity.
"""

from __future__ import annotations

import numpy as np


def multiplicities(rng: np.random.Generator, n: int, n_boot: int | None = None) -> np.ndarray:
    """How often each of ``n`` items is drawn in ``n`` draws with replacement: float64 ``[n]``, or ``[n_boot, n]``
    for ``n_boot`` independent resamples (one ``rng.integers`` call either way, so a seed gives the same resamples
    wherever it is used)."""
    if n < 1:
        raise ValueError(f"cannot resample {n} items")
    if n_boot is None:
        return np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
    picks = rng.integers(0, n, (n_boot, n))
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.arange(n_boot)[:, None], picks), 1.0)
    return counts


def group_multiplicities(groups: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap weights ``[n_boot, len(groups)]`` resampling the distinct groups (a problem's samples share its
    multiplicity); the same seed and groups give the same resamples every time."""
    codes, inverse = np.unique(groups, return_inverse=True)
    return multiplicities(np.random.default_rng(seed), codes.size, n_boot)[:, inverse]


def resampling_units(samples) -> np.ndarray:
    """The resampling unit of every row of a dataset's samples table (a pandas DataFrame): its ``group`` (the
    problem; for planted programs the operation pair that programs share, ``codedyn.data.problems.Problem.group``),
    or its ``problem_id`` in datasets written before groups. Every interval of a study resamples these units."""
    return np.asarray(samples["group"] if "group" in samples else samples["problem_id"])
