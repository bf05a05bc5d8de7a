"""`codedyn run` on a tiny study: stages and units, timings, reruns that compute nothing, load_run, refine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from tests.pipeline_support import (
    STEPS,
    UNITS,
    assert_same_results,
    copy_run,
    reference_run,
    tiny_config,
    tiny_home,
    write_preset,
)


@pytest.fixture()
def home(tmp_path_factory, monkeypatch):
    path = tiny_home(tmp_path_factory)
    monkeypatch.setenv("CODEDYN_HOME", str(path))
    return path


@pytest.fixture()
def reference(tmp_path_factory, home):
    return reference_run(tmp_path_factory)


@pytest.fixture()
def sampled(monkeypatch):
    """The steps whose posterior gets sampled (the sampler itself still runs)."""
    import codedyn.sampling.posterior as posterior
    import codedyn.sampling.sgld as sgld

    steps: list[int] = []
    real = posterior.sample_posterior

    def counting(*args, description="", **kwargs):  # "sampling step 4", "step 4 L1.MLP" (restricted)
        steps.append(int(re.search(r"step (\d+)", description).group(1)))
        return real(*args, description=description, **kwargs)

    monkeypatch.setattr(posterior, "sample_posterior", counting)
    monkeypatch.setattr(sgld, "sample_posterior", counting)  # what the weight-restricted units import
    return steps


@pytest.fixture()
def no_training(monkeypatch):
    """The dataset and the toy suite must come from the cache: no program is run, no model trained."""
    import codedyn.data.executions as executions
    import codedyn.models.toy as toy

    def forbidden(*args, **kwargs):
        raise AssertionError("the cached dataset or toy suite was built again")

    monkeypatch.setattr(toy, "make_model", forbidden)
    monkeypatch.setattr(executions, "run_programs", forbidden)


def test_run_writes_every_stage_unit_and_output(reference):
    run = json.loads((reference / "run.json").read_text())
    assert run["status"] == "finished" and run["steps"] == list(STEPS)
    assert run["computed"] == UNITS
    assert set(run["outputs"]) >= {"influence", "susceptibility", "emergence"}
    timings = json.loads((reference / "timings.json").read_text())
    names = [s["stage"] for s in timings["stages"]]
    assert names[:4] == ["dataset", "suite", "study", "units"]
    assert {"analysis:influence", "analysis:susceptibility", "analysis:emergence"} <= set(names)
    units = {u["unit"]: u for u in timings["units"]}
    assert list(units) == UNITS
    stage = {s["stage"]: s for s in timings["stages"]}
    # Model forwards are a real share of every unit (sampling: forward and backward; the SAE units read residuals
    # with forwards and train the SAE with plain tensor algebra, which is no model's forward), never more than it.
    for record in units.values():
        assert not record["cached"]
        assert 0 < record["model_seconds"] <= record["seconds"]
        assert record["forward_seconds"] > 0
        assert (record["backward_seconds"] > 0) == (record["kind"] == "posterior")
        assert record["peak_rss_mb"] > 50 and record["cpu_seconds"] > 0
    assert stage["units"]["seconds"] >= sum(u["seconds"] for u in units.values())
    assert 0 < timings["model_fraction"] < 1
    assert timings["total_seconds"] >= sum(s["seconds"] for s in timings["stages"]) * 0.99
    # Each computed unit also left its own timing record next to the run.
    assert len(list((reference / "timings").glob("*-step*.json"))) == len(UNITS)


def test_changed_settings_invalidate_exactly_the_affected_units(reference, tmp_path, monkeypatch, sampled,
                                                                    no_training):
    import codedyn.pipeline as pipeline
    from codedyn.pipeline import plan_units, run_study, unit_is_stored
    from codedyn.runs.load import load_run

    monkeypatch.setattr(pipeline, "ANALYSES", ())  # units only: the analyses are tested elsewhere
    run_dir = copy_run(reference, tmp_path / "run")
    before = sorted(p.name for p in (run_dir / "units").iterdir())

    # Analysis-only and executor settings leave every unit valid.
    for changed in (tiny_config(sampling={"n_bootstrap": 60}), tiny_config(executor={"cpus_per_task": 2})):
        study = pipeline.open_study(changed, run_dir)
        assert all(unit_is_stored(u) for u in plan_units(study))

    result = run_study(tiny_config(sampling={"draws": 9}), run_dir)
    assert sampled == list(STEPS)
    assert result.computed == [f"posterior-step{s}" for s in STEPS]  # the SAEs do not read the posterior
    after = sorted(p.name for p in (run_dir / "units").iterdir())
    assert set(before) < set(after) and len(after) == len(before) + len(STEPS)  # old units kept beside new keys

    # An SAE analysis-only setting (more shuffled-label controls) recomputes no unit: the SAE units' keys leave it
    # out (only compute_emergence reads it), and the posteriors' keys hold the SAE units' keys.
    sampled.clear()
    result = run_study(tiny_config(sampling={"draws": 9}, emergence={"shuffles": 3}), run_dir)
    assert sampled == [] and result.computed == []
    # Retraining the SAEs (other weights) resamples exactly the posteriors that observe them.
    sampled.clear()
    result = run_study(tiny_config(sampling={"draws": 9}, emergence={"epochs": 1}), run_dir)
    assert sampled == list(STEPS)
    assert result.study.dataset.card["hash"] == load_run(reference).manifest["data_hash"]
    assert result.study.suite.name == load_run(reference).manifest["suite"]
    assert load_run(run_dir).posterior(4).sizes["draw"] == 9


def test_load_run_returns_tables_and_posteriors(reference):
    import codedyn

    run = codedyn.load_run(reference)
    assert run.finished and run.steps == STEPS
    assert run.config == tiny_config()
    pd.testing.assert_frame_equal(run.influence, pd.read_parquet(reference / "influence" / "influence.parquet"))
    assert set(run.llc["quantity"]) == {"LLC"} and sorted(run.llc["step"]) == list(STEPS)
    assert set(run.susceptibility["step"]) == set(STEPS)
    assert len(run.diagnostics) == len(STEPS) * 2 and len(run.responders) > 0
    assert "CC/cov" in run.calls("influence")
    traces = run.posterior(4)
    assert dict(traces.sizes)["chain"] == 2 and dict(traces.sizes)["draw"] == 8
    assert traces.attrs["step"] == 4
    stacked = run.posteriors()
    assert list(stacked["checkpoint"].values) == list(STEPS)
    assert stacked["sample_loss"].dims == ("checkpoint", "chain", "draw", "sample")
    assert {"dataset", "units"} <= {s["stage"] for s in run.timings["stages"]}
    with pytest.raises(KeyError, match="not a checkpoint of this run"):
        run.posterior(5)
    assert {"step", "layer", "predictor", "split", "metric"} <= set(run.emergence.columns)
    assert set(run.emergence["step"]) == set(STEPS)
    with pytest.raises(FileNotFoundError, match="the run has no nonexistent results"):
        run.table("nonexistent")
    with pytest.raises(FileNotFoundError, match="not a codedyn run directory"):
        codedyn.load_run(reference / "influence")


def test_transition_brackets_and_densify():
    from codedyn.pipeline import densify

    schedule = (0, 1, 2, 4, 6, 8, 12)
    assert densify([(0, 12)], schedule, [0, 12]) == [1, 2, 4, 6, 8]
    assert densify([(0, 12)], schedule, [0, 12], max_new=1) == [6]  # the middle of the bracket first
    assert densify([(0, 12)], schedule, [0, 12], max_new=2) == [2, 6]
    assert densify([(0, 4), (8, 12)], schedule, [0, 4, 8, 12]) == [1, 2]  # nothing between 8 and 12
    assert densify([(4, 6)], schedule, [0, 4, 6, 12]) == []


def test_transition_brackets_read_events_and_verdict_brackets(tmp_path):
    from codedyn.pipeline import transition_brackets

    (tmp_path / "influence").mkdir()
    (tmp_path / "influence" / "transitions.json").write_text(json.dumps({
        "CC/cov": {"events": [{"kind": "sign_flip", "step": 4, "between": [0, 4]}], "verdict": "no change"},
        "LLC/llc": {"events": [], "kind": "sharp", "verdict": "sharp transition within (4, 12]", "bracket": [4, 12],
                    "evidence": [{"kind": "jump", "between": [4, 12]}]},
        "II/cov": {"kind": "gradual", "bracket": None, "evidence": [{"kind": "jump", "between": [12, 16]}]},
        "L1/shuffled/auroc": {"events": [{"kind": "peak", "step": 1, "between": [0, 2]}], "verdict": "gradual"},
        "L1/best_latent/auroc": {"kind": "unresolved", "bracket": [12, 20], "evidence": []},
    }))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "transitions.json").write_text(json.dumps([{"peak": {"between": [12, 4]}}]))
    # The flip's interval, the sharp and the unresolved calls' brackets; not a jump candidate the scan rejected.
    assert transition_brackets(tmp_path, [0, 4, 12, 20]) == [(0, 4), (4, 12), (12, 20)]


def test_refine_samples_only_the_new_checkpoint(reference, tmp_path, monkeypatch, sampled, no_training):
    import codedyn.pipeline as pipeline
    from codedyn.pipeline import RefineError, refine_run, run_study
    from codedyn.runs.load import load_run

    run_dir = tmp_path / "run"
    copy_run(reference, run_dir)
    with monkeypatch.context() as patch:  # a finished run of steps 0 and 12 (its analyses are not needed here)
        patch.setattr(pipeline, "ANALYSES", ())
        run_study(tiny_config(suite={"steps": [0, 12]}), run_dir)
    # Step 12's SAE now starts from step 0's: other SAE weights, so the posterior observing its latents is resampled.
    assert sampled == [12]
    sampled.clear()
    # A change the schedule cannot resolve: refine proposes the available checkpoints inside its bracket.
    planted = {"CC/cov": {"events": [], "evidence": [], "kind": "unresolved", "bracket": [0, 12],
                          "verdict": "change within (0, 12], not resolved by this schedule"}}
    (run_dir / "influence" / "transitions.json").write_text(json.dumps(planted))

    for name in ("emergence/transitions.json", "behaviour/transitions.json"):  # only the planted bracket counts
        (run_dir / name).write_text("{}")

    refined = refine_run(run_dir, max_new=1)
    assert refined.brackets == [(0, 12)] and refined.added == [6]
    # The new checkpoint is sampled; the SAE after it starts from step 6's, so it is retrained too, and so is the
    # posterior that observes it. Step 0 is untouched.
    assert sampled == [6, 12]
    assert set(refined.run.computed) == {"sae-step6", "posterior-step6", "sae-step12", "posterior-step12"}
    run = load_run(run_dir)
    assert run.steps == (0, 6, 12) and run.config.suite.steps == (0, 6, 12)
    assert sorted(set(run.influence["step"])) == [0, 6, 12]
    [record] = run.manifest["refinements"]
    assert record["added"] == [6] and record["brackets"] == [[0, 12]] and record["steps_before"] == [0, 12]

    (run_dir / "run.json").write_text(json.dumps({"status": "running"}))
    with pytest.raises(RefineError, match="not a finished run"):
        refine_run(run_dir)


def test_cli_rerun_finds_every_unit_and_prints_the_stage_summary(reference, tmp_path, sampled, no_training):
    from typer.testing import CliRunner

    from codedyn.cli import app

    run_dir = copy_run(reference, tmp_path / "run")
    preset = write_preset(tmp_path / "tiny.yaml")
    outcome = CliRunner().invoke(app, ["run", "--preset", str(preset), "--out", str(run_dir)])
    assert outcome.exit_code == 0, outcome.output
    assert sampled == [] and json.loads((run_dir / "run.json").read_text())["computed"] == []
    timings = json.loads((run_dir / "timings.json").read_text())
    assert all(u["cached"] and u["computed_earlier"]["seconds"] > 0 for u in timings["units"])
    assert_same_results(reference, run_dir)
    assert "analysis:influence" in outcome.output and f"0 units computed, {len(UNITS)} found stored" in outcome.output
    assert outcome.stdout.strip().splitlines()[-1] == str(run_dir / "report.html")

    bad = CliRunner().invoke(app, ["run", "--preset", str(preset), "--out", str(run_dir), "--executor", "slurm"])
    assert bad.exit_code == 2 and "executor.kind" in bad.output


def _no_run(study, step, progress, *part):
    raise AssertionError("planning runs nothing")


def previous_b(study, step):
    earlier = [s for s in study.steps if s < step]
    return (f"b-step{earlier[-1]}",) if earlier else ()


def test_plan_orders_units_with_same_step_and_cross_step_dependencies():
    from types import SimpleNamespace

    from codedyn.pipeline import plan_units
    from codedyn.runs.executor import check_order
    from codedyn.runs.units import UnitKind

    study = SimpleNamespace(steps=(0, 4, 12))
    kinds = (UnitKind("a", _no_run), UnitKind("b", _no_run, after=("a",), needs=previous_b))
    units = plan_units(study, kinds)
    assert [(u.id, u.after) for u in units] == [
        ("a-step0", ()), ("b-step0", ("a-step0",)),
        ("a-step4", ()), ("b-step4", ("a-step4", "b-step0")),
        ("a-step12", ()), ("b-step12", ("a-step12", "b-step4")),
    ]
    check_order(units)
    with pytest.raises(ValueError, match="not registered before it"):
        plan_units(study, (UnitKind("b", _no_run, after=("a",)), UnitKind("a", _no_run)))


def test_weight_restricted_estimator_adds_its_units(reference, tmp_path, monkeypatch, sampled, no_training):
    """With the weight-restricted estimator every checkpoint also gets its restricted posteriors (one unit per
    checkpoint: the full one and one per component); the other units are reused; a rerun computes nothing."""
    import codedyn.pipeline as pipeline
    from codedyn.pipeline import run_study

    monkeypatch.setattr(pipeline, "ANALYSES", tuple(a for a in pipeline.ANALYSES if a.name == "susceptibility"))
    run_dir = copy_run(reference, tmp_path / "run")
    config = tiny_config(susceptibility={"estimator": "weight_restricted", "draws": 4, "burn_in": 2,
                                         "observation_windows": 8, "components": ["L1.MLP"]})
    result = run_study(config, run_dir)
    assert result.computed == [f"restricted-step{s}" for s in STEPS]
    assert sorted(sampled) == sorted(2 * list(STEPS))  # full + L1.MLP per checkpoint; no shared posterior resampled
    assert len(list((run_dir / "units").glob("restricted-step*"))) == 2 * len(STEPS)
    table = pd.read_parquet(run_dir / "susceptibility" / "susceptibility_weight_restricted.parquet")
    assert set(table["component"]) == {"L1.MLP"} and set(table["step"]) == set(STEPS)
    sampled.clear()
    assert run_study(config, run_dir).computed == [] and sampled == []
    # Every component by default: the plan knows their folders from the architecture before any is sampled (the
    # full and L1.MLP ones are those just stored; the key does not hold the list of components).
    from codedyn.models.hooks import component_names
    from codedyn.pipeline import plan_units
    from codedyn.runs.units import is_stored

    default = tiny_config(susceptibility={**config.susceptibility.model_dump(), "components": None})
    study = pipeline.open_study(default, run_dir)
    planned = [u for u in plan_units(study) if u.kind == "restricted"]
    names = component_names(study.suite.load(0).model)
    stored = {p.name for p in (run_dir / "units").glob("restricted-step*")}
    for unit in planned:
        assert [f.name.split("-")[2] for f in unit.folders] == ["full", *names]
        assert {f.name for f in unit.folders} & stored == {f.name for f in unit.folders
                                                            if f.name.split("-")[2] in ("full", "L1.MLP")}
        assert not is_stored(unit)


def test_the_plan_knows_every_units_folders_and_key_records(reference, tmp_path, no_training):
    """Before anything runs, the plan names the folders every unit stores, and the key records it hashed are the
    ones the units stored; so the driver can say why a unit is new (as it does for Ray tasks) exactly as the unit
    itself would."""
    from codedyn.pipeline import UNIT_KINDS, open_study, plan_units
    from codedyn.runs.units import KEY_INPUTS

    run_dir = copy_run(reference, tmp_path / "run")
    study = open_study(tiny_config(), run_dir)
    units = plan_units(study)
    assert [u.id for u in units] == UNITS
    stored = {r["unit"]: r["folder"] for r in json.loads((reference / "timings.json").read_text())["units"]}
    for unit in units:
        assert unit.folders == (run_dir / "units" / Path(stored[unit.id]).name,)
        ((folder, record),) = UNIT_KINDS.outputs(study, unit.kind, unit.step).items()
        assert json.loads((folder / "unit.json").read_text())[KEY_INPUTS] == record
        assert UNIT_KINDS.notes(study, unit) == []  # stored: nothing to say
    changed = open_study(tiny_config(sampling={"draws": 9}), run_dir)
    notes = {u.id: UNIT_KINDS.notes(changed, u) for u in plan_units(changed)}
    for step in STEPS:
        assert notes[f"sae-step{step}"] == []  # the SAEs do not read the sampling settings
        (line,) = notes[f"posterior-step{step}"]
        old = Path(stored[f"posterior-step{step}"]).name
        assert line == f"posterior-step{step}: new unit, differs from the stored {old} in sampling.draws: 8 -> 9"
