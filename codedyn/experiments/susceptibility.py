"""Experiment 3 estimators: susceptibilities of components to correct and incorrect code.

Sign convention throughout: χ = -Cov, so that χ > 0 means that upweighting distribution j raises the observable.

**covariance** (the default; one shared posterior per checkpoint). χ_ij = -Cov_posterior(φ_i(w), L_j(w)), φ_i an
observable of component i (head / MLP output norm, SAE latent activation), L_j(w) the mean loss over the samples of
distribution j (correct code, incorrect code, or any named subset). Linear response: replacing the sampling loss L_n
by (1 - h) L_n + h L_j shifts E[φ_i] by -nβ h Cov(φ_i, L_j - L_n) to first order, i.e. nβ h (χ_ij - χ_i,n): training
harder on j raises φ_i when χ_ij exceeds the corpus term χ_i,n, not merely when χ_ij > 0 (checked against closed
forms and against sampling with the perturbed loss in tests/experiments/test_linear_response.py).

**The correctness contrast.** χ_correct and χ_incorrect are nearly collinear (both carry the mode all losses
share), so the quantity of interest is χ_incorrect - χ_correct = -Cov(φ_i, L_incorrect - L_correct): moving weight h
from correct to incorrect code shifts E[φ_i] by nβ h times it, with no corpus term. It gets intervals from the same
joint bootstrap as the χ, and family-wise control across every component and checkpoint by the bootstrap max-T
(:func:`max_t`; each checkpoint's posterior is resampled with its own seed, so the stacked replicates are
independent across checkpoints as the posteriors are). Opposite responders (χ_correct and χ_incorrect of
opposite signs) are called under the same control, over components x checkpoints x both distributions.

**weight_restricted** (Baker et al. 2025, "Structural inference: interpreting small language models with
susceptibilities", the estimator of their appendix C.4 as devinterp implements it). Component C's observable is
localised on C's weights: φ_C(w) = δ(u - u*) [L(w) - L(w*)], u the weights outside C, L the corpus (sampling) loss.
The delta function turns posterior expectations of φ_C into expectations under the weight-restricted posterior
p_C (only C's weights move, :mod:`codedyn.sampling.restricted`), up to the density of u at u*, which is dropped:

    χ_Cj = -( E_C[φ_C Δ_j] - E_C[φ_C] E_full[Δ_j] ),   φ_C = L_obs(w) - L_obs(w*),   Δ_j = L_j(w) - L_obs(w),

L_obs the mean loss on fixed corpus observation windows, L_j as above, E_C the restricted and E_full the
unrestricted posterior mean (sampled with the same readout). Equivalently χ_Cj = -Cov_C(φ_C, Δ_j)
- E_C[φ_C] (E_C[Δ_j] - E_full[Δ_j]): the covariance inside C's posterior plus the change of the posterior mass at
u = u* (when upweighting j narrows the posterior of the other weights, more mass sits at u* and φ_C rises with it).
Δ_j is measured relative to the corpus loss because the perturbation (1 - h) L_n + h L_j adds h (L_j - L_n).

The standardised variants divide by the posterior standard deviation of φ (a z-scored observable), so components
with very different output scales can be compared. Intervals resample chains and blocks of draws (for the
weight-restricted estimator the restricted and the full posterior are resampled independently).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codedyn.analysis.curves import CHI_CONTRAST_DISTRIBUTION, tracked_components
from codedyn.progress import SILENT, Progress

if TYPE_CHECKING:
    import pandas as pd

    from codedyn.experiments.study import Study


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


def susceptibility_replicates(
    observed: np.ndarray, losses: np.ndarray, n_boot: int, seed: int, standardised: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(χ [K, G], replicates [n_boot, K, G]) over chain + block resamples of ``observed`` [chains, draws, K] and
    ``losses`` [chains, draws, G], resampled together (so any contrast of χ columns gets a joint interval)."""
    from codedyn.analysis.stats import autocorrelation_block, bootstrap_draws

    chains, draws = observed.shape[:2]
    chain_idx, draw_idx = bootstrap_draws(chains, draws, n_boot, np.random.default_rng(seed),
                                          block=autocorrelation_block(observed))
    replicates = np.stack([
        susceptibilities(observed[chain_idx[b][:, None], draw_idx[b]], losses[chain_idx[b][:, None], draw_idx[b]],
                         standardised)
        for b in range(n_boot)
    ])
    return susceptibilities(observed, losses, standardised), replicates


def unit_weighted_losses(sample_loss: np.ndarray, groups: dict[str, np.ndarray], unit_weights: np.ndarray,
                         units: np.ndarray) -> np.ndarray:
    """L_j per draw as :func:`distribution_losses`, each sample weighted by its unit's bootstrap multiplicity
    (``unit_weights`` [n_units], ``units`` [N] each sample's unit index): the mean over a resample of the read-out
    programs. [..., n_groups]."""
    weights = np.asarray(unit_weights, dtype=np.float64)[np.asarray(units)]
    masks = np.stack([np.asarray(mask, dtype=bool) for mask in groups.values()], axis=1) * weights[:, None]
    totals = masks.sum(axis=0)
    if (totals <= 0).any():  # a resample without any program of a distribution: the mean is undefined
        masks = np.where(totals > 0, masks, np.stack([np.asarray(m, dtype=float) for m in groups.values()], 1))
        totals = masks.sum(axis=0)
    return np.asarray(sample_loss, dtype=np.float64) @ (masks / totals)


def unit_susceptibility_replicates(
    observed: np.ndarray, sample_loss: np.ndarray, groups: dict[str, np.ndarray], units: np.ndarray, n_boot: int,
    seed: int, standardised: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(χ [K, G], replicates [n_boot, K, G]) as :func:`susceptibility_replicates`, with the read-out programs
    resampled too: every replicate resamples chains and blocks of draws of ``observed`` and ``sample_loss`` [chains,
    draws, N] together, and the resampling units (``units`` [N]: the dataset's groups, problems or, for planted
    programs, operation pairs) with replacement, so L_j is the mean over a resample of the programs and the interval
    holds the readout set's sampling error beside the posterior's Monte Carlo error.

    ``observed``: [chains, draws, N, K] per-program readings (:mod:`codedyn.sampling.observables`), whose mean over
    the programs is φ; a replicate's φ is their mean over the same resample of the programs as its L_j. A
    [chains, draws, K] ``observed`` (observables read on a fixed batch, e.g. a restricted posterior's) is held as
    it is."""
    from codedyn.analysis.stats import autocorrelation_block, bootstrap_draws
    from codedyn.resample import multiplicities

    units = np.unique(np.asarray(units), return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    chains, draws = observed.shape[:2]
    per_program = observed.ndim == 4
    phi = observed.mean(axis=2) if per_program else observed
    chain_idx, draw_idx = bootstrap_draws(chains, draws, n_boot, rng, block=autocorrelation_block(phi))
    unit_weights = multiplicities(rng, int(units.max()) + 1, n_boot)
    point = susceptibilities(phi, distribution_losses(sample_loss, groups), standardised)
    replicates = np.stack([
        susceptibilities(phi_b[chain_idx[b][:, None], draw_idx[b]],
                         unit_weighted_losses(sample_loss[chain_idx[b][:, None], draw_idx[b]], groups,
                                              unit_weights[b], units), standardised)
        for b, phi_b in enumerate(_resampled_observables(observed, unit_weights, units) if per_program
                                  else (phi for _ in range(n_boot)))
    ])
    return point, replicates


def _resampled_observables(observed: np.ndarray, unit_weights: np.ndarray, units: np.ndarray, chunk: int = 128):
    """φ [chains, draws, K] of each replicate's resample of the programs, one replicate at a time: the mean of the
    per-program readings ``observed`` [chains, draws, N, K] weighted by their units' multiplicities, computed
    ``chunk`` replicates per matrix product (memory stays at chunk x chains x draws x K)."""
    chains, draws, n, k = observed.shape
    by_program = np.moveaxis(np.asarray(observed, dtype=np.float64), 2, 0).reshape(n, -1)  # [N, chains*draws*K]
    for start in range(0, unit_weights.shape[0], chunk):
        weights = unit_weights[start:start + chunk, units]
        weights = weights / weights.sum(axis=1, keepdims=True)
        yield from (weights @ by_program).reshape(-1, chains, draws, k)


def program_readings(traces) -> np.ndarray:
    """[healthy chains, draws, N, K] every read-out program's observable readings (the input of
    :func:`unit_susceptibility_replicates`)."""
    from codedyn.sampling.observables import OBSERVED_BY_SAMPLE

    return traces[OBSERVED_BY_SAMPLE].values[traces["healthy"].values]


def _percentile(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1 - level) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha], axis=0)
    return low, high


def bootstrap_susceptibilities(
    observed: np.ndarray, losses: np.ndarray, n_boot: int, seed: int, standardised: bool = False, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(χ, low, high), each [K, G]: point estimate and percentile interval over chain + block resamples of
    ``observed`` [chains, draws, K] and ``losses`` [chains, draws, G] (resampled together)."""
    chi, replicates = susceptibility_replicates(observed, losses, n_boot, seed, standardised)
    return (chi, *_percentile(replicates, level))


def max_t(points: np.ndarray, replicates: np.ndarray, level: float = 0.95) -> dict[str, np.ndarray]:
    """Family-wise control over every entry of ``points`` [...] by the bootstrap max-T (Westfall & Young).

    ``replicates`` [B, ...]: bootstrap replicates of the whole family, each replicate resampled jointly within a
    posterior; entries of independent posteriors (other checkpoints) may be stacked replicate by replicate, as
    their joint distribution is the product. Each entry is studentised by its bootstrap standard deviation;
    T*_b = max over the family of |replicate - point| / sd is the bootstrap distribution of the largest error, and
    its ``level`` quantile c gives simultaneous intervals point ± c sd that all cover their targets with
    probability ``level``. An entry is significant when its interval excludes 0 (|point| / sd > c), with adjusted
    p-value P(T* >= |point| / sd). An entry with no spread (a constant observable) is never significant.
    Returns ``{"critical", "sd", "low", "high", "p", "significant"}`` shaped like ``points`` (critical: scalar).
    """
    points = np.asarray(points, dtype=np.float64)
    reps = np.asarray(replicates, dtype=np.float64).reshape(-1, points.size)
    flat = points.reshape(-1)
    finite = np.isfinite(reps).all(axis=0) & np.isfinite(flat)
    sd = np.where(finite, np.nanstd(reps, axis=0, ddof=1), 0.0)
    spread = sd > 0
    if not spread.any():
        zeros = np.zeros_like(flat)
        return {"critical": np.float64(np.nan), "sd": sd.reshape(points.shape), "low": flat.reshape(points.shape),
                "high": flat.reshape(points.shape), "p": np.ones_like(points), "significant": (zeros > 0).reshape(
                    points.shape)}
    errors = np.abs(reps[:, spread] - flat[spread]) / sd[spread]
    t_star = errors.max(axis=1)
    critical = float(np.quantile(t_star, level))
    t = np.zeros_like(flat)
    t[spread] = np.abs(flat[spread]) / sd[spread]
    p = np.ones_like(flat)
    p[spread] = (t_star[None, :] >= t[spread][:, None]).mean(axis=1)
    shape = points.shape
    return {"critical": np.float64(critical), "sd": sd.reshape(shape), "low": (flat - critical * sd).reshape(shape),
            "high": (flat + critical * sd).reshape(shape), "p": p.reshape(shape),
            "significant": (spread & (t > critical)).reshape(shape)}


def restricted_susceptibilities(
    phi: np.ndarray, delta: np.ndarray, delta_full_mean: np.ndarray, standardised: bool = False
) -> np.ndarray:
    """Weight-restricted χ [G] of one component: ``phi`` [...] its φ_C draws and ``delta`` [..., G] the Δ_j draws of
    its restricted posterior, ``delta_full_mean`` [G] E_full[Δ_j] (see the module docstring)."""
    phi = np.asarray(phi, dtype=np.float64).reshape(-1)
    delta = np.asarray(delta, dtype=np.float64).reshape(phi.shape[0], -1)
    if phi.shape[0] < 2:
        raise ValueError("the restricted posterior needs at least two draws")
    chi = -((phi[:, None] * delta).mean(axis=0) - phi.mean() * np.asarray(delta_full_mean, dtype=np.float64))
    if standardised:
        sd = phi.std(ddof=1)
        chi = chi / sd if sd > 0 else np.zeros_like(chi)
    return chi


def bootstrap_restricted(
    phi: np.ndarray, delta: np.ndarray, delta_full: np.ndarray, n_boot: int, seed: int, standardised: bool = False,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(χ, low, high), each [G]: ``phi`` [chains, draws] and ``delta`` [chains, draws, G] from the restricted
    posterior, ``delta_full`` [chains', draws', G] from the full one; both resampled (chains + blocks),
    independently of each other."""
    chi, replicates = restricted_replicates(phi, delta, delta_full, n_boot, seed, standardised)
    return (chi, *_percentile(replicates, level))


def restricted_replicates(
    phi: np.ndarray, delta: np.ndarray, delta_full: np.ndarray, n_boot: int, seed: int, standardised: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(χ [G], replicates [n_boot, G]) of the weight-restricted estimator (see :func:`bootstrap_restricted`)."""
    from codedyn.analysis.stats import autocorrelation_block, bootstrap_draws

    rng = np.random.default_rng(seed)
    chain_idx, draw_idx = bootstrap_draws(*phi.shape[:2], n_boot, rng, block=autocorrelation_block(phi))
    full_chain, full_draw = bootstrap_draws(*delta_full.shape[:2], n_boot, rng,
                                            block=autocorrelation_block(delta_full))
    replicates = np.stack([
        restricted_susceptibilities(phi[chain_idx[b][:, None], draw_idx[b]], delta[chain_idx[b][:, None], draw_idx[b]],
                                    delta_full[full_chain[b][:, None], full_draw[b]].mean(axis=(0, 1)), standardised)
        for b in range(n_boot)
    ])
    return restricted_susceptibilities(phi, delta, delta_full.mean(axis=(0, 1)), standardised), replicates


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


def run_susceptibility(study: Study, progress=None) -> SusceptibilityResult:
    """Experiment 3 over the study's checkpoints with the configured estimator: the covariance estimator reuses (or
    creates) the shared posterior units, the weight-restricted one its per-component units."""
    from codedyn.experiments.posteriors import sample_checkpoints
    from codedyn.progress import SILENT

    progress = progress or SILENT
    if study.config.susceptibility.estimator == "weight_restricted":
        run_restricted_posteriors(study, progress)
    else:
        sample_checkpoints(study, progress)
    return compute_susceptibility(study)


def restricted_sampling_config(study: Study):
    """The resolved sampling config of the study's weight-restricted posteriors."""
    from codedyn.sampling.restricted import restricted_sampling

    cfg = study.config.susceptibility
    return restricted_sampling(study.config.sampling, cfg.chains, cfg.draws, cfg.burn_in)


@dataclass(frozen=True)
class RestrictedInputs:
    """What the weight-restricted units of one checkpoint are keyed on and stored by (the sampler's plain inputs);
    each component's unit adds its name."""

    run_dir: Path
    step: int
    suite: str
    dataset_hash: str
    sampling: Any  # SamplingConfig, resolved (restricted_sampling_config)
    observation_windows: int

    def record(self, component: str) -> dict:
        from codedyn.sampling.restricted import restricted_key_record

        return restricted_key_record(self.suite, self.step, self.dataset_hash, self.sampling,
                                     self.observation_windows, component)

    def folder(self, component: str) -> Path:
        from codedyn.sampling.restricted import restricted_key, restricted_unit_dir

        return restricted_unit_dir(self.run_dir, self.step, component, restricted_key(
            self.suite, self.step, self.dataset_hash, self.sampling, self.observation_windows, component))

    def load(self, component: str):
        from codedyn.sampling.restricted import load_restricted

        return load_restricted(self.run_dir, self.step, self.suite, self.dataset_hash, self.sampling,
                               self.observation_windows, component)

    def stored_components(self, components: list[str] | None) -> list[str]:
        """``components``, or every head and MLP the ``full`` unit recorded (FileNotFoundError when it is missing)."""
        from codedyn.sampling.restricted import restricted_components

        return restricted_components(self.run_dir, self.step, self.suite, self.dataset_hash, self.sampling,
                                     self.observation_windows, components)


def restricted_inputs(study: Study, step: int) -> RestrictedInputs:
    return RestrictedInputs(Path(study.run_dir), step, study.suite.name, study.dataset.card["hash"],
                            restricted_sampling_config(study), study.config.susceptibility.observation_windows)


def uses_restricted(study: Study) -> bool:
    return study.config.susceptibility.estimator == "weight_restricted"


_COMPONENTS: dict[tuple[str, int], list[str]] = {}  # (suite, step) -> every head and MLP, read once per process


def restricted_names(study: Study) -> list[str]:
    """``full``, then the configured components or every head and MLP of the study's first checkpoint (every
    checkpoint of a suite has the same architecture; the sampler restricts to those of each checkpoint it loads)."""
    from codedyn.sampling.restricted import FULL

    components = study.config.susceptibility.components
    if components:
        return [FULL, *components]
    where = (study.suite.name, study.steps[0])
    if where not in _COMPONENTS:
        from codedyn.models.hooks import component_names

        _COMPONENTS[where] = component_names(study.suite.load(study.steps[0], device="cpu").model)
    return [FULL, *_COMPONENTS[where]]


def restricted_outputs(study: Study, step: int) -> dict[Path, dict]:
    """The pipeline unit of one checkpoint's restricted posteriors: ``{folder: key record}``, ``full`` first."""
    inputs = restricted_inputs(study, step)
    return {inputs.folder(name): inputs.record(name) for name in restricted_names(study)}


def restricted_unit(study: Study, step: int, progress: Progress = SILENT) -> Path:
    """The full and the per-component weight-restricted posteriors of one checkpoint (stored ones kept); the
    ``full`` unit's folder."""
    from codedyn.sampling.restricted import FULL, run_restricted

    inputs, components = restricted_inputs(study, step), study.config.susceptibility.components
    checkpoint = study.suite.load(step, device=study.config.suite.device)
    run_restricted(checkpoint, inputs.suite, study.dataset, inputs.sampling, inputs.observation_windows,
                   list(components) if components else None, inputs.run_dir, progress)
    return inputs.folder(FULL)


def run_restricted_posteriors(study: Study, progress) -> None:
    """Make sure every checkpoint has its ``full`` and per-component restricted units (sampling only missing ones)."""
    bar = progress.task("restricted posteriors: checkpoints", total=len(study.steps))
    for step in study.steps:
        restricted_unit(study, step, progress)
        bar.advance()


CONTRAST = CHI_CONTRAST_DISTRIBUTION  # the distribution name of χ_incorrect - χ_correct in the tidy table
ALL_PROGRAMS = "all"  # the distribution of every read-out program (the verdict readouts' lean-free χ)
VARIANTS = (("raw", False), ("standardised", True))


def _covariance_estimates(study: Study, samples, readout: str = "code", with_all: bool = False):
    """``(step, names, groups, {variant: (χ [K, G], replicates [B, K, G])})`` per checkpoint from the shared
    posteriors (groups from the samples each posterior read out), L_j read on ``readout`` (the code tokens, or a
    verdict readout of planted data: :func:`codedyn.experiments.influence.readout_losses`). The intervals resample
    chains, blocks of draws and the read-out programs' units (:func:`unit_susceptibility_replicates`).
    ``with_all`` adds the distribution of every read-out program (:data:`ALL_PROGRAMS`)."""
    from codedyn.experiments.influence import readout_losses, samples_of
    from codedyn.resample import resampling_units

    sampling = study.config.sampling
    for step, traces in study.posteriors():
        held = samples_of(samples, traces)
        groups = sample_groups(held)
        if with_all:
            groups[ALL_PROGRAMS] = np.ones(len(held), dtype=bool)
        names = [str(n) for n in traces["observable"].values]
        observed = program_readings(traces)
        losses = readout_losses(traces, readout)
        # Each checkpoint gets its own resamples (seed + step): their replicates are stacked for max-T control.
        yield step, names, groups, {
            variant: unit_susceptibility_replicates(observed, losses, groups, resampling_units(held),
                                                    sampling.n_bootstrap, sampling.seed + step, standardised)
            for variant, standardised in VARIANTS
        }


def _corpus_and_deltas(traces, groups) -> tuple[np.ndarray, np.ndarray]:
    """L_obs [chains, draws] and Δ_j = L_j - L_obs [chains, draws, G] of a restricted unit's healthy chains."""
    from codedyn.sampling.restricted import CORPUS_LOSS
    from codedyn.sampling.sgld import healthy_sample_losses

    corpus = traces["observed"].sel(observable=f"{CORPUS_LOSS}[0]").values[traces["healthy"].values]
    return corpus, distribution_losses(healthy_sample_losses(traces), groups) - corpus[..., None]


def _restricted_estimates(study: Study, samples):
    """``(step, names, groups, {variant: (χ [K, G], replicates [B, K, G])})`` per checkpoint from the
    weight-restricted units."""
    from codedyn.experiments.influence import samples_of
    from codedyn.sampling.restricted import CORPUS_LOSS, FULL

    cfg, sampling = study.config.susceptibility, restricted_sampling_config(study)
    for step in study.steps:
        inputs = restricted_inputs(study, step)
        names = inputs.stored_components(list(cfg.components) if cfg.components else None)
        full = inputs.load(FULL)
        groups = sample_groups(samples_of(samples, full))
        _, delta_full = _corpus_and_deltas(full, groups)
        per_variant = {"raw": [], "standardised": []}
        for name in names:
            traces = inputs.load(name)
            corpus, delta = _corpus_and_deltas(traces, groups)
            phi = corpus - float(traces["init_observed"].sel(observable=f"{CORPUS_LOSS}[0]"))
            for variant in per_variant:
                per_variant[variant].append(restricted_replicates(
                    phi, delta, delta_full, sampling.n_bootstrap, sampling.seed + step, variant == "standardised"))
        yield step, names, groups, {v: (np.stack([c for c, _ in found]), np.stack([r for _, r in found], axis=1))
                                    for v, found in per_variant.items()}


def output_names(estimator: str) -> dict[str, str]:
    """File stems of one estimator's outputs in ``<run>/susceptibility/`` (the covariance estimator keeps the
    unsuffixed names)."""
    suffix = "" if estimator == "covariance" else f"_{estimator}"
    stems = ("susceptibility", "opposite_responders", "correctness_contrast", "susceptibility_trajectories")
    return {stem: f"{stem}{suffix}" for stem in stems}


def contrast_tables(per_step: list[tuple[int, list[str], np.ndarray, np.ndarray]], level: float = 0.95):
    """The correctness contrast and the opposite responders of one variant over every checkpoint, under max-T
    family-wise control across components and checkpoints (:func:`max_t`).

    ``per_step``: ``(step, names, χ [K, 2], replicates [B, K, 2])`` with columns (correct, incorrect).
    Returns ``(contrast, responders)`` DataFrames: the contrast χ_incorrect - χ_correct per (component,
    checkpoint) with its pointwise percentile interval (``low``, ``high``), its simultaneous interval
    (``fw_low``, ``fw_high``), adjusted p-value ``p_fwer`` and ``significant``; and per (component, checkpoint)
    the two χ with pointwise intervals, ``opposite`` (both χ significant under one max-T over components x
    checkpoints x both distributions, with opposite signs), ``opposite_pointwise`` (both pointwise intervals
    exclude 0, opposite signs: no multiplicity control), the contrast columns and ``gap`` = |contrast|.
    """
    import pandas as pd

    if not per_step:
        return pd.DataFrame(), pd.DataFrame()
    n_boot = min(r.shape[0] for _, _, _, r in per_step)
    steps = np.concatenate([np.full(len(names), step) for step, names, _, _ in per_step])
    names = [n for _, found, _, _ in per_step for n in found]
    chi = np.concatenate([c for _, _, c, _ in per_step])  # [F, 2]
    reps = np.concatenate([r[:n_boot] for _, _, _, r in per_step], axis=1)  # [B, F, 2]
    contrast, contrast_reps = chi[:, 1] - chi[:, 0], reps[..., 1] - reps[..., 0]
    fw = max_t(contrast, contrast_reps, level)
    both = max_t(chi, reps, level)
    low, high = _percentile(contrast_reps, level)
    chi_low, chi_high = _percentile(reps, level)
    table = pd.DataFrame({
        "step": steps, "component": names, "contrast": contrast, "low": low, "high": high,
        "fw_low": fw["low"], "fw_high": fw["high"], "p_fwer": fw["p"], "significant": fw["significant"],
    })
    excludes = (chi_low > 0) | (chi_high < 0)
    opposite_sign = np.sign(chi[:, 0]) != np.sign(chi[:, 1])
    responders = pd.DataFrame({
        "step": steps, "component": names,
        "chi_a": chi[:, 0], "low_a": chi_low[:, 0], "high_a": chi_high[:, 0], "p_a": both["p"][:, 0],
        "chi_b": chi[:, 1], "low_b": chi_low[:, 1], "high_b": chi_high[:, 1], "p_b": both["p"][:, 1],
        "contrast": contrast, "contrast_low": low, "contrast_high": high, "contrast_p_fwer": fw["p"],
        "contrast_significant": fw["significant"], "gap": np.abs(contrast),
        "opposite": both["significant"].all(axis=1) & opposite_sign,
        "opposite_pointwise": excludes.all(axis=1) & opposite_sign,
    })
    return table, responders.sort_values(["step", "gap"], ascending=[True, False]).reset_index(drop=True)


@dataclass(frozen=True)
class SusceptibilityResult:
    """What Experiment 3 stored under ``<run>/susceptibility/``."""

    folder: Path
    table: pd.DataFrame  # step, component, distribution, variant, chi, low, high
    responders: pd.DataFrame  # per (component, checkpoint): both χ with intervals, their gap, opposite signs or not
    contrast: pd.DataFrame  # χ_incorrect − χ_correct per component and checkpoint
    estimator: str  # "covariance" or "weight_restricted"


def compute_susceptibility(study: Study) -> SusceptibilityResult:
    """χ tables (raw and standardised, with CIs), the correctness contrast χ_incorrect - χ_correct with family-wise
    control across components and checkpoints, opposite responders under the same control, trajectory figure,
    for the configured estimator (column ``estimator``)."""
    import pandas as pd

    from codedyn.figures.plots import save_figure

    estimator = study.config.susceptibility.estimator
    out = study.output_dir(SUSCEPTIBILITY_DIR)
    files = output_names(estimator)
    estimates = _restricted_estimates if estimator == "weight_restricted" else _covariance_estimates
    rows, per_variant = [], {variant: [] for variant, _ in VARIANTS}
    for step, names, groups, variants in estimates(study, study.readout_samples()):
        columns = [list(groups).index("correct"), list(groups).index("incorrect")]
        for variant, (chi, replicates) in variants.items():
            low, high = _percentile(replicates, 0.95)
            contrast = replicates[..., columns[1]] - replicates[..., columns[0]]
            c_low, c_high = _percentile(contrast, 0.95)
            for k, name in enumerate(names):
                for g, group in enumerate(groups):
                    rows.append({"step": step, "component": name, "distribution": group, "variant": variant,
                                 "estimator": estimator, "chi": chi[k, g], "low": low[k, g], "high": high[k, g]})
                rows.append({"step": step, "component": name, "distribution": CONTRAST, "variant": variant,
                             "estimator": estimator, "chi": chi[k, columns[1]] - chi[k, columns[0]],
                             "low": c_low[k], "high": c_high[k]})
            per_variant[variant].append((step, names, chi[:, columns], replicates[..., columns]))
    table = pd.DataFrame(rows)
    table.to_parquet(out / f"{files['susceptibility']}.parquet", index=False)
    contrasts, responders = [], []
    for variant, found in per_variant.items():
        contrast, ranked = contrast_tables(found)
        contrasts.append(contrast.assign(variant=variant, estimator=estimator))
        if variant == "raw":
            responders.append(ranked.assign(estimator=estimator))
    contrast = pd.concat(contrasts, ignore_index=True)
    contrast.to_parquet(out / f"{files['correctness_contrast']}.parquet", index=False)
    ranked = pd.concat(responders, ignore_index=True)
    ranked.to_parquet(out / f"{files['opposite_responders']}.parquet", index=False)
    save_figure(trajectory_figure(table, ranked), out / files["susceptibility_trajectories"])
    if estimator == "covariance":
        compute_verdict_susceptibility(study, out)
    return SusceptibilityResult(out, table, ranked, contrast, estimator)


def verdict_table(estimates) -> Any:
    """The tidy χ table (as ``susceptibility.parquet``) of one verdict readout: per checkpoint, component and
    variant χ_correct, χ_incorrect, their contrast and χ_all (L over every read-out program: the verdict readouts'
    lean towards ``ok`` or ``bug`` moves correct and incorrect programs' losses oppositely and cancels in it, to
    first order), each with its percentile interval from the joint bootstrap."""
    import pandas as pd

    rows = []
    for step, names, groups, variants in estimates:
        order = list(groups)
        correct, incorrect, every = order.index("correct"), order.index("incorrect"), order.index(ALL_PROGRAMS)
        for variant, (chi, replicates) in variants.items():
            columns = {"correct": (chi[:, correct], replicates[..., correct]),
                       "incorrect": (chi[:, incorrect], replicates[..., incorrect]),
                       CONTRAST: (chi[:, incorrect] - chi[:, correct],
                                  replicates[..., incorrect] - replicates[..., correct]),
                       ALL_PROGRAMS: (chi[:, every], replicates[..., every])}
            for distribution, (point, reps) in columns.items():
                low, high = _percentile(reps, 0.95)
                rows += [{"step": step, "component": name, "distribution": distribution, "variant": variant,
                          "estimator": "covariance", "chi": point[k], "low": low[k], "high": high[k]}
                         for k, name in enumerate(names)]
    return pd.DataFrame(rows)


def compute_verdict_susceptibility(study: Study, out: Path) -> dict[str, Any]:
    """Planted data: χ on each verdict readout of the shared posteriors (the loss of the right verdict, and minus
    its log-odds against the wrong one; :data:`codedyn.experiments.influence.READOUT_VARIABLES`), written as
    ``susceptibility_<readout>.parquet`` beside the code-token table (the report lists each such table as its own
    χ rows). Nothing when the posteriors hold no verdict readouts."""
    from codedyn.experiments.influence import READOUT_VARIABLES, readouts_of

    first = next(iter(study.posteriors()), (None, None))[1]
    if first is None:
        return {}
    samples = study.readout_samples()
    tables = {}
    for readout in readouts_of(first):
        if readout not in READOUT_VARIABLES:
            continue

        tables[readout] = verdict_table(_covariance_estimates(study, samples, readout, with_all=True))
        tables[readout].to_parquet(out / f"susceptibility_{readout}.parquet", index=False)
    return tables


def trajectory_figure(table, ranked, top: int = 3):
    """Standardised χ for correct and incorrect code over training, for the components with the largest gaps."""
    from codedyn.figures.plots import training_curves

    tracked = ranked[ranked["component"].isin(tracked_components(table))]
    leaders = tracked.groupby("component")["gap"].max().sort_values(ascending=False).head(top).index
    part = table[(table["variant"] == "standardised") & table["distribution"].isin(["correct", "incorrect"])]
    steps = sorted(part["step"].unique())
    curves, styles = {}, {}
    for k, component in enumerate(leaders):
        for distribution in ("correct", "incorrect"):
            rows = part[(part["component"] == component) & (part["distribution"] == distribution)].sort_values("step")
            curves[f"{component} / {distribution}"] = (rows["chi"].to_numpy(), rows["low"].to_numpy(),
                                                      rows["high"].to_numpy())
            styles[f"{component} / {distribution}"] = {"colour": k, "dashed": distribution == "incorrect"}
    restricted = "estimator" in table and (table["estimator"] == "weight_restricted").any()
    ylabel = ("standardised χ = -(E_C[φ_C Δ] - E_C[φ_C] E[Δ]) / sd(φ_C)" if restricted
              else "standardised χ = -Cov(φ, L) / sd(φ)")
    title = "Susceptibility to correct vs incorrect code (largest gaps)"
    return training_curves(steps, curves, ylabel=ylabel, title=title + (", weight-restricted" if restricted else ""),
                           styles=styles)  # one colour per component; incorrect dashed
