"""Calibration of the SGLD hyperparameters (step size ε, inverse temperature nβ, localization γ).

Every posterior readout (BIF, susceptibilities, LLC) is only as meaningful as the sampler behind it, and one
hyperparameter set serves every checkpoint of a study. ``run_calibration`` sweeps the grid
``calibration.lr x calibration.n_beta x calibration.localization`` on a few checkpoints with short chains (as long
as the study's, by default), scores every setting with the rules below, picks the best deterministically, saves a
traces grid per checkpoint and the score tables, and writes the choice as a loadable YAML preset.

Scoring rules, per checkpoint, on the post-burn-in minibatch loss of the healthy chains (thresholds are fields of
:class:`codedyn.config.CalibrationConfig`):

* **diverged**: a chain with a non-finite loss or read-out, or a posterior the sampler refused because too few
  chains were healthy (:mod:`codedyn.sampling.sgld`) -> the setting is *rejected*;
* **non-positive LLC**: LLC = nβ · mean_t [L_{B_t}(w_t) - L_{B_t}(w*)] <= 0 (the chains sit below the
  checkpoint, :mod:`codedyn.sampling.llc`) -> *rejected*;
* ``fraction_below_init`` (share of post-burn-in steps whose loss is below the checkpoint's on the same minibatch)
  must be <= ``max_fraction_below_init``;
* ``nonstationarity`` (max over chains of |mean of the second half - mean of the first half| / sd of the chain's
  post-burn-in loss) must be <= ``max_nonstationarity``: a chain that still drifts has not reached its posterior;
* ``spikiness`` (max over chains of (max - median) / (1.4826 MAD + 1/nβ) of the post-burn-in excess loss, the
  largest excursion in robust standard deviations, :func:`codedyn.sampling.sgld.spikiness`, less the allowance a
  chain longer than 100 steps gets for its length, :func:`codedyn.sampling.sgld.spike_allowance`) must be
  <= ``max_spikiness``: isolated spikes far above the chain's typical loss
  mean unstable steps, which the mean-based criteria average away;
* ``llc_rel_sd`` (sd across chains of the per-chain LLCs / |their mean|) must be <= ``max_llc_rel_sd``;
* ``drift_to_noise`` (mean over chains of |gradient drift| / |Langevin noise| per step) must lie in
  [``min_drift_to_noise``, ``max_drift_to_noise``]: below, the loss barely steers the chain (the posterior is the
  localization prior); above, the step is too coarse for the loss' curvature;
* ``llc_bound_ratio`` = LLC / (d/2), d the number of parameters, must be <= ``max_llc_bound_ratio``: no model has a
  learning coefficient above d/2, so a larger estimate is sampler bias (it catches steps so large that the chains
  settle far from w* yet look stable).

A setting's value of each criterion is its worst over the calibration checkpoints. Each failed criterion adds its
*excess* ``|log(value / threshold)|`` (a criterion missed by 10x weighs the same whichever way it points).
Ranking (best first), a total order: not rejected; smallest total excess (rounded to 1e-6; 0 for a setting that
passes everything); then the largest worst-case effective sample size of the sampling loss (among equally good
settings, the one whose draws carry the most information per draw: the study's draws are its budget); then grid
order (lr, n_beta, localization as given). The first is chosen.

Step-size check (``calibration.step_size_ratio``, on by default): the chosen setting is sampled once more at
ε / ratio on every calibration checkpoint, same nβ, γ, seeds and chain length (one cached unit each, sampled after
the choice), and its LLC and mean BIF over the read-out samples are compared with the chosen ε's
(:func:`step_size_table`, :mod:`codedyn.analysis.step_size`): a quantity whose two values differ by more than their
combined 95% interval moves with the step size, and is flagged in ``step_size.parquet``, ``calibration.json`` and
the command's output. It does not change the choice.

Cached units: ``<run>/units/calibration-step<N>-<key>/`` hold each (checkpoint, setting)'s small traces (minibatch
losses, ``readout_samples`` read-out losses), so an interrupted sweep resumes and re-scoring never resamples. Like
the pipeline's units (:mod:`codedyn.runs.units`), a unit's key is the hash of its key record
(:func:`calibration_key_record`: the sweep's sampling config without its analysis-only fields, the number of
read-out samples, suite, step and dataset; the scoring thresholds never enter), stored in its ``unit.json`` under
``key_inputs``; every unit's folder and record are known before anything is sampled
(:func:`calibration_units`), and a new unit beside a stored one of the same step that is no unit of this sweep
is announced with the fields that differ (:func:`codedyn.runs.units.new_unit_note`).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codedyn.config import CalibrationConfig, CodedynConfig, SamplingConfig
from codedyn.progress import SILENT, Progress

CALIBRATION_DIR = "calibration"
CALIBRATED_PRESET = "calibrated.yaml"
UNIT_FORMAT = 1  # bump when a change here changes what a calibration unit stores

# threshold field of CalibrationConfig -> (metric, "max" | "min"): the metric must stay below a max / above a min.
CRITERIA: dict[str, tuple[str, str]] = {
    "max_fraction_below_init": ("fraction_below_init", "max"),
    "max_nonstationarity": ("nonstationarity", "max"),
    "max_spikiness": ("spikiness", "max"),
    "max_llc_rel_sd": ("llc_rel_sd", "max"),
    "min_drift_to_noise": ("drift_to_noise", "min"),
    "max_drift_to_noise": ("drift_to_noise", "max"),
    "max_llc_bound_ratio": ("llc_bound_ratio", "max"),
}


@dataclass(frozen=True)
class Setting:
    """One point of the sweep."""

    lr: float
    n_beta: float
    localization: float

    @property
    def label(self) -> str:
        return f"ε={self.lr:g}, nβ={self.n_beta:g}, γ={self.localization:g}"

    def as_dict(self) -> dict[str, float]:
        return {"lr": self.lr, "n_beta": self.n_beta, "localization": self.localization}


def settings_grid(calibration: CalibrationConfig) -> list[Setting]:
    """Every combination, in grid order (lr outermost, then n_beta, then localization)."""
    return [Setting(float(a), float(b), float(c))
            for a, b, c in itertools.product(calibration.lr, calibration.n_beta, calibration.localization)]


def sweep_sampling_config(sampling: SamplingConfig, calibration: CalibrationConfig, setting: Setting) -> SamplingConfig:
    """The study's sampling config with this setting and the calibration's chain length."""
    update: dict[str, Any] = setting.as_dict()
    update["chains"] = calibration.chains or max(2, sampling.chains)
    update["draws"] = calibration.draws or sampling.draws
    update["burn_in"] = sampling.burn_in if calibration.burn_in is None else calibration.burn_in
    return SamplingConfig.model_validate({**sampling.model_dump(), **update})


def calibration_steps(study) -> tuple[int, ...]:
    """``calibration.steps`` validated against the suite, or the middle and last of the study's steps."""
    chosen = study.config.calibration.steps
    if chosen is None:
        steps = study.steps
        chosen = sorted({steps[len(steps) // 2], steps[-1]})
    return tuple(study.suite.validate_steps(list(chosen)))


# ---------------------------------------------------------------------------------------------------- scoring


def trace_metrics(
    sampling_loss: np.ndarray,
    reference_loss,
    burn_in: int,
    n_beta: float,
    n_params: int,
    healthy: np.ndarray | None = None,
    drift_to_noise: np.ndarray | None = None,
) -> dict[str, float]:
    """The diagnostics of one posterior from its minibatch-loss traces [chains, steps] (burn-in included) and the
    checkpoint's loss on the same minibatches (``reference_loss`` [chains, steps], or one scalar for every step).

    Returns ``diverged_chains``, ``fraction_below_init`` (share of post-burn-in steps below the reference),
    ``nonstationarity``, ``spikiness``, ``llc`` (:func:`codedyn.sampling.llc.llc_of` over the healthy chains),
    ``llc_rel_sd`` (of the per-chain LLCs), ``llc_bound_ratio`` (LLC / (n_params / 2)), ``drift_to_noise`` (mean
    over healthy chains; NaN when not given), ``ess`` (effective sample size of the excess loss) and
    ``mean_excess_loss``. Diverged (unhealthy, or with non-finite post-burn-in losses) chains are counted and
    excluded; with no healthy chain every other metric is NaN.
    """
    from codedyn.analysis.stats import effective_sample_size
    from codedyn.sampling.llc import excess_losses, fraction_below, llc_of
    from codedyn.sampling.sgld import spike_allowance, spikiness

    losses = np.asarray(sampling_loss, dtype=float)
    if losses.ndim != 2:
        raise ValueError(f"sampling_loss must be [chains, steps], got shape {losses.shape}")
    post = excess_losses(losses, reference_loss, burn_in)
    if post.shape[1] < 4:
        raise ValueError(f"need at least 4 post-burn-in steps, got {post.shape[1]}")
    ok = np.isfinite(post).all(axis=1)
    if healthy is not None:
        ok &= np.asarray(healthy, dtype=bool)
    out = {"diverged_chains": float((~ok).sum())}
    if not ok.any():
        return out | dict.fromkeys(METRICS, float("nan"))
    good = post[ok]
    half = good.shape[1] // 2
    spread = good.std(axis=1, ddof=1)
    shift = np.abs(good[:, half:].mean(axis=1) - good[:, :half].mean(axis=1))
    nonstationarity = np.divide(shift, spread, out=np.where(shift > 0, np.inf, 0.0), where=spread > 0)
    llcs = llc_of(good, n_beta, axis=1)
    llc = float(llc_of(good, n_beta))
    rel_sd = float(llcs.std(ddof=1) / abs(llc)) if llcs.size >= 2 and llc != 0 else float("nan")
    ratio = float("nan")
    if drift_to_noise is not None:
        ratio = float(np.mean(np.asarray(drift_to_noise, dtype=float)[ok]))
    return out | {
        "fraction_below_init": fraction_below(good),
        "nonstationarity": float(nonstationarity.max()),
        "spikiness": float(spikiness(good, 1 / n_beta).max()) - spike_allowance(good.shape[1]),
        "llc": llc,
        "llc_rel_sd": rel_sd,
        "llc_bound_ratio": llc / (n_params / 2),
        "drift_to_noise": ratio,
        "ess": float(effective_sample_size(good)) if np.ptp(good) > 0 else 0.0,
        "mean_excess_loss": float(good.mean()),
    }


METRICS = ("fraction_below_init", "nonstationarity", "spikiness", "llc", "llc_rel_sd", "llc_bound_ratio",
           "drift_to_noise", "ess", "mean_excess_loss")


def _excess(kind: str, value: float, threshold: float) -> float:
    """How far ``value`` misses ``threshold``: |log(value / threshold)| when it fails, 0 when it passes."""
    if not math.isfinite(value):
        return math.inf
    if kind == "max":
        return 0.0 if value <= threshold else math.log(value / max(threshold, 1e-300))
    return 0.0 if value >= threshold else math.log(max(threshold, 1e-300) / max(value, 1e-300))


def score_setting(metrics_per_step: dict[int, dict[str, float]], calibration: CalibrationConfig) -> dict[str, Any]:
    """Apply the scoring rules (module docstring) to one setting's metrics at every calibration checkpoint.

    Returns ``rejected`` (bool), ``reasons`` (sentences for rejections and failed criteria), ``n_failed``,
    ``excess``, per threshold field the worst value of its metric over the checkpoints (``worst:<field>``), and the
    smallest ``ess`` and the mean ``llc`` over the checkpoints.
    """
    reasons: list[str] = []
    rejected = False
    for step, m in sorted(metrics_per_step.items()):
        if m["diverged_chains"] > 0:
            rejected = True
            reasons.append(f"{int(m['diverged_chains'])} chain(s) diverged or unhealthy at checkpoint {step}")
        elif not m["llc"] > 0:
            rejected = True
            reasons.append(f"LLC {m['llc']:.3g} <= 0 at checkpoint {step} (chains sit below the checkpoint's loss)")
    out: dict[str, Any] = {}
    n_failed, excess = 0, 0.0
    for field, (metric, kind) in CRITERIA.items():
        threshold = float(getattr(calibration, field))
        values = {step: m[metric] for step, m in metrics_per_step.items()}
        nonfinite = [s for s, v in sorted(values.items()) if not math.isfinite(v)]
        if nonfinite:
            worst_step, worst = nonfinite[0], float("nan")
        else:
            worst_step = (max if kind == "max" else min)(sorted(values), key=values.get)
            worst = values[worst_step]
        out[f"worst:{field}"] = worst
        miss = _excess(kind, worst, threshold)
        if miss > 0:
            n_failed += 1
            excess += miss
            relation = ">" if kind == "max" else "<"
            reasons.append(f"{metric} {worst:.3g} {relation} {threshold:g} at checkpoint {worst_step}")
    ess = [m["ess"] for m in metrics_per_step.values()]
    out["ess"] = float(min(ess)) if all(math.isfinite(e) for e in ess) else float("nan")
    out["llc"] = float(np.mean([m["llc"] for m in metrics_per_step.values()]))
    return {"rejected": rejected, "n_failed": n_failed, "excess": excess, "reasons": reasons, **out}


def diverged_metrics(chains: int) -> dict[str, float]:
    """The metrics of a posterior whose chains all diverged (the sampler raised): every chain counted, rest NaN."""
    return {"diverged_chains": float(chains)} | dict.fromkeys(METRICS, float("nan"))


def score_grid(metrics: dict[Setting, dict[int, dict[str, float]]], calibration: CalibrationConfig):
    """Score every setting (its metrics per checkpoint, from :func:`trace_metrics`) and rank them: a DataFrame, one
    row per setting, best first (``rank`` 1), with ``grid_index`` the setting's position in ``metrics``."""
    import pandas as pd

    rows = []
    for index, (setting, per_step) in enumerate(metrics.items()):
        score = score_setting(per_step, calibration)
        rows.append({**setting.as_dict(), "grid_index": index, **score, "reasons": "; ".join(score["reasons"])})
    ranked = rank_settings(pd.DataFrame(rows))
    ranked["chosen"] = ranked["rank"] == 1
    return ranked


def rank_settings(scores):
    """Sort a scores DataFrame (one row per setting, columns of :func:`score_setting` plus ``grid_index``) best
    first by the documented total order, and add ``rank`` (1 = chosen)."""
    frame = scores.copy()
    frame["_excess"] = frame["excess"].replace(np.inf, 1e300).fillna(1e300).round(6)
    frame["_ess"] = -frame["ess"].fillna(-np.inf)
    frame = frame.sort_values(["rejected", "_excess", "_ess", "grid_index"], kind="mergesort")
    frame = frame.drop(columns=["_excess", "_ess"]).reset_index(drop=True)
    frame["rank"] = np.arange(1, len(frame) + 1)
    return frame


# ---------------------------------------------------------------------------------------------------- sampling


def calibration_key_record(suite: str, step: int, dataset_hash: str, config: SamplingConfig,
                           readout: int) -> dict[str, Any]:
    """The inputs of a calibration unit's key: the sweep's sampling config (:func:`sweep_sampling_config`) without
    the fields that never change the draws (:data:`codedyn.sampling.posterior.ANALYSIS_ONLY`: the bootstrap size
    and the posterior diagnostics' thresholds), the number of read-out samples, suite, step, dataset and the
    format. The calibration's scoring thresholds are not inputs of any unit: re-scoring never resamples."""
    from codedyn.sampling.posterior import ANALYSIS_ONLY

    return {"kind": "calibration", "suite": suite, "step": step, "dataset": dataset_hash,
            "sampling": config.model_dump(mode="json", exclude=set(ANALYSIS_ONLY)),
            "readout_samples": readout,
            "format": UNIT_FORMAT}


def calibration_key(suite: str, step: int, dataset_hash: str, config: SamplingConfig, readout: int) -> str:
    """The hash of :func:`calibration_key_record`."""
    from codedyn.runs.units import unit_key

    return unit_key(calibration_key_record(suite, step, dataset_hash, config, readout))


def calibration_unit_dir(run_dir: Path, step: int, key: str) -> Path:
    from codedyn.runs.store import UNITS_DIR

    return Path(run_dir) / UNITS_DIR / f"calibration-step{step}-{key}"


@dataclass(frozen=True)
class CalibrationUnit:
    """One (checkpoint, setting) of the sweep, known before it is sampled: its sampling config, folder and key
    record."""

    step: int
    setting: Setting
    sampling: SamplingConfig
    folder: Path
    inputs: dict[str, Any]  # the key record (stored in unit.json under key_inputs)


def calibration_unit(study, step: int, setting: Setting) -> CalibrationUnit:
    """The unit of one setting at one calibration checkpoint (from the study's configuration and inputs alone)."""
    from codedyn.runs.units import unit_key

    config, calibration = study.config, study.config.calibration
    n_readout = min(calibration.readout_samples, len(study.readout_samples()))
    sweep = sweep_sampling_config(config.sampling, calibration, setting)
    inputs = calibration_key_record(study.suite.name, step, study.dataset.card["hash"], sweep, n_readout)
    return CalibrationUnit(step, setting, sweep, calibration_unit_dir(study.run_dir, step, unit_key(inputs)), inputs)


def calibration_units(study, step: int) -> list[CalibrationUnit]:
    """The sweep's units at one calibration checkpoint, in grid order (from the study's configuration and inputs
    alone, never from what is stored)."""
    return [calibration_unit(study, step, setting) for setting in settings_grid(study.config.calibration)]


def smaller_step(chosen: Setting, ratio: float) -> Setting:
    """The chosen setting at ε / ``ratio`` (the step-size check's second posterior)."""
    return Setting(chosen.lr / ratio, chosen.n_beta, chosen.localization)


def step_size_units(study, chosen: Setting) -> list[CalibrationUnit]:
    """The step-size check's units: the chosen setting at ε / ``calibration.step_size_ratio`` on every calibration
    checkpoint (none when the check is off)."""
    ratio = study.config.calibration.step_size_ratio
    if ratio is None:
        return []
    return [calibration_unit(study, step, smaller_step(chosen, ratio)) for step in calibration_steps(study)]


def calibration_notes(units: list[CalibrationUnit]) -> list[str]:
    """The :func:`~codedyn.runs.units.new_unit_note` of every missing unit of one checkpoint's sweep, against the
    stored units of that checkpoint that are not in the sweep (its own units are no earlier versions of each
    other: a resumed sweep says nothing)."""
    from codedyn.runs.store import is_completed
    from codedyn.runs.units import new_unit_note

    planned = {u.folder for u in units}
    notes = (new_unit_note(u.folder, u.inputs, ignore=planned) for u in units if not is_completed(u.folder))
    return [note for note in notes if note]


def _sample_unit(model, windows, readout, unit: CalibrationUnit, description: str,
                 progress: Progress) -> dict[str, Any]:
    """Sample one (checkpoint, setting) and store its unit; returns {"traces": xr.Dataset | None, "error": str}."""
    from codedyn.runs.layout import UNIT_FILE
    from codedyn.runs.store import staging_dir, write_json
    from codedyn.runs.units import KEY_INPUTS
    from codedyn.sampling.sgld import SamplingDiverged, sample_posterior
    from codedyn.sampling.traces import save_traces

    n_params = sum(int(p.numel()) for p in model.parameters())
    try:
        traces = sample_posterior(model, windows, readout, unit.sampling, progress=progress,
                                  description=description)
        error = None
    except SamplingDiverged as exc:
        traces, error = None, str(exc)
    with staging_dir(unit.folder) as stage:
        if traces is not None:
            save_traces(traces, stage)
        write_json(stage / UNIT_FILE, {"kind": "calibration", "sampling": unit.sampling.model_dump(mode="json"),
                                         "diverged": error, "n_params": n_params, KEY_INPUTS: unit.inputs})
    return {"traces": traces, "error": error, "n_params": n_params}


def _load_unit(unit: Path) -> dict[str, Any]:
    from codedyn.runs.layout import UNIT_FILE
    from codedyn.sampling.traces import load_traces

    info = json.loads((unit / UNIT_FILE).read_text())
    return {"traces": None if info["diverged"] else load_traces(unit), "error": info["diverged"],
            "n_params": info["n_params"]}


def _unit_metrics(result: dict[str, Any], config: SamplingConfig) -> tuple[dict[str, float], np.ndarray, float]:
    """(metrics, sampling-loss traces [chains, steps], init loss) of one stored unit (NaN traces if it diverged)."""
    n_steps = config.burn_in + config.draws * config.steps_between_draws
    traces = result["traces"]
    if traces is None:
        return diverged_metrics(config.chains), np.full((config.chains, n_steps), np.nan), float("nan")
    init = float(traces["init_sampling_loss"])
    losses = traces["sampling_loss"].values
    metrics = trace_metrics(losses, traces["reference_loss"].values, config.burn_in, config.n_beta,
                            result["n_params"], traces["healthy"].values, traces["drift_to_noise"].values)
    return metrics, losses, init


# ---------------------------------------------------------------------------------------------------- run / compute


def run_calibration(study, progress: Progress = SILENT) -> dict[str, Any]:
    """Sweep the calibration grid on the calibration checkpoints (cached units), then score, choose, plot, write.

    With ``calibration.step_size_ratio``, the chosen setting is then sampled at the smaller step too (the step-size
    check, :func:`step_size_table`).

    Returns ``{"scores", "checkpoint_scores", "chosen" (Setting), "preset" (Path), "folder", "summary",
    "step_size" (the check's rows)}``.
    """
    from codedyn.runs.store import is_completed

    plan = {step: calibration_units(study, step) for step in calibration_steps(study)}
    for units in plan.values():  # why each new unit is new, before anything is sampled
        for note in calibration_notes(units):
            progress.log(note)
    bar = progress.task("calibration: settings x checkpoints", total=sum(len(units) for units in plan.values()))
    for units in plan.values():
        _sample_pending(study, units, bar, progress)
    result = compute_calibration(study)
    check = [unit for unit in step_size_units(study, result["chosen"]) if not is_completed(unit.folder)]
    if not check:
        return result
    bar = progress.task(f"calibration: the chosen setting at ε/{study.config.calibration.step_size_ratio:g}",
                        total=len(check))
    for unit in check:
        _sample_pending(study, [unit], bar, progress)
    return compute_calibration(study)


def _sample_pending(study, units: list[CalibrationUnit], bar, progress: Progress) -> None:
    """Sample and store the units of one checkpoint that are not completed yet (advancing ``bar`` by every unit)."""
    import torch

    from codedyn.runs.store import is_completed
    from codedyn.sampling.losses import readout_context, readout_evalset, select_readout
    from codedyn.sampling.posterior import sampling_windows
    from codedyn.sampling.sgld import evalset_readout

    config = study.config
    pending = [unit for unit in units if not is_completed(unit.folder)]
    bar.advance(len(units) - len(pending))
    if not pending:
        return
    step = pending[0].step
    checkpoint = study.suite.load(step, device=config.suite.device)
    device = next(checkpoint.model.parameters()).device
    context = readout_context(checkpoint.context, config.sampling.max_readout_tokens, "sampling.max_readout_tokens")
    samples = study.readout_samples().head(config.calibration.readout_samples)
    evalset = readout_evalset(checkpoint.tokenizer, select_readout(checkpoint.tokenizer, samples, context),
                              device=str(device))
    windows = sampling_windows(checkpoint.tokenizer, config.sampling).to(device)
    for unit in pending:
        with torch.random.fork_rng():  # the sweep must not change the caller's global RNG stream
            _sample_unit(checkpoint.model, windows, evalset_readout(evalset), unit,
                         f"calibration step {step}: {unit.setting.label}", progress)
        bar.advance()


def compute_calibration(study) -> dict[str, Any]:
    """Score the stored sweep, choose, write tables, traces grids, calibration.json, the preset and the manifest
    entry. Never samples (a missing unit is a FileNotFoundError naming it)."""
    import pandas as pd

    from codedyn.figures.plots import save_figure
    from codedyn.runs.store import is_completed, write_json

    config, calibration = study.config, study.config.calibration
    out = study.output_dir(CALIBRATION_DIR)
    steps = calibration_steps(study)
    grid = settings_grid(calibration)
    units = {step: {unit.setting: unit for unit in calibration_units(study, step)} for step in steps}
    per_step_rows, grid_metrics = [], {}
    traces_by_step: dict[int, dict[Setting, tuple[np.ndarray, float]]] = {s: {} for s in steps}
    for setting in grid:
        metrics_per_step = {}
        for step in steps:
            unit = units[step][setting]
            if not is_completed(unit.folder):
                raise FileNotFoundError(f"{unit.folder}: calibration unit missing; run `codedyn calibrate` to "
                                        "sample it")
            result = _load_unit(unit.folder)
            metrics, losses, init = _unit_metrics(result, unit.sampling)
            metrics_per_step[step] = metrics
            traces_by_step[step][setting] = (losses, init)
            per_step_rows.append({**setting.as_dict(), "step": step, **metrics, "error": result["error"]})
        grid_metrics[setting] = metrics_per_step
    scores = score_grid(grid_metrics, calibration)
    per_step = pd.DataFrame(per_step_rows)
    scores.to_parquet(out / "scores.parquet", index=False)
    per_step.to_parquet(out / "checkpoint_scores.parquet", index=False)
    best = scores.iloc[0]
    chosen = Setting(float(best["lr"]), float(best["n_beta"]), float(best["localization"]))
    sweep = sweep_sampling_config(config.sampling, calibration, chosen)
    for step in steps:
        save_figure(calibration_traces_figure(traces_by_step[step], chosen, sweep.burn_in, step),
                    out / f"traces_grid_step{step}")
    preset = Path(calibration.write) if calibration.write is not None else study.run_dir / CALIBRATED_PRESET
    summary = {
        "chosen": chosen.as_dict(),
        "usable": not bool(best["rejected"]) and int(best["n_failed"]) == 0,
        "reasons": list(best["reasons"].split("; ")) if best["reasons"] else [],
        "steps": list(steps),
        "grid": {"lr": list(calibration.lr), "n_beta": list(calibration.n_beta),
                 "localization": list(calibration.localization)},
        "chain_length": {"chains": sweep.chains, "burn_in": sweep.burn_in, "draws": sweep.draws},
        "thresholds": {field: getattr(calibration, field) for field in CRITERIA},
        "n_settings": len(grid),
        "n_rejected": int(scores["rejected"].sum()),
        "n_passing": int(((~scores["rejected"]) & (scores["n_failed"] == 0)).sum()),
        "preset": str(preset),
        "rules": __doc__.split("Scoring rules", 1)[1].split("Step-size check")[0].strip(),
    }
    checked = step_size_table(study, chosen, units)
    if checked is not None:
        pd.DataFrame(checked["rows"]).to_parquet(out / "step_size.parquet", index=False)
    summary["step_size"] = None if checked is None else {k: v for k, v in checked.items() if k != "rows"}
    write_json(out / "calibration.json", summary)
    write_calibrated_preset(config, chosen, preset, summary)
    record_in_manifest(study.run_dir, summary)
    return {"scores": scores, "checkpoint_scores": per_step, "chosen": chosen, "preset": preset,
            "folder": out, "summary": summary, "step_size": [] if checked is None else checked["rows"]}


def step_size_estimates(traces, n_boot: int, seed: int) -> dict[str, tuple[float, float, float]]:
    """``{quantity: (value, low, high)}`` of what a calibration unit can estimate, with 95% intervals from one
    bootstrap of chains and blocks of draws: the LLC (:func:`codedyn.experiments.influence.llc_replicates`), and
    the mean off-diagonal BIF of its read-out samples, raw (``BIF mean (cov)``, −Cov) and normalised
    (``BIF mean (corr)``, −correlation); the calibration readout is a few samples without pair structure, so the
    block means need the run's posteriors."""
    from codedyn.analysis.stats import autocorrelation_block, bootstrap_draws, percentile_ci
    from codedyn.experiments.influence import llc_replicates
    from codedyn.sampling.sgld import healthy_sample_losses

    llc, llc_boot = llc_replicates(traces, n_boot, seed)
    found = {"LLC": (llc.value, *_bounds(percentile_ci(llc_boot, llc.value)))}
    losses = healthy_sample_losses(traces)  # [chains, draws, N]
    if losses.shape[0] == 0 or losses.shape[2] < 2:
        return found
    chain_idx, draw_idx = bootstrap_draws(losses.shape[0], losses.shape[1], n_boot, np.random.default_rng(seed + 1),
                                          block=autocorrelation_block(losses))
    replicates = np.array([_mean_bifs(losses[c[:, None], d]) for c, d in zip(chain_idx, draw_idx, strict=True)])
    point = _mean_bifs(losses)
    for k, name in enumerate(("BIF mean (cov)", "BIF mean (corr)")):
        found[name] = (point[k], *_bounds(percentile_ci(replicates[:, k], point[k])))
    return found


def _bounds(estimate) -> tuple[float, float]:
    return float(estimate.low), float(estimate.high)


def _mean_bifs(losses: np.ndarray) -> tuple[float, float]:
    """Mean off-diagonal −Cov and −correlation of the samples' losses over the pooled draws [chains, draws, N]."""
    pooled = np.asarray(losses, dtype=np.float64).reshape(-1, losses.shape[-1])
    cov = np.cov(pooled, rowvar=False)
    sd = np.sqrt(np.diag(cov))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(sd, sd)
    off = ~np.eye(cov.shape[0], dtype=bool)
    return float(-cov[off].mean()), float(-np.nanmean(corr[off])) if np.isfinite(corr[off]).any() else math.nan


def step_size_table(study, chosen: Setting, units: dict[int, dict[Setting, CalibrationUnit]]) -> dict | None:
    """The step-size check of the chosen setting (None when ``calibration.step_size_ratio`` is off): per
    calibration checkpoint, :func:`step_size_estimates` of the chosen unit and of the same setting at the smaller
    step, compared by :func:`codedyn.analysis.step_size.compare_step_sizes`. Returns ``{"ratio", "lr",
    "smaller_lr", "flagged" ([(step, quantity)]), "missing" (steps whose smaller-step unit is not sampled yet),
    "refused" ({step: why} where either posterior was refused), "rows"}``."""
    from codedyn.analysis.step_size import compare_step_sizes
    from codedyn.runs.store import is_completed

    ratio = study.config.calibration.step_size_ratio
    if ratio is None:
        return None
    smaller = smaller_step(chosen, ratio)
    n_boot, seed = study.config.sampling.n_bootstrap, study.config.sampling.seed
    rows, missing, refused = [], [], {}
    for unit in step_size_units(study, chosen):
        if not is_completed(unit.folder):
            missing.append(unit.step)
            continue
        pair = [_load_unit(units[unit.step][chosen].folder), _load_unit(unit.folder)]
        errors = [f"at ε={s.lr:g}: {r['error']}" for s, r in zip((chosen, smaller), pair, strict=True)
                  if r["traces"] is None]
        if errors:
            refused[unit.step] = "; ".join(errors)
            continue
        estimates = [step_size_estimates(r["traces"], n_boot, seed) for r in pair]
        rows += [{"step": unit.step, **row} for row in compare_step_sizes(*estimates, chosen.lr, smaller.lr)]
    return {"ratio": ratio, "lr": chosen.lr, "smaller_lr": smaller.lr,
            "flagged": [[row["step"], row["quantity"]] for row in rows if row["flagged"]],
            "missing": missing, "refused": refused, "rows": rows}


def calibration_traces_figure(traces: dict[Setting, tuple[np.ndarray, float]], chosen: Setting, burn_in: int,
                              step: int):
    """Loss traces over the sweep at one checkpoint: columns ε, rows (nβ, γ); diverged settings drawn empty and
    labelled, the chosen setting's panel framed."""
    from codedyn.figures.plots import traces_grid

    def key(s: Setting) -> tuple[str, str]:
        return (f"{s.n_beta:g}, {s.localization:g}", f"{s.lr:g}")

    grid = {key(s): losses for s, (losses, _) in traces.items()}
    inits = {key(s): init for s, (_, init) in traces.items() if math.isfinite(init)}
    figure = traces_grid(grid, inits, row_label="nβ, γ", col_label="ε", burn_in=burn_in,
                         title=f"SGLD calibration at checkpoint {step} (dashed: L(w*); framed: chosen)")
    rows = list(dict.fromkeys(k[0] for k in grid))
    cols = list(dict.fromkeys(k[1] for k in grid))
    axes = figure.axes[: len(rows) * len(cols)]
    for s, (losses, _) in traces.items():
        r, c = key(s)
        ax = axes[rows.index(r) * len(cols) + cols.index(c)]
        if not np.isfinite(losses).any() or not np.isfinite(losses[:, burn_in:]).all():
            ax.text(0.5, 0.5, "diverged", transform=ax.transAxes, ha="center", va="center", color="#D55E00",
                    fontsize=8)
        if s == chosen:
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color("#009E73")
                spine.set_linewidth(2.0)
    return figure


def write_calibrated_preset(config: CodedynConfig, chosen: Setting, path: Path, summary: dict[str, Any]) -> Path:
    """The resolved config with the chosen ``sampling`` values, as a YAML preset (``--preset <path>`` loads it)."""
    import yaml

    from codedyn.runs.store import write_text

    resolved = config.model_dump(mode="json")
    resolved["sampling"].update(chosen.as_dict())
    header = [
        f"# Calibrated by `codedyn calibrate` on checkpoints {summary['steps']} of {config.suite.name}: "
        f"{Setting(**chosen.as_dict()).label} ({summary['n_passing']} of {summary['n_settings']} settings passed "
        "every criterion).",
    ]
    if not summary["usable"]:
        header.append("# WARNING: no setting passed every criterion; the best one fails: "
                      + "; ".join(summary["reasons"]))
    path = Path(path)
    write_text(path, "\n".join(header) + "\n" + yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
    return path


def record_in_manifest(run_dir: Path, summary: dict[str, Any]) -> None:
    """Add the calibration result to ``<run>/manifest.json`` (key ``calibration``)."""
    from codedyn.runs.store import MANIFEST, write_json

    path = Path(run_dir) / MANIFEST
    current = json.loads(path.read_text()) if path.is_file() else {}
    current["calibration"] = {k: summary[k] for k in ("chosen", "usable", "reasons", "steps", "chain_length",
                                                       "thresholds", "preset")}
    write_json(path, current)
