"""The validation yardstick of a run: every curve's onset, its relation to the behavioural emergence, its
co-movement with the behaviour, its shape call, and the same on the null twin.

For a model organism run (a toy suite with the planted task) the known answer is the behavioural emergence: the
onset of the verdict contrast (:func:`codedyn.experiments.behaviour.emergence_call`, the ground truth's own
family, stored before anything draws it). Every other curve of the run (:func:`codedyn.analysis.curves.stored_curves`)
is judged by the same onset test in one Holm family (:func:`codedyn.analysis.onset.onset_family`), each with the
equivalence margin calibrated on declared null twins (:mod:`codedyn.analysis.margins`); then

* **relation**: leads / coincides / lags the emergence, by how many checkpoints, or does not find it (flat or not
  detected);
* **co-movement**: Spearman ρ with the verdict contrast after the data onset, with its interval; on the null twin
  the same number against the organism's verdict contrast, which must cover zero;
* **shape**: the curve's sharp / gradual / non-monotonic / no change call from the run's one family of shape calls
  (:func:`codedyn.analysis.verdicts.study_family`), the same call the report's verdict table shows;
* **why a method misses it** (:func:`method_readings`): for every method none of whose curves finds the emergence,
  its largest correctness-specific change (the organism's change less the null twin's, in margins) against its noise
  floor at ten times the draws (posterior estimates) or the programs (classifier and behaviour read-outs), so a
  thesis can say whether the method is blind or the estimate too noisy.

A run without a known onset (Pythia, HumanEval) gets the onset calls against its first checkpoint and no relation.
Computed from stored tables in well under a second per run; :func:`write_yardstick` stores it as
``<run>/validation/yardstick.json`` and ``yardstick.parquet``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codedyn.analysis.curves import VERDICT_CONTRAST, StoredCurve, stored_curves
from codedyn.analysis.events import (
    find_null_run,
    planted_of,
    run_seeds,
    run_steps,
    suite_record_of,
)
from codedyn.analysis.margins import Margins, held_out, load_margins
from codedyn.analysis.onset import Comovement, OnsetCall, comovement, onset_family, relation
from codedyn.analysis.signals import SignalSources
from codedyn.runs.layout import YARDSTICK_FILE

VALIDATION_DIR = "validation"
MORE = 10  # the multiple of the draws (or programs) at which a method that misses the emergence gets its noise floor
POSTERIOR_SOURCES = ("influence", "susceptibility")  # estimates whose noise is the posterior draws' Monte Carlo error


@dataclass
class SignalRow:
    """One curve's line of the validation table."""

    name: str
    source: str
    call: OnsetCall
    relation: str
    comovement: Comovement | None
    shape: dict | None  # the adjusted shape call (kind, verdict, bracket, p_adjusted)
    null_call: OnsetCall | None = None
    null_comovement: Comovement | None = None

    @property
    def null_departs(self) -> bool:
        return self.null_call is not None and self.null_call.kind == "onset"

    def to_dict(self) -> dict[str, Any]:
        def co(found):
            return None if found is None else {"rho": found.rho, "low": found.low, "high": found.high,
                                               "n_checkpoints": found.n_checkpoints}
        return {"name": self.name, "source": self.source, "call": self.call.to_dict(), "relation": self.relation,
                "comovement": co(self.comovement), "shape": self.shape,
                "null_call": None if self.null_call is None else self.null_call.to_dict(),
                "null_comovement": co(self.null_comovement), "null_departs": self.null_departs}


@dataclass
class Yardstick:
    """The validation of one run (and its null twin when found)."""

    run_dir: Path
    steps: list[int]
    onset: int | None  # the planted data onset (None: no known answer)
    emergence: OnsetCall | None  # the verdict contrast's onset (the ground truth)
    signals: list[SignalRow]
    family: str
    margins: Margins
    seeds: dict[str, int | None]
    null_dir: Path | None = None
    null_emergence: OnsetCall | None = None
    null_seeds: dict[str, int | None] = field(default_factory=dict)

    @property
    def is_organism(self) -> bool:
        return self.onset is not None

    @property
    def is_null_twin(self) -> bool:
        return bool((planted_of(suite_record_of(self.run_dir)) or {}).get("null"))

    @property
    def held_out(self) -> bool:
        """No seed of this run or its null twin is among the margins' calibration seeds."""
        return held_out(self.margins, [*self.seeds.values(), *self.null_seeds.values()])

    def to_dict(self) -> dict[str, Any]:
        return {"run": str(self.run_dir), "steps": self.steps, "onset": self.onset,
                "emergence": None if self.emergence is None else self.emergence.to_dict(),
                "family": self.family, "seeds": self.seeds, "held_out": self.held_out,
                "margins": {"rule": self.margins.rule, "calibration": self.margins.calibration},
                "null": None if self.null_dir is None else {
                    "run": str(self.null_dir), "seeds": self.null_seeds,
                    "emergence": None if self.null_emergence is None else self.null_emergence.to_dict()},
                "signals": [s.to_dict() for s in self.signals],
                "methods_that_miss": [m.to_dict() for m in method_readings(self)]}


def _call_from_dict(found: dict | None) -> OnsetCall | None:
    if not found or "kind" not in found or "name" not in found:
        return None
    fields = OnsetCall.__dataclass_fields__
    return OnsetCall(**{k: v for k, v in found.items() if k in fields})


def _ground_truth(curves: list[StoredCurve], run_dir: Path, onset: int | None) -> tuple[OnsetCall | None,
                                                                                          StoredCurve | None]:
    """The emergence call and its curve."""
    truth = next((c for c in curves if c.name == VERDICT_CONTRAST), None)
    if truth is None or onset is None:
        return None, truth
    # Recomputed with the margins in force (the stored call is what the run's figures drew, with the margins of its
    # day; the same whenever the margins have not been recalibrated since).
    return ground_truth_call(truth.curve, onset), truth


def ground_truth_call(curve, onset: int) -> OnsetCall:
    """The behavioural emergence: the onset test on the verdict contrast alone (the yardstick is not a signal under
    test, so it is its own family)."""
    return onset_family([curve], onset)[curve.name]


def _shapes(run_dir: Path, sources: SignalSources) -> dict[str, dict]:
    from codedyn.analysis.verdicts import study_family

    keep = ("kind", "verdict", "bracket", "p_adjusted", "fwer")
    return {key: {k: call.get(k) for k in keep} for key, call in study_family(run_dir, sources).adjusted.items()
            if isinstance(call, dict)}


def _family(run_dir: Path, sources: SignalSources, margins: Margins) -> tuple[
        list[StoredCurve], dict[str, OnsetCall], OnsetCall | None, StoredCurve | None, int | None, str]:
    record = suite_record_of(run_dir)
    onset = int(planted_of(record)["onset"]) if planted_of(record) else None
    curves = margins.apply(stored_curves(run_dir, sources, onset))
    emergence, truth = _ground_truth(curves, run_dir, onset)
    signals = [c for c in curves if c.name != VERDICT_CONTRAST or onset is None]
    calls = onset_family([c.curve for c in signals], onset) if signals else {}
    family = next(iter(calls.values())).family if calls else "no curves"
    return signals, calls, emergence, truth, onset, family


def yardstick(run_dir: Path, sources: SignalSources, null_dir: Path | None = None,
              margins: Margins | None = None) -> Yardstick:
    """The validation of ``run_dir`` (and of its null twin: ``null_dir``, or ``<runs>/null`` beside it) over the
    signals of ``sources`` (:func:`codedyn.experiments.registry.signal_sources`)."""
    run_dir = Path(run_dir)
    margins = margins if margins is not None else load_margins()
    signals, calls, emergence, truth, onset, family = _family(run_dir, sources, margins)
    # the schedule the relations count checkpoints on: every checkpoint any curve has (a refined run's manifest
    # learns its new steps only after the analyses)
    steps = sorted({*run_steps(run_dir), *(s for c in signals for s in c.curve.steps),
                    *(truth.curve.steps if truth else ())})
    shapes = _shapes(run_dir, sources)
    null_dir = Path(null_dir) if null_dir is not None else (find_null_run(run_dir) if onset is not None else None)
    null_calls: dict[str, OnsetCall] = {}
    null_curves: dict[str, StoredCurve] = {}
    null_emergence, null_seeds = None, {}
    if null_dir is not None:
        found, null_calls, null_emergence, _, _, _ = _family(null_dir, sources, margins)
        null_curves = {c.name: c for c in found}
        null_seeds = run_seeds(suite_record_of(null_dir))
    rows = []
    for stored in signals:
        call = calls[stored.name]
        twin = null_curves.get(stored.name)
        rows.append(SignalRow(
            stored.name, stored.source, call, relation(call, emergence, steps) if onset is not None else "",
            comovement(stored.curve, truth.curve, onset) if truth is not None and onset is not None else None,
            shapes.get(stored.family_key),
            null_calls.get(stored.name),
            comovement(twin.curve, truth.curve, onset) if twin is not None and truth is not None else None))
    return Yardstick(run_dir, steps, onset, emergence, rows, family, margins, run_seeds(suite_record_of(run_dir)),
                     null_dir, null_emergence, null_seeds)


def method_of(row: SignalRow) -> str:
    """The method a curve belongs to, as a thesis would name it: Experiment 2's probe and SAE best latent are two
    methods on the same activations, the LLC is not Experiment 1's BIF."""
    if row.name.startswith("SAE best latent"):
        return "Experiment 2, SAE best latent"
    if row.name.startswith("probe"):
        return "Experiment 2, probe"
    if row.name == "LLC":
        return "LLC"
    return {"influence": "Experiment 1, BIF", "susceptibility": "Experiment 3, χ"}.get(row.source, row.name)


@dataclass(frozen=True)
class MethodReading:
    """Why a method whose curves all miss the emergence misses them: its largest change after the baseline over all
    its curves on the organism against the same on the null twin (both maxima over the same curves, so a method with
    many noisy curves gains nothing from having many), and the noise of its largest organism curve. Every number is
    in units of the curve's own margin, so curves of different scales compare."""

    method: str
    curve: str  # the curve of the organism's largest change
    curves: int  # the method's curves in the table
    organism: float  # the largest |change| after the baseline over the method's curves, on the organism
    null: float  # ... on the null twin
    noise: float  # the organism curve's noise: the z·SE of its change at its quietest checkpoint (OnsetCall.noise)
    resampled: str = "draws"  # what its noise is the sampling error of: posterior "draws", or read-out "programs"
    flat: bool = False  # the organism curve's call is flat: every change shown inside its margin

    @property
    def effect(self) -> float:
        """The correctness-specific change: what the organism's change has beyond the null twin's."""
        return self.organism - self.null

    @property
    def noise_floor(self) -> float:
        """The noise at :data:`MORE` times the draws (or programs) if all of it were their sampling error, which
        shrinks as 1/√n; the rest of it (the read-out programs' for a posterior estimate, training's for a
        classifier) does not shrink, so this is a lower bound."""
        return self.noise / math.sqrt(MORE)

    @property
    def blind(self) -> bool:
        """Blind at these settings, not too noisy: its largest change is shown inside the margin (more draws only
        narrow the interval around a value already inside it), or what it has beyond the twin's is within even the
        noise floor (more draws cannot show it). Otherwise a change the noise hides may be there."""
        return self.flat or self.effect <= self.noise_floor

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "effect": self.effect, "noise_floor": self.noise_floor, "blind": self.blind,
                "multiple": MORE}


def method_readings(found: Yardstick) -> list[MethodReading]:
    """A :class:`MethodReading` for every method none of whose curves finds the emergence (an onset where the null
    twin has none), on an organism run whose emergence was detected and whose null twin was found; [] otherwise.
    Curves without a margin, a noise figure or a null twin's change cannot be read and are left out."""
    if found.emergence is None or found.emergence.kind != "onset" or found.null_dir is None:
        return []
    by_method: dict[str, list[SignalRow]] = {}
    for row in found.signals:
        by_method.setdefault(method_of(row), []).append(row)
    readings = []
    for method, rows in by_method.items():
        if any(r.call.kind == "onset" and not r.null_departs for r in rows):
            continue
        readable = [r for r in rows if r.call.margin and r.null_call is not None
                    and all(x is not None and math.isfinite(x) for x in (r.call.change, r.call.noise,
                                                                          r.null_call.change))]
        if not readable:
            continue
        top = max(readable, key=lambda r: abs(r.call.change) / r.call.margin)
        readings.append(MethodReading(
            method, top.name, len(rows), abs(top.call.change) / top.call.margin,
            max(abs(r.null_call.change) / r.call.margin for r in readable), top.call.noise / top.call.margin,
            "draws" if top.source in POSTERIOR_SOURCES else "programs", top.call.kind == "flat"))
    return readings


def table(found: Yardstick):
    """The yardstick as a tidy table (one row per signal; the emergence first)."""
    import pandas as pd

    rows = []
    if found.emergence is not None:
        rows.append({"name": VERDICT_CONTRAST, "source": "behaviour", "role": "ground truth",
                     **_flat(found.emergence), "relation": "defines the emergence"})
    for row in found.signals:
        co, null_co = row.comovement, row.null_comovement
        rows.append({"name": row.name, "source": row.source, "role": "signal", **_flat(row.call),
                     "relation": row.relation, "rho": co.rho if co else None, "rho_low": co.low if co else None,
                     "rho_high": co.high if co else None, "shape": (row.shape or {}).get("kind"),
                     "null_kind": row.null_call.kind if row.null_call else None,
                     "null_bracket": row.null_call.bracket if row.null_call else None,
                     "null_rho": null_co.rho if null_co else None, "null_rho_low": null_co.low if null_co else None,
                     "null_rho_high": null_co.high if null_co else None})
    return pd.DataFrame(rows)


def _flat(call: OnsetCall) -> dict[str, Any]:
    return {"kind": call.kind, "verdict": call.verdict,
            "bracket_low": call.bracket[0] if call.bracket else None,
            "bracket_high": call.bracket[1] if call.bracket else None, "change": call.change,
            "change_low": call.change_low, "change_high": call.change_high, "margin": call.margin,
            "reach": call.reach, "p_adjusted": call.p_adjusted, "noise": call.noise, "resolves": call.resolves}


def write_yardstick(run_dir: Path, sources: SignalSources) -> Yardstick:
    """Compute the yardstick over the signals of ``sources`` and store it under ``<run>/validation/``."""
    from codedyn.runs.store import write_json

    found = yardstick(run_dir, sources)
    out = Path(run_dir) / VALIDATION_DIR
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / YARDSTICK_FILE, found.to_dict())
    table(found).to_parquet(out / "yardstick.parquet", index=False)
    return found
