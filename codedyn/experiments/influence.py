"""Experiment 1: influence dynamics through the Bayesian influence function (BIF).

BIF(i, j) = -Cov_posterior(ℓ_i(w), ℓ_j(w)) over the pooled draws of the localised posterior at a checkpoint,
ℓ_i the mean token loss of sample i. The normalised variant is -Corr (the Pearson correlation with the same sign
convention, so both variants agree in sign). Negative BIF between i and j means that moving the weights to lower
the loss on i tends to lower it on j as well (their losses co-vary): "i helps j".

Per checkpoint the N x N matrix is summarised by block means over off-diagonal entries:

* CC: both samples correct, II: both incorrect (distinct samples);
* CI: a correct and an incorrect sample of *different* problems;
* paired: each correct reference with its own buggy mutant (same problem, near-identical text), on its own: those
  entries are near -1 (normalised) and would otherwise decide CI alone.

Raw blocks are dominated by one shared mode (all losses move together), so correctness shows in contrasts:

* delta = (CC + II) / 2 - CI: how much more samples of one kind influence each other than across kinds;
* the bug influence BIF(δ_p, ℓ_j) = -Cov(δ_p, ℓ_j), δ_p = ℓ_mutant - ℓ_reference of pair p, which cancels the
  shared mode (and anything else the two share). Summaries: ``bug_influence`` the mean over pairs p and samples j
  of other problems, ``bug_influence_correct`` / ``bug_influence_incorrect`` the means over correct / incorrect j,
  ``bug_gap`` = incorrect - correct (does a bug's direction help buggy code more than correct code?). The
  normalised variant is -Corr(δ_p, ℓ_j);
* ``pc1_share``: the share of the trace of Cov(ℓ) held by its first principal component, and every block mean and
  delta once more with that component removed (variants ``cov_no_pc1``, ``corr_no_pc1``: Cov - λ₁ v₁ v₁ᵀ, the
  normalised one rescaled by the remaining variances);
* ``lean_free_contrast`` = (CC + II)/2 + CI: the sum where delta takes the difference. A mode that moves correct
  and incorrect samples' losses in opposite directions with equal loadings (on the verdict readouts: the model's
  lean towards ``ok`` or ``bug``) adds +c to CC and II and -c to CI and cancels; a mode that moves them together
  (getting every verdict right or wrong at once) adds to all three and stays. Called on the verdict readouts only
  (on code tokens it is the shared mode itself).

**Readouts.** ``code`` (the default; variants as above): ℓ_i the mean code-token loss, what applies to any series.
On planted data two more readouts of the same posterior (:data:`READOUT_VARIABLES`), every quantity once more with
its variant prefixed (``verdict_cov``, ``odds_corr_no_pc1``, ...): ``verdict``, the loss of the right verdict
after the program's ``#`` (where the organism's capability is expressed; the raw blocks are dominated by the
shared lean mode, which the null twin has as well, so its contrasts are read with the first component removed);
and ``odds``, minus the right verdict's log-odds against the wrong one (log p(wrong) - log p(right)), which is
blind to how much probability the two verdicts share (a mode every sample has, correct or not).

Every quantity is a function of Cov(ℓ) alone (:func:`influence_quantities`), so one joint bootstrap gives them all:
each replicate resamples chains and draws (the Monte Carlo error of the posterior) and problems (the sampling
error of the dataset) at once; resampled problems enter the means as weights, so a duplicated problem never
contributes its own variance as if it were a covariance. The principal component is a property of the read-out
set's covariance, resampled over draws only; a resample repeats draws, which raises the top eigenvalue's share, so
the interval of ``pc1_share`` sits above its point estimate (measured on the toy suite: BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from codedyn.experiments.study import Study

AGGREGATES = ("CC", "CI", "II", "paired")
CONTRASTS = ("delta", "lean_free_contrast")
BUG_INFLUENCE = ("bug_influence", "bug_influence_correct", "bug_influence_incorrect", "bug_gap")
BLOCK_VARIANTS = ("cov", "corr", "cov_no_pc1", "corr_no_pc1")  # block means and delta
BUG_VARIANTS = ("cov", "corr")  # δ_p already cancels the shared mode
PC1 = ("pc1_share", "share")


def quantity_names() -> list[tuple[str, str]]:
    """Every (quantity, variant) :func:`influence_quantities` returns, in table order."""
    return ([(q, v) for v in BLOCK_VARIANTS for q in (*AGGREGATES, *CONTRASTS)]
            + [(q, v) for v in BUG_VARIANTS for q in BUG_INFLUENCE] + [PC1])


def posterior_covariance(losses: np.ndarray) -> np.ndarray:
    """Cov(ℓ) over pooled draws: ``losses`` [chains, draws, N] (or [draws, N]) -> [N, N] float64."""
    pooled = np.asarray(losses, dtype=np.float64).reshape(-1, np.shape(losses)[-1])
    if pooled.shape[0] < 2:
        raise ValueError("the BIF needs at least two posterior draws")
    centred = pooled - pooled.mean(axis=0)
    return centred.T @ centred / (pooled.shape[0] - 1)


def _normalise(cov: np.ndarray) -> np.ndarray:
    """Pearson correlation of a covariance matrix; a constant sample (zero variance) correlates 0, not NaN."""
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.outer(std, std)
    return np.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)


def bif_matrix(losses: np.ndarray, normalised: bool = False) -> np.ndarray:
    """BIF over pooled draws. ``losses``: [chains, draws, N] (or [draws, N]); returns [N, N] float64."""
    cov = posterior_covariance(losses)
    return -(_normalise(cov) if normalised else cov)


@dataclass(frozen=True)
class SampleStructure:
    """Which samples are correct, which problem each belongs to, and the (correct, incorrect) pairs."""

    is_correct: np.ndarray  # [N] bool
    problem: np.ndarray  # [N] int index of the sample's resampling unit (its group: its problem, or for planted
    # programs their operation pair, which the programs of one pair share; data.problems.Problem.group)
    pairs: np.ndarray  # [P, 2] int (correct sample index, incorrect sample index)

    @classmethod
    def from_frame(cls, samples) -> SampleStructure:
        """From a dataset's samples DataFrame (columns is_correct, problem_id or group, sample_id, paired_with).

        The unit is the dataset's ``group`` (one per problem, except planted programs: one per operation pair), the
        unit every interval of the study resamples; entries of two samples of one unit never enter CI or the bug
        influence, as entries of one problem never did."""
        from codedyn.resample import resampling_units

        units = resampling_units(samples)
        problem_codes = {pid: k for k, pid in enumerate(sorted(set(units)))}
        position = {sid: k for k, sid in enumerate(samples["sample_id"])}
        pairs = [
            (position[ref], k)
            for k, ref in enumerate(samples["paired_with"])
            if isinstance(ref, str) and ref in position
        ]
        return cls(
            is_correct=samples["is_correct"].to_numpy(dtype=bool),
            problem=np.asarray([problem_codes[p] for p in units]),
            pairs=np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
        )

    @property
    def n_problems(self) -> int:
        return int(self.problem.max()) + 1 if self.problem.size else 0


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    total = weights.sum()
    return float((weights * values).sum() / total) if total > 0 else float("nan")


def block_means(bif: np.ndarray, structure: SampleStructure, problem_weights: np.ndarray | None = None) -> dict:
    """CC / CI / II / paired means of the off-diagonal BIF entries.

    ``problem_weights`` [n_problems] (bootstrap multiplicities; default all ones) weight every entry (i, j) by
    w_problem(i) * w_problem(j); the diagonal never enters. CI takes only pairs of different problems.
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
        "CI": np.outer(correct, ~correct) & ~same_problem,
    }
    out = {name: _weighted_mean(bif, entry_weights * mask) for name, mask in masks.items()}
    if structure.pairs.size:
        out["paired"] = _weighted_mean(bif[structure.pairs[:, 0], structure.pairs[:, 1]], w[structure.pairs[:, 0]])
    else:
        out["paired"] = float("nan")
    return {name: out[name] for name in AGGREGATES}


def bug_influence(cov: np.ndarray, structure: SampleStructure, problem_weights: np.ndarray | None = None,
                  normalised: bool = False) -> dict:
    """Summaries of BIF(δ_p, ℓ_j) = -Cov(ℓ_mutant(p) - ℓ_reference(p), ℓ_j) (see the module docstring), from the
    covariance of the sample losses; entry (p, j) is weighted by w_problem(p) * w_problem(j), j of other problems."""
    names = BUG_INFLUENCE
    if not structure.pairs.size:
        return {name: float("nan") for name in names}
    weights = (
        np.ones(structure.n_problems) if problem_weights is None else np.asarray(problem_weights, dtype=np.float64)
    )
    ref, mut = structure.pairs[:, 0], structure.pairs[:, 1]
    values = -(cov[mut] - cov[ref])  # [P, N]: -Cov(δ_p, ℓ_j)
    if normalised:
        var_delta = cov[mut, mut] + cov[ref, ref] - 2 * cov[mut, ref]
        scale = np.sqrt(np.clip(np.outer(var_delta, np.diag(cov)), 0.0, None))
        values = np.divide(values, scale, out=np.zeros_like(values), where=scale > 0)
    w = weights[structure.problem]
    entry = np.outer(w[ref], w) * (structure.problem[ref][:, None] != structure.problem[None, :])
    correct = structure.is_correct[None, :]
    out = {
        "bug_influence": _weighted_mean(values, entry),
        "bug_influence_correct": _weighted_mean(values, entry * correct),
        "bug_influence_incorrect": _weighted_mean(values, entry * ~correct),
    }
    out["bug_gap"] = out["bug_influence_incorrect"] - out["bug_influence_correct"]
    return out


def first_component(cov: np.ndarray) -> tuple[float, np.ndarray, float]:
    """(λ₁, v₁, share): the largest eigenvalue of the covariance, its unit eigenvector and λ₁ / trace."""
    values, vectors = np.linalg.eigh(cov)
    trace = float(np.trace(cov))
    return float(values[-1]), vectors[:, -1], float(values[-1] / trace) if trace > 0 else float("nan")


def influence_quantities(cov: np.ndarray, structure: SampleStructure,
                         problem_weights: np.ndarray | None = None) -> dict[tuple[str, str], float]:
    """Every influence quantity of one covariance matrix of the sample losses, keyed (quantity, variant) as in
    :func:`quantity_names`. Applied to the true covariance it gives the analytic values the estimator targets."""
    lam, vec, share = first_component(cov)
    residual = cov - lam * np.outer(vec, vec)
    bifs = {"cov": -cov, "corr": -_normalise(cov), "cov_no_pc1": -residual, "corr_no_pc1": -_normalise(residual)}
    out: dict[tuple[str, str], float] = {}
    for variant in BLOCK_VARIANTS:
        means = block_means(bifs[variant], structure, problem_weights)
        means["delta"] = (means["CC"] + means["II"]) / 2 - means["CI"]
        means["lean_free_contrast"] = (means["CC"] + means["II"]) / 2 + means["CI"]
        out.update({(name, variant): means[name] for name in (*AGGREGATES, *CONTRASTS)})
    for variant in BUG_VARIANTS:
        found = bug_influence(cov, structure, problem_weights, normalised=variant == "corr")
        out.update({(name, variant): found[name] for name in BUG_INFLUENCE})
    out[PC1] = share
    return {key: out[key] for key in quantity_names()}


def bootstrap_influence(
    losses: np.ndarray, structure: SampleStructure, n_boot: int, seed: int
) -> dict[tuple[str, str], np.ndarray]:
    """Joint bootstrap replicates [n_boot] of every influence quantity (:func:`influence_quantities`).

    Each replicate resamples chains with replacement, draws within each chain by circular blocks (draws are
    autocorrelated; blocks of twice the measured autocorrelation time), and problems with replacement (as
    weights); every quantity of a replicate comes from the same resample, so differences and contrasts between them
    get honest intervals. The replicates are computed in batches (:func:`batched_influence_quantities`): equal to
    :func:`influence_quantities` of each replicate's covariance up to rounding (tests/experiments/test_influence.py).
    """
    from codedyn.analysis.stats import autocorrelation_block, bootstrap_draws
    from codedyn.resample import multiplicities

    rng = np.random.default_rng(seed)
    losses = np.asarray(losses, dtype=np.float64)
    chains, draws, n = losses.shape
    chain_idx, draw_idx = bootstrap_draws(chains, draws, n_boot, rng, block=autocorrelation_block(losses))
    # one problem resample per replicate, after the draw indices: the random stream of one replicate at a time
    weights = np.stack([multiplicities(rng, structure.n_problems) for _ in range(n_boot)])
    # the replicates' leading eigenvectors lie near the point estimate's: the start of their subspace iteration
    subspace = np.linalg.eigh(posterior_covariance(losses))[1][:, ::-1][:, :min(n, EIGEN_SUBSPACE)]
    replicates = {key: np.empty(n_boot) for key in quantity_names()}
    batch = max(1, BOOTSTRAP_BATCH_ENTRIES // (n * n))
    for start in range(0, n_boot, batch):
        part = slice(start, min(start + batch, n_boot))
        pooled = losses[chain_idx[part][:, :, None], draw_idx[part]].reshape(-1, chains * draws, n)
        centred = pooled - pooled.mean(axis=1, keepdims=True)  # posterior_covariance of each replicate
        covs = centred.transpose(0, 2, 1) @ centred / (chains * draws - 1)
        found = batched_influence_quantities(covs, structure, weights[part], subspace)
        for key in replicates:
            if key in found:
                replicates[key][part] = found[key]
            else:  # a quantity without a batched formula: one covariance at a time
                replicates[key][part] = [influence_quantities(c, structure, w)[key]
                                         for c, w in zip(covs, weights[part], strict=True)]
    return replicates


BOOTSTRAP_BATCH_ENTRIES = 200_000  # covariance entries per batch of replicates (1.6 MB per [batch, N, N] array)


def batched_influence_quantities(covs: np.ndarray, structure: SampleStructure, problem_weights: np.ndarray,
                                 start: np.ndarray | None = None) -> dict[tuple[str, str], np.ndarray]:
    """:func:`influence_quantities` of a stack of covariances ``covs`` [B, N, N] with problem weights
    [B, n_problems]: arrays [B], without forming any N x N matrix per variant.

    Every block mean is a weighted sum over a block of the BIF matrix -S R S (R the covariance C, or C - λ₁ v₁ v₁ᵀ
    without its first component; S = I, or the diagonal of inverse standard deviations that normalises R, 0 for a
    constant sample), whose mask is an outer product of indicator vectors less the diagonal (and, for CI, less the
    entries within one problem): with p = w·a·s and q = w·b·s, Σ_{i≠j} p_i q_j R_ij = pᵀ C q - λ₁ (p·v₁)(q·v₁) -
    Σ_i p_i q_i R_ii. So one batched product C @ [six weight vectors] gives every variant's blocks, the diagonal and
    the few within-problem entries are gathered, and the bug influence (rows mut - ref of C, weighted) follows from
    the same products. The first component comes from :func:`top_eigenpairs` (``start``: its starting subspace).
    """
    covs = np.asarray(covs, dtype=np.float64)
    w = np.asarray(problem_weights, dtype=np.float64)[:, structure.problem]  # [B, N] per-sample weights
    correct = structure.is_correct.astype(np.float64)
    incorrect = 1.0 - correct
    lam, vec = top_eigenpairs(covs, start)
    diag = np.diagonal(covs, axis1=1, axis2=2)
    trace = diag.sum(axis=1)
    residual_diag = diag - lam[:, None] * vec**2
    scales = {"cov": np.ones_like(diag), "corr": _inverse_std(diag), "cov_no_pc1": np.ones_like(diag),
              "corr_no_pc1": _inverse_std(residual_diag)}
    # C @ (w·c·s) and C @ (w·i·s) for s in the three distinct scalings, in one batched product
    columns = [w * correct * scales[v] for v in ("cov", "corr", "corr_no_pc1")]
    columns += [w * incorrect * scales[v] for v in ("cov", "corr", "corr_no_pc1")]
    products = covs @ np.stack(columns, axis=2)  # [B, N, 6]
    column = {("c", "cov"): 0, ("c", "corr"): 1, ("c", "corr_no_pc1"): 2, ("i", "cov"): 3, ("i", "corr"): 4,
              ("i", "corr_no_pc1"): 5}

    same_ci = (structure.problem[:, None] == structure.problem[None, :]) & np.outer(structure.is_correct,
                                                                                     ~structure.is_correct)
    si, sj = np.nonzero(same_ci)  # CI entries within one problem (excluded from CI)
    ref, mut = structure.pairs[:, 0], structure.pairs[:, 1]
    out: dict[tuple[str, str], np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for variant in BLOCK_VARIANTS:
            s = scales[variant]
            rank1 = lam if variant.endswith("no_pc1") else np.zeros_like(lam)
            r_diag = residual_diag if variant.endswith("no_pc1") else diag
            key = "cov" if variant == "cov_no_pc1" else variant
            pc, pi = w * correct * s, w * incorrect * s
            cpc, cpi = products[:, :, column[("c", key)]], products[:, :, column[("i", key)]]
            pv, iv = (pc * vec).sum(axis=1), (pi * vec).sum(axis=1)
            within = (pc[:, si] * pi[:, sj] * (covs[:, si, sj] - rank1[:, None] * vec[:, si] * vec[:, sj])).sum(1)
            sums = {
                "CC": (pc * cpc).sum(axis=1) - rank1 * pv * pv - (pc**2 * r_diag).sum(axis=1),
                "II": (pi * cpi).sum(axis=1) - rank1 * iv * iv - (pi**2 * r_diag).sum(axis=1),
                "CI": (pc * cpi).sum(axis=1) - rank1 * pv * iv - within,
            }
            wc, wi = w * correct, w * incorrect
            totals = {
                "CC": wc.sum(axis=1) ** 2 - (wc**2).sum(axis=1),
                "II": wi.sum(axis=1) ** 2 - (wi**2).sum(axis=1),
                "CI": wc.sum(axis=1) * wi.sum(axis=1) - (wc[:, si] * wi[:, sj]).sum(axis=1),
            }
            means = {name: _ratio(-sums[name], totals[name]) for name in sums}
            if structure.pairs.size:
                entry = -s[:, ref] * s[:, mut] * (covs[:, ref, mut] - rank1[:, None] * vec[:, ref] * vec[:, mut])
                means["paired"] = _ratio((w[:, ref] * entry).sum(axis=1), w[:, ref].sum(axis=1))
            else:
                means["paired"] = np.full(lam.shape, np.nan)
            means["delta"] = (means["CC"] + means["II"]) / 2 - means["CI"]
            means["lean_free_contrast"] = (means["CC"] + means["II"]) / 2 + means["CI"]
            out.update({(name, variant): means[name] for name in (*AGGREGATES, *CONTRASTS)})
        out.update(_batched_bug_influence(covs, structure, w, diag, products, column))
        out[PC1] = np.where(trace > 0, lam / np.where(trace > 0, trace, 1.0), np.nan)
    return out


EIGEN_SUBSPACE = 8  # vectors of the subspace iteration in :func:`top_eigenpairs`
EIGEN_POWER = 4  # products with the matrix per iteration (one QR and one Rayleigh-Ritz step)
EIGEN_ITERATIONS = 15  # its iterations before the unconverged matrices go to a full eigendecomposition
EIGEN_TOLERANCE = 1e-14  # converged: residual ||C v - θ v|| at most this times θ
EIGEN_GAP = 1e-2  # ... and the two largest Ritz values at least this far apart, relative to θ


def top_eigenpairs(covs: np.ndarray, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Largest eigenvalue [B] and its unit eigenvector [B, N] of each symmetric matrix of ``covs`` [B, N, N].

    The matrices must be positive semi-definite (covariances). Only the first component is needed, so instead of a full
    eigendecomposition per matrix this runs a batched subspace iteration (block power method with Rayleigh-Ritz, from
    ``start`` [N, k - 1] and one fixed random vector; without ``start``, k fixed random vectors). Each iteration
    multiplies by the matrix ``EIGEN_POWER`` times before one QR and one Rayleigh-Ritz step: on N ~ 100 the per-matrix
    LAPACK calls on the small factors cost more than a product, and the columns that collapse towards the leading
    direction in between only slow the lower Ritz pairs. A matrix is done when its top Ritz pair's residual is at most
    ``EIGEN_TOLERANCE`` · θ, the second Ritz value is clearly below θ, and the squared Frobenius norm left outside the
    subspace's k Ritz values is below θ² (so no eigenvector the subspace missed can have a larger eigenvalue: the check
    that a start without the leading eigenvector does not pass off the second as the first; the trace outside the
    subspace, the same check on eigenvalues instead of their squares, stays above θ on a flat spectrum however long it
    iterates). Then eigenvalue and eigenvector agree with ``numpy.linalg.eigh`` to rounding (the vector's sign is
    arbitrary, as eigh's). Matrices not done after ``EIGEN_ITERATIONS`` (a flat spectrum, nearly equal top eigenvalues)
    get the full eigendecomposition.
    """
    covs = np.asarray(covs, dtype=np.float64)
    b, n = covs.shape[0], covs.shape[-1]
    lam, vec = np.empty(b), np.empty((b, n))
    k = min(n, EIGEN_SUBSPACE)
    random = np.random.default_rng(0).normal(size=(n, k))
    first = random if start is None else np.column_stack([np.asarray(start, dtype=np.float64)[:, :k - 1],
                                                          random[:, :1]])
    q = np.broadcast_to(np.linalg.qr(first)[0], (b, n, first.shape[1])).copy()
    todo, active = np.arange(b), covs
    squares = np.einsum("bij,bij->b", covs, covs)
    for _ in range(EIGEN_ITERATIONS):
        z = active @ q  # C Q
        ritz, y = np.linalg.eigh(q.transpose(0, 2, 1) @ z)  # Rayleigh-Ritz on span(Q)
        theta, top = ritz[:, -1], y[:, :, -1:]
        v = (q @ top)[:, :, 0]
        residual = np.linalg.norm((z @ top)[:, :, 0] - theta[:, None] * v, axis=1)
        done = ((residual <= EIGEN_TOLERANCE * theta) & (theta - ritz[:, -2] >= EIGEN_GAP * theta)
                & (squares[todo] - (ritz**2).sum(axis=1) < theta**2))
        lam[todo[done]], vec[todo[done]] = theta[done], v[done] / np.linalg.norm(v[done], axis=1, keepdims=True)
        todo, active, z = todo[~done], active[~done], z[~done]
        if not todo.size:
            return lam, vec
        for _ in range(EIGEN_POWER - 1):
            z = active @ z
        q = np.linalg.qr(z)[0]
    values, vectors = np.linalg.eigh(covs[todo])
    lam[todo], vec[todo] = values[:, -1], vectors[:, :, -1]
    return lam, vec


def _inverse_std(variances: np.ndarray) -> np.ndarray:
    """1 / sqrt(variance), 0 where the variance is not positive (as :func:`_normalise` sets such entries to 0)."""
    std = np.sqrt(np.clip(variances, 0.0, None))
    return np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator (a sum of weights) is 0."""
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def _batched_bug_influence(covs, structure: SampleStructure, w, diag, products, column) -> dict:
    """:func:`bug_influence` (both variants) of a stack of covariances from the products C @ (w·c·s), C @ (w·i·s)
    of :func:`batched_influence_quantities`: Σ_j over other problems = Σ_j over all - Σ_j within the pair's
    problem."""
    if not structure.pairs.size:
        return {(name, v): np.full(covs.shape[0], np.nan) for v in BUG_VARIANTS for name in BUG_INFLUENCE}
    ref, mut = structure.pairs[:, 0], structure.pairs[:, 1]
    correct = structure.is_correct.astype(np.float64)
    bp, bj = np.nonzero(structure.problem[ref][:, None] == structure.problem[None, :])  # (pair, sample) within
    var_delta = covs[:, mut, mut] + covs[:, ref, ref] - 2 * covs[:, mut, ref]
    out = {}
    for variant in BUG_VARIANTS:
        normalised = variant == "corr"
        t = _inverse_std(var_delta) if normalised else np.ones_like(var_delta)  # [B, P]
        s = _inverse_std(diag) if normalised else np.ones_like(diag)  # [B, N]
        a = w[:, ref] * t
        within_rows = (covs[:, mut[bp], bj] - covs[:, ref[bp], bj]) * s[:, bj] * w[:, bj]  # [B, entries]
        sums, totals = {}, {}
        for kind, m in (("correct", correct), ("incorrect", 1.0 - correct)):
            product = products[:, :, column[("c" if kind == "correct" else "i", variant)]]
            all_j = product[:, mut] - product[:, ref]  # Σ_j (C_mut,j - C_ref,j) s_j w_j m_j
            within = np.zeros_like(all_j)
            np.add.at(within.T, bp, (within_rows * m[bj]).T)
            sums[kind] = -(a * (all_j - within)).sum(axis=1)
            wm = w * m
            within_w = np.zeros((w.shape[0], ref.size))
            np.add.at(within_w.T, bp, wm[:, bj].T)
            totals[kind] = (w[:, ref] * (wm.sum(axis=1, keepdims=True) - within_w)).sum(axis=1)
        found = {
            "bug_influence": _ratio(sums["correct"] + sums["incorrect"], totals["correct"] + totals["incorrect"]),
            "bug_influence_correct": _ratio(sums["correct"], totals["correct"]),
            "bug_influence_incorrect": _ratio(sums["incorrect"], totals["incorrect"]),
        }
        found["bug_gap"] = found["bug_influence_incorrect"] - found["bug_influence_correct"]
        out.update({(name, variant): found[name] for name in BUG_INFLUENCE})
    return out


# Readouts besides the code tokens: name -> (traces variable, sign). The ``odds`` readout is minus the stored
# right-verdict margin, so that (like every loss) it falls as the model gets the verdict right.
READOUT_VARIABLES = {"verdict": ("verdict_loss", 1.0), "odds": ("verdict_margin", -1.0)}


def readout_variant(variant: str, readout: str) -> str:
    """The variant name of a quantity on ``readout``: code-token variants keep their names, the others are
    prefixed (``verdict_cov_no_pc1``)."""
    return variant if readout == "code" else f"{readout}_{variant}"


def readouts_of(traces) -> list[str]:
    """The readouts a posterior's traces hold: always ``code``, and each of :data:`READOUT_VARIABLES` it stored."""
    return ["code"] + [name for name, (variable, _) in READOUT_VARIABLES.items() if variable in traces]


def readout_losses(traces, readout: str) -> np.ndarray:
    """[healthy chains, draws, N] per-sample values of one readout (see the module docstring)."""
    from codedyn.sampling.sgld import healthy_sample_losses

    if readout == "code":
        return healthy_sample_losses(traces)
    if readout not in READOUT_VARIABLES:
        raise ValueError(f"unknown readout {readout!r}; expected code or one of {sorted(READOUT_VARIABLES)}")
    variable, sign = READOUT_VARIABLES[readout]
    if variable not in traces:
        raise KeyError(f"the posterior of step {traces.attrs.get('step')} did not record {variable} (not planted "
                       "data, or sampled before verdict readouts)")
    return sign * traces[variable].values[traces["healthy"].values]


def readout_summary(traces, structure: SampleStructure, n_boot: int, seed: int,
                    readout: str) -> tuple[list[dict], dict]:
    """Every influence quantity of one verdict readout of one checkpoint (:func:`influence_quantities` on its
    covariance; variants renamed by :func:`readout_variant`), with percentile CIs from the same joint bootstrap as
    the code-token quantities, and the replicates keyed (quantity, variant)."""
    from codedyn.analysis.stats import percentile_ci

    step = int(traces.attrs["step"])
    losses = readout_losses(traces, readout)
    point = influence_quantities(posterior_covariance(losses), structure)
    replicates = bootstrap_influence(losses, structure, n_boot, seed)
    renamed = {(q, readout_variant(v, readout)): replicates[(q, v)] for q, v in quantity_names()}
    rows = [{"step": step, "quantity": q, "variant": readout_variant(v, readout), "readout": readout,
             **percentile_ci(replicates[(q, v)], point[(q, v)]).to_dict()} for q, v in quantity_names()]
    return rows, renamed


def samples_of(samples, traces):
    """The rows of the study's read-out samples that a posterior holds, in its order (a mutant whose change does
    not fit its readout window was left out, see :func:`codedyn.sampling.losses.select_readout`)."""
    held = [str(s) for s in traces["sample"].values]
    by_id = samples.set_index("sample_id", drop=False)
    unknown = sorted(set(held) - set(by_id.index))
    if unknown:
        raise RuntimeError(f"stored posterior of step {traces.attrs.get('step')} read out samples this analysis "
                           f"does not expect: {unknown[:3]}")
    return by_id.loc[held].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------- run / compute

INFLUENCE_DIR = "influence"


def llc_replicates(traces, n_boot: int, seed: int):
    """The checkpoint's LLC (:func:`codedyn.sampling.llc.estimate_llc`: matched minibatch reference, healthy
    chains, no LLC at a non-minimum) and its bootstrap replicates [n_boot]: chains resampled, steps in circular
    blocks of twice the excess loss' autocorrelation time. Returns ``(LLCEstimate, replicates)``."""
    from codedyn.analysis.stats import autocorrelation_block, bootstrap_draws
    from codedyn.sampling.llc import estimate_llc

    llc = estimate_llc(traces)
    if llc.excess.shape[0] == 0:
        return llc, np.full(n_boot, np.nan)
    chain_idx, draw_idx = bootstrap_draws(*llc.excess.shape, n_boot, np.random.default_rng(seed),
                                          block=autocorrelation_block(llc.excess))
    return llc, llc.replicates(chain_idx, draw_idx)


def checkpoint_summary(traces, structure: SampleStructure, n_boot: int, seed: int) -> tuple[list[dict], dict]:
    """One checkpoint: tidy rows (every influence quantity and variant, and the LLC) with percentile CIs, and the
    bootstrap replicates behind them, keyed (quantity, variant)."""
    from codedyn.analysis.stats import percentile_ci
    from codedyn.sampling.sgld import healthy_sample_losses

    step = int(traces.attrs["step"])
    losses = healthy_sample_losses(traces)
    point = influence_quantities(posterior_covariance(losses), structure)
    replicates = bootstrap_influence(losses, structure, n_boot, seed)
    rows = [{"step": step, "quantity": name, "variant": variant,
             **percentile_ci(replicates[(name, variant)], point[(name, variant)]).to_dict()}
            for name, variant in quantity_names()]
    llc, llc_boot = llc_replicates(traces, n_boot, seed)
    replicates[("LLC", "llc")] = llc_boot
    rows.append({"step": step, "quantity": "LLC", "variant": "llc", **percentile_ci(llc_boot, llc.value).to_dict(),
                 "llc_status": llc.status})
    for row in rows:  # a property of the checkpoint: the LLC verdicts and the report leave non-minima out
        row["local_minimum"] = llc.local_minimum
    return rows, replicates


def chain_diagnostics(traces) -> list[dict]:
    """Per-chain health of one posterior (:mod:`codedyn.sampling.sgld`): healthy, why not, the excess loss over the
    checkpoint's on the same minibatches and how often it is negative (a chain below w* means w* is not a local
    minimum at this temperature), drift against noise, step sharpness, spikiness, oscillation, per-chain LLC, and
    the posterior-wide split R-hat / ESS of the excess loss (the full table per quantity: ``mixing.parquet``)."""
    from codedyn.analysis.stats import effective_sample_size, split_rhat
    from codedyn.sampling.llc import trace_excess_losses

    excess = trace_excess_losses(traces)
    healthy = traces["healthy"].values
    mixing = excess[healthy]
    rhat = split_rhat(mixing) if mixing.shape[0] >= 1 and mixing.shape[1] >= 4 else float("nan")
    ess = effective_sample_size(mixing) if mixing.shape[0] >= 1 and mixing.shape[1] >= 4 else float("nan")
    init = float(traces["init_sampling_loss"])
    per_chain = ("step_sharpness", "spikiness", "loss_autocorrelation", "chain_llc")
    return [
        {
            "step": int(traces.attrs["step"]), "chain": chain, "healthy": bool(healthy[chain]),
            "unhealthy_reason": str(traces["unhealthy_reason"].values[chain]),
            "init_loss": init, "mean_loss_after_burn_in": init + float(np.nanmean(excess[chain])),
            "mean_excess_loss": float(np.nanmean(excess[chain])),
            "fraction_below_init": float(traces["fraction_below_init"].values[chain]),
            "drift_to_noise": float(traces["drift_to_noise"].values[chain]),
            **{name: float(traces[name].values[chain]) for name in per_chain},
            "split_rhat": rhat, "ess_sampling_loss": ess,
        }
        for chain in range(excess.shape[0])
    ]


def run_influence(study: Study, progress=None) -> InfluenceResult:
    """Sample every checkpoint's posterior (cached units), then compute and store the influence results."""
    from codedyn.experiments.posteriors import sample_checkpoints
    from codedyn.progress import SILENT

    sample_checkpoints(study, progress or SILENT)
    return compute_influence(study)


@dataclass(frozen=True)
class InfluenceResult:
    """What Experiment 1 stored under ``<run>/influence/``."""

    folder: Path
    table: pd.DataFrame  # step, quantity, variant, value, low, high (and the LLC's rows)
    calls: dict[str, dict]  # curve ("CI/cov", "LLC/llc", ...) -> its shape call


def compute_influence(study: Study) -> InfluenceResult:
    """Pure analysis of the stored posteriors: tables (parquet), transition calls, figures (PNG + PDF)."""
    import pandas as pd

    from codedyn.figures.plots import loss_traces, matrix_heatmap, save_figure
    from codedyn.runs.layout import TRANSITIONS_FILE
    from codedyn.runs.store import write_json
    from codedyn.sampling.diagnostics import posterior_diagnostics
    from codedyn.sampling.sgld import healthy_sample_losses

    config = study.config
    out = study.output_dir(INFLUENCE_DIR)
    samples = study.readout_samples()
    rows, replicates, diagnostics, mixing, windows = [], {}, [], [], {}
    for step, traces in study.posteriors():
        structure = SampleStructure.from_frame(samples_of(samples, traces))
        # How each checkpoint was read: its context and the mutants left out because their change did not fit.
        windows[str(step)] = {"readout_context": traces.attrs.get("readout_context"),
                              "samples": int(structure.is_correct.size), "pairs": int(structure.pairs.shape[0]),
                              "readout_excluded": traces.attrs.get("readout_excluded")}
        step_rows, step_replicates = checkpoint_summary(
            traces, structure, config.sampling.n_bootstrap, config.sampling.seed
        )
        step_rows = [{**row, "readout": "code"} for row in step_rows]
        for readout in readouts_of(traces)[1:]:  # planted data: the verdict readouts of the same posterior
            more_rows, more_replicates = readout_summary(traces, structure, config.sampling.n_bootstrap,
                                                         config.sampling.seed, readout)
            step_rows = step_rows + [{**row, "local_minimum": step_rows[0]["local_minimum"]} for row in more_rows]
            step_replicates = {**step_replicates, **more_replicates}
        rows.extend(step_rows)
        for name, values in step_replicates.items():
            replicates.setdefault(name, []).append(values)
        diagnostics.extend(chain_diagnostics(traces))
        mixing.extend(posterior_diagnostics(traces))
        save_figure(
            loss_traces(traces["sampling_loss"].values, float(traces["init_sampling_loss"]),
                        title=f"SGLD minibatch loss at step {step}", burn_in=config.sampling.burn_in),
            out / "traces" / f"loss_traces_step{step}", pdf=False,  # a sampler-health check the report shows
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
    pd.DataFrame(mixing).to_parquet(out / "mixing.parquet", index=False)
    np.savez_compressed(
        out / "bootstrap_replicates.npz", steps=np.asarray(study.steps),
        **{f"{q}/{v}": np.stack(r) for (q, v), r in replicates.items()},
    )
    write_json(out / "readout.json", windows)
    calls = transition_calls(table, {name: np.stack(r) for name, r in replicates.items()})
    write_json(out / TRANSITIONS_FILE, calls)
    for variant in ("cov", "corr"):
        save_figure(influence_figure(table, variant, calls, study), out / f"influence_{variant}")
        save_figure(contrast_figure(table, variant), out / f"influence_contrasts_{variant}")
    if verdict_curves(table):
        save_figure(verdict_contrast_figure(table), out / "influence_verdict_contrasts")
    return InfluenceResult(out, table, calls)


def contrast_figure(table, variant: str):
    """delta, the bug influence and the bug gap over training (one variant), with their intervals."""
    from codedyn.figures.plots import training_curves

    steps, *_ = _curve(table, "delta", variant)
    curves = {name: _curve(table, name, variant)[1:] for name in ("delta", "bug_influence", "bug_gap")}
    label = "-Cov" if variant == "cov" else "-Corr"
    return training_curves(steps, curves, ylabel=f"contrast of BIF = {label}",
                           title="Correctness contrasts: delta = (CC + II)/2 - CI, bug influence BIF(δ_p, ℓ_j)")


def verdict_contrast_figure(table):
    """The verdict readouts' lean-free contrasts over training (normalised), with their intervals."""
    from codedyn.figures.plots import training_curves

    shown = [(q, v) for q, v in verdict_curves(table) if v.endswith("corr_no_pc1") or q == "lean_free_contrast"]
    steps = _curve(table, *shown[0])[0]
    curves = {f"{q} ({v})": _curve(table, q, v)[1:] for q, v in shown}
    return training_curves(steps, curves, ylabel="contrast of the verdict-readout BIF",
                           title="Verdict readouts: delta without the lean mode (PC1), (CC + II)/2 + CI")


def _curve(table, quantity: str, variant: str):
    part = table[(table["quantity"] == quantity) & (table["variant"] == variant)].sort_values("step")
    return part["step"].to_numpy(), part["value"].to_numpy(), part["low"].to_numpy(), part["high"].to_numpy()


def _curve_minima(table, steps) -> np.ndarray:
    """[len(steps)] bool: which of the curve's checkpoints are local minima (the LLC's verdicts use only those)."""
    minimum = table.drop_duplicates("step").set_index("step")["local_minimum"]
    return np.array([bool(minimum[s]) for s in steps], dtype=bool)


def transition_calls(table, replicates: dict) -> dict:
    """For every curve (block means, delta, bug influence and bug gap in both variants, the PC1 share and the
    LLC): sign flips, interior peaks and troughs, non-monotonicity and the sharp-vs-gradual verdict, each with the
    statistics behind it. A curve with undefined replicates (a problem resample without a pair, possible only with
    a handful of problems) gets no call, and so does an LLC with fewer than two checkpoints that are local minima."""
    from codedyn.analysis.transitions import classify_trajectory, interior_peaks, monotonicity, sign_flips

    calls = {}
    called = (*AGGREGATES, "delta", "bug_influence", "bug_gap")
    curves = ([(q, v) for q, v in quantity_names() if v in ("cov", "corr") and q in called]
              + [PC1, ("LLC", "llc")] + verdict_curves(table))
    for quantity, variant in curves:
        if (quantity, variant) not in replicates:  # a curve this table does not hold
            continue
        steps, values, lows, highs = _curve(table, quantity, variant)
        reps = replicates[(quantity, variant)]
        if quantity == "LLC" and "local_minimum" in table:  # a checkpoint that is not a local minimum has no LLC
            keep = _curve_minima(table, steps)
            steps, values, lows, highs, reps = steps[keep], values[keep], lows[keep], highs[keep], reps[keep]
            if steps.size < 2:  # no curve to call: the report shows the LLC row as not estimated
                continue
        if not np.isfinite(reps).all():
            continue
        events = sign_flips(steps, values, lows, highs) + interior_peaks(steps, reps, values=values)
        trend = monotonicity(steps, reps, values=values)
        verdict = classify_trajectory(steps, reps, values=values)
        # The verdict (kind, bracket, effect, p-values; classify_trajectory's schema) plus the events from the
        # stored intervals.
        calls[f"{quantity}/{variant}"] = {
            **verdict, "events": [e.to_dict() for e in events] + ([trend.to_dict()] if trend else []),
        }
    return calls


# The verdict readouts' curves that get calls (the rest stay in the tables): the lean-free contrasts (delta with the
# first component removed, the sum contrast) and the bug influence, as (quantity, base variant).
VERDICT_CALLED = (("delta", "cov_no_pc1"), ("delta", "corr_no_pc1"), ("delta", "corr"),
                  ("lean_free_contrast", "cov"), ("lean_free_contrast", "corr"),
                  ("bug_influence", "corr"), ("bug_gap", "corr"), ("pc1_share", "share"))


def verdict_curves(table) -> list[tuple[str, str]]:
    """(quantity, variant) of every verdict-readout curve the table holds that :func:`transition_calls` calls."""
    present = set(zip(table["quantity"], table["variant"], strict=True))
    return [(q, readout_variant(v, readout)) for readout in READOUT_VARIABLES for q, v in VERDICT_CALLED
            if (q, readout_variant(v, readout)) in present]


def influence_figure(table, variant: str, calls: dict, study: Study):
    from codedyn.figures.plots import training_curves

    steps, *_ = _curve(table, "CC", variant)
    curves = {name: _curve(table, name, variant)[1:] for name in ("CC", "CI", "II", "paired")}
    from codedyn.analysis.events import known_events, sharp_call_events
    from codedyn.figures.plots import llc_from_table

    llc = llc_from_table(table, list(steps))
    events = [
        {"step": e["step"], "kind": e["kind"], "label": f"{name.split('/')[0]} {e['kind'].replace('_', ' ')}"}
        for name, found in calls.items() if name.endswith(f"/{variant}") and name.split("/")[0] in AGGREGATES
        for e in found.get("events", []) if e["kind"] == "sign_flip"
    ] + sharp_call_events(calls, {f"{q}/{variant}": q for q in curves}) + known_events(study)
    label = "BIF = -Cov(ℓ_i, ℓ_j)" if variant == "cov" else "normalised BIF = -Corr(ℓ_i, ℓ_j)"
    return training_curves(steps, curves, ylabel=f"mean off-diagonal {label}",
                           title="Influence between correct (C) and incorrect (I) code over training",
                           llc=llc, events=events)
