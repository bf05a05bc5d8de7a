"""The verdict table: for every signal, "sharp transition within (a, b]", "gradual", "non-monotonic", "no change"
or a change the schedule does not resolve, with its bracket, effect size (interval), p-values and evidence.

Each experiment's calls and rows are read here from a run folder (a missing experiment gives a "not run" row, never
an error); which of them a run's table shows, and in which order, is the experiments registry's
(:mod:`codedyn.experiments.registry`, handed in as :class:`~codedyn.analysis.signals.Signals`):

* behaviour: the verdict contrast and the loss gap (:func:`behaviour_calls`, :func:`behaviour_rows`);
* SAE accuracy: ``<run>/emergence/transitions.json``, the curve(s) of the best latent's AUROC, and the probe's;
* influence CC / CI / II / paired (cov and corr variants) and the LLC: ``<run>/influence/transitions.json``; a
  stored call without the verdict fields (bracket, effect, p-values) gets them from the verdict test run again on
  ``bootstrap_replicates.npz`` when its verdict agrees;
* susceptibilities: ``<run>/susceptibility/transitions.json`` when that experiment wrote one, otherwise
  :func:`transition_calls_for_susceptibility` on ``susceptibility.parquet``, one call per component and
  distribution (correct, incorrect), summarised per distribution by :func:`susceptibility_summary`.

Every row also carries its curve (steps, values, 95% interval) for the report's sparkline.

A call is read through :func:`normalise_call`, which accepts the verdict schema of
:func:`codedyn.analysis.transitions.classify_trajectory` (``kind``, ``verdict``, ``bracket``, ``effect``,
``effect_low``, ``effect_high``, ``p_value``, ``p_adjusted``, ``fwer``, ``evidence``, ``test``) and, for run folders
written before it, the older one (a verdict sentence and a jump in the evidence, whose bracketing checkpoints are
kept; the old "at step" reading is dropped).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codedyn.analysis.curves import CHI_CONTRAST_DISTRIBUTION as CONTRAST
from codedyn.analysis.signals import SignalSources
from codedyn.runs.layout import TRANSITIONS_FILE
from codedyn.runs.store import read_json

NOT_RUN = "not run"
KINDS = ("sharp", "gradual", "non_monotonic", "no_change", "unresolved")
KIND_WORDS = {"sharp": "sharp transition", "gradual": "gradual", "non_monotonic": "non-monotonic",
              "no_change": "no change", "unresolved": "not resolved by this schedule", NOT_RUN: NOT_RUN}


@dataclass(frozen=True)
class VerdictRow:
    """One row of the summary table."""

    signal: str  # e.g. "Influence CI (cov)"
    curve: str  # the key in its transitions.json, e.g. "CI/cov"
    verdict: str  # the call's own sentence, e.g. "sharp transition within (5500, 6000]"; or "not run"
    kind: str = NOT_RUN  # one of KINDS, or "not run"
    bracket: list[int] | None = None  # [a, b]: the change happened after checkpoint a, by checkpoint b
    effect: float | None = None  # size of the change, with its interval
    effect_low: float | None = None
    effect_high: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None  # family-wise adjusted over the verdict table (None where not adjusted)
    fwer: str = ""  # the family-wise control, in words
    evidence: list[str] = field(default_factory=list)
    test: str = ""  # short id of the verdict test
    source: str = ""  # the file the verdict comes from, relative to the run folder
    steps: list[int] = field(default_factory=list)  # the curve, for the sparkline (may be empty)
    values: list[float] = field(default_factory=list)
    lows: list[float] = field(default_factory=list)
    highs: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _old_kind(verdict: str) -> str:
    if verdict.startswith("phase transition"):
        return "sharp"
    return {"gradual": "gradual", "no change": "no_change", "non-monotonic": "non_monotonic"}.get(verdict, "")


def normalise_call(found: dict) -> dict:
    """A stored call with every field of the verdict schema (missing ones None / empty)."""
    verdict = str(found.get("verdict", "unknown"))
    kind = str(found.get("kind") or _old_kind(verdict) or "unknown")
    evidence = list(found.get("evidence", [])) + list(found.get("events", []))
    bracket = found.get("bracket")
    if bracket is None and kind == "sharp":  # old schema: the jump's bracketing checkpoints
        jump = next((e for e in evidence if isinstance(e, dict) and e.get("kind") == "jump"), None)
        bracket = list(jump["between"]) if jump and jump.get("between") else None
    if kind == "sharp" and bracket is not None and verdict.startswith("phase transition"):
        verdict = f"sharp transition within ({bracket[0]}, {bracket[1]}]"
    test = found.get("test", found.get("verdict_test", ""))
    return {
        "kind": kind, "verdict": verdict, "bracket": [int(b) for b in bracket] if bracket is not None else None,
        "effect": _number(found.get("effect")), "effect_low": _number(found.get("effect_low")),
        "effect_high": _number(found.get("effect_high")),
        "p_value": _number(found.get("p_value", found.get("change_p_value"))),
        "p_adjusted": _number(found.get("p_adjusted")), "fwer": str(found.get("fwer") or ""),
        "evidence": [str(e.get("detail", e)) if isinstance(e, dict) else str(e) for e in evidence],
        "test": str(test) if len(str(test)) <= 60 else "",  # a long description is shown once, not per row
    }


def _row(signal: str, curve: str, found: dict | None, source: str, points=None) -> VerdictRow:
    if found is None:
        return VerdictRow(signal, curve, NOT_RUN, source=source)
    call = normalise_call(found)
    return VerdictRow(signal, curve, source=source, **call, **_points(points))


def _points(points) -> dict[str, list]:
    """steps / values / lows / highs lists (NaN where missing) for the sparkline."""
    if points is None:
        return {}
    steps, values, lows, highs = points
    return {"steps": [int(s) for s in steps],
            **{k: [float(v) for v in np.asarray(a, dtype=float)] for k, a in
               (("values", values), ("lows", lows), ("highs", highs))}}


# ------------------------------------------------------------------------------------------------ susceptibilities


def transition_calls_for_susceptibility(
    table,
    variant: str = "standardised",
    distributions: tuple[str, ...] = ("correct", "incorrect", CONTRAST),
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
    Each call records the assumption under ``replicates``. Whether a change is large enough to matter for
    correctness is the yardstick's question (:mod:`codedyn.analysis.yardstick`, with margins calibrated on null
    twins), not this shape test's.
    """
    from codedyn.analysis.curves import tracked_components
    from codedyn.analysis.transitions import classify_trajectory, replicates_from_intervals

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
        found["replicates"] = ("rebuilt from the stored intervals assuming a normal sampling distribution at each "
                               "checkpoint")
        calls[f"{component}/{distribution}"] = found
    return calls


def _leader(calls: dict[str, dict]) -> str | None:
    """The component whose call the summary row shows: the most significant sharp one, else the most significant
    change of any kind, else the first."""
    if not calls:
        return None

    def key(item):
        call = normalise_call(item[1])
        p = call["p_adjusted"] if call["p_adjusted"] is not None else call["p_value"]
        rank = {"sharp": 0, "unresolved": 1, "non_monotonic": 2, "gradual": 3}.get(call["kind"], 4)
        return rank, p if p is not None else 1.0, item[0]

    return min(calls.items(), key=key)[0]


def susceptibility_summary(calls: dict[str, dict], distribution: str) -> dict:
    """The row of one distribution over every component's call: ``{"verdict", "kind", "bracket", "leader",
    "counts", "evidence"}``. kind: the strongest kind any component shows (sharp > unresolved > non-monotonic >
    gradual > no change); bracket: the most common sharp bracket; leader: the component the row's numbers and
    sparkline come from (:func:`_leader`)."""
    mine = {k.rsplit("/", 1)[0]: v for k, v in calls.items() if k.rsplit("/", 1)[1] == distribution}
    if not mine:
        return {"verdict": NOT_RUN, "kind": NOT_RUN, "bracket": None, "leader": None, "counts": {}, "evidence": []}
    normal = {c: normalise_call(v) for c, v in mine.items()}
    counts = Counter(n["kind"] for n in normal.values())
    sharp = {c: n for c, n in sorted(normal.items()) if n["kind"] == "sharp"}
    brackets = Counter(tuple(n["bracket"]) for n in sharp.values() if n["bracket"])
    bracket = list(brackets.most_common(1)[0][0]) if brackets else None
    kind = next((k for k in ("sharp", "unresolved", "non_monotonic", "gradual") if counts.get(k)), "no_change")
    total = len(mine)
    if sharp:
        where = ", ".join(f"{c} within ({n['bracket'][0]}, {n['bracket'][1]}]" if n["bracket"] else c
                          for c, n in sharp.items())
        verdict = f"sharp in {len(sharp)} of {total} components: {where}"
    elif kind == "no_change":
        verdict = f"no change in any of {total} components"
    else:
        verdict = f"{KIND_WORDS[kind]} in {counts[kind]} of {total} components"
    evidence = [", ".join(f"{KIND_WORDS.get(k, k)}: {counts.get(k, 0)}" for k in KINDS) + f" (of {total})"]
    evidence += [f"{c}: {n['verdict']}" for c, n in sharp.items()]
    return {"verdict": verdict, "kind": kind, "bracket": bracket, "leader": _leader(mine), "counts": dict(counts),
            "evidence": evidence}


def _susceptibility_points(table, component: str, distribution: str):
    rows = table[(table["variant"] == "standardised") & (table["component"] == component)
                 & (table["distribution"] == distribution)].sort_values("step")
    return rows["step"], rows["chi"], rows["low"], rows["high"]


# ---------------------------------------------------------------------------------------------------- influence

# The correctness contrasts first, in both variants; then the raw blocks, normalised only: one shared mode moves all
# losses together and carries every raw block (codedyn.experiments.influence), so their covariance variants stay in
# the influence section's figures and transitions.json instead of lengthening the table.
INFLUENCE_CURVES = [
    *[(f"{q}/{v}", f"Influence {label} ({v})") for q, label in (("delta", "Δ = (CC+II)/2 − CI"),
                                                                 ("bug_gap", "bug-influence gap"))
      for v in ("cov", "corr")],
    *[(f"{q}/corr", f"Influence {q} (corr)") for q in ("CC", "CI", "II", "paired")],
]



def _recomputed_call(run_dir: Path, curve: str) -> dict | None:
    """The verdict test run again on the stored bootstrap replicates of an influence curve, when present."""
    import pandas as pd

    from codedyn.analysis.transitions import classify_trajectory

    folder = run_dir / "influence"
    npz, parquet = folder / "bootstrap_replicates.npz", folder / "influence.parquet"
    if not (npz.is_file() and parquet.is_file()):
        return None
    quantity, variant = curve.split("/")
    with np.load(npz) as stored:
        if curve not in stored.files:
            return None
        reps = stored[curve]
    table = pd.read_parquet(parquet)
    part = table[(table["quantity"] == quantity) & (table["variant"] == variant)].sort_values("step")
    if len(part) != reps.shape[0]:
        return None
    if "local_minimum" in part:  # a checkpoint that is not a local minimum has no LLC (codedyn.sampling.llc)
        keep = part["local_minimum"].fillna(True).to_numpy(dtype=bool)
        part, reps = part[keep], reps[keep]
    if len(part) < 2:
        return None
    return classify_trajectory(part["step"].to_numpy(), reps, values=part["value"].to_numpy())


def _completed(run_dir: Path, curve: str, found: dict | None) -> dict | None:
    """A stored influence call with the verdict fields filled in from the recomputed test when it lacks them."""
    if found is None or "kind" in found:
        return found
    again = _recomputed_call(run_dir, curve)
    if again is None or normalise_call(again)["kind"] != normalise_call(found)["kind"]:
        return found
    return {**again, **found, "evidence": list(again.get("evidence", [])) + list(found.get("events", [])),
            "events": []}


def _influence_points(table, curve: str):
    quantity, variant = curve.split("/")
    part = table[(table["quantity"] == quantity) & (table["variant"] == variant)].sort_values("step")
    if quantity == "LLC":
        from codedyn.analysis.curves import llc_from_table

        steps = part["step"].tolist()
        values, lows, highs, _ = llc_from_table(part, steps)
        return steps, values, lows, highs
    return part["step"], part["value"], part["low"], part["high"]


# ---------------------------------------------------------------------------------------------------- all signals


def _sae_curves(calls: dict) -> list[str]:
    """The emergence curves of the best latent's AUROC (keys like ``L1/best_latent/auroc``), by layer; any AUROC
    curve when none is marked as the best latent's."""
    auroc = [k for k in calls if "auroc" in k.lower()]
    best = [k for k in auroc if "best" in k.lower()]
    return sorted(best or auroc)


def _behaviour_points(table, curve: str):
    if table is None:
        return None
    quantity, _, operator = curve.partition("/")
    rows = table[(table["quantity"] == quantity) & (table["operator"].fillna("") == operator)].sort_values("step")
    return None if rows.empty else (rows["step"], rows["value"], rows["low"], rows["high"])


def _emergence_points(table, curve: str):
    parts = curve.split("/")
    if table is None or len(parts) != 3 or not parts[0].startswith("L"):
        return None
    try:
        layer = int(parts[0][1:])
    except ValueError:
        return None
    rows = table[(table["split"] == "validation") & (table["layer"] == layer) & (table["predictor"] == parts[1])
                 & (table["metric"] == parts[2])].sort_values("step")
    return None if rows.empty else (rows["step"], rows["value"], rows["low"], rows["high"])


@dataclass
class StudyFamily:
    """Every curve of a run that gets a shape call, and the calls Holm-adjusted as one family.

    ``adjusted`` is keyed ``"<experiment>:<curve>"`` (``behaviour:verdict_contrast``, ``emergence:L1/probe/auroc``,
    ``influence:delta/cov``, ``susceptibility:<estimator>:<component>/<distribution>``)."""

    adjusted: dict[str, dict]

    def of(self, source: str) -> dict[str, dict]:
        """One experiment's adjusted calls, keyed by curve."""
        prefix = f"{source}:"
        return {k.removeprefix(prefix): v for k, v in self.adjusted.items() if k.startswith(prefix)}


BEHAVIOUR_CURVES = ("verdict_contrast", "loss_gap/all")  # the behaviour's curves in the family
BEHAVIOUR_SIGNALS = {"verdict_contrast": "Behaviour: verdict contrast",
                     "loss_gap/all": "Behaviour: loss gap at the mutated tokens"}
LLC_CURVE = "LLC/llc"  # the LLC's key among the influence calls


def _probe_curves(calls: dict) -> list[str]:
    return sorted(k for k in calls if k.endswith("/probe/auroc"))


def _influence_signal_curves(influence: dict | None) -> list[tuple[str, str]]:
    """The table's influence curves plus every stored correctness contrast it does not list (e.g. the verdict-loss
    contrasts), then the LLC."""
    from codedyn.analysis.curves import INFLUENCE_SIGNAL_WORDS

    listed = [curve for curve, _ in INFLUENCE_CURVES]
    extra = sorted(k for k in (influence or {}) if k not in listed and k.split("/")[0] != "LLC"
                   and any(word in k.split("/")[0] for word in INFLUENCE_SIGNAL_WORDS))
    return [*INFLUENCE_CURVES, *[(k, f"Influence {k}") for k in extra], (LLC_CURVE, "LLC")]


def _table(path: Path):
    import pandas as pd

    return pd.read_parquet(path) if path.is_file() else None


# ------------------------------------------------------------------------------ each experiment's calls and rows


def behaviour_calls(run_dir: Path) -> dict[str, dict]:
    """The verdict contrast and the loss gap over all operators (the ground truth's shape, in the family too)."""
    behaviour = read_json(Path(run_dir) / "behaviour" / TRANSITIONS_FILE) or {}
    return {c: behaviour[c] for c in BEHAVIOUR_CURVES if isinstance(behaviour.get(c), dict)}


def behaviour_rows(run_dir: Path, adjusted: dict[str, dict]) -> list[VerdictRow]:
    table = _table(Path(run_dir) / "behaviour" / "behaviour.parquet")
    return [_row(signal, curve, adjusted[curve], "behaviour/transitions.json", _behaviour_points(table, curve))
            for curve, signal in BEHAVIOUR_SIGNALS.items() if curve in adjusted]


def emergence_calls(run_dir: Path) -> dict[str, dict]:
    """Experiment 2: the best latent's and the probe's AUROC per layer."""
    emergence = read_json(Path(run_dir) / "emergence" / TRANSITIONS_FILE) or {}
    return {c: emergence[c] for c in [*_sae_curves(emergence), *_probe_curves(emergence)]}


def emergence_rows(run_dir: Path, adjusted: dict[str, dict]) -> list[VerdictRow]:
    table = _table(Path(run_dir) / "emergence" / "emergence.parquet")
    source = "emergence/transitions.json"
    curves = _sae_curves(adjusted)
    rows = [] if curves else [_row("SAE accuracy (best-latent AUROC)", "AUROC", None, source)]
    rows += [_row(f"SAE accuracy ({curve})", curve, adjusted[curve], source, _emergence_points(table, curve))
             for curve in curves]
    rows += [_row(f"Probe accuracy ({curve})", curve, adjusted[curve], source, _emergence_points(table, curve))
             for curve in _probe_curves(adjusted)]
    return rows


def influence_calls(run_dir: Path) -> dict[str, dict]:
    """Experiment 1: the table's influence curves (:func:`_influence_signal_curves`) and the LLC, each completed
    from the stored replicates where it lacks the verdict fields."""
    run_dir = Path(run_dir)
    influence = read_json(run_dir / "influence" / TRANSITIONS_FILE)
    completed = {curve: _completed(run_dir, curve, None if influence is None else influence.get(curve))
                 for curve, _ in _influence_signal_curves(influence)}
    return {c: found for c, found in completed.items() if found is not None}


def influence_rows(run_dir: Path, adjusted: dict[str, dict]) -> list[VerdictRow]:
    """One row per influence curve of the table (a "not run" row for one the run did not call), the LLC last."""
    run_dir = Path(run_dir)
    table = _table(run_dir / "influence" / "influence.parquet")
    rows = []
    for curve, signal in _influence_signal_curves(read_json(run_dir / "influence" / TRANSITIONS_FILE)):
        found = adjusted.get(curve)
        points = None if found is None or table is None else _influence_points(table, curve)
        rows.append(_row(signal, curve, found, "influence/transitions.json", points))
    return rows


def _susceptibility_estimators(run_dir: Path) -> tuple[dict[str, Path], dict[str, str], dict | None]:
    """The χ tables by estimator, where each estimator's calls come from, and the stored calls (None: computed from
    the tables)."""
    folder = Path(run_dir) / "susceptibility"
    stored = read_json(folder / TRANSITIONS_FILE)
    tables = {path.stem.removeprefix("susceptibility").lstrip("_") or "covariance": path
              for path in sorted(folder.glob("susceptibility*.parquet"))}
    if stored is not None:
        sources = {"covariance": "susceptibility/transitions.json"}
    else:
        sources = {estimator: f"susceptibility/{path.name} (intervals -> normal replicates)"
                   for estimator, path in tables.items()}
    return tables, sources or {"covariance": "susceptibility/"}, stored


def susceptibility_calls(run_dir: Path) -> dict[str, dict]:
    """Experiment 3: every component's χ calls, keyed ``"<estimator>:<component>/<distribution>"``: the stored
    ``transitions.json`` (estimator covariance) when the experiment wrote one, else one call per curve of each
    stored χ table (:func:`transition_calls_for_susceptibility`)."""
    import pandas as pd

    tables, _, stored = _susceptibility_estimators(run_dir)
    per_estimator = ({"covariance": stored} if stored is not None else
                     {estimator: transition_calls_for_susceptibility(pd.read_parquet(path))
                      for estimator, path in tables.items()})
    return {f"{estimator}:{k}": v for estimator, calls in per_estimator.items() for k, v in calls.items()}


def component_calls(adjusted: dict[str, dict]) -> dict[str, dict]:
    """The susceptibility calls of a family, keyed as the report shows them: ``"<component>/<distribution>"`` for
    the covariance estimator, ``"<estimator>:<component>/<distribution>"`` for another."""
    calls = StudyFamily(adjusted).of("susceptibility")
    return {k.removeprefix("covariance:"): v for k, v in calls.items()}


def susceptibility_rows(run_dir: Path, adjusted: dict[str, dict]) -> list[VerdictRow]:
    """One row per estimator and distribution, summarising every component's call (:func:`susceptibility_summary`),
    with the leading component's numbers and curve."""
    tables, sources, _ = _susceptibility_estimators(run_dir)
    rows = []
    for estimator, source in sources.items():
        calls = {k.removeprefix(f"{estimator}:"): v for k, v in adjusted.items() if k.startswith(f"{estimator}:")}
        label = "" if estimator == "covariance" else f", {estimator.replace('_', '-')}"
        chi = _table(tables[estimator]) if estimator in tables else None
        present = {k.rsplit("/", 1)[1] for k in calls}
        for distribution in ("correct", "incorrect", CONTRAST):
            if distribution == CONTRAST and distribution not in present:
                continue  # run folders written before the contrast existed
            name = "χ_incorrect − χ_correct" if distribution == CONTRAST else f"χ_{distribution}"
            signal = f"Susceptibility {name} (standardised{label})"
            curve = f"*/{distribution}" if estimator == "covariance" else f"{estimator}:*/{distribution}"
            summary = susceptibility_summary(calls, distribution)
            if summary["leader"] is None:
                rows.append(VerdictRow(signal, curve, NOT_RUN, source=source))
                continue
            lead = normalise_call(calls[f"{summary['leader']}/{distribution}"])
            points = None if chi is None else _susceptibility_points(chi, summary["leader"], distribution)
            lead.update(verdict=summary["verdict"], kind=summary["kind"], bracket=summary["bracket"] or
                        lead["bracket"], evidence=summary["evidence"] + [f"numbers and curve: {summary['leader']}"])
            rows.append(VerdictRow(f"{signal}; shown: {summary['leader']}", curve, source=source, **lead,
                                   **_points(points)))
    return rows


# ---------------------------------------------------------------------------------------------------- the family


def study_family(run_dir: Path, sources: SignalSources, level: float = 0.95) -> StudyFamily:
    """The one family of shape calls of a run: every experiment's calls (``sources``, e.g. the behaviour curves,
    Experiment 2's best-latent and probe AUROC per layer, Experiment 1's curves and the LLC, every component's χ
    curves), Holm-adjusted together (:func:`~codedyn.analysis.transitions.adjust_verdicts`). The report's verdict
    table and the validation table both read it."""
    from codedyn.analysis.transitions import adjust_verdicts

    family = {f"{name}:{curve}": call for name, signals in sources.items()
              for curve, call in signals.calls(Path(run_dir)).items()}  # keyed by source: files never collide
    return StudyFamily(adjust_verdicts(family, level))


def verdict_rows(run_dir: Path, sources: SignalSources, level: float = 0.95) -> tuple[list[VerdictRow],
                                                                                        dict[str, dict]]:
    """Every row of the summary table, in the order of ``sources`` with the LLC last, and the run's family of
    adjusted calls behind them (:func:`study_family`: the rows carry the Holm-adjusted verdicts; the stored
    ``transitions.json`` files stay raw)."""
    run_dir = Path(run_dir)
    found = study_family(run_dir, sources, level)
    rows = [row for name, signals in sources.items() for row in signals.rows(run_dir, found.of(name))]
    return [r for r in rows if r.curve != LLC_CURVE] + [r for r in rows if r.curve == LLC_CURVE], found.adjusted
