"""Refined LLCs over training: which components' complexity rises, and on which code (``codedyn rllc``).

Per checkpoint, component (every head and MLP, the embedding and unembedding, plus ``full``) and sampling
distribution (the corpus, the read-out set's correct and incorrect code, a user corpus), the LLC of the refined
posterior of :mod:`codedyn.sampling.refined` with its bootstrap interval (chains and circular blocks of steps
resampled, :func:`codedyn.experiments.influence.llc_replicates`), and over training:

* ``rllc.parquet``: the tidy table (step, component, distribution, llc, low, high, status, healthy_chains,
  chains, moved_weights); ``status`` says why a row has no LLC (not a local minimum, too few healthy
  chains) -- a NaN never goes unexplained;
* ``rllc_sum.parquet``: per (step, distribution) the sum of the weight-refined LLCs beside the full LLC, with
  intervals (the posteriors are sampled independently, so the sum's replicates are the sums of the components'),
  their ratio and a one-word comparison (``below`` / ``above`` when the intervals of the difference exclude 0,
  else ``consistent``). They need not agree: the components do not cover every weight (layer norms, biases
  outside a head's share), and a component's LLC at the others' fixed weights is not its share of the joint one;
* ``rllc_contrast.parquet``: per (step, component) the LLC on correct minus on incorrect code, with interval;
* ``transitions.json``: :func:`codedyn.analysis.transitions.classify_trajectory` on every (component,
  distribution) trajectory from its bootstrap replicates (checkpoints without an LLC left out);
* ``clusters.parquet``: components grouped by their standardised trajectories (hierarchical clustering);
* the figures of :mod:`codedyn.figures.rllc` (per-component curves, the component x step heatmap, the clusters).

Units: one per (checkpoint, component) in ``codedyn run`` (pipeline kind ``rllc``, one part per component), each
storing one folder per distribution, so the executors run components in parallel and a killed sweep resumes at the
first missing (component, distribution).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from codedyn.analysis.curves import trajectory_matrix  # noqa: F401 (the clusters read it)
from codedyn.progress import SILENT, Progress
from codedyn.runs.layout import TRANSITIONS_FILE
from codedyn.runs.store import is_completed, write_json
from codedyn.sampling.refined import FULL

if TYPE_CHECKING:
    import pandas as pd

    from codedyn.experiments.study import Study

RLLC_DIR = "rllc"
LEVEL = 0.95
# The tidy table (the sampler's wall seconds stay in each unit's unit.json and <run>/timings/).
COLUMNS = ["step", "component", "distribution", "llc", "low", "high", "status", "healthy_chains", "chains",
           "moved_weights"]


def rllc_enabled(study: Study) -> bool:
    return study.config.rllc.enabled


def rllc_sampling_config(study: Study):
    """The resolved sampling config of the study's refined posteriors."""
    from codedyn.sampling.refined import refined_sampling

    cfg = study.config.rllc
    return refined_sampling(study.config.sampling, cfg.chains, cfg.draws, cfg.burn_in, cfg.lr)


_COMPONENTS: dict[tuple[str, int], list[str]] = {}  # (suite, step) -> default components, read once per process


def study_components(study: Study, step: int | None = None) -> list[str]:
    """``full``, then the configured components or every default one (:func:`codedyn.sampling.refined.
    default_components` of the study's first checkpoint: every checkpoint of a suite has the same architecture)."""
    from codedyn.sampling.refined import default_components

    configured = study.config.rllc.components
    if configured:
        return [FULL, *(c for c in configured if c != FULL)]
    where = (study.suite.name, study.steps[0])
    if where not in _COMPONENTS:
        _COMPONENTS[where] = default_components(study.suite.load(study.steps[0], device="cpu").model)
    return [FULL, *_COMPONENTS[where]]


_CHECKED: set[tuple[str, str]] = set()  # (run folder, suite) whose rllc inputs were checked in this process


def rllc_parts(study: Study, step: int) -> list[str]:
    """The pipeline's parts of one checkpoint: its components (the inputs checked once, at planning, so that a bad
    component or user corpus is one sentence before any unit runs)."""
    if (str(study.run_dir), study.suite.name) not in _CHECKED:
        check_rllc_inputs(study)
        _CHECKED.add((str(study.run_dir), study.suite.name))
    return study_components(study, step)


def _records(study: Study, step: int, component: str) -> dict[str, dict]:
    """The key record of each distribution's unit of (step, component)."""
    from codedyn.sampling.refined import refined_key_record

    cfg, sampling = study.config.rllc, rllc_sampling_config(study)
    return {d: refined_key_record(study.suite.name, step, component, d, sampling, study.dataset.card["hash"],
                                  cfg.user_corpus)
            for d in cfg.distributions}


def _units(study: Study, step: int, component: str) -> dict[str, Path]:
    from codedyn.runs.units import unit_key
    from codedyn.sampling.refined import refined_unit_dir

    return {d: refined_unit_dir(study.run_dir, step, component, d, unit_key(record))
            for d, record in _records(study, step, component).items()}


def rllc_folder(study: Study, step: int, component: str) -> Path:
    """The folder of the first distribution's unit of (step, component) (the others lie beside it)."""
    return next(iter(_units(study, step, component).values()))


def rllc_outputs(study: Study, step: int, component: str) -> dict[Path, dict]:
    """The pipeline unit of one (checkpoint, component): ``{folder: key record}``, one per distribution."""
    from codedyn.runs.units import unit_key
    from codedyn.sampling.refined import refined_unit_dir

    return {refined_unit_dir(study.run_dir, step, component, d, unit_key(record)): record
            for d, record in _records(study, step, component).items()}


def rllc_stored(study: Study, step: int, component: str) -> bool:
    return all(is_completed(u) for u in _units(study, step, component).values())


def rllc_unit(study: Study, step: int, progress: Progress = SILENT, component: str = FULL) -> Path:
    """Sample the refined posteriors of one (checkpoint, component), one per distribution (stored ones are kept)."""
    from codedyn.sampling.refined import run_refined

    cfg = study.config.rllc
    checkpoint = study.suite.load(step, device=study.config.suite.device)
    run_refined(checkpoint, study.suite.name, study.dataset, rllc_sampling_config(study), component,
                list(cfg.distributions), study.run_dir, cfg.user_corpus, progress)
    return rllc_folder(study, step, component)


def check_rllc_inputs(study: Study) -> None:
    """One sentence for a component the model cannot be restricted to, or a user corpus that cannot be read,
    before any sampling."""
    from codedyn.data.corpus import check_corpus
    from codedyn.sampling.refined import refined_masks

    if study.config.rllc.user_corpus is not None:
        check_corpus(study.config.rllc.user_corpus, ("train",), "rllc user")
    if study.config.rllc.components:
        model = study.suite.load(study.steps[0], device="cpu").model
        for component in study_components(study):
            refined_masks(model, component)


def run_rllc(study: Study, progress: Progress = SILENT) -> RllcResult:
    """Every (checkpoint, component) unit in this process (only the missing ones are sampled), then the tables."""
    check_rllc_inputs(study)
    pairs = [(step, c) for step in study.steps for c in study_components(study)]
    bar = progress.task("refined LLCs: (checkpoint, component)", total=len(pairs))
    for step, component in pairs:
        if not rllc_stored(study, step, component):
            rllc_unit(study, step, progress, component)
        bar.advance()
    return rllc_tables(study)


@dataclass(frozen=True)
class RllcResult:
    """What the refined LLCs stored under ``<run>/rllc/`` (nothing, with ``folder`` None, when not enabled)."""

    folder: Path | None
    table: pd.DataFrame | None = None  # step, component, distribution, llc, low, high, status, ...
    sums: pd.DataFrame | None = None  # the components' refined LLCs summed, against the full LLC
    contrast: pd.DataFrame | None = None  # incorrect − correct per component and checkpoint
    calls: dict[str, dict] = field(default_factory=dict)  # trajectory -> its shape call
    clusters: pd.DataFrame | None = None  # components clustered by their trajectories
    figures: list[Path] = field(default_factory=list)


def compute_rllc(study: Study) -> RllcResult:
    """The pipeline's analysis: the tables of stored units when the stage is enabled (nothing otherwise)."""
    if not rllc_enabled(study):
        return RllcResult(None)
    return rllc_tables(study)


# -------------------------------------------------------------------------------------------------- the tables


def refined_estimate(traces, n_boot: int, seed: int) -> tuple[float, float, float, str, np.ndarray]:
    """(llc, low, high, status, replicates [n_boot]) of one refined posterior: the project's LLC and its bootstrap
    (:func:`codedyn.experiments.influence.llc_replicates`); a dead component's posterior is flat
    (:data:`codedyn.sampling.llc.FLAT`, LLC ≈ 0 with its interval), not "not a local minimum"."""
    from codedyn.analysis.stats import percentile_ci
    from codedyn.experiments.influence import llc_replicates

    llc, reps = llc_replicates(traces, n_boot, seed)
    ci = percentile_ci(reps, llc.value, LEVEL)
    return llc.value, ci.low, ci.high, llc.status, reps


def _estimate(unit: Path, n_boot: int, seed: int) -> tuple[dict, np.ndarray]:
    """One unit's row fields and its bootstrap replicates [n_boot] (NaN without an LLC)."""
    from codedyn.sampling.refined import load_refined

    traces, record = load_refined(unit)
    base = {"moved_weights": record["moved_weights"], "chains": record["sampling"]["chains"]}
    if traces is None:
        return {**base, "llc": math.nan, "low": math.nan, "high": math.nan, "status": record["status"],
                "healthy_chains": 0}, np.full(n_boot, math.nan)
    value, low, high, status, reps = refined_estimate(traces, n_boot, seed)
    return {**base, "llc": value, "low": low, "high": high, "status": status,
            "healthy_chains": int(traces["healthy"].values.sum())}, reps


def rllc_tables(study: Study) -> RllcResult:
    """Read every stored unit of the study and write the tables, verdicts, clusters and figures of the module
    docstring under ``<run>/rllc/``. FileNotFoundError (naming the command) when a unit is missing."""
    import pandas as pd

    from codedyn.figures.rllc import write_figures

    n_boot = study.config.sampling.n_bootstrap
    rows, replicates = [], {}
    for s, step in enumerate(study.steps):
        for c, component in enumerate(study_components(study, step)):
            for d, (distribution, unit) in enumerate(_units(study, step, component).items()):
                fields, reps = _estimate(unit, n_boot, study.config.sampling.seed + 1000 * s + 37 * c + d)
                rows.append({"step": step, "component": component, "distribution": distribution, **fields})
                replicates[(step, component, distribution)] = reps
    table = pd.DataFrame(rows, columns=COLUMNS)
    out = study.output_dir(RLLC_DIR)
    table.to_parquet(out / "rllc.parquet", index=False)
    sums = sum_table(table, replicates)
    sums.to_parquet(out / "rllc_sum.parquet", index=False)
    contrast = contrast_table(table, replicates)
    contrast.to_parquet(out / "rllc_contrast.parquet", index=False)
    calls = trajectory_verdicts(table, replicates)
    write_json(out / TRANSITIONS_FILE, calls)
    clusters = cluster_components(table, study.config.rllc.clusters)
    clusters.to_parquet(out / "clusters.parquet", index=False)
    figures = write_figures(out, table, sums, contrast, clusters, calls)
    return RllcResult(out, table, sums, contrast, calls, clusters, figures)


def _interval(reps: np.ndarray, value: float) -> tuple[float, float]:
    from codedyn.analysis.stats import percentile_ci

    ci = percentile_ci(reps, value, LEVEL)
    return ci.low, ci.high


def sum_table(table, replicates: dict):
    """Per (step, distribution): the sum of the weight-refined LLCs beside the full LLC (module docstring)."""
    import pandas as pd

    rows = []
    for (step, distribution), part in table.groupby(["step", "distribution"], sort=True):
        parts = part[part["component"] != FULL]
        full = part[part["component"] == FULL]
        row = {"step": int(step), "distribution": distribution, "components": len(parts),
               "sum_llc": math.nan, "sum_low": math.nan, "sum_high": math.nan, "full_llc": math.nan,
               "full_low": math.nan, "full_high": math.nan, "ratio": math.nan, "comparison": ""}
        if len(full):
            row.update(full_llc=float(full["llc"].iloc[0]), full_low=float(full["low"].iloc[0]),
                       full_high=float(full["high"].iloc[0]))
        missing = parts[~np.isfinite(parts["llc"].to_numpy(dtype=float))]
        if len(parts) == 0 or len(missing):
            row["comparison"] = (f"no sum: {len(missing)} of {len(parts)} components have no LLC" if len(parts)
                                 else "no sum: no component")
            rows.append(row)
            continue
        reps = np.sum([replicates[(step, c, distribution)] for c in parts["component"]], axis=0)
        total = float(parts["llc"].sum())
        row.update(sum_llc=total, **dict(zip(("sum_low", "sum_high"), _interval(reps, total), strict=True)))
        if math.isfinite(row["full_llc"]):
            full_reps = replicates[(step, FULL, distribution)]
            low, high = _interval(reps - full_reps, total - row["full_llc"])
            row["ratio"] = total / row["full_llc"] if row["full_llc"] != 0 else math.nan
            row["comparison"] = "above" if low > 0 else "below" if high < 0 else "consistent"
        else:
            row["comparison"] = "no full LLC"
        rows.append(row)
    return pd.DataFrame(rows)


def contrast_table(table, replicates: dict):
    """Per (step, component): LLC on correct minus on incorrect code, with interval (empty without both)."""
    import pandas as pd

    rows = []
    if not {"correct", "incorrect"} <= set(table["distribution"]):
        return pd.DataFrame(columns=["step", "component", "difference", "low", "high"])
    wide = table.pivot_table(index=["step", "component"], columns="distribution", values="llc", dropna=False)
    for (step, component), values in wide.iterrows():
        diff = float(values["correct"] - values["incorrect"])
        reps = replicates[(step, component, "correct")] - replicates[(step, component, "incorrect")]
        low, high = _interval(reps, diff) if math.isfinite(diff) else (math.nan, math.nan)
        rows.append({"step": int(step), "component": component, "difference": diff, "low": low, "high": high})
    return pd.DataFrame(rows)


def trajectory_verdicts(table, replicates: dict) -> dict[str, dict]:
    """``{"<component>/<distribution>": classify_trajectory(...)}`` over the checkpoints with an LLC (at least
    two); the one place this experiment calls the transition tests."""
    from codedyn.analysis.transitions import classify_trajectory

    calls = {}
    for (component, distribution), part in table.groupby(["component", "distribution"], sort=True):
        part = part[np.isfinite(part["llc"].to_numpy(dtype=float))].sort_values("step")
        if len(part) < 2:
            calls[f"{component}/{distribution}"] = {"verdict": "no trajectory: fewer than two checkpoints have an "
                                                               "LLC", "step": None, "evidence": []}
            continue
        reps = np.stack([replicates[(s, component, distribution)] for s in part["step"]])
        reps = np.where(np.isfinite(reps), reps, part["llc"].to_numpy(dtype=float)[:, None])
        calls[f"{component}/{distribution}"] = classify_trajectory(
            part["step"].to_numpy(), reps, level=LEVEL, values=part["llc"].to_numpy(dtype=float))
    return calls


def cluster_components(table, clusters: int):
    """Per distribution: hierarchical clusters (average linkage, Euclidean distance of the z-scored
    trajectories, i.e. 2T (1 - correlation)) of the components with an LLC at every checkpoint, and the
    dendrogram's leaf order. Components with a gap are listed with cluster -1."""
    import pandas as pd
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage

    rows = []
    for distribution in dict.fromkeys(table["distribution"]):
        names, _, values = trajectory_matrix(table, distribution)
        complete = np.isfinite(values).all(axis=1)
        kept = [n for n, ok in zip(names, complete, strict=True) if ok]
        x = values[complete]
        if len(kept) >= 2 and x.shape[1] >= 2:
            sd = x.std(axis=1, keepdims=True)
            z = np.divide(x - x.mean(axis=1, keepdims=True), sd, out=np.zeros_like(x), where=sd > 0)
            tree = linkage(z, method="average", metric="euclidean")
            labels = fcluster(tree, t=min(clusters, len(kept)), criterion="maxclust")
            order = {kept[i]: rank for rank, i in enumerate(leaves_list(tree))}
        else:
            labels, order = np.ones(len(kept), dtype=int), {n: i for i, n in enumerate(kept)}
        for name, label in zip(kept, labels, strict=True):
            rows.append({"distribution": distribution, "component": name, "cluster": int(label),
                         "order": order[name]})
        rows += [{"distribution": distribution, "component": n, "cluster": -1, "order": len(kept) + i}
                 for i, n in enumerate(n for n, ok in zip(names, complete, strict=True) if not ok)]
    return pd.DataFrame(rows, columns=["distribution", "component", "cluster", "order"])


def sum_sentence(sums) -> str:
    """How the sum of the weight-refined LLCs compares with the full LLC, in one sentence."""
    judged = sums[sums["comparison"].isin(["below", "above", "consistent"])]
    if judged.empty:
        return "The sum of the weight-refined LLCs could not be set beside the full LLC at any checkpoint."
    counts = judged["comparison"].value_counts()
    ratio = judged["ratio"].to_numpy(dtype=float)
    ratio = ratio[np.isfinite(ratio)]
    spread = f" (ratio sum / full {np.min(ratio):.3g} to {np.max(ratio):.3g})" if ratio.size else ""
    return (f"Over {len(judged)} (checkpoint, distribution) pairs the sum of the weight-refined LLCs is below the "
            f"full LLC in {counts.get('below', 0)}, above it in {counts.get('above', 0)} and consistent with it "
            f"in {counts.get('consistent', 0)} (95% interval of the difference){spread}.")


def load_calls(folder: Path) -> dict:
    path = Path(folder) / TRANSITIONS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
