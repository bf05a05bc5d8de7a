"""The verdict table: for every signal, "sharp transition within (a, b]", "gradual", "non-monotonic", "no change" or
"change within (a, b], not resolved by this schedule", with the evidence. All curves of the table are one family:
:func:`codedyn.analysis.transitions.adjust_verdicts` (Holm) controls the family-wise error over them, so a row shows
the adjusted call.

Sources, all read from a run folder (a missing experiment gives a "not run" row, never an error):

* SAE accuracy: ``<run>/emergence/transitions.json``, the curve(s) of the best latent's AUROC;
* influence CC / CI / II / paired (cov and corr variants) and the LLC: ``<run>/influence/transitions.json``; when
  ``bootstrap_replicates.npz`` is there too, the verdict's own test (the largest-jump statistics) is recomputed
  from the stored replicates and added to the evidence;
* susceptibilities: ``<run>/susceptibility/transitions.json`` when that experiment wrote one, otherwise
  :func:`transition_calls_for_susceptibility` on ``susceptibility.parquet``, one call per component and
  distribution (correct, incorrect), summarised as "components with a sharp transition, and their brackets".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NOT_RUN = "not run"


@dataclass(frozen=True)
class VerdictRow:
    """One row of the summary table."""

    signal: str  # e.g. "Influence CI (cov)"
    curve: str  # the key in its transitions.json, e.g. "CI/cov"
    verdict: str  # classify_trajectory's verdict text | "not run" | a summary sentence
    bracket: list[int] | None  # [a, b]: the checkpoints around a sharp or unresolved change
    evidence: list[str] = field(default_factory=list)
    test: str = ""
    source: str = ""  # the file the verdict comes from, relative to the run folder
    kind: str = ""  # classify_trajectory's kind; "" for "not run" and summary rows
    effect: float | None = None  # jump or total change, curve units, with its bootstrap interval
    effect_low: float | None = None
    effect_high: float | None = None
    p_value: float | None = None  # the deciding test's raw p-value
    p_adjusted: float | None = None  # Holm over the whole table
    fwer: str = ""  # how the family-wise error was controlled, and any downgrade

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _row(signal: str, curve: str, found: dict | None, source: str, extra: list[str] = ()) -> VerdictRow:
    if found is None:
        return VerdictRow(signal, curve, NOT_RUN, None, source=source)
    verdict = str(found.get("verdict", "unknown"))
    evidence = [str(e.get("detail", e)) if isinstance(e, dict) else str(e)
                for e in found.get("events", found.get("evidence", []))]
    test = str(found.get("test", ""))
    numbers = {k: found.get(k) for k in ("effect", "effect_low", "effect_high", "p_value", "p_adjusted")}
    return VerdictRow(signal, curve, verdict, found.get("bracket"), evidence + [e for e in extra if e not in evidence],
                      test, source, kind=str(found.get("kind", "")), fwer=str(found.get("fwer", "")), **numbers)


# ------------------------------------------------------------------------------------------------ susceptibilities


def transition_calls_for_susceptibility(
    table,
    variant: str = "standardised",
    distributions: tuple[str, ...] = ("correct", "incorrect"),
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, dict]:
    """``{"<component>/<distribution>": classify_trajectory(...)}`` for every component's χ trajectory.

    ``table`` is ``susceptibility.parquet`` (step, component, distribution, variant, chi, low, high). Only intervals
    are stored, so the bootstrap replicates the transition tests need are rebuilt with
    :func:`codedyn.analysis.transitions.replicates_from_intervals`: this **assumes a normal sampling distribution**
    at every checkpoint (sd = interval width / (2 z), asymmetric intervals symmetrised) **and independent
    checkpoints**, which holds for separate posteriors per checkpoint but loses any skew the real replicates had.
    Each curve gets its own seed offset so the synthetic noise is not shared between curves. Only components
    measured at every checkpoint have a trajectory (:func:`codedyn.experiments.susceptibility.tracked_components`).
    """
    from codedyn.analysis.transitions import classify_trajectory, replicates_from_intervals
    from codedyn.experiments.susceptibility import tracked_components

    part = table[(table["variant"] == variant) & table["distribution"].isin(distributions)
                 & table["component"].isin(tracked_components(table))]
    calls: dict[str, dict] = {}
    keys = sorted(set(zip(part["component"], part["distribution"], strict=True)))
    for offset, (component, distribution) in enumerate(keys):
        rows = part[(part["component"] == component) & (part["distribution"] == distribution)].sort_values("step")
        if len(rows) < 2:
            continue
        values, lows, highs = (rows[c].to_numpy(dtype=float) for c in ("chi", "low", "high"))
        reps = replicates_from_intervals(values, lows, highs, level=level, n_boot=n_boot, seed=seed + offset)
        found = classify_trajectory(rows["step"].to_numpy(), reps, level=level, values=values)
        found["test"] += " (replicates rebuilt from intervals: normal sampling distribution at each checkpoint)"
        calls[f"{component}/{distribution}"] = found
    return calls


def susceptibility_summary(calls: dict[str, dict], distribution: str) -> tuple[str, list[str], list[int] | None]:
    """(verdict sentence, evidence lines, most common sharp bracket) over the components of one distribution."""
    mine = {k.rsplit("/", 1)[0]: v for k, v in calls.items() if k.rsplit("/", 1)[1] == distribution}
    if not mine:
        return NOT_RUN, [], None
    sharp = {c: v for c, v in mine.items() if v["kind"] == "sharp"}
    changed = [c for c, v in mine.items() if v["kind"] in ("gradual", "non_monotonic", "unresolved")]
    flat = [c for c, v in mine.items() if v["kind"] == "no_change"]
    brackets = [tuple(v["bracket"]) for v in sharp.values()]
    common = list(max(set(brackets), key=brackets.count)) if brackets else None
    if sharp:
        where = ", ".join(f"{c} within ({v['bracket'][0]}, {v['bracket'][1]}]" for c, v in sorted(sharp.items()))
        verdict = f"sharp transition in {len(sharp)} of {len(mine)} components: {where}"
    elif changed:
        unresolved = sum(v["kind"] == "unresolved" for v in mine.values())
        note = f"; {unresolved} of them not resolved by this schedule" if unresolved else ""
        verdict = f"gradual ({len(changed)} of {len(mine)} components change, none sharply{note})"
    else:
        verdict = f"no change in any of {len(mine)} components"
    evidence = [f"sharp: {len(sharp)}, other change: {len(changed)}, no change: {len(flat)} (of {len(mine)})"]
    for component, found in sorted(sharp.items()):
        jump = [e["detail"] for e in found["evidence"] if e["kind"] == "jump"]
        evidence.append(f"{component}: {jump[0] if jump else found['verdict']}")
    return verdict, evidence, common


# ---------------------------------------------------------------------------------------------------- influence

INFLUENCE_CURVES = [(f"{q}/{v}", f"Influence {q} ({v})") for v in ("cov", "corr") for q in ("CC", "CI", "II", "paired")]


def _recomputed_evidence(run_dir: Path, curve: str) -> list[str]:
    """The verdict test's own evidence (largest jump) from the stored bootstrap replicates, when present."""
    import pandas as pd

    from codedyn.analysis.transitions import classify_trajectory

    folder = run_dir / "influence"
    npz, parquet = folder / "bootstrap_replicates.npz", folder / "influence.parquet"
    if not (npz.is_file() and parquet.is_file()):
        return []
    quantity, variant = curve.split("/")
    with np.load(npz) as stored:
        if curve not in stored.files:
            return []
        reps = stored[curve]
    table = pd.read_parquet(parquet)
    part = table[(table["quantity"] == quantity) & (table["variant"] == variant)].sort_values("step")
    if len(part) != reps.shape[0] or len(part) < 2:
        return []
    found = classify_trajectory(part["step"].to_numpy(), reps, values=part["value"].to_numpy())
    return [e["detail"] for e in found["evidence"] if e["kind"] in ("jump", "unresolved")]


# ---------------------------------------------------------------------------------------------------- all signals


def _sae_curves(calls: dict) -> list[str]:
    """The emergence curves of the best latent's AUROC (keys like ``L1/best_latent/auroc``), by layer; any AUROC
    curve when none is marked as the best latent's."""
    auroc = [k for k in calls if "auroc" in k.lower()]
    best = [k for k in auroc if "best" in k.lower()]
    return sorted(best or auroc)


def verdict_rows(run_dir: Path, level: float = 0.95) -> tuple[list[VerdictRow], dict[str, dict]]:
    """Every row of the summary table, and the susceptibility calls behind its susceptibility rows.

    Every curve behind a row (SAE best-latent AUROC per layer, the influence curves, each component's χ curves,
    the LLC) is one family for :func:`~codedyn.analysis.transitions.adjust_verdicts`: rows and returned calls
    carry the Holm-adjusted verdicts.
    """
    import pandas as pd

    from codedyn.analysis.transitions import adjust_verdicts

    run_dir = Path(run_dir)
    emergence = _read_json(run_dir / "emergence" / "transitions.json")
    influence = _read_json(run_dir / "influence" / "transitions.json")
    sae_curves = _sae_curves(emergence or {})

    folder = run_dir / "susceptibility"
    stored = _read_json(folder / "transitions.json")
    tables = {path.stem.removeprefix("susceptibility").lstrip("_") or "covariance": path
              for path in sorted(folder.glob("susceptibility*.parquet"))}
    if stored is not None:
        per_estimator = {"covariance": (stored, "susceptibility/transitions.json")}
    else:
        per_estimator = {
            estimator: (transition_calls_for_susceptibility(pd.read_parquet(path), level=level),
                        f"susceptibility/{path.name} (intervals -> normal replicates)")
            for estimator, path in tables.items()
        }
    if not per_estimator:
        per_estimator = {"covariance": ({}, "susceptibility/")}

    # One family over the whole table, keyed by source so curves of different files never collide.
    family = {f"emergence:{c}": emergence[c] for c in sae_curves}
    family.update({f"influence:{c}": (influence or {})[c] for c, _ in [*INFLUENCE_CURVES, ("LLC/llc", "LLC")]
                   if c in (influence or {})})
    for estimator, (calls, _) in per_estimator.items():
        family.update({f"susceptibility:{estimator}:{k}": v for k, v in calls.items()})
    adjusted = adjust_verdicts(family, level)

    rows: list[VerdictRow] = []
    source = "emergence/transitions.json"
    if not sae_curves:
        rows.append(_row("SAE accuracy (best-latent AUROC)", "AUROC", None, source))
    for curve in sae_curves:
        rows.append(_row(f"SAE accuracy ({curve})", curve, adjusted[f"emergence:{curve}"], source))

    source = "influence/transitions.json"
    for curve, signal in INFLUENCE_CURVES:
        found = adjusted.get(f"influence:{curve}")
        extra = _recomputed_evidence(run_dir, curve) if found is not None else []
        rows.append(_row(signal, curve, found, source, extra))

    suscept_calls: dict[str, dict] = {}
    for estimator, (raw, source) in per_estimator.items():
        calls = {k: adjusted[f"susceptibility:{estimator}:{k}"] for k in raw}
        suscept_calls.update({f"{estimator}:{k}" if estimator != "covariance" else k: v for k, v in calls.items()})
        test = next(iter(calls.values()), {}).get("test", "")
        fwer = next(iter(calls.values()), {}).get("fwer", "")
        label = "" if estimator == "covariance" else f", {estimator.replace('_', '-')}"
        for distribution in ("correct", "incorrect"):
            signal = f"Susceptibility χ_{distribution} (standardised{label}, per component)"
            verdict, evidence, bracket = susceptibility_summary(calls, distribution)
            curve = f"*/{distribution}" if estimator == "covariance" else f"{estimator}:*/{distribution}"
            rows.append(VerdictRow(signal, curve, verdict, bracket, evidence, test if evidence else "", source,
                                   fwer=fwer if evidence else ""))

    llc = adjusted.get("influence:LLC/llc")
    rows.append(_row("LLC", "LLC/llc", llc, "influence/transitions.json",
                     _recomputed_evidence(run_dir, "LLC/llc") if llc is not None else []))
    return rows, suscept_calls
