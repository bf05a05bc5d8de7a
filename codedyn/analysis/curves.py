"""Every curve a finished run stored, with its bootstrap replicates: the input of the yardstick.

The experiments store their curves as tidy tables (value and interval per checkpoint) and their bootstrap
replicates ``[n_steps, n_boot]`` in ``bootstrap_replicates.npz`` beside them. This module reads them back as
:class:`~codedyn.analysis.onset.Curve` objects, each under a stable name (the key of its equivalence margin,
:mod:`codedyn.analysis.margins`) and with the experiment it comes from:

* behaviour: the **verdict contrast** (the ground truth of the model organism) and the loss gap at the mutated
  tokens;
* Experiment 2: the best SAE latent's and the raw-residual probe's validation AUROC per layer;
* Experiment 1: every correctness contrast of the BIF the experiment calls (Δ, the lean-free contrast, bug
  influence, bug gap; on the code tokens and, for planted data, the verdict readouts) and the LLC (checkpoints that
  are local minima only);
* Experiment 3: χ_incorrect − χ_correct of every component tracked at every checkpoint (standardised); only
  intervals are stored, so replicates are rebuilt as normal draws from them
  (:func:`~codedyn.analysis.transitions.replicates_from_intervals`: the checkpoints' posteriors are independent).

Each experiment declares its reader in the experiments registry (:mod:`codedyn.experiments.registry`), which hands
them to :func:`stored_curves`. Nothing here computes a statistic; a curve the run did not store is simply absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codedyn.analysis.onset import Curve
from codedyn.analysis.signals import SignalSources
from codedyn.runs.layout import REPLICATES_FILE, TRANSITIONS_FILE
from codedyn.runs.store import read_json

VERDICT_CONTRAST = "verdict contrast"  # the behavioural curve whose onset is the emergence
CHI_CONTRAST_PREFIX = "χ contrast "  # + component: Experiment 3's per-component contrast curves
CHI_CONTRAST_MARGIN = "χ contrast (any component)"  # the one margin every component's contrast shares
CHI_CONTRAST_DISTRIBUTION = "incorrect-correct"  # the susceptibility table's distribution name of the contrast
INFLUENCE_SIGNAL_WORDS = ("delta", "bug_", "contrast")  # influence quantities that contrast correct with buggy code
# The verdict readouts (codedyn.experiments.influence.READOUT_VARIABLES; variants and χ tables carry their name):
# before the data onset the model has never seen a verdict line, so they read nothing there, and their curves start
# at the first checkpoint after the onset (its baseline).
VERDICT_READOUTS = ("verdict", "odds")


def _after_onset(steps, values, reps, onset: int | None):
    """A verdict readout's curve without its checkpoints at or before the data onset."""
    if onset is None:
        return steps, values, reps
    keep = np.asarray(steps) > onset
    return [s for s, k in zip(steps, keep, strict=True) if k], values[keep], reps[keep]


@dataclass(frozen=True)
class StoredCurve:
    """A curve and where it came from."""

    curve: Curve
    source: str  # the experiment folder: behaviour, emergence, influence, susceptibility
    label: str  # how the tables name it
    margin_key: str  # the key of its equivalence margin
    family_key: str = ""  # its key in the run's family of shape calls (analysis.verdicts.study_family)

    @property
    def name(self) -> str:
        return self.curve.name


def step_tick_label(step: float) -> str:
    """Compact step labels that fit one checkpoint slot: 0, 500, 1k, 5.5k, 143k, 1.2M."""
    step = float(step)
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(step) >= scale:
            value = step / scale
            text = f"{value:.3g}" if value < 100 else f"{value:.0f}"
            return text + suffix
    return f"{step:.0f}" if step == round(step) else f"{step:g}"


def llc_from_table(table, steps: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, str] | None:
    """``(values, lows, highs, note)`` of the LLC at ``steps`` from ``influence.parquet`` rows, or None when the
    table holds no LLC at all.

    A step gets NaN (left out of the LLC panel) when it has no LLC row, a non-finite value, or a row flagged as not
    a local minimum: a boolean column whose name contains ``local_minimum`` (True = a local minimum, e.g.
    ``local_minimum``; the reverse for a name starting with ``not_``) or ``llc_valid`` = False; or an interval
    entirely below zero (the LLC of a local minimum is >= 0: such chains found lower loss than the checkpoint, as at
    a random initialisation). The note names the left-out steps and why, for the panel and the report.
    """
    llc = table[table["quantity"] == "LLC"] if "quantity" in table else table
    if llc.empty:
        return None
    llc = llc.drop_duplicates("step").set_index("step")
    values, lows, highs = (np.full(len(steps), np.nan) for _ in range(3))
    reasons: dict[str, list[str]] = {}
    flags = [c for c in llc.columns if "local_minimum" in c or c == "llc_valid"]
    for k, step in enumerate(steps):
        if step not in llc.index:
            reasons.setdefault("not estimated", []).append(step_tick_label(step))
            continue
        row = llc.loc[step]
        bad = False
        for column in flags:
            flag = row[column]
            if flag is None or flag != flag:  # missing flag: no claim either way
                continue
            bad |= bool(flag) if column.startswith("not_") else not bool(flag)
        if bad:
            reasons.setdefault("not a local minimum", []).append(step_tick_label(step))
            continue
        if not np.isfinite(float(row["value"])):
            reasons.setdefault("no finite estimate", []).append(step_tick_label(step))
            continue
        if float(row["high"]) < 0:  # the LLC is >= 0 at a local minimum: chains settled below L(w*)
            reasons.setdefault("negative: the chains fell below L(w*), not a local minimum", []).append(
                step_tick_label(step))
            continue
        values[k], lows[k], highs[k] = float(row["value"]), float(row["low"]), float(row["high"])
    note = "; ".join(f"no LLC at step {', '.join(where)} ({why})" for why, where in reasons.items())
    return values, lows, highs, note


def _replicates(folder: Path) -> dict[str, np.ndarray]:
    path = folder / REPLICATES_FILE
    if not path.is_file():
        return {}
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files if key != "steps"}


def _table(path: Path):
    import pandas as pd

    return pd.read_parquet(path) if path.is_file() else None


def _finite(steps, values, reps) -> bool:
    return len(steps) >= 2 and np.all(np.isfinite(values)) and np.all(np.isfinite(reps))


def behaviour_curves(run_dir: Path, onset: int | None = None) -> list[StoredCurve]:
    """The verdict contrast and the loss gap over all operators, when the behaviour analysis stored them (every
    checkpoint: ``onset`` is not used, the curves before it are the baseline)."""
    folder = Path(run_dir) / "behaviour"
    table, reps = _table(folder / "behaviour.parquet"), _replicates(folder)
    found = []
    for key, quantity, operator, name, units in (
            ("verdict_contrast", "verdict_contrast", "", VERDICT_CONTRAST, "nats"),
            ("loss_gap/all", "loss_gap", "all", "loss gap at the mutated tokens", "nats")):
        if table is None or key not in reps:
            continue
        part = table[(table["quantity"] == quantity) & (table["operator"].fillna("") == operator)].sort_values("step")
        steps, values = part["step"].tolist(), part["value"].to_numpy(dtype=float)
        if len(steps) != reps[key].shape[0] or not _finite(steps, values, reps[key]):
            continue
        found.append(StoredCurve(Curve(name, tuple(steps), values, reps[key], units=units), "behaviour",
                                 f"{name} (behaviour)", name, f"behaviour:{key}"))
    return found


def emergence_curves(run_dir: Path, onset: int | None = None) -> list[StoredCurve]:
    """Experiment 2: the best latent's and the probe's validation AUROC per layer (every checkpoint: ``onset`` is not
    used, the curves before it are the baseline)."""
    folder = Path(run_dir) / "emergence"
    table, reps = _table(folder / "emergence.parquet"), _replicates(folder)
    if table is None:
        return []
    found = []
    validation = table[(table["split"] == "validation") & (table["metric"] == "auroc")]
    for layer in sorted(validation["layer"].unique()):
        for predictor, label in (("best_latent", "SAE best latent AUROC"), ("probe", "probe AUROC")):
            key = f"L{layer}/{predictor}/auroc"
            part = validation[(validation["layer"] == layer) & (validation["predictor"] == predictor)]
            part = part.sort_values("step")
            if key not in reps or len(part) != reps[key].shape[0]:
                continue
            steps, values = part["step"].tolist(), part["value"].to_numpy(dtype=float)
            if not _finite(steps, values, reps[key]):
                continue
            name = f"{label}, layer {int(layer)}"
            found.append(StoredCurve(Curve(name, tuple(steps), values, reps[key], units="AUROC"), "emergence",
                                     name, name, f"emergence:{key}"))
    return found


def influence_curves(run_dir: Path, onset: int | None = None) -> list[StoredCurve]:
    """Experiment 1: every correctness contrast of the BIF that the experiment calls (a key of its transitions.json:
    the code-token contrasts and the lean-free verdict-readout ones; every stored one for a run without calls), and
    the LLC at the checkpoints that are local minima (a checkpoint that is not one has no LLC)."""
    folder = Path(run_dir) / "influence"
    table, reps = _table(folder / "influence.parquet"), _replicates(folder)
    if table is None:
        return []
    called = read_json(folder / TRANSITIONS_FILE)  # the curves the experiment calls: its declared signals
    found = []
    for key in sorted(reps):
        if called is not None and key not in called:
            continue
        quantity, _, variant = key.partition("/")
        is_llc = quantity == "LLC"
        if not (is_llc or any(word in quantity for word in INFLUENCE_SIGNAL_WORDS)):
            continue
        part = table[(table["quantity"] == quantity) & (table["variant"] == variant)].sort_values("step")
        if len(part) != reps[key].shape[0]:
            continue
        keep = np.ones(len(part), dtype=bool)
        if is_llc and "local_minimum" in part:
            keep = part["local_minimum"].fillna(True).to_numpy(dtype=bool)
        steps, values = part["step"].to_numpy()[keep].tolist(), part["value"].to_numpy(dtype=float)[keep]
        curve_reps = reps[key][keep]
        if variant.split("_")[0] in VERDICT_READOUTS:
            steps, values, curve_reps = _after_onset(steps, values, curve_reps, onset)
        if not _finite(steps, values, curve_reps):
            continue
        name = "LLC" if is_llc else f"BIF {key}"
        units = "LLC" if is_llc else ("-Cov" if "cov" in variant else "-Corr")
        found.append(StoredCurve(Curve(name, tuple(steps), values, curve_reps, units=units), "influence",
                                 name, name, f"influence:{key}"))
    return found


def susceptibility_curves(run_dir: Path, onset: int | None = None, n_boot: int = 1000,
                          seed: int = 0) -> list[StoredCurve]:
    """Experiment 3: the standardised χ contrast of every component tracked at every checkpoint, for every stored
    table (``susceptibility.parquet``: code-token losses; ``susceptibility_<name>.parquet``: another readout or
    estimator, e.g. the verdict loss), named by the table's suffix."""
    from codedyn.analysis.transitions import replicates_from_intervals

    folder = Path(run_dir) / "susceptibility"
    found = []
    for path in sorted(folder.glob("susceptibility*.parquet")) if folder.is_dir() else []:
        suffix = path.stem.removeprefix("susceptibility").lstrip("_")
        table = _table(path)
        part = table[(table["variant"] == "standardised") & (table["distribution"] == CHI_CONTRAST_DISTRIBUTION)]
        n_steps = part["step"].nunique()
        prefix = f"{CHI_CONTRAST_PREFIX}({suffix}) " if suffix else CHI_CONTRAST_PREFIX
        margin_key = f"χ contrast ({suffix}, any component)" if suffix else CHI_CONTRAST_MARGIN
        for offset, (component, rows) in enumerate(sorted(part.groupby("component"), key=lambda item: item[0])):
            rows = rows.sort_values("step")
            if len(rows) != n_steps:  # a latent of one checkpoint's SAE has no trajectory
                continue
            values, lows, highs = (rows[c].to_numpy(dtype=float) for c in ("chi", "low", "high"))
            if not (np.all(np.isfinite(lows)) and np.all(np.isfinite(highs))):
                continue
            reps = replicates_from_intervals(values, lows, highs, n_boot=n_boot, seed=seed + offset)
            steps = rows["step"].tolist()
            if suffix in VERDICT_READOUTS:
                steps, values, reps = _after_onset(steps, values, reps, onset)
                if len(steps) < 2:
                    continue
            name = f"{prefix}{component}"
            found.append(StoredCurve(
                Curve(name, tuple(steps), values, reps, units="standardised χ"), "susceptibility",
                name, margin_key,
                f"susceptibility:{suffix or 'covariance'}:{component}/{CHI_CONTRAST_DISTRIBUTION}"))
    return found


def tracked_components(table) -> list[str]:
    """Components measured at every checkpoint of the table, the only ones with a trajectory: heads and MLPs, and SAE
    latents only where one latent is recorded at every step (each checkpoint has its own SAE, so latent i of two
    checkpoints is the same feature only when SAEs start from their predecessor's)."""
    steps = table.groupby("component")["step"].nunique()
    return sorted(steps[steps == table["step"].nunique()].index)


def trajectory_matrix(table, distribution: str):
    """(components, steps, [components, steps] LLC) of one distribution, weight-refined components only."""
    from codedyn.sampling.refined import FULL

    part = table[(table["distribution"] == distribution) & (table["component"] != FULL)]
    wide = part.pivot_table(index="component", columns="step", values="llc", dropna=False, sort=False)
    order = list(dict.fromkeys(part["component"]))  # the components' own order (layer by layer)
    wide = wide.reindex(order)
    return list(wide.index), [int(s) for s in wide.columns], wide.to_numpy(dtype=float)


def chi_group(name: str) -> str | None:
    """The Experiment 3 family a χ-contrast curve belongs to ("χ contrast" or "χ contrast (verdict)"), or None."""
    if not name.startswith(CHI_CONTRAST_PREFIX):
        return None
    rest = name.removeprefix(CHI_CONTRAST_PREFIX)
    return CHI_CONTRAST_PREFIX + rest[: rest.index(")") + 1] if rest.startswith("(") else CHI_CONTRAST_PREFIX.strip()


def stored_curves(run_dir: Path, sources: SignalSources, onset: int | None = None) -> list[StoredCurve]:
    """Every curve of a run, in the order of ``sources`` (e.g. behaviour, Experiment 2, Experiment 1, Experiment 3),
    the LLC last. ``onset``: the planted data onset, where the verdict readouts' curves start (None: they start
    where stored)."""
    found = [curve for signals in sources.values() for curve in signals.curves(Path(run_dir), onset)]
    return [c for c in found if c.name != "LLC"] + [c for c in found if c.name == "LLC"]
