"""Mixing diagnostics of one posterior, on the quantities the experiments use, as a table that can fail.

Rows (``quantity``):

* ``excess_loss``: L_{B_t}(w_t) - L_{B_t}(w*) at every post-burn-in step (what the LLC averages);
* ``mean_loss``: the mean of ℓ_i over the read-out samples at every draw (the shared mode of the BIF);
* ``loss_pc1``: the draws of ℓ projected on the first principal component of their pooled covariance (the direction
  that carries most of the BIF's variance);
* ``phi:<name>``: every recorded observable (susceptibilities).

Columns: ``rhat`` (rank-normalised split R-hat), ``ess``, ``autocorrelation_time`` (draws per effective draw),
``chain_correlation`` (mean pairwise correlation of the chains' series, draw by draw: about 0 for independent
chains, 1 for identical ones, which R-hat and ESS cannot see), ``chains``, ``draws``, ``passed`` and ``problem``
(one clause per failed check, "" when passed). Thresholds: the sampling config's ``max_rhat``, ``min_ess`` and
``max_chain_correlation``. Only healthy chains enter.
"""

from __future__ import annotations

import json
import math

import numpy as np

from codedyn.sampling.mcmc import effective_sample_size, rank_split_rhat

DEFAULT_THRESHOLDS = {"max_rhat": 1.1, "min_ess": 20.0, "max_chain_correlation": 0.5}


def summary_series(values: np.ndarray) -> dict[str, np.ndarray]:
    """The two scalar series [chains, draws] that summarise vector draws [chains, draws, k]: their mean over k and
    their projection on the first principal component of the pooled draws (sign fixed so the loading sum is
    positive)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"expected [chains, draws, k], got shape {x.shape}")
    pooled = x.reshape(-1, x.shape[2])
    centred = pooled - pooled.mean(axis=0)
    if pooled.shape[0] >= 2 and np.any(centred):
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        pc = vt[0] * (1.0 if vt[0].sum() >= 0 else -1.0)
    else:
        pc = np.zeros(x.shape[2])
    return {"mean": x.mean(axis=2), "pc1": (x - pooled.mean(axis=0)) @ pc}


def chain_correlation(x: np.ndarray) -> float:
    """Mean pairwise Pearson correlation between the chains' series [chains, draws] (NaN for one chain or constant
    chains)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 2 or x.shape[1] < 3:
        return math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(x)
    values = corr[~np.eye(x.shape[0], dtype=bool)]
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def mixing_row(quantity: str, x: np.ndarray, thresholds: dict | None = None) -> dict:
    """One row of the table for the series ``x`` [chains, draws]."""
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    x = np.asarray(x, dtype=np.float64)
    chains, draws = x.shape
    row = {"quantity": quantity, "chains": chains, "draws": draws, "rhat": math.nan, "ess": math.nan,
           "autocorrelation_time": math.nan, "chain_correlation": chain_correlation(x)}
    problems = []
    if draws < 4 or not np.isfinite(x).all():
        problems.append(f"too few draws ({draws} per chain)" if draws < 4 else "non-finite draws")
    elif np.ptp(x) == 0:
        problems.append("constant draws")
    else:
        ess = effective_sample_size(x)
        row.update(rhat=rank_split_rhat(x), ess=ess, autocorrelation_time=x.size / ess)
        if chains >= 2 and row["rhat"] > limits["max_rhat"]:
            problems.append(f"R-hat {row['rhat']:.3g} > {limits['max_rhat']:g}")
        if ess < limits["min_ess"]:
            problems.append(f"ESS {ess:.3g} < {limits['min_ess']:g}")
    if row["chain_correlation"] > limits["max_chain_correlation"]:
        problems.append(f"chains correlated ({row['chain_correlation']:.2f} > {limits['max_chain_correlation']:g})")
    return row | {"passed": not problems, "problem": "; ".join(problems)}


def _thresholds(traces) -> dict:
    config = json.loads(traces.attrs["sampling_config"])
    return {key: config.get(key, value) for key, value in DEFAULT_THRESHOLDS.items()}


def posterior_diagnostics(traces) -> list[dict]:
    """The table of the module docstring for one posterior's traces (healthy chains only), one dict per row."""
    from codedyn.sampling.llc import trace_excess_losses

    healthy = traces["healthy"].values
    limits = _thresholds(traces)
    rows = [mixing_row("excess_loss", trace_excess_losses(traces)[healthy], limits)]
    losses = traces["sample_loss"].values[healthy]
    for name, series in summary_series(losses).items():
        rows.append(mixing_row({"mean": "mean_loss", "pc1": "loss_pc1"}[name], series, limits))
    if "observed" in traces:
        observed = traces["observed"].values[healthy]
        for k, name in enumerate(traces["observable"].values):
            rows.append(mixing_row(f"phi:{name}", observed[:, :, k], limits))
    step = traces.attrs.get("step")
    return [({"step": int(step)} if step is not None else {}) | row for row in rows]
