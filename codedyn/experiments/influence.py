"""Experiment 1: influence dynamics through the Bayesian influence function (BIF).

BIF(i, j) = -Cov_posterior(ℓ_i(w), ℓ_j(w)) over the pooled draws of the localised posterior at a checkpoint,
ℓ_i the mean token loss of sample i. The normalised variant is -Corr (the Pearson correlation with the same sign
convention, so both variants agree in sign). Negative BIF between i and j means that moving the weights to lower
the loss on i tends to lower it on j as well (their losses co-vary): "i helps j".

Per checkpoint the N x N matrix is summarised by block means over off-diagonal entries:

* CC: both samples correct, II: both incorrect, CI: one of each;
* paired: each correct reference with its own buggy mutant (same problem, near-identical text);
* unpaired: correct-incorrect entries from different problems.

Confidence intervals resample chains and draws (the Monte Carlo error of the posterior) and problems (the sampling
error of the dataset) at once; resampled problems enter the block means as weights, so a duplicated problem never
contributes its own variance as if it were a covariance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AGGREGATES = ("CC", "CI", "II", "paired", "unpaired")


def bif_matrix(losses: np.ndarray, normalised: bool = False) -> np.ndarray:
    """BIF over pooled draws. ``losses``: [chains, draws, N] (or [draws, N]); returns [N, N] float64."""
    pooled = np.asarray(losses, dtype=np.float64).reshape(-1, np.shape(losses)[-1])
    if pooled.shape[0] < 2:
        raise ValueError("the BIF needs at least two posterior draws")
    centred = pooled - pooled.mean(axis=0)
    cov = centred.T @ centred / (pooled.shape[0] - 1)
    if not normalised:
        return -cov
    std = np.sqrt(np.diag(cov))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.outer(std, std)
    return -np.nan_to_num(corr, nan=0.0)


@dataclass(frozen=True)
class SampleStructure:
    """Which samples are correct, which problem each belongs to, and the (correct, incorrect) pairs."""

    is_correct: np.ndarray  # [N] bool
    problem: np.ndarray  # [N] int problem index
    pairs: np.ndarray  # [P, 2] int (correct sample index, incorrect sample index)

    @classmethod
    def from_frame(cls, samples) -> SampleStructure:
        """From a dataset's samples DataFrame (columns is_correct, problem_id, sample_id, paired_with)."""
        problem_codes = {pid: k for k, pid in enumerate(sorted(set(samples["problem_id"])))}
        position = {sid: k for k, sid in enumerate(samples["sample_id"])}
        pairs = [
            (position[ref], k)
            for k, ref in enumerate(samples["paired_with"])
            if isinstance(ref, str) and ref in position
        ]
        return cls(
            is_correct=samples["is_correct"].to_numpy(dtype=bool),
            problem=np.asarray([problem_codes[p] for p in samples["problem_id"]]),
            pairs=np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
        )

    @property
    def n_problems(self) -> int:
        return int(self.problem.max()) + 1 if self.problem.size else 0


def block_means(bif: np.ndarray, structure: SampleStructure, problem_weights: np.ndarray | None = None) -> dict:
    """CC / CI / II / paired / unpaired means of the off-diagonal BIF entries.

    ``problem_weights`` [n_problems] (bootstrap multiplicities; default all ones) weight every entry (i, j) by
    w_problem(i) * w_problem(j); the diagonal never enters.
    """
    weights = (
        np.ones(structure.n_problems) if problem_weights is None else np.asarray(problem_weights, dtype=np.float64)
    )
    w = weights[structure.problem]
    entry_weights = np.outer(w, w)
    np.fill_diagonal(entry_weights, 0.0)
    correct = structure.is_correct
    same_problem = structure.problem[:, None] == structure.problem[None, :]
    masks = {
        "CC": np.outer(correct, correct),
        "II": np.outer(~correct, ~correct),
        "CI": np.outer(correct, ~correct),
        "unpaired": np.outer(correct, ~correct) & ~same_problem,
    }
    out = {}
    for name, mask in masks.items():
        total = (entry_weights * mask).sum()
        out[name] = float((entry_weights * mask * bif).sum() / total) if total > 0 else float("nan")
    if structure.pairs.size:
        pair_w = w[structure.pairs[:, 0]]
        values = bif[structure.pairs[:, 0], structure.pairs[:, 1]]
        out["paired"] = float((pair_w * values).sum() / pair_w.sum()) if pair_w.sum() > 0 else float("nan")
    else:
        out["paired"] = float("nan")
    return {name: out[name] for name in AGGREGATES}


def bootstrap_aggregates(
    losses: np.ndarray, structure: SampleStructure, n_boot: int, seed: int, normalised: bool = False
) -> dict[str, np.ndarray]:
    """Bootstrap replicates [n_boot] of every aggregate.

    Each replicate resamples chains with replacement, draws within each chain by circular blocks (draws are
    autocorrelated; block length ~ sqrt(draws)), and problems with replacement (as block-mean weights).
    """
    from codedyn.analysis.stats import bootstrap_draws

    rng = np.random.default_rng(seed)
    chains, draws, _ = losses.shape
    chain_idx, draw_idx = bootstrap_draws(chains, draws, n_boot, rng)
    replicates = {name: np.empty(n_boot) for name in AGGREGATES}
    for b in range(n_boot):
        resampled = losses[chain_idx[b][:, None], draw_idx[b]]
        weights = np.bincount(rng.integers(0, structure.n_problems, structure.n_problems),
                              minlength=structure.n_problems)
        values = block_means(bif_matrix(resampled, normalised), structure, weights)
        for name in AGGREGATES:
            replicates[name][b] = values[name]
    return replicates


# ---------------------------------------------------------------------------------------------------- run / compute

INFLUENCE_DIR = "influence"


def llc_replicates(traces, n_boot: int, seed: int) -> tuple[float, np.ndarray]:
    """LLC = nβ (E[L_n] - L_n(w*)) over post-burn-in steps of healthy chains, and its chain + block bootstrap
    replicates [n_boot]."""
    from codedyn.analysis.stats import bootstrap_draws
    from codedyn.sampling.traces import post_burn_in_losses

    losses = post_burn_in_losses(traces)[traces["healthy"].values]
    init = float(traces["init_sampling_loss"])
    n_beta = float(traces.attrs["n_beta"])
    chain_idx, draw_idx = bootstrap_draws(losses.shape[0], losses.shape[1], n_boot, np.random.default_rng(seed))
    replicates = np.array([losses[chain_idx[b][:, None], draw_idx[b]].mean() for b in range(n_boot)])
    return float(n_beta * (losses.mean() - init)), n_beta * (replicates - init)


def checkpoint_summary(traces, structure: SampleStructure, n_boot: int, seed: int) -> tuple[list[dict], dict]:
    """One checkpoint: tidy rows (every aggregate in both variants, and the LLC) with percentile CIs, and the
    bootstrap replicates behind them, keyed (quantity, variant)."""
    from codedyn.analysis.stats import percentile_ci
    from codedyn.sampling.sgld import healthy_sample_losses

    step = int(traces.attrs["step"])
    losses = healthy_sample_losses(traces)
    rows, replicates = [], {}
    for variant, normalised in (("cov", False), ("corr", True)):
        point = block_means(bif_matrix(losses, normalised), structure)
        boot = bootstrap_aggregates(losses, structure, n_boot, seed, normalised)
        for name in AGGREGATES:
            replicates[(name, variant)] = boot[name]
            rows.append({"step": step, "quantity": name, "variant": variant,
                         **percentile_ci(boot[name], point[name]).to_dict()})
    llc, llc_boot = llc_replicates(traces, n_boot, seed)
    replicates[("LLC", "llc")] = llc_boot
    rows.append({"step": step, "quantity": "LLC", "variant": "llc", **percentile_ci(llc_boot, llc).to_dict()})
    return rows, replicates


def chain_diagnostics(traces) -> list[dict]:
    """Per-chain health of one posterior: did it diverge, does its loss stay above the init loss (a chain that
    finds lower loss than the checkpoint means w* is not a local minimum at this temperature), how strong is the
    gradient drift against the noise, and how well do the chains mix (split R-hat, ESS of the sampling loss)."""
    from codedyn.analysis.stats import effective_sample_size, split_rhat
    from codedyn.sampling.traces import post_burn_in_losses

    losses = post_burn_in_losses(traces)
    healthy = traces["healthy"].values
    mixing = losses[healthy]
    rhat = split_rhat(mixing) if mixing.shape[0] >= 1 and mixing.shape[1] >= 4 else float("nan")
    ess = effective_sample_size(mixing) if mixing.shape[1] >= 4 else float("nan")
    init = float(traces["init_sampling_loss"])
    return [
        {
            "step": int(traces.attrs["step"]), "chain": chain, "healthy": bool(healthy[chain]),
            "init_loss": init, "mean_loss_after_burn_in": float(np.nanmean(losses[chain])),
            "fraction_below_init": float(traces["fraction_below_init"].values[chain]),
            "drift_to_noise": float(traces["drift_to_noise"].values[chain]),
            "split_rhat": rhat, "ess_sampling_loss": ess,
        }
        for chain in range(losses.shape[0])
    ]


def run_influence(study, progress=None) -> dict:
    """Sample every checkpoint's posterior (cached units), then compute and store the influence results."""
    from codedyn.progress import SILENT
    from codedyn.sampling.posterior import sample_checkpoints

    sample_checkpoints(study, progress or SILENT)
    return compute_influence(study)


def compute_influence(study) -> dict:
    """Pure analysis of the stored posteriors: tables (parquet), transition calls, figures (PNG + PDF)."""
    import pandas as pd

    from codedyn.report.plots import loss_traces, matrix_heatmap, save_figure
    from codedyn.runs.store import write_json
    from codedyn.sampling.sgld import healthy_sample_losses

    config = study.config
    out = study.output_dir(INFLUENCE_DIR)
    samples = study.readout_samples()
    structure = SampleStructure.from_frame(samples)
    rows, replicates, diagnostics = [], {}, []
    for step, traces in study.posteriors():
        if list(traces["sample"].values) != samples["sample_id"].tolist():
            raise RuntimeError(f"stored posterior of step {step} read out other samples than this analysis expects")
        step_rows, step_replicates = checkpoint_summary(
            traces, structure, config.sampling.n_bootstrap, config.sampling.seed
        )
        rows.extend(step_rows)
        for name, values in step_replicates.items():
            replicates.setdefault(name, []).append(values)
        diagnostics.extend(chain_diagnostics(traces))
        save_figure(
            loss_traces(traces["sampling_loss"].values, float(traces["init_sampling_loss"]),
                        title=f"SGLD minibatch loss at step {step}", burn_in=config.sampling.burn_in),
            out / "traces" / f"loss_traces_step{step}",
        )
        if step in (study.steps[0], study.steps[-1]):
            labels = ["correct" if c else "incorrect" for c in structure.is_correct]
            figure = matrix_heatmap(bif_matrix(healthy_sample_losses(traces), normalised=True), labels,
                                    title=f"Normalised BIF at step {step}", cbar_label="-Corr(ℓ_i, ℓ_j)",
                                    mask_diagonal=True)
            save_figure(figure, out / f"bif_matrix_step{step}")
    table = pd.DataFrame(rows)
    table.to_parquet(out / "influence.parquet", index=False)
    pd.DataFrame(diagnostics).to_parquet(out / "diagnostics.parquet", index=False)
    np.savez_compressed(
        out / "bootstrap_replicates.npz", steps=np.asarray(study.steps),
        **{f"{q}/{v}": np.stack(r) for (q, v), r in replicates.items()},
    )
    calls = transition_calls(table, {name: np.stack(r) for name, r in replicates.items()})
    write_json(out / "transitions.json", calls)
    for variant in ("cov", "corr"):
        save_figure(influence_figure(table, variant, calls, study), out / f"influence_{variant}")
    return {"table": table, "calls": calls, "folder": out}


def _curve(table, quantity: str, variant: str):
    part = table[(table["quantity"] == quantity) & (table["variant"] == variant)].sort_values("step")
    return part["step"].to_numpy(), part["value"].to_numpy(), part["low"].to_numpy(), part["high"].to_numpy()


def transition_calls(table, replicates: dict) -> dict:
    """For every curve (aggregate x variant, and the LLC): sign flips, interior peaks and troughs,
    non-monotonicity and the sharp-vs-gradual verdict, each with the statistics behind it."""
    from codedyn.analysis.transitions import classify_trajectory, interior_peaks, monotonicity, sign_flips

    calls = {}
    curves = [(q, v) for v in ("cov", "corr") for q in AGGREGATES] + [("LLC", "llc")]
    for quantity, variant in curves:
        steps, values, lows, highs = _curve(table, quantity, variant)
        reps = replicates[(quantity, variant)]
        events = sign_flips(steps, values, lows, highs) + interior_peaks(steps, reps, values=values)
        trend = monotonicity(steps, reps, values=values)
        verdict = classify_trajectory(steps, reps, values=values)
        # The verdict (kind, bracket, effect, p-values; classify_trajectory's schema) plus the events from the
        # stored intervals.
        calls[f"{quantity}/{variant}"] = {
            **verdict, "events": [e.to_dict() for e in events] + ([trend.to_dict()] if trend else []),
        }
    return calls


def influence_figure(table, variant: str, calls: dict, study):
    from codedyn.report.plots import training_curves

    steps, *_ = _curve(table, "CC", variant)
    curves = {name: _curve(table, name, variant)[1:] for name in ("CC", "CI", "II", "paired")}
    llc = _curve(table, "LLC", "llc")[1:]
    events = [
        {"step": e["step"], "kind": e["kind"], "label": f"{name.split('/')[0]} {e['kind'].replace('_', ' ')}"}
        for name, found in calls.items() if name.endswith(f"/{variant}") and not name.startswith("unpaired")
        for e in found["events"] if e["kind"] == "sign_flip"
    ]
    formation = (study.suite_record or {}).get("formation", {})
    if formation.get("formed"):
        events.append({"step": formation["first_formed_step"], "kind": "transition", "label": "induction heads"})
    label = "BIF = -Cov(ℓ_i, ℓ_j)" if variant == "cov" else "normalised BIF = -Corr(ℓ_i, ℓ_j)"
    return training_curves(steps, curves, ylabel=f"mean off-diagonal {label}",
                           title="Influence between correct (C) and incorrect (I) code over training",
                           llc=llc, events=events)
