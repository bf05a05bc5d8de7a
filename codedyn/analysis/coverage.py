"""Interval coverage across independent sampler seeds: do the reported intervals hold the Monte Carlo error?

With S posteriors of one checkpoint sampled with independent seeds, each giving an estimate and a 95% interval of
every quantity, the cross-seed coverage of a quantity is the share of ordered pairs of distinct seeds (i, j) whose
estimate i lies inside seed j's interval. For honest intervals of an unbiased estimate with normal error this is
not 95%: the two estimates differ by √2 standard errors' worth of noise, so the expected share is
P(|Z| < 1.96 / √2) = 0.834 (:data:`HONEST_CROSS_COVERAGE`); well below it, the intervals are too narrow for the
seed-to-seed spread (they miss Monte Carlo error), well above it, too wide.
"""

from __future__ import annotations

import math

import numpy as np

HONEST_CROSS_COVERAGE = math.erf(1.959963984540054 / 2)  # P(|Z| < 1.96/√2) = erf(1.96 / 2) ≈ 0.834


def cross_seed_coverage(values: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """[Q] share of ordered pairs (i, j), i ≠ j, of the S seeds whose estimate ``values[i, q]`` lies inside seed
    j's interval [``lows[j, q]``, ``highs[j, q]``]; ``values``, ``lows``, ``highs`` are [S, Q] (or [S]). NaN where a
    quantity has fewer than two seeds with finite numbers."""
    values, lows, highs = (np.asarray(x, dtype=np.float64) for x in (values, lows, highs))
    if values.shape != lows.shape or values.shape != highs.shape or values.ndim not in (1, 2):
        raise ValueError("values, lows and highs must be arrays of the same shape [seeds] or [seeds, quantities]")
    if values.shape[0] < 2:
        raise ValueError(f"cross-seed coverage needs at least two seeds, got {values.shape[0]}")
    squeeze = values.ndim == 1
    values, lows, highs = (x.reshape(x.shape[0], -1) for x in (values, lows, highs))
    inside = (values[:, None] >= lows[None, :]) & (values[:, None] <= highs[None, :])  # [i, j, Q]
    finite = np.isfinite(values)[:, None] & np.isfinite(lows)[None, :] & np.isfinite(highs)[None, :]
    off = ~np.eye(values.shape[0], dtype=bool)[..., None] & finite
    counts = off.sum(axis=(0, 1))
    share = np.divide((inside & off).sum(axis=(0, 1)), counts, out=np.full(counts.shape, np.nan), where=counts > 0)
    return share[0] if squeeze else share
