"""Unit keys from key records, the line that says why a unit is new, and the registry of unit kinds that plans,
locates and runs units (codedyn.runs.units)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from codedyn.progress import SILENT
from codedyn.runs.units import (
    KEY_INPUTS,
    Registry,
    Unit,
    UnitKind,
    changed_fields,
    flatten,
    is_stored,
    new_unit_note,
    unit_key,
    without,
)


def _store(units, name, record, completed=True):
    folder = units / name
    folder.mkdir(parents=True)
    (folder / "unit.json").write_text(json.dumps({"kind": name.split("-")[0], KEY_INPUTS: record}))
    if completed:
        (folder / "completed").write_text("")
    return folder


RECORD = {"suite": "toy-x", "step": 4, "sampling": {"draws": 40, "chains": 4, "lr": 3e-5}, "format": 4}


def test_the_key_is_the_hash_of_the_record_and_analysis_only_fields_stay_out():
    assert unit_key(RECORD) == unit_key(json.loads(json.dumps(RECORD)))
    assert unit_key(RECORD) != unit_key({**RECORD, "step": 5})
    section = {"draws": 40, "n_bootstrap": 1000}
    assert without(section, {"n_bootstrap"}) == {"draws": 40}
    assert unit_key({"s": without(section, {"n_bootstrap"})}) == unit_key(
        {"s": without({**section, "n_bootstrap": 5}, {"n_bootstrap"})})


def test_changed_fields_walk_nested_sections():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": [1, 2], "d": None}
    new = {**RECORD, "sampling": {**RECORD["sampling"], "draws": 80}, "extra": 1}
    assert changed_fields(RECORD, new) == [("extra", None, 1), ("sampling.draws", 40, 80)]


def test_a_new_unit_beside_a_stored_one_names_the_changed_fields(tmp_path):
    units = tmp_path / "units"
    _store(units, f"posterior-step4-{unit_key(RECORD)}", RECORD)
    far = {**RECORD, "sampling": {"draws": 10, "chains": 1, "lr": 1.0}}
    _store(units, f"posterior-step4-{unit_key(far)}", far)
    _store(units, "posterior-step12-aaaaaaaaaaaa", {**RECORD, "step": 12})  # another step: not a neighbour
    _store(units, "posterior-step4-bbbbbbbbbbbb", {**RECORD, "format": 1}, completed=False)  # half-built
    new = {**RECORD, "sampling": {**RECORD["sampling"], "draws": 80}}
    note = new_unit_note(units / f"posterior-step4-{unit_key(new)}", new)
    assert note == (f"posterior-step4: new unit, differs from the stored posterior-step4-{unit_key(RECORD)} in "
                    "sampling.draws: 40 -> 80")
    # Ignored neighbours (a sweep's own other units) are no earlier versions: the closest remaining one is named.
    ignored = new_unit_note(units / f"posterior-step4-{unit_key(new)}", new,
                            ignore=[units / f"posterior-step4-{unit_key(RECORD)}"])
    assert ignored.startswith(f"posterior-step4: new unit, differs from the stored posterior-step4-{unit_key(far)} in ")
    everything = [units / f"posterior-step4-{unit_key(r)}" for r in (RECORD, far)]
    assert new_unit_note(units / f"posterior-step4-{unit_key(new)}", new, ignore=everything) is None


def test_no_note_without_a_stored_neighbour_and_long_lists_are_cut(tmp_path):
    units = tmp_path / "units"
    assert new_unit_note(units / "sae-step0-cccccccccccc", RECORD) is None
    old = {f"f{i}": i for i in range(9)}
    _store(units, "sae-step0-dddddddddddd", old)
    note = new_unit_note(units / "sae-step0-eeeeeeeeeeee", {f"f{i}": i + 1 for i in range(9)})
    assert note.endswith("f5: 5 -> 6 and 3 more") and note.count("->") == 6
    (units / "legacy-step0-ffffffffffff").mkdir()  # an older layout: a unit.json without key inputs
    (units / "legacy-step0-ffffffffffff" / "unit.json").write_text("{}")
    (units / "legacy-step0-ffffffffffff" / "completed").write_text("")
    assert new_unit_note(units / "legacy-step0-000000000000", RECORD) is None


# A registry of two made-up kinds over a study of plain data: "train" keyed on its settings, "probe" with one part
# per layer and two folders per part, keeping no key records.
def _train_outputs(study, step):
    record = {"step": step, "lr": study.lr}
    return {Path(study.run_dir) / "units" / f"train-step{step}-{unit_key(record)}": record}


def _train(study, step, progress):
    ((folder, _),) = _train_outputs(study, step).items()
    study.ran.append(("train", step, None))
    return folder


def _probe_outputs(study, step, layer):
    return dict.fromkeys(Path(study.run_dir) / "units" / f"probe-step{step}-{layer}-{d}" for d in ("a", "b"))


def _probe(study, step, progress, layer):
    study.ran.append(("probe", step, layer))
    return next(iter(_probe_outputs(study, step, layer)))


def _layers(study, step):
    return ["L0", "L1"]


def _previous(study, step):
    return ("train-step0",) if step else ()


KINDS = Registry([UnitKind("train", _train, _train_outputs, needs=_previous),
                  UnitKind("probe", _probe, _probe_outputs, after=("train",), parts=_layers,
                           enabled=lambda study: study.probes)])


def _study(tmp_path, lr=0.1, probes=True):
    return SimpleNamespace(steps=(0, 4), run_dir=tmp_path, lr=lr, probes=probes, ran=[])


def test_the_plan_is_every_unit_with_its_folders_known_up_front(tmp_path):
    study = _study(tmp_path)
    units = KINDS.plan(study)
    assert [(u.id, u.after) for u in units] == [
        ("train-step0", ()), ("probe:L0-step0", ("train-step0",)), ("probe:L1-step0", ("train-step0",)),
        ("train-step4", ("train-step0",)), ("probe:L0-step4", ("train-step4",)), ("probe:L1-step4", ("train-step4",)),
    ]
    assert units[0].folder == tmp_path / "units" / f"train-step0-{unit_key({'step': 0, 'lr': 0.1})}"
    assert [f.name for f in units[2].folders] == ["probe-step0-L1-a", "probe-step0-L1-b"]
    assert (units[2].kind, units[2].part, units[2].name) == ("probe", "L1", "probe:L1")
    assert KINDS.plan(_study(tmp_path)) == units  # the same study plans the same units, whatever is stored
    assert [u.id for u in KINDS.plan(_study(tmp_path, probes=False))] == ["train-step0", "train-step4"]
    assert study.ran == []  # planning computes nothing


def test_a_unit_is_stored_once_every_folder_is_completed_and_runs_by_kind_name(tmp_path):
    study = _study(tmp_path)
    probe = KINDS.plan(study)[1]
    assert KINDS.run(study, probe, SILENT) == probe.folder and study.ran == [("probe", 0, "L0")]
    assert not is_stored(probe)
    for folder in probe.folders:
        assert not is_stored(probe)
        folder.mkdir(parents=True)
        (folder / "completed").write_text("")
    assert is_stored(probe)
    assert not is_stored(Unit("probe", 0, part="L0"))  # folders unknown: never counted as stored
    assert KINDS["probe:L0"] is KINDS["probe"]
    with pytest.raises(KeyError, match="no unit kind 'sae'"):
        KINDS["sae"]


def test_the_registry_checks_names_and_order():
    with pytest.raises(ValueError, match="not registered before it"):
        Registry([UnitKind("probe", _probe, after=("train",)), UnitKind("train", _train)])
    with pytest.raises(ValueError, match="registered already"):
        Registry([UnitKind("train", _train), UnitKind("train", _train)])
    with pytest.raises(ValueError, match="':'"):
        Registry([UnitKind("train:x", _train)])
    assert [k.name for k in KINDS.only("train")] == ["train"]


def test_the_registry_says_why_a_missing_unit_is_new(tmp_path):
    first = _study(tmp_path)
    unit = KINDS.plan(first)[0]
    assert KINDS.notes(first, unit) == []  # nothing stored beside it
    _store(tmp_path / "units", unit.folder.name, {"step": 0, "lr": 0.1})
    assert KINDS.notes(first, unit) == []  # stored itself
    changed = _study(tmp_path, lr=0.2)
    (again,) = [u for u in KINDS.plan(changed) if u.id == "train-step0"]
    assert KINDS.notes(changed, again) == [f"train-step0: new unit, differs from the stored {unit.folder.name} in "
                                           "lr: 0.1 -> 0.2"]
    assert KINDS.notes(changed, KINDS.plan(changed)[1]) == []  # a kind without key records says nothing
