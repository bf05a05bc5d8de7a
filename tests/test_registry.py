"""One registration adds an experiment: a new experiment in a copy of the registry is planned, run, analysed, drawn
in the report and counted in both tables of signals, through the pipeline's, the report's and the analysis layer's
own code paths."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from codedyn.analysis.curves import StoredCurve
from codedyn.analysis.onset import Curve
from codedyn.analysis.signals import Signals
from codedyn.analysis.verdicts import VerdictRow, normalise_call
from codedyn.experiments.registry import EXPERIMENTS, Experiment, analysis_order, signal_sources
from codedyn.progress import SILENT
from codedyn.runs.layout import MANIFEST, TRANSITIONS_FILE, UNITS_DIR
from codedyn.runs.store import read_json, staging_dir, write_json
from codedyn.runs.units import UnitKind, unit_key
from tests.pipeline_support import STEPS, tiny_config, tiny_home

CAPTION = "A straight ramp over the checkpoints, one value per unit. Look for it rising."
RAMP = np.array([0.0, 1.0, 2.0])  # one value per step of STEPS, so the ramp has a verdict to give


def _outputs(study, step: int) -> dict[Path, dict]:
    record = {"kind": "ramp", "step": step, "data": study.dataset.card["hash"]}
    return {study.run_dir / UNITS_DIR / f"ramp-step{step}-{unit_key(record)}": record}


def _unit(study, step: int, progress=SILENT) -> Path:
    ((folder, _),) = _outputs(study, step).items()
    with staging_dir(folder) as staged:
        write_json(staged / "value.json", {"value": float(RAMP[list(study.steps).index(step)])})
    return folder


@dataclass(frozen=True)
class RampResult:
    folder: Path


def _compute(study) -> RampResult:
    from codedyn.analysis.transitions import classify_trajectory
    from codedyn.figures.plots import save_figure, training_curves

    out = study.output_dir("ramp")
    values = np.array([read_json(next(iter(_outputs(study, s))) / "value.json")["value"] for s in study.steps])
    reps = values[:, None] + np.random.default_rng(0).normal(0, 0.05, (len(values), 200))
    np.savez(out / "ramp.npz", steps=np.array(study.steps), values=values, reps=reps)
    write_json(out / TRANSITIONS_FILE, {"ramp": classify_trajectory(list(study.steps), reps, values=values)})
    save_figure(training_curves(list(study.steps), {"ramp": (values, reps.min(1), reps.max(1))}, ylabel="ramp"),
                out / "ramp_curve")
    return RampResult(out)


def _calls(run_dir: Path) -> dict[str, dict]:
    return read_json(run_dir / "ramp" / TRANSITIONS_FILE) or {}


def _rows(run_dir: Path, adjusted: dict[str, dict]) -> list[VerdictRow]:
    return [VerdictRow("Ramp", curve, source="ramp/transitions.json", **normalise_call(call))
            for curve, call in adjusted.items()]


def _curves(run_dir: Path, onset: int | None) -> list[StoredCurve]:
    path = run_dir / "ramp" / "ramp.npz"
    if not path.is_file():
        return []
    with np.load(path) as stored:
        curve = Curve("ramp", tuple(int(s) for s in stored["steps"]), stored["values"], stored["reps"])
    return [StoredCurve(curve, "ramp", "ramp", "ramp", "ramp:ramp")]


RAMP_EXPERIMENT = Experiment("ramp", _compute, units=(UnitKind("ramp", _unit, _outputs),), title="Experiment 5: a ramp",
                             captions={"ramp_curve": CAPTION}, signals=Signals(_calls, _rows, _curves))
REGISTRY = (*EXPERIMENTS, RAMP_EXPERIMENT)


def test_a_registered_experiment_runs_where_its_reads_allow():
    after_influence = replace(RAMP_EXPERIMENT, reads=("influence",))
    order = [e.name for e in analysis_order((after_influence, *EXPERIMENTS))]
    assert order.index("ramp") == order.index("influence") + 1 and order[0] == "behaviour"
    assert [e.name for e in analysis_order(REGISTRY)][-1] == "ramp"
    with pytest.raises(ValueError, match="not registered"):
        analysis_order((replace(RAMP_EXPERIMENT, reads=("nowhere",)),))
    assert list(signal_sources(REGISTRY))[-1] == "ramp"


def test_one_registration_reaches_the_plan_the_analyses_the_report_and_both_tables(tmp_path_factory, tmp_path,
                                                                                   monkeypatch):
    from codedyn.experiments.registry import unit_kinds
    from codedyn.pipeline import open_study, plan_units, run_study
    from codedyn.report.html import write_report

    monkeypatch.setenv("CODEDYN_HOME", str(tiny_home(tmp_path_factory)))
    config = tiny_config()
    run_dir = tmp_path / "run"

    plan = [u.id for u in plan_units(open_study(config, run_dir), unit_kinds(REGISTRY))]
    assert [f"ramp-step{s}" for s in STEPS] == [u for u in plan if u.startswith("ramp")]
    assert {"sae-step0", "posterior-step0"} <= set(plan)  # the registered experiments' units are still planned

    result = run_study(config, run_dir, experiments=(RAMP_EXPERIMENT,))
    assert [u["unit"] for u in result.units] == [f"ramp-step{s}" for s in STEPS]
    assert list(result.analyses) == ["ramp"] and result.outputs()["ramp"] == run_dir / "ramp"
    assert json.loads((run_dir / MANIFEST).read_text())["pipeline"]["analyses"] == ["ramp"]

    page = write_report(run_dir, experiments=REGISTRY).read_text()
    assert '<section id="ramp"><h2>Experiment 5: a ramp</h2>' in page
    assert page.index('<section id="embryology">') < page.index('<section id="ramp">')  # registry order
    assert CAPTION in page and 'href="#ramp"' in page
    verdicts = {row["curve"]: row for row in json.loads((run_dir / "verdicts.json").read_text())
                if row["signal"] == "Ramp"}
    assert verdicts["ramp"]["fwer"].startswith("Holm over")  # adjusted in the run's one family
    signals = {s["name"]: s for s in read_json(run_dir / "validation" / "yardstick.json")["signals"]}
    assert signals["ramp"]["source"] == "ramp" and signals["ramp"]["shape"]["verdict"] == verdicts["ramp"]["verdict"]
