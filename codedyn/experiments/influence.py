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
