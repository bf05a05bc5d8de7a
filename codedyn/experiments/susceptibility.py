"""Experiment 3 estimator: susceptibilities of components to correct and incorrect code.

χ_ij = -Cov_posterior(φ_i(w), L_j(w)), φ_i an observable of component i (head / MLP output norm, SAE latent
activation), L_j(w) the mean loss over the samples of distribution j (correct code, incorrect code, or any named
subset). Linear response: replacing the sampling loss L_n by (1 - h) L_n + h L_j shifts E[φ_i] by
-nβ h Cov(φ_i, L_j - L_n) to first order, i.e. nβ h (χ_ij - χ_i,n): χ_ij > 0 means that training harder on j
(relative to the corpus) raises φ_i.

The standardised variant divides by the posterior standard deviation of φ_i (a z-scored observable), so components
with very different output scales can be compared. Intervals resample chains and blocks of draws.
"""

from __future__ import annotations

import numpy as np


def distribution_losses(sample_loss: np.ndarray, groups: dict[str, np.ndarray]) -> np.ndarray:
    """L_j per draw: [..., n_groups] means of ``sample_loss`` [..., N] over each boolean mask in ``groups``."""
    columns = []
    for name, mask in groups.items():
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            raise ValueError(f"distribution {name!r} selects no samples")
        columns.append(sample_loss[..., mask].mean(axis=-1))
    return np.stack(columns, axis=-1)


def susceptibilities(observed: np.ndarray, losses: np.ndarray, standardised: bool = False) -> np.ndarray:
    """χ [K, G] from pooled draws: ``observed`` [..., K] observables and ``losses`` [..., G] distribution losses."""
    phi = np.asarray(observed, dtype=np.float64).reshape(-1, observed.shape[-1])
    loss = np.asarray(losses, dtype=np.float64).reshape(-1, losses.shape[-1])
    if phi.shape[0] != loss.shape[0] or phi.shape[0] < 2:
        raise ValueError("observables and losses need the same draws, at least two")
    phi_c = phi - phi.mean(axis=0)
    chi = -(phi_c.T @ (loss - loss.mean(axis=0))) / (phi.shape[0] - 1)
    if standardised:
        sd = phi.std(axis=0, ddof=1)
        chi = np.divide(chi, sd[:, None], out=np.zeros_like(chi), where=sd[:, None] > 0)
    return chi


def bootstrap_susceptibilities(
    observed: np.ndarray, losses: np.ndarray, n_boot: int, seed: int, standardised: bool = False, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(χ, low, high), each [K, G]: point estimate and percentile interval over chain + block resamples of
    ``observed`` [chains, draws, K] and ``losses`` [chains, draws, G] (resampled together)."""
    from codedyn.analysis.stats import bootstrap_draws

    chains, draws = observed.shape[:2]
    chain_idx, draw_idx = bootstrap_draws(chains, draws, n_boot, np.random.default_rng(seed))
    replicates = np.stack([
        susceptibilities(observed[chain_idx[b][:, None], draw_idx[b]], losses[chain_idx[b][:, None], draw_idx[b]],
                         standardised)
        for b in range(n_boot)
    ])
    alpha = (1 - level) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha], axis=0)
    return susceptibilities(observed, losses, standardised), low, high


def opposite_responders(names, chi: np.ndarray, low: np.ndarray, high: np.ndarray, pair: tuple[int, int] = (0, 1)):
    """Components whose χ for the two distributions have opposite signs with both intervals excluding zero, and
    every component ranked by |χ_a - χ_b|. Returns a pandas DataFrame sorted by that gap."""
    import pandas as pd

    a, b = pair
    excludes = (low > 0) | (high < 0)
    frame = pd.DataFrame({
        "component": list(names),
        "chi_a": chi[:, a], "low_a": low[:, a], "high_a": high[:, a],
        "chi_b": chi[:, b], "low_b": low[:, b], "high_b": high[:, b],
    })
    frame["gap"] = np.abs(chi[:, a] - chi[:, b])
    frame["opposite"] = excludes[:, a] & excludes[:, b] & (np.sign(chi[:, a]) != np.sign(chi[:, b]))
    return frame.sort_values("gap", ascending=False).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------- run / compute

SUSCEPTIBILITY_DIR = "susceptibility"
MIN_GROUP_SAMPLES = 3  # an operator subset smaller than this gives no usable loss average


def sample_groups(samples) -> dict[str, np.ndarray]:
    """The perturbation directions: correct code, incorrect code, and incorrect code per mutation operator."""
    correct = samples["is_correct"].to_numpy(dtype=bool)
    groups = {"correct": correct, "incorrect": ~correct}
    for operator in sorted(samples["operator"].dropna().unique()):
        mask = (samples["operator"] == operator).to_numpy()
        if mask.sum() >= MIN_GROUP_SAMPLES:
            groups[f"incorrect:{operator}"] = mask
    return groups


def run_susceptibility(study, progress=None) -> dict:
    """Experiment 3 over the study's checkpoints, reusing (or creating) the shared posterior units."""
    from codedyn.progress import SILENT
    from codedyn.sampling.posterior import sample_checkpoints

    sample_checkpoints(study, progress or SILENT)
    return compute_susceptibility(study)


def compute_susceptibility(study) -> dict:
    """χ tables (raw and standardised, with CIs), opposite responders per checkpoint, trajectory figure."""
    import pandas as pd

    from codedyn.report.plots import save_figure
    from codedyn.sampling.sgld import healthy_sample_losses

    config = study.config
    out = study.output_dir(SUSCEPTIBILITY_DIR)
    groups = sample_groups(study.readout_samples())
    rows, responders = [], []
    for step, traces in study.posteriors():
        names = [str(n) for n in traces["observable"].values]
        observed = traces["observed"].values[traces["healthy"].values]
        losses = distribution_losses(healthy_sample_losses(traces), groups)
        for variant, standardised in (("raw", False), ("standardised", True)):
            chi, low, high = bootstrap_susceptibilities(
                observed, losses, config.sampling.n_bootstrap, config.sampling.seed, standardised
            )
            for k, name in enumerate(names):
                for g, group in enumerate(groups):
                    rows.append({"step": step, "component": name, "distribution": group, "variant": variant,
                                 "chi": chi[k, g], "low": low[k, g], "high": high[k, g]})
            if variant == "raw":
                ranked = opposite_responders(names, chi[:, :2], low[:, :2], high[:, :2])
                responders.append(ranked.assign(step=step))
    table = pd.DataFrame(rows)
    table.to_parquet(out / "susceptibility.parquet", index=False)
    ranked = pd.concat(responders, ignore_index=True)
    ranked.to_parquet(out / "opposite_responders.parquet", index=False)
    save_figure(trajectory_figure(table, ranked), out / "susceptibility_trajectories")
    return {"table": table, "responders": ranked, "folder": out}


def trajectory_figure(table, ranked, top: int = 3):
    """Standardised χ for correct and incorrect code over training, for the components with the largest gaps."""
    from codedyn.report.plots import training_curves

    leaders = ranked.groupby("component")["gap"].max().sort_values(ascending=False).head(top).index
    part = table[(table["variant"] == "standardised") & table["distribution"].isin(["correct", "incorrect"])]
    steps = sorted(part["step"].unique())
    curves = {}
    for component in leaders:
        for distribution in ("correct", "incorrect"):
            rows = part[(part["component"] == component) & (part["distribution"] == distribution)].sort_values("step")
            curves[f"{component} / {distribution}"] = (rows["chi"].to_numpy(), rows["low"].to_numpy(),
                                                      rows["high"].to_numpy())
    return training_curves(steps, curves, ylabel="standardised χ = -Cov(φ, L) / sd(φ)",
                           title="Susceptibility to correct vs incorrect code (largest gaps)")
