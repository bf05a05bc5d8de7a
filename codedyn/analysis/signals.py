"""What one experiment's stored results contribute to a run's two tables of signals: the verdict table (one family
of shape calls, :func:`codedyn.analysis.verdicts.study_family`) and the validation table (the stored curves the
yardstick tests against the ground truth, :func:`codedyn.analysis.curves.stored_curves`).

The analysis layer knows no experiment: every function that reads a run's signals takes them as an ordered mapping
``{experiment folder: Signals}``, which :func:`codedyn.experiments.registry.signal_sources` builds from the one
registry of experiments. The order of the mapping is the order of the tables (the LLC, a property of every
checkpoint rather than a correctness signal, always goes last).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Signals:
    """Three readers of one experiment's folder of a finished run (a folder that is absent reads as nothing)."""

    # run folder -> the raw shape calls that join the run's family, keyed by curve; the family keys them
    # "<experiment>:<curve>"
    calls: Callable[[Path], dict[str, dict]]
    # (run folder, the family-adjusted calls of this experiment, keyed by curve) -> its rows of the verdict table
    # (codedyn.analysis.verdicts.VerdictRow; named in words: both readers' modules import this one)
    rows: Callable[[Path, dict[str, dict]], list[Any]]
    # (run folder, the planted data onset or None) -> its curves with bootstrap replicates, for the validation table
    # (codedyn.analysis.curves.StoredCurve)
    curves: Callable[[Path, int | None], list[Any]]


SignalSources = Mapping[str, Signals]  # experiment folder -> its signals, in the order of the tables
