"""Per-token susceptibilities: how every component responds to every code token of every read-out sample.

χ_{i,(s,t)} = -Cov_posterior(φ_i(w), ℓ_{s,t}(w)), φ_i an observable of component i (any entry of the traces'
``observable`` coordinate: head / MLP output norms, SAE latents) and ℓ_{s,t} the loss of code token t of sample s
(the per-token losses the posterior records next to ℓ_s, whose mean over the sample's tokens they are). Same sign
convention as Experiment 3: χ > 0 means that up-weighting token (s, t) in the loss raises φ_i.

Standardised variant: the posterior correlation ρ_{i,(s,t)} = χ / (sd φ_i · sd ℓ_{s,t}), free of both the
component's output scale and the token's loss noise. The embedding (Experiment 4) additionally z-scores each
component's χ over the embedded tokens, as Wang et al. (2025) standardise per component; see
:func:`codedyn.experiments.embryology.token_features`.

A constant observable or a constant token loss has χ = ρ = 0 exactly; padding positions (no token) are NaN.
Stored per checkpoint as ``<run>/embryology/susceptibility/step<N>.zarr`` (dims observable, sample, token).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TOKEN_SUSCEPTIBILITY_DIR = "susceptibility"  # under the embryology folder
TOKEN_VARIABLES = ("token_id", "token_start", "token_end", "token_text", "token_kind", "token_in_mutation")


def token_susceptibilities(observed: np.ndarray, token_loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(χ, ρ), each [K, *token shape]: ``observed`` [..., K] and ``token_loss`` [..., *token shape] share their
    leading (chain, draw) dims and are pooled over them. NaN tokens (padding) give NaN."""
    observed = np.asarray(observed, dtype=np.float64)
    token_loss = np.asarray(token_loss, dtype=np.float64)
    lead = observed.ndim - 1
    if observed.shape[:lead] != token_loss.shape[:lead]:
        raise ValueError(f"observables {observed.shape} and token losses {token_loss.shape} need the same draws")
    phi = observed.reshape(-1, observed.shape[-1])
    shape = token_loss.shape[lead:]
    loss = token_loss.reshape(phi.shape[0], -1)
    if phi.shape[0] < 2:
        raise ValueError("token susceptibilities need at least two draws")
    phi_c = phi - phi.mean(axis=0)
    phi_c[:, np.ptp(phi, axis=0) == 0] = 0.0  # a constant observable responds to nothing, exactly
    loss_c = loss - loss.mean(axis=0)
    constant_loss = np.ptp(loss, axis=0) == 0
    loss_c[:, constant_loss] = 0.0
    chi = -(phi_c.T @ loss_c) / (phi.shape[0] - 1)
    sd_phi = phi_c.std(axis=0, ddof=1)
    sd_loss = loss_c.std(axis=0, ddof=1)
    scale = sd_phi[:, None] * sd_loss[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(scale > 0, chi / np.where(scale > 0, scale, 1.0), 0.0)
    rho[np.isnan(chi)] = np.nan
    return chi.reshape(-1, *shape), rho.reshape(-1, *shape)


def bootstrap_token_intervals(
    observed: np.ndarray, token_loss: np.ndarray, n_boot: int, seed: int, level: float = 0.95, chunk: int = 512,
    batch: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval (low, high), each [K, P], of χ for ``token_loss`` [chains, draws, P] (no padding), from
    chain + block resamples of the draws (the same resamples for every token), in chunks of tokens.

    The replicates are computed ``batch`` resamples at a time with one stacked matrix product each (the same
    arithmetic as :func:`token_susceptibilities`, which one replicate at a time spent most of its time in Python),
    and their percentiles read along a contiguous axis."""
    from codedyn.analysis.stats import autocorrelation_block, bootstrap_draws

    chains, draws = observed.shape[:2]
    chain_idx, draw_idx = bootstrap_draws(chains, draws, n_boot, np.random.default_rng(seed),
                                          block=autocorrelation_block(observed))
    chain_idx, draw_idx = np.asarray(chain_idx), np.asarray(draw_idx)
    observed = np.asarray(observed, dtype=np.float64)
    alpha = (1 - level) / 2
    low = np.empty((observed.shape[-1], token_loss.shape[-1]))
    high = np.empty_like(low)
    for start in range(0, token_loss.shape[-1], chunk):
        part = np.asarray(token_loss[..., start:start + chunk], dtype=np.float64)
        replicates = np.empty((observed.shape[-1], part.shape[-1], n_boot))  # replicate axis last: fast quantiles
        for first in range(0, n_boot, batch):
            rows = slice(first, min(first + batch, n_boot))
            index = chain_idx[rows][:, :, None], draw_idx[rows]
            replicates[..., rows] = np.moveaxis(_stacked_chi(observed[index], part[index]), 0, -1)
        low[:, start:start + chunk], high[:, start:start + chunk] = np.quantile(replicates, [alpha, 1 - alpha],
                                                                                axis=-1)
    return low, high


def _stacked_chi(observed: np.ndarray, token_loss: np.ndarray) -> np.ndarray:
    """χ [B, K, P] of B resamples at once: ``observed`` [B, chains, draws, K], ``token_loss`` [B, chains, draws, P];
    per resample exactly :func:`token_susceptibilities`' χ."""
    size = observed.shape[0]
    phi = observed.reshape(size, -1, observed.shape[-1])
    loss = token_loss.reshape(size, phi.shape[1], -1)
    phi_c = phi - phi.mean(axis=1, keepdims=True)
    phi_c[np.broadcast_to(np.ptp(phi, axis=1, keepdims=True) == 0, phi_c.shape)] = 0.0
    loss_c = loss - loss.mean(axis=1, keepdims=True)
    loss_c[np.broadcast_to(np.ptp(loss, axis=1, keepdims=True) == 0, loss_c.shape)] = 0.0
    return -np.matmul(phi_c.transpose(0, 2, 1), loss_c) / (phi.shape[1] - 1)


def checkpoint_token_susceptibilities(traces):
    """An xarray Dataset of one checkpoint: ``chi`` and ``rho`` (observable, sample, token) from the healthy chains,
    plus the traces' token metadata (sample, token)."""
    import xarray as xr

    if "token_loss" not in traces:
        raise FileNotFoundError("the stored posterior has no per-token losses (sampled before they were recorded)")
    healthy = traces["healthy"].values
    chi, rho = token_susceptibilities(traces["observed"].values[healthy], traces["token_loss"].values[healthy])
    dims = ("observable", "sample", "token")
    out = xr.Dataset(
        {"chi": (dims, chi.astype(np.float32)), "rho": (dims, rho.astype(np.float32))},
        coords={"observable": traces["observable"].values, "sample": traces["sample"].values,
                "token": traces["token"].values},
        attrs={"step": int(traces.attrs.get("step", -1)), "draws": int(healthy.sum() * traces.sizes["draw"])},
    )
    for name in TOKEN_VARIABLES:
        out[name] = traces[name]
    return out


def save_token_susceptibilities(dataset, path: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        dataset.to_zarr(path, mode="w", consolidated=False)
    return path


def load_token_susceptibilities(path: Path):
    import xarray as xr

    return xr.open_zarr(path, consolidated=False).load()
