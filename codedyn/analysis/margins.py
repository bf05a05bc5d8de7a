"""Equivalence margins of every curve, calibrated on a declared set of null twins that are never validated.

A margin is the smallest change of a curve that counts, in the curve's own units, applied to the change from the
baseline (never to the level): the onset test asks whether a curve moves by more than its margin, the equivalence
test whether every change stays inside it (:mod:`codedyn.analysis.onset`).

**The rule.** On each calibration null twin (the organism's recipe with bodies and verdicts independent of
correctness; a run of ``codedyn run --preset null`` at a seed and onset of the calibration set), every curve's
*reach* is the largest one-sided 1 - alpha bound of |change from baseline| over its post-onset checkpoints: the
largest change that null twin is compatible with. A curve's margin is :data:`FACTOR` times the largest reach over
the calibration twins (Experiment 3: over every component too, one margin for all). What a null twin of another
seed does then falls inside the margin unless its noise is larger than all of theirs; a correctness signal on the
organism must move by more than twice what data and training alone moved it.

**The declaration.** ``margins.json`` (package data beside this module) records the margins, the rule, the
calibration twins' seeds, onsets and code version; ``benchmarks/calibrate_margins.py`` writes it from run folders.
A validated run whose seed is among the calibration seeds is flagged by :func:`held_out` (its verdicts would be
judged by a margin fit on itself). A curve without a calibrated margin gets 0: its onset test is a plain departure
test and it can never be called flat.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist

import numpy as np

from codedyn.analysis.curves import StoredCurve, stored_curves
from codedyn.analysis.onset import ALPHA, changes

FACTOR = 2.0  # the margin is this many times the calibration twins' largest reach
MARGINS_FILE = Path(__file__).with_name("margins.json")


@dataclass(frozen=True)
class Margins:
    """Calibrated margins and what they were calibrated on."""

    margins: dict[str, float] = field(default_factory=dict)
    calibration: list[dict] = field(default_factory=list)  # one record per twin: run, seeds, onset, commit
    rule: str = ""

    @property
    def seeds(self) -> set[int]:
        """Every seed a calibration twin used (toy suite and planted task)."""
        return {int(s) for record in self.calibration for s in (record.get("toy_seed"), record.get("planted_seed"))
                if s is not None}

    def margin(self, key: str) -> float:
        return float(self.margins.get(key, 0.0))

    def apply(self, curves: Sequence[StoredCurve]) -> list[StoredCurve]:
        """The curves with their calibrated margins set."""
        return [replace(c, curve=replace(c.curve, margin=self.margin(c.margin_key))) for c in curves]


def load_margins(path: Path | None = None) -> Margins:
    """The package's calibrated margins (empty when no file: every margin 0)."""
    path = Path(path) if path is not None else MARGINS_FILE
    if not path.is_file():
        return Margins()
    stored = json.loads(path.read_text())
    return Margins({k: float(v) for k, v in stored.get("margins", {}).items()}, list(stored.get("calibration", [])),
                   str(stored.get("rule", "")))


def reach(curve, onset: int | None, alpha: float = ALPHA) -> float:
    """The largest one-sided 1 - alpha bound of |change from baseline| over the post-onset checkpoints."""
    found = changes(replace(curve, margin=0.0), onset)
    return float(np.max(np.abs(found.change) + NormalDist().inv_cdf(1 - alpha) * found.se))


def calibrate(runs: Sequence[tuple[Path, int | None, dict]], factor: float = FACTOR) -> Margins:
    """Margins from calibration null twins: ``runs`` = (run folder, data onset, record of the twin: seeds, onset,
    commit). Raises when a run is not a null twin's record (``record["null"]`` must be true)."""
    if not runs:
        raise ValueError("calibrating margins needs at least one null twin")
    largest: dict[str, float] = {}
    for folder, onset, record in runs:
        if not record.get("null"):
            raise ValueError(f"{folder} is not a null twin: margins are calibrated on null twins only")
        for stored in stored_curves(Path(folder)):
            found = reach(stored.curve, onset)
            if np.isfinite(found):
                largest[stored.margin_key] = max(largest.get(stored.margin_key, 0.0), found)
    rule = (f"{factor:g} x the largest one-sided {1 - ALPHA:g} bound of |change from the pre-onset baseline| over "
            f"the post-onset checkpoints of {len(runs)} null twins (Experiment 3: over every component)")
    return Margins({k: factor * v for k, v in sorted(largest.items())}, [dict(r) for _, _, r in runs], rule)


def write_margins(margins: Margins, path: Path | None = None) -> Path:
    path = Path(path) if path is not None else MARGINS_FILE
    path.write_text(json.dumps({"rule": margins.rule, "calibration": margins.calibration,
                                "margins": margins.margins}, indent=1) + "\n")
    return path


def held_out(margins: Margins, seeds: Sequence[int | None]) -> bool:
    """True when none of a validated run's seeds is among the calibration twins' seeds."""
    return not ({int(s) for s in seeds if s is not None} & margins.seeds)
