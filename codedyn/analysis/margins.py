"""Equivalence margins of every curve, calibrated on a declared set of null twins that are never validated.

A margin is the smallest change of a curve that counts, in the curve's own units, applied to the change from the
baseline (never to the level): the onset test asks whether a curve moves by more than its margin, the equivalence
test whether every change stays inside it (:mod:`codedyn.analysis.onset`).

**The rule.** On each calibration null twin (the organism's recipe with bodies and verdicts independent of
correctness; a run of ``codedyn run --preset null`` at a seed and onset of the calibration set), every curve's
*movement* is the largest |change from baseline| (point estimate) over its post-onset checkpoints: how far data and
training alone moved it, plus its noise. A curve's margin is :data:`FACTOR` times the largest movement over the
calibration twins (Experiment 3: over every component too, one margin for all). A correctness signal on the
organism must then move by more than twice what the null twins moved, and a curve is shown flat only when its
intervals are narrower than that: a noisy curve, whose null movement is mostly noise, reads "not detected" rather
than flat.

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

import numpy as np

from codedyn.analysis.curves import StoredCurve, stored_curves
from codedyn.analysis.onset import changes
from codedyn.analysis.signals import SignalSources

FACTOR = 2.0  # the margin is this many times the calibration twins' largest movement
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


def movement(curve, onset: int | None) -> float:
    """The largest |change from baseline| (point estimate) over the post-onset checkpoints."""
    return float(np.max(np.abs(changes(replace(curve, margin=0.0), onset).change)))


def calibrate(runs: Sequence[tuple[Path, int | None, dict]], sources: SignalSources,
              factor: float = FACTOR) -> Margins:
    """Margins from calibration null twins: ``runs`` = (run folder, data onset, record of the twin: seeds, onset,
    commit), over the signals of ``sources`` (:func:`codedyn.experiments.registry.signal_sources`). Raises when a
    run is not a null twin's record (``record["null"]`` must be true)."""
    if not runs:
        raise ValueError("calibrating margins needs at least one null twin")
    largest: dict[str, float] = {}
    for folder, onset, record in runs:
        if not record.get("null"):
            raise ValueError(f"{folder} is not a null twin: margins are calibrated on null twins only")
        for stored in stored_curves(Path(folder), sources, onset):
            found = movement(stored.curve, onset)
            if np.isfinite(found):
                largest[stored.margin_key] = max(largest.get(stored.margin_key, 0.0), found)
    rule = (f"{factor:g} x the largest |change from the pre-onset baseline| over the post-onset checkpoints of "
            f"{len(runs)} null twins (Experiment 3: over every component)")
    return Margins({k: factor * v for k, v in sorted(largest.items())}, [dict(r) for _, _, r in runs], rule)


def write_margins(margins: Margins, path: Path | None = None) -> Path:
    path = Path(path) if path is not None else MARGINS_FILE
    path.write_text(json.dumps({"rule": margins.rule, "calibration": margins.calibration,
                                "margins": margins.margins}, indent=1) + "\n")
    return path


def held_out(margins: Margins, seeds: Sequence[int | None]) -> bool:
    """True when none of a validated run's seeds is among the calibration twins' seeds."""
    return not ({int(s) for s in seeds if s is not None} & margins.seeds)
