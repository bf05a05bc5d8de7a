"""``codedyn run``: the whole study as one resumable job, and ``codedyn refine``: densify it where things happen.

The job is a small, explicit task graph:

1. the dataset and the checkpoint suite (built or found in the cache; ``prepare_study``);
2. per checkpoint, the cached *units* of the kinds in :data:`UNIT_KINDS` (a posterior that influence, LLC and
   susceptibilities share; per-checkpoint work of other experiments), run by an executor
   (:mod:`codedyn.runs.executor`: in this process, or as Ray tasks). A unit may depend on other units of the same
   checkpoint, or of earlier ones;
3. the study-level analyses of :data:`ANALYSES` (cheap and deterministic given the stored units, which they only
   read; they write their tables and figures; run here);
4. the report (:data:`REPORT`).

Resuming: every unit lives in ``<run>/units/<kind>-step<N>-<key>/`` under a key that hashes everything that changes
its result, and counts as stored only once its ``completed`` marker exists (written last). Killing the job at any
moment and starting it again therefore recomputes only the units that were not finished; analyses and the report
are recomputed from the stored units each time, so the results equal those of an uninterrupted run. A changed
hyperparameter changes the keys of exactly the units it affects. The plan (:func:`plan_units`) follows from the
study alone (its configuration, dataset and suite), never from what is stored: every unit's folders are known
before anything runs, so the stored ones are skipped and each new one is announced with the configuration fields
that differ from a stored unit of its kind and step (:func:`codedyn.runs.units.new_unit_note`) -- by the unit
itself when it runs here, by this driver before submitting it when it runs as a Ray task (whose progress is
silent).

Adding an experiment takes, in this module, a :class:`~codedyn.runs.units.UnitKind` registered in
:data:`UNIT_KINDS` for its per-checkpoint work -- plain functions: ``run(study, step, progress) -> Path`` and
``outputs(study, step) -> {folder: key record}``, its keys from records of its inputs
(:mod:`codedyn.runs.units`), plus ``after`` / ``needs`` / ``enabled`` / ``parts`` as it needs them -- and an
:class:`Analysis` in :data:`ANALYSES` for its study-level computation (``compute(study) -> dict``). The functions
live with their experiment (``codedyn.experiments.*``); this module only wires them (``runs/`` knows no experiment).
Every module imported here is cheap to import (numpy at most; torch and the rest load inside the functions), and a
Ray worker that imports this module (to run :func:`run_unit`) finds every kind by name.

Every invocation writes ``<run>/timings.json`` (wall time, model forward/backward time and peak memory of every
stage and unit) and ``<run>/run.json`` (status, units, outputs).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from codedyn.config import CodedynConfig, updated
from codedyn.experiments.behaviour import behaviour_analysis
from codedyn.experiments.embryology import compute_embryology
from codedyn.experiments.emergence import compute_emergence, emergence_outputs, emergence_unit, previous_sae
from codedyn.experiments.influence import compute_influence
from codedyn.experiments.posteriors import posterior_outputs, posterior_unit
from codedyn.experiments.rllc import compute_rllc, rllc_enabled, rllc_outputs, rllc_parts, rllc_unit
from codedyn.experiments.step_size import (
    compute_step_size,
    step_size_outputs,
    step_size_parts,
    step_size_unit,
    uses_step_size_check,
)
from codedyn.experiments.susceptibility import (
    compute_susceptibility,
    restricted_outputs,
    restricted_unit,
    uses_restricted,
)
from codedyn.progress import SILENT, Progress
from codedyn.report.html import write_report
from codedyn.runs.executor import make_executor
from codedyn.runs.layout import MANIFEST, RUN_FILE, TIMINGS_FILE, TRANSITIONS_FILE, UNIT_TIMINGS_DIR, UNITS_DIR
from codedyn.runs.store import write_json
from codedyn.runs.units import Registry, Unit, UnitKind, is_stored


@dataclass(frozen=True)
class Analysis:
    """One study-level analysis over the stored units."""

    name: str
    compute: Callable[[Any], dict]  # (study) -> dict with at least "folder"


UNIT_KINDS = Registry((
    UnitKind("sae", emergence_unit, emergence_outputs, needs=previous_sae),  # Experiment 2
    # The posterior records the checkpoint's SAE latents when susceptibility.sae_latents > 0, so it comes after
    # the SAE of its checkpoint (its key includes the SAE unit's key, known before the SAE is trained).
    UnitKind("posterior", posterior_unit, posterior_outputs, after=("sae",)),
    # Experiment 3, --estimator weight_restricted: the full and every component's restricted posterior
    UnitKind("restricted", restricted_unit, restricted_outputs, enabled=uses_restricted),
    # refined LLCs: one unit per (checkpoint, component), one folder per distribution
    UnitKind("rllc", rllc_unit, rllc_outputs, enabled=rllc_enabled, parts=rllc_parts),
    # sampling.step_size_check: the last checkpoint's posterior once more at a smaller step
    UnitKind("step_size", step_size_unit, step_size_outputs, after=("sae",), enabled=uses_step_size_check,
             parts=step_size_parts),
))
ANALYSES: tuple[Analysis, ...] = (  # in this order: later analyses may read earlier ones' tables
    # The ground truth first (loads checkpoints): every later figure draws the behavioural emergence it stores.
    Analysis("behaviour", behaviour_analysis),
    Analysis("influence", compute_influence),  # Experiment 1 and the LLC
    Analysis("susceptibility", compute_susceptibility),  # Experiment 3
    Analysis("emergence", compute_emergence),  # Experiment 2 (reads the LLC)
    Analysis("embryology", compute_embryology),  # Experiment 4
    Analysis("rllc", compute_rllc),  # refined LLCs (when enabled)
    Analysis("step_size", compute_step_size),  # the step-size check (when enabled)
)
REPORT: Callable[[Any], Path] | None = write_report  # (study) -> Path of report.html


# --------------------------------------------------------------------------------------------------- the units


def plan_units(study, kinds: Registry | Iterable[UnitKind] = UNIT_KINDS) -> list[Unit]:
    """Every unit of the study, checkpoint by checkpoint, each after the units it depends on, with the folders it
    will store (:meth:`codedyn.runs.units.Registry.plan`: from the study's configuration and inputs alone)."""
    return _registry(kinds).plan(study)


def unit_is_stored(unit: Unit) -> bool:
    """Every folder of ``unit`` is completed (a unit of a kind that cannot say where it stores is never)."""
    return is_stored(unit)


def _registry(kinds: Registry | Iterable[UnitKind]) -> Registry:
    return kinds if isinstance(kinds, Registry) else Registry(kinds)


def run_unit(study, unit: Unit, progress: Progress = SILENT, kinds: Registry = UNIT_KINDS) -> dict:
    """Compute and store one unit with the configured torch threads; its timing record.

    The unit's kind is found by name in ``kinds`` (in a Ray worker: the registry of its own import of this module).
    The record is also written to ``<run>/timings/<unit folder>.json``, so a resumed run still knows what its
    cached units cost.
    """
    from codedyn.runs.timings import stage

    timing: list[dict] = []
    with torch_threads(study.config.executor.cpus_per_task), stage(unit.id, timing, kind=unit.name,
                                                                     step=unit.step) as entry:
        entry["folder"] = str(kinds.run(study, unit, progress))
    record = {**timing[0], "unit": unit.id, "cached": False}
    write_json(Path(study.run_dir) / UNIT_TIMINGS_DIR / f"{Path(record['folder']).name}.json", record)
    return record


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------------ the run


@dataclass
class RunResult:
    """What ``codedyn run`` produced."""

    run_dir: Path
    study: Any  # codedyn.experiments.study.Study
    units: list[dict]  # one timing record per unit; "cached": True for units found stored
    analyses: dict[str, dict] = field(default_factory=dict)  # name -> what its compute function returned
    report: Path | None = None
    timings: dict = field(default_factory=dict)

    @property
    def computed(self) -> list[str]:
        """Ids of the units this invocation computed (not found stored)."""
        return [u["unit"] for u in self.units if not u["cached"]]

    def outputs(self) -> dict[str, Path]:
        """Where each analysis (and the report) wrote its results."""
        found = {name: Path(result["folder"]) for name, result in self.analyses.items() if "folder" in result}
        if self.report is not None:
            found["report"] = self.report
        return found


def open_study(config: CodedynConfig, run_dir: Path, progress: Progress = SILENT,
               stages: list[dict] | None = None):
    """Build (or find) the dataset and the suite, timing each, then prepare the study (which finds both cached)."""
    from codedyn.data.pairs import build_dataset
    from codedyn.experiments.study import check_inputs, prepare_study
    from codedyn.models.toy import train_toy_suite
    from codedyn.runs.timings import stage

    _, steps = check_inputs(config)  # a bad step, a missing revision, an unreadable file: one sentence before work
    if len(steps) < 2:  # every analysis compares checkpoints; one would fail only after all its units ran
        from codedyn.models.suite import SuiteError

        raise SuiteError(f"a study needs at least two checkpoints to say how anything develops; got only step "
                         f"{steps[0]} (give --steps a,b,...)")
    stages = [] if stages is None else stages
    with stage("dataset", stages):
        build_dataset(config.dataset, progress=progress)
    if config.suite.name == "toy":
        with stage("suite", stages), torch_threads(config.toy.threads):
            train_toy_suite(config.toy, progress=progress)
    with stage("study", stages):  # finds both cached: no second set of progress bars
        return prepare_study(config, Path(run_dir), SILENT)


def run_study(config: CodedynConfig, run_dir: Path, progress: Progress = SILENT, executor=None,
              refinement: dict | None = None, kinds: Registry = UNIT_KINDS) -> RunResult:
    """The whole study: dataset, suite, every unit (only the missing ones are computed), analyses, report.

    ``executor`` defaults to the one ``config.executor`` describes. ``refinement`` (from :func:`refine_run`) is
    appended to the manifest's record of refinements. ``kinds``: the unit kinds (another registry travels to Ray
    tasks with the work function; the default one is found by name in each worker).
    """
    from codedyn.runs.timings import load_average, stage, summary

    run_dir = Path(run_dir)
    started = time.perf_counter()
    history = _previous_refinements(run_dir) + ([refinement] if refinement else [])
    executor = executor or make_executor(config.executor)
    load_start = load_average()
    stages: list[dict] = []
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / RUN_FILE, {"status": "running", "started": _now(), "executor": executor.kind})
    study = open_study(config, run_dir, progress, stages)
    _remove_leftovers(run_dir)

    units = plan_units(study, kinds)
    stored = {u.id for u in units if is_stored(u)}
    pending = [replace(u, after=tuple(d for d in u.after if d not in stored)) for u in units
               if u.id not in stored]  # a stored dependency is no longer waited for
    progress.log(f"{len(units)} units over {len(study.steps)} checkpoints: {len(stored)} stored, "
                 f"{len(pending)} to compute ({executor.kind} executor)")
    if executor.kind != "local":  # a task's own progress is silent: say here, before submitting, why each is new
        for unit in pending:
            for note in kinds.notes(study, unit):
                progress.log(note)
    work = run_unit if kinds is UNIT_KINDS else partial(run_unit, kinds=kinds)
    with stage("units", stages, executor=executor.kind, computed=len(pending), cached=len(stored)) as entry:
        computed = {r["unit"]: r for r in executor.run(pending, study, work, progress)}
    records = [computed.get(u.id) or _cached_record(study, u) for u in units]
    fresh = [r for r in records if not r["cached"]]
    if executor.kind != "local":  # the units ran elsewhere: their own clocks and memory peaks tell
        entry["model_seconds"] = sum(r["model_seconds"] for r in fresh)
        entry["forward_seconds"] = sum(r["forward_seconds"] for r in fresh)
        entry["backward_seconds"] = sum(r["backward_seconds"] for r in fresh)
        entry["cpu_seconds"] += sum(r["cpu_seconds"] for r in fresh)
    entry["peak_rss_mb"] = max([entry["peak_rss_mb"], *(r["peak_rss_mb"] for r in fresh)])

    analyses = {}
    for analysis in ANALYSES:
        with stage(f"analysis:{analysis.name}", stages):
            analyses[analysis.name] = analysis.compute(study)
    report = None
    if REPORT is not None:
        with stage("report", stages):
            report = Path(REPORT(study))

    timings = {
        "stages": stages,
        "units": records,
        **summary(stages, time.perf_counter() - started),
        "executor": executor.kind,
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "finished": _now(),
    }
    write_json(run_dir / TIMINGS_FILE, timings)
    _update_manifest(run_dir, {"pipeline": {
        "units": [{"unit": r["unit"], "folder": Path(r["folder"]).name if "folder" in r else None}
                  for r in records],
        "analyses": [a.name for a in ANALYSES],
        "report": report.name if report else None,
        "executor": config.executor.model_dump(mode="json"),
    }, "refinements": history})
    result = RunResult(run_dir, study, records, analyses, report, timings)
    write_json(run_dir / RUN_FILE, {
        "status": "finished", "finished": timings["finished"], "executor": executor.kind,
        "steps": list(study.steps), "computed": result.computed,
        "outputs": {name: str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)
                    for name, path in result.outputs().items()},
    })
    return result


def _remove_leftovers(run_dir: Path) -> None:
    """Half-built unit folders of a killed run (never marked completed; a run directory has one job at a time)."""
    import shutil

    for leftover in (Path(run_dir) / UNITS_DIR).glob(".*.partial"):
        shutil.rmtree(leftover, ignore_errors=True)


def _cached_record(study, unit: Unit) -> dict:
    """A stored unit's record: what computing it cost when it was computed (if known), marked cached."""
    folder = unit.folder
    record: dict[str, Any] = {"unit": unit.id, "stage": unit.id, "kind": unit.name, "step": unit.step}
    if folder is not None:
        record["folder"] = str(folder)
        earlier = Path(study.run_dir) / UNIT_TIMINGS_DIR / f"{folder.name}.json"
        if earlier.is_file():
            record["computed_earlier"] = {k: v for k, v in json.loads(earlier.read_text()).items()
                                          if k in ("seconds", "cpu_seconds", "model_seconds", "peak_rss_mb", "host")}
    record.update({"cached": True, "seconds": 0.0, "cpu_seconds": 0.0, "model_seconds": 0.0, "forward_seconds": 0.0,
                   "backward_seconds": 0.0, "peak_rss_mb": 0.0})
    return record


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _previous_refinements(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text()).get("refinements", []))
    except (OSError, ValueError):
        return []


def _update_manifest(run_dir: Path, extra: dict) -> None:
    path = Path(run_dir) / MANIFEST
    write_json(path, {**json.loads(path.read_text()), **extra})


# ---------------------------------------------------------------------------------------------------- refine


class RefineError(ValueError):
    """A run that cannot be refined (not finished, no transition calls); the message says why."""


def stored_config(run_dir: Path) -> CodedynConfig:
    """The resolved config a run was made with (from its manifest)."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {MANIFEST}; not a codedyn run directory")
    return CodedynConfig.model_validate(json.loads(path.read_text())["config"])


# Curves that are controls, not findings (Experiment 2's shuffled-label and random-latent baselines): an event on
# them says nothing about where to look closer.
CONTROL_CURVES = frozenset({"shuffled", "random_latent"})


def transition_brackets(run_dir: Path, steps: Sequence[int]) -> list[tuple[int, int]]:
    """Pairs of checkpoints (a, b) between which a finished run detected something: every verdict's ``bracket``
    (a sharp transition, or a change this schedule cannot resolve) and every event's ``between: [a, b]`` in a
    ``transitions.json`` of the run, except on the control curves of :data:`CONTROL_CURVES` and the jump scan's
    best candidate on curves it did not call sharp. Sorted, without duplicates."""
    found: set[tuple[int, int]] = set()

    def add(pair: Any) -> None:
        if isinstance(pair, list | tuple) and len(pair) == 2:
            a, b = sorted(int(x) for x in pair)
            if a < b:
                found.add((a, b))

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            add(node.get("bracket"))
            if node.get("kind") != "jump":  # a sharp jump's bracket is its verdict's; a rejected one says nothing
                add(node.get("between"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(Path(run_dir).glob(f"*/{TRANSITIONS_FILE}")):
        calls = json.loads(path.read_text())
        if isinstance(calls, dict):
            calls = {name: call for name, call in calls.items() if not CONTROL_CURVES & set(name.split("/"))}
        walk(calls)
    return sorted(found)


def densify(brackets: Sequence[tuple[int, int]], available: Sequence[int], existing: Sequence[int],
            max_new: int | None = None) -> list[int]:
    """Available checkpoints strictly inside the brackets and not yet in the run; at most ``max_new`` of them,
    chosen one at a time as the candidate farthest from every step already chosen or present (so the first one
    of a bracket is near its middle), sorted."""
    have = set(existing)
    candidates = sorted({s for s in available for a, b in brackets if a < s < b} - have)
    if max_new is None or len(candidates) <= max_new:
        return candidates
    chosen: list[int] = []
    points = sorted(have)
    for _ in range(max_new):
        best = max(candidates, key=lambda s: (min(abs(s - p) for p in points), -s))
        chosen.append(best)
        candidates.remove(best)
        points.append(best)
    return sorted(chosen)


@dataclass
class RefineResult:
    added: list[int]
    brackets: list[tuple[int, int]]
    run: RunResult | None  # None when there was nothing to add


def refine_run(run_dir: Path, max_new: int | None = None, progress: Progress = SILENT, executor=None,
               executor_overrides: dict | None = None) -> RefineResult:
    """Add the suite's available checkpoints between the steps where the finished run at ``run_dir`` detected a
    transition, compute only their units, then recompute the analyses and the report over all steps."""
    from codedyn.models.suite import suite_from_config

    run_dir = Path(run_dir)
    status = run_dir / RUN_FILE
    if not status.is_file() or json.loads(status.read_text()).get("status") != "finished":
        raise RefineError(f"{run_dir} is not a finished run; finish it first with codedyn run --out {run_dir}")
    config = stored_config(run_dir)
    if executor_overrides:
        config = updated(config, {"executor": executor_overrides})
    steps = json.loads(status.read_text())["steps"]
    brackets = transition_brackets(run_dir, steps)
    if not brackets:
        raise RefineError(f"{run_dir}: no transition was detected between any two checkpoints; nothing to refine")
    suite_name = json.loads((run_dir / MANIFEST).read_text())["suite"]
    suite = suite_from_config(config.suite, config.toy)
    available = suite.cached_steps() or suite.schedule
    added = densify(brackets, available, steps, max_new)
    if not added:
        progress.log(f"no available checkpoints of {suite_name} lie inside {brackets}; the run is as dense as it "
                     "gets")
        return RefineResult([], brackets, None)
    new_steps = sorted({*steps, *added})
    refined = CodedynConfig.model_validate(
        {**config.model_dump(mode="json"), "suite": {**config.suite.model_dump(mode="json"), "steps": new_steps}}
    )
    record = {"added": added, "brackets": [list(b) for b in brackets], "steps_before": steps, "created": _now()}
    return RefineResult(added, brackets, run_study(refined, run_dir, progress, executor, refinement=record))


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:04.1f} s" if minutes else f"{rest:.1f} s"
