"""How much of a linear probe's correctness direction an SAE's reconstruction keeps.

A probe on the raw residual and an SAE latent read the same activations; when the probe detects correctness and no
latent does, either the direction is in the reconstruction but spread over many latents, or the SAE never
reconstructs it (then no latent can carry it). With u the probe's unit direction in the residual's own coordinates,
x the samples' residuals and x_hat the SAE's reconstructions:

* ``variance_kept`` = 1 - Var(u·(x - x_hat)) / Var(u·x): the share of the samples' spread along u that the
  reconstruction keeps (1: all of it; 0 or below: the error holds as much spread along u as x itself);
* ``auroc_resid`` / ``auroc_reconstruction`` / ``auroc_error``: AUROC of u·x, u·x_hat and u·(x - x_hat) for correct
  samples (u·x ranks the samples as the probe does, so ``auroc_resid`` is the probe's AUROC on the same rows);
* ``cohen_d_resid`` / ``cohen_d_reconstruction``: the correct-minus-incorrect gap along u in pooled standard
  deviations; ``separation_kept``: the reconstruction's gap of class means along u over the residual's (the share
  of the gap it keeps, in the same units, so a reconstruction with no spread along u cannot inflate it);
* ``explained_variance``: 1 - Σ|x - x_hat|² / Σ|x - mean|² on these rows (the SAE's quality where it is read);
* ``max_decoder_cosine``: max over latents of |cos(decoder row, u)|, how closely the best-aligned single latent
  points along u (no interval: it depends on the SAE only);
* with x_hat = latents @ decoder + const, latent i adds z_i (decoder_i·u) to u·x_hat, and its share of the
  reconstruction's correct-minus-incorrect gap along u is its class-mean difference of that term over the total
  gap: ``top_latent_gap_share`` is the largest share, ``latents_for_half_gap`` how many latents (largest shares
  first) it takes to reach half of the gap (NaN when the reconstruction has no positive gap). A direction the
  reconstruction keeps but spreads over many latents reads a small share and a large count: then no single latent
  can detect what the probe detects.

Every quantity but the last comes with bootstrap replicates under the caller's weights [B, n] (resampling units).
Pure functions of arrays.
"""

from __future__ import annotations

import numpy as np

from codedyn.analysis.classifier import auroc

QUANTITIES = ("variance_kept", "auroc_resid", "auroc_reconstruction", "auroc_error", "cohen_d_resid",
              "cohen_d_reconstruction", "separation_kept", "explained_variance", "max_decoder_cosine",
              "top_latent_gap_share", "latents_for_half_gap")


def _weighted_var(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted variance per row of weights [B, n] of values [n] (or [n, d]: summed over d)."""
    total = weights.sum(axis=1)
    mean = weights @ values / total[:, None] if values.ndim == 2 else weights @ values / total
    if values.ndim == 2:
        centred = ((values[None, :, :] - mean[:, None, :]) ** 2).sum(axis=2)  # [B, n]
        return (weights * centred).sum(axis=1) / total
    return (weights * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / total


def _gap(values: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean_positive - mean_negative per row of weights [B, n]."""
    w_p, w_n = weights * positive, weights * ~positive
    return w_p @ values / w_p.sum(axis=1) - w_n @ values / w_n.sum(axis=1)


def _cohen_d(values: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted (mean_positive - mean_negative) / pooled SD per row of weights [B, n]."""
    w_p, w_n = weights * positive, weights * ~positive
    n_p, n_n = w_p.sum(axis=1), w_n.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        m_p, m_n = w_p @ values / n_p, w_n @ values / n_n
        v_p = (w_p * (values[None, :] - m_p[:, None]) ** 2).sum(axis=1) / n_p
        v_n = (w_n * (values[None, :] - m_n[:, None]) ** 2).sum(axis=1) / n_n
        pooled = np.sqrt((n_p * v_p + n_n * v_n) / (n_p + n_n))
        return np.where(pooled > 0, (m_p - m_n) / pooled, np.nan)


def _gap_shares(contributions: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """(top share, latents for half) per row of weights [B, n] from per-latent contributions [n, m] to u·x_hat."""
    w_p, w_n = weights * positive, weights * ~positive
    with np.errstate(divide="ignore", invalid="ignore"):
        gaps = (w_p @ contributions) / w_p.sum(axis=1, keepdims=True) \
            - (w_n @ contributions) / w_n.sum(axis=1, keepdims=True)  # [B, m]
        total = gaps.sum(axis=1)
        shares = np.sort(gaps, axis=1)[:, ::-1] / total[:, None]
    ok = np.isfinite(total) & (total > 0)
    reached = np.cumsum(shares, axis=1) >= 0.5
    count = np.where(ok & reached.any(axis=1), reached.argmax(axis=1) + 1.0, np.nan)
    return np.where(ok, shares[:, 0], np.nan), count


def direction_kept(x: np.ndarray, x_hat: np.ndarray, direction: np.ndarray, is_correct: np.ndarray,
                   latents: np.ndarray, decoder: np.ndarray,
                   weights: np.ndarray | None = None) -> dict[str, tuple[float, np.ndarray]]:
    """quantity -> (value, replicates [B]) of the module's quantities on these rows.

    x, x_hat [n, d]: residuals and their SAE reconstructions; direction [d]: the probe's raw-coordinate direction
    (normalised here); is_correct [n]; latents [n, m] and decoder [m, d]: the SAE's latents of these rows and its
    decoder rows in the residual's units (x_hat = latents @ decoder + a constant); weights [B, n]: bootstrap
    multiplicities (None: no replicates, empty arrays)."""
    x, x_hat = np.asarray(x, dtype=np.float64), np.asarray(x_hat, dtype=np.float64)
    u = np.asarray(direction, dtype=np.float64).ravel()
    u = u / np.linalg.norm(u)
    positive = np.asarray(is_correct, dtype=bool)
    if x.shape != x_hat.shape or x.shape[1] != u.shape[0]:
        raise ValueError(f"shapes disagree: x {x.shape}, x_hat {x_hat.shape}, direction {u.shape}")
    proj, proj_hat = x @ u, x_hat @ u
    error = proj - proj_hat
    ones = np.ones((1, x.shape[0]))
    w = ones if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))

    def both(fn):
        point = float(np.asarray(fn(ones))[0])
        return point, (np.asarray(fn(w)) if weights is not None else np.empty(0))

    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "variance_kept": both(lambda ww: 1 - _weighted_var(error, ww) / _weighted_var(proj, ww)),
            "auroc_resid": both(lambda ww: auroc(proj, positive, ww)),
            "auroc_reconstruction": both(lambda ww: auroc(proj_hat, positive, ww)),
            "auroc_error": both(lambda ww: auroc(error, positive, ww)),
            "cohen_d_resid": both(lambda ww: _cohen_d(proj, positive, ww)),
            "cohen_d_reconstruction": both(lambda ww: _cohen_d(proj_hat, positive, ww)),
            "separation_kept": both(lambda ww: _gap(proj_hat, positive, ww) / _gap(proj, positive, ww)),
            "explained_variance": both(lambda ww: 1 - (ww @ ((x - x_hat) ** 2).sum(axis=1)) / ww.sum(axis=1)
                                       / _weighted_var(x, ww)),
        }
    rows = np.asarray(decoder, dtype=np.float64)
    along = rows @ u  # [m]
    norms = np.linalg.norm(rows, axis=1)
    cosines = np.divide(np.abs(along), norms, out=np.zeros_like(along), where=norms > 0)
    out["max_decoder_cosine"] = (float(cosines.max()), np.empty(0))
    contributions = np.asarray(latents, dtype=np.float64) * along[None, :]  # [n, m]
    top, count = _gap_shares(contributions, positive, ones)
    if weights is not None:
        top_reps, count_reps = _gap_shares(contributions, positive, w)
    else:
        top_reps = count_reps = np.empty(0)
    out["top_latent_gap_share"] = (float(top[0]), top_reps)
    out["latents_for_half_gap"] = (float(count[0]), count_reps)
    return out
