"""Unit keys from key records, and the line that says why a unit is new (codedyn.runs.units)."""

import json

from codedyn.runs.units import KEY_INPUTS, changed_fields, flatten, new_unit_note, unit_key, without


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
