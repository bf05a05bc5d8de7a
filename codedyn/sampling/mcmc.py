"""Monte Carlo diagnostics of SGLD chains: effective sample size, integrated autocorrelation time, split R-hat
(plain and rank-normalised) and batch-means standard errors.

They live with the sampler (not in :mod:`codedyn.analysis.stats`, which re-exports them) because the sampler uses
them itself: a chain's LLC is checked against d/2 with its Monte Carlo error, and the posterior's diagnostics are
computed from its traces without importing the layers above.

Diagnostics follow Vehtari, Gelman, Simpson, Carpenter & Buerkner (2021), "Rank-normalization, folding, and
localization: an improved R-hat": ``split_rhat`` (between- vs within-chain variance on half-chains),
``rank_split_rhat`` (the same on rank-normalised and on folded draws, the larger of the two),
``effective_sample_size`` (multi-chain autocorrelation via FFT, truncated by Geyer's initial positive and monotone
sequence), ``autocorrelation_time`` (draws per effective draw) and ``batch_means_se`` (standard error of the mean
from the spread of contiguous batch means, valid when a batch is much longer than the autocorrelation time).
"""

from __future__ import annotations

import math

import numpy as np


def _as_chains(x: np.ndarray, min_draws: int) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"expected [chains, draws], got shape {x.shape}")
    if x.shape[1] < min_draws:
        raise ValueError(f"need at least {min_draws} draws per chain, got {x.shape[1]}")
    return x


def batch_means_se(x: np.ndarray, n_batches: int = 10) -> float:
    """Standard error of the pooled mean of ``x`` [chains, draws] by non-overlapping batch means.

    Each chain is cut into ``n_batches`` contiguous batches (the first ``draws % n_batches`` draws are dropped so the
    batches are equal). If a batch is much longer than the autocorrelation time, batch means are nearly independent
    with variance ``sigma^2 tau / batch``, so their spread around the grand mean gives the SE. Centering on the grand
    mean (not each chain's mean) lets chains that disagree inflate the SE, as they should.
    """
    x = _as_chains(x, n_batches)
    chains, draws = x.shape
    size = draws // n_batches
    means = x[:, draws - size * n_batches :].reshape(chains, n_batches, size).mean(axis=2).ravel()
    if means.size < 2:
        raise ValueError("need at least two batches in total")
    return float(np.std(means, ddof=1) / math.sqrt(means.size))


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """Per-chain autocovariance at lags 0..n-1 (divided by n), by FFT with zero padding so lags do not wrap."""
    n = x.shape[1]
    centred = x - x.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(centred, n=size, axis=1)
    return np.fft.irfft(f * np.conj(f), n=size, axis=1)[:, :n] / n


def _variance_parts(x: np.ndarray) -> tuple[float, float]:
    """``(W, var_plus)``: mean within-chain variance and the pooled posterior-variance estimate of Gelman et al."""
    n = x.shape[1]
    within = float(np.mean(np.var(x, axis=1, ddof=1)))
    between_over_n = float(np.var(x.mean(axis=1), ddof=1)) if x.shape[0] > 1 else 0.0
    return within, (n - 1) / n * within + between_over_n


def effective_sample_size(x: np.ndarray) -> float:
    """Bulk effective sample size of the mean of ``x`` [chains, draws] (Vehtari et al. 2021, Geyer 1992).

    The multi-chain autocorrelation ``rho_t = 1 - (W - mean_c acov_c(t)) / var_plus`` also counts disagreement
    between chains. Noise in ``rho_t`` at large lags would swamp the sum, so it is truncated where the sum of an
    even/odd pair of lags first turns non-positive, and the pair sums are forced non-increasing (Geyer's initial
    monotone sequence, valid for reversible chains; SGLD is only approximately so). Returns NaN for constant draws.
    """
    x = _as_chains(x, 4)
    chains, n = x.shape
    within, var_plus = _variance_parts(x)
    if var_plus <= 0:
        return math.nan
    rho = 1 - (within - _autocovariance(x).mean(axis=0)) / var_plus
    pairs = rho[0 : 2 * (n // 2) : 2] + rho[1 : 2 * (n // 2) : 2]
    stop = int(np.argmax(pairs <= 0)) if np.any(pairs <= 0) else pairs.size
    pairs = np.minimum.accumulate(pairs[: max(stop, 1)])
    tau = -1 + 2 * float(pairs.sum())
    # Antithetic chains can give tau < 1; the floor caps ESS at N log10(N), as Stan does.
    total = chains * n
    tau = max(tau, 1 / math.log10(max(total, 10)))
    return total / tau


def split_rhat(x: np.ndarray) -> float:
    """Split R-hat of ``x`` [chains, draws] (Gelman-Rubin on half-chains; about 1 when the chains agree).

    Splitting each chain in two also flags a drift inside a single chain. The middle draw of odd-length chains is
    dropped. R-hat = sqrt(var_plus / W); values above ~1.01 (strict) or 1.1 (lenient) mean the chains have not mixed.
    """
    x = _as_chains(x, 4)
    half = x.shape[1] // 2
    halves = np.concatenate([x[:, :half], x[:, x.shape[1] - half :]], axis=0)
    within, var_plus = _variance_parts(halves)
    if within <= 0:
        return math.nan
    return math.sqrt(var_plus / within)


def autocorrelation_time(x: np.ndarray) -> float:
    """Integrated autocorrelation time τ of ``x`` [chains, draws]: draws per effective draw, chains * draws / ESS
    (1 for independent draws, (1 + φ) / (1 - φ) for an AR(1) with coefficient φ). Chains that disagree raise it,
    as they should: their disagreement is not averaged away by more draws of the same chains. NaN for constant
    draws."""
    x = _as_chains(x, 4)
    ess = effective_sample_size(x)
    return x.size / ess if math.isfinite(ess) and ess > 0 else math.nan


def _rank_normalise(x: np.ndarray) -> np.ndarray:
    """Normal scores of the pooled ranks (Blom's offsets), shaped like ``x``: R-hat then also works for heavy tails."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    ranks = rankdata(x, method="average").reshape(x.shape)
    return ndtri((ranks - 3 / 8) / (x.size + 1 / 4))


def rank_split_rhat(x: np.ndarray) -> float:
    """Rank-normalised split R-hat of ``x`` [chains, draws] (Vehtari et al. 2021): the larger of the split R-hat of
    the rank-normalised draws (location) and of the rank-normalised folded draws |x - median| (scale), so chains
    that agree in mean but not in spread are caught too. About 1 when the chains agree; NaN for constant draws."""
    x = _as_chains(x, 4)
    if np.ptp(x) == 0:
        return math.nan
    bulk = split_rhat(_rank_normalise(x))
    folded = np.abs(x - np.median(x))
    tail = split_rhat(_rank_normalise(folded)) if np.ptp(folded) > 0 else math.nan
    return float(np.nanmax([bulk, tail]))
