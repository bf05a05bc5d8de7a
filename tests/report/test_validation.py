"""The validation table: known events of the organism against stored calls of every signal, with the null twin."""

import json

from codedyn.paths import cache_dir
from codedyn.report.validation import (
    read_call,
    relation,
    render_validation,
    unbracketed_relation,
    validation_html,
    validation_table,
)

STEPS = [0, 500, 1000, 2000, 3000, 5000, 7000]


def _write(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _record(null: bool) -> dict:
    return {"config": {"planted": {"enabled": True, "onset": 500, "null": null}},
            "formation": {"formed": True, "first_formed_step": 7000, "last_step_before": 5000}}


def _run(root, name, suite, null):
    run = root / name
    _write(run / "manifest.json", {"suite": suite, "steps": STEPS})
    _write(cache_dir("suites") / suite / "suite.json", _record(null))
    if null:
        behaviour = {"verdict_contrast": {"verdict": "no change", "step": None},
                     "emergence": {"emerged": False, "between": None, "verdict": "never above chance"}}
        emergence = {"L0/probe/auroc": {"kind": "no_change", "verdict": "no change", "bracket": None},
                     "L1/best_latent/auroc": {"verdict": "no change", "step": None}}
        influence = {"LLC/llc": {"verdict": "gradual"}}
    else:
        behaviour = {"verdict_contrast": {"verdict": "phase transition at step 3000", "step": 3000},
                     "loss_gap/all": {"verdict": "gradual", "step": None},
                     "emergence": {"emerged": True, "between": [2000, 3000], "verdict": "emerges within (2000, 3000]"}}
        emergence = {"L0/probe/auroc": {"kind": "sharp", "verdict": "sharp transition within (1000, 2000]",
                                        "bracket": [1000, 2000], "effect": 0.3, "effect_low": 0.2,
                                        "effect_high": 0.4},
                     "L1/best_latent/auroc": {"verdict": "no change", "step": None}}
        influence = {"LLC/llc": {"verdict": "phase transition at step 7000"}, "CC/cov": {"verdict": "gradual"},
                     "delta/cov": {"verdict": "sharp transition within (2000, 3000]", "bracket": [2000, 3000]}}
    _write(run / "behaviour" / "transitions.json", behaviour)
    _write(run / "emergence" / "transitions.json", emergence)
    _write(run / "influence" / "transitions.json", influence)
    return run


def test_calls_are_read_in_both_schemas_and_related_to_the_emergence():
    assert read_call({"verdict": "phase transition at step 3000", "step": 3000}, STEPS)["bracket_low"] == 2000
    assert read_call({"verdict": "phase transition at step 3000"}, STEPS)["bracket_high"] == 3000
    new = read_call({"verdict": "sharp", "bracket": [1000, 2000], "effect": 0.1}, STEPS)
    assert (new["bracket_low"], new["bracket_high"], new["effect"]) == (1000, 2000, 0.1)
    assert relation((2000, 3000), (2000, 3000)) == "brackets the emergence"
    assert relation((500, 1000), (2000, 3000)) == "leads the emergence"
    assert relation((3000, 5000), (2000, 3000)) == "lags the emergence"
    assert relation((1000, 3000), (2000, 3000)) == "overlaps the emergence"
    assert relation((None, None), (2000, 3000)) == "no event"
    # A curve without a bracket says why: gradual with the scan's largest jump and its p, or no change.
    gradual = {"kind": "gradual", "verdict": "gradual", "bracket": None,
               "evidence": [{"kind": "jump", "between": [4000, 5000], "p_value": 0.2008}]}
    assert unbracketed_relation(gradual) == ("no bracket: changes gradually: its largest jump, within (4000, 5000], "
                                             "is not significant (p = 0.2)")
    assert unbracketed_relation({"kind": "non_monotonic", "evidence": []}) == "no bracket: changes non-monotonically"
    assert unbracketed_relation({"verdict": "no change", "step": None}) == "no event"


def test_table_lists_known_events_signals_and_the_null_twin(tmp_path):
    run = _run(tmp_path / "runs", "default", "toy-organism", null=False)
    _run(tmp_path / "runs", "null", "toy-null", null=True)
    table = validation_table(run)
    organism = table[table["run"] == "organism"].set_index("name")
    assert organism.loc["data onset", "bracket_high"] == 500
    assert (organism.loc["behavioural emergence", ["bracket_low", "bracket_high"]].tolist() == [2000, 3000])
    assert organism.loc["induction formation", "bracket_low"] == 5000
    assert organism.loc["probe AUROC, layer 0", "relation"] == "leads the emergence"
    assert organism.loc["probe AUROC, layer 0", "effect_high"] == 0.4
    assert organism.loc["verdict contrast (behaviour)", "relation"] == "brackets the emergence"
    assert organism.loc["BIF delta/cov", "relation"] == "brackets the emergence"
    assert organism.loc["LLC", "relation"] == "lags the emergence"
    assert organism.loc["SAE best latent AUROC, layer 1", "relation"] == "no event"
    assert "BIF CC/cov" not in organism.index  # raw blocks are not correctness contrasts
    null = table[table["run"] == "null"].set_index("name")
    assert null.loc["probe AUROC, layer 0", "verdict"] == "no change"
    page = validation_html(run)
    assert "null twin" in page and "sharp transition within (1000, 2000]" in page and "0.3 [0.2, 0.4]" in page
    assert page.count("<tr") == len(organism) + 1


def test_no_ground_truth_no_section(tmp_path):
    run = tmp_path / "runs" / "pythia"
    _write(run / "manifest.json", {"suite": "pythia-70m", "steps": STEPS})
    assert render_validation(validation_table(run)) == ""
    without_null = _run(tmp_path / "other", "default", "toy-organism2", null=False)
    assert "No null-twin run found" in validation_html(without_null)


def test_organism_events_in_the_report_format(tmp_path):
    from codedyn.report.validation import organism_events

    run = _run(tmp_path / "runs", "default", "toy-organism3", null=False)
    events = organism_events(_record(False), run)
    assert events[0]["step"] == 500 and events[1]["bracket"] == [2000, 3000]
    assert organism_events({"config": {"planted": {"enabled": False}}}, run) == []
    assert "null twin" in organism_events(_record(True))[0]["name"]
