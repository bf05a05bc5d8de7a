"""Executors: the local one runs units in dependency order; the Ray one (a real local Ray cluster) runs the same
units as Ray tasks, respects dependencies, names a failing unit, and produces exactly the local executor's results."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from codedyn.config import CodedynConfig
from codedyn.runs.executor import LocalExecutor, RayExecutor, UnitFailed, check_order, make_executor
from codedyn.runs.units import KEY_INPUTS, Registry, Unit, UnitKind, new_unit_note, unit_key
from tests.pipeline_support import STEPS, UNITS, assert_same_results, reference_run, tiny_config, tiny_home

ray = pytest.importorskip("ray")


# A stand-in study and work function (module level, so Ray workers import them by reference).
def fake_study(config: dict, run_dir: str):
    return SimpleNamespace(config=CodedynConfig.model_validate(config), run_dir=Path(run_dir))


def fake_work(study, unit: Unit, progress) -> dict:
    log = Path(study.run_dir) / "log.jsonl"
    if unit.kind == "broken":
        raise ValueError(f"planted failure at step {unit.step}")
    for dep in unit.after:  # a dependency must be stored before its dependents start
        assert (Path(study.run_dir) / f"{dep}.done").is_file(), f"{unit.id} started before {dep}"
    time.sleep(0.05)
    (Path(study.run_dir) / f"{unit.id}.done").write_text("")
    with log.open("a") as handle:
        handle.write(json.dumps({"unit": unit.id, "pid": os.getpid()}) + "\n")
    return {"unit": unit.id, "pid": os.getpid()}


# A cheap registered kind, keyed on sampling.draws, that says why it is new the way the study's kinds do: through
# the progress it is given (module level, so a Ray worker finds it; it travels with run_study's registry).
def scratch_outputs(study, step: int) -> dict[Path, dict]:
    record = {"step": step, "draws": study.config.sampling.draws}
    return {Path(study.run_dir) / "units" / f"scratch-step{step}-{unit_key(record)}": record}


def scratch_run(study, step: int, progress) -> Path:
    from codedyn.runs.store import staging_dir, write_json

    ((folder, record),) = scratch_outputs(study, step).items()
    note = new_unit_note(folder, record)
    if note:
        progress.log(note)
    with staging_dir(folder) as stage:
        write_json(stage / "unit.json", {"kind": "scratch", KEY_INPUTS: record, "pid": os.getpid()})
    return folder


SCRATCH = Registry([UnitKind("scratch", scratch_run, scratch_outputs)])


class Notes:
    """A progress that keeps the lines logged to it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def task(self, description, total):
        from codedyn.progress import SILENT

        return SILENT.task(description, total)

    def log(self, message: str) -> None:
        self.lines.append(message)


FAKE_UNITS = [Unit("sae", 0), Unit("posterior", 0, ("sae-step0",)), Unit("sae", 4),
              Unit("posterior", 4, ("sae-step4", "sae-step0"))]


def test_local_executor_runs_units_in_order(tmp_path):
    study = fake_study(CodedynConfig().model_dump(mode="json"), str(tmp_path))
    records = LocalExecutor().run(FAKE_UNITS, study, fake_work)
    assert [r["unit"] for r in records] == [u.id for u in FAKE_UNITS]
    assert {r["pid"] for r in records} == {os.getpid()}
    with pytest.raises(ValueError, match="depends on"):
        check_order(list(reversed(FAKE_UNITS)))
    with pytest.raises(UnitFailed, match=r"^unit broken-step4 failed: ValueError: planted failure at step 4$"):
        LocalExecutor().run([Unit("sae", 8), Unit("broken", 4)], study, fake_work)


def test_make_executor_follows_the_config():
    assert make_executor(CodedynConfig().executor).kind == "local"
    ray_config = tiny_config(executor={"kind": "ray", "address": "auto", "gpus_per_task": 0.5}).executor
    executor = make_executor(ray_config)
    assert (executor.kind, executor.address, executor.gpus_per_task, executor.cpus_per_task) == ("ray", "auto", 0.5, 1)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    home = tiny_home(tmp_path_factory)
    before = os.environ.get("CODEDYN_HOME")
    os.environ["CODEDYN_HOME"] = str(home)  # the cluster's workers inherit nothing else from a test
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield home
    ray.shutdown()
    if before is None:
        os.environ.pop("CODEDYN_HOME", None)
    else:
        os.environ["CODEDYN_HOME"] = before


def test_ray_runs_dependent_units_in_workers_and_names_failures(ray_cluster, tmp_path):
    study = fake_study(CodedynConfig().model_dump(mode="json"), str(tmp_path))
    executor = RayExecutor(cpus_per_task=1, reopen=fake_study)
    records = executor.run(FAKE_UNITS, study, fake_work)
    assert [r["unit"] for r in records] == [u.id for u in FAKE_UNITS]
    assert os.getpid() not in {r["pid"] for r in records}  # every unit ran in a Ray worker
    with pytest.raises(UnitFailed, match=r"unit broken-step4 failed on .*ValueError: planted failure at step 4"):
        executor.run([Unit("broken", 4), Unit("posterior", 4, ("broken-step4",))], study, fake_work)
    assert [json.loads(line)["unit"] for line in (tmp_path / "log.jsonl").read_text().splitlines()].count(
        "posterior-step4") == 1  # the dependent of the broken unit never ran


@pytest.mark.slow
def test_ray_and_local_executors_agree(ray_cluster, tmp_path_factory, tmp_path, monkeypatch):
    from codedyn.pipeline import run_study

    reference = reference_run(tmp_path_factory)  # the local executor's run
    monkeypatch.setenv("CODEDYN_HOME", str(ray_cluster))
    result = run_study(tiny_config(executor={"kind": "ray"}), tmp_path / "run")
    assert result.computed == UNITS
    assert {u["pid"] for u in result.units}.isdisjoint({os.getpid()})
    timings = json.loads((tmp_path / "run" / "timings.json").read_text())
    assert timings["executor"] == "ray"
    units_stage = next(s for s in timings["stages"] if s["stage"] == "units")
    assert units_stage["model_seconds"] == pytest.approx(sum(u["model_seconds"] for u in result.units))
    assert units_stage["model_seconds"] > 0
    assert_same_results(reference, tmp_path / "run")


def test_a_new_units_note_reaches_the_user_under_ray(ray_cluster, tmp_path, monkeypatch):
    """A unit computed beside a stored one of its kind and step says which fields differ once, whichever executor
    runs it: in this process the unit says it, in a Ray task (whose progress is silent) the driver does."""
    import codedyn.pipeline as pipeline

    monkeypatch.setattr(pipeline, "ANALYSES", ())  # units only
    monkeypatch.setattr(pipeline, "REPORT", None)
    monkeypatch.setenv("CODEDYN_HOME", str(ray_cluster))
    run_dir = tmp_path / "run"
    notes = {}
    for kind, draws in (("ray", 8), ("ray", 9), ("local", 10)):
        progress = Notes()
        result = pipeline.run_study(tiny_config(sampling={"draws": draws}, executor={"kind": kind}), run_dir,
                                    progress, kinds=SCRATCH)
        assert result.computed == [f"scratch-step{s}" for s in STEPS]
        pids = {json.loads((Path(u["folder"]) / "unit.json").read_text())["pid"] for u in result.units}
        assert (os.getpid() in pids) == (kind == "local")  # the ray units ran in workers
        notes[draws] = [line for line in progress.lines if "new unit" in line]
    assert notes[8] == []  # nothing stored beside them
    at8 = {s: unit_key({"step": s, "draws": 8}) for s in STEPS}
    assert notes[9] == [f"scratch-step{s}: new unit, differs from the stored scratch-step{s}-{at8[s]} in draws: 8 -> 9"
                        for s in STEPS]
    assert len(notes[10]) == len(STEPS)
    assert all(line.startswith(f"scratch-step{s}: new unit") and line.endswith("-> 10")
               for s, line in zip(STEPS, notes[10], strict=True))
