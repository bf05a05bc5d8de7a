"""The validation table: known events of the organism against stored calls of every signal, with the null twin."""

import json

import codedyn.report.validation as validation_module
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
    assert unbracketed_relation({"verdict": "no change", "step": None}) == "does not find the emergence: no change"
    assert unbracketed_relation({"kind": "no_change", "change_p_value": 0.41}) == (
        "does not find the emergence: no change (the change test finds none, p = 0.41)")
    assert unbracketed_relation({"kind": "unresolved"}) == "no event"


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
    assert organism.loc["verdict contrast (behaviour)", "relation"] == (
        "defines the emergence (its threshold crossing); its own call: brackets the emergence")
    assert organism.loc["BIF delta/cov", "relation"] == "brackets the emergence"
    # The null twin's LLC changes too (gradual there): the organism's row says what that means.
    assert organism.loc["LLC", "relation"] == ("lags the emergence; but the null twin changes too (gradual): a "
                                               "change of the data or of training, not of correctness")
    assert "null twin changes too" not in organism.loc["probe AUROC, layer 0", "relation"]  # its twin: no change
    assert organism.loc["SAE best latent AUROC, layer 1", "relation"] == "does not find the emergence: no change"
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


def test_the_chi_contrast_row_is_the_reports_adjusted_call(tmp_path):
    """Experiment 3's contrast row comes from susceptibility.parquet as the report's verdict table calls it: a
    planted jump in one component's χ_incorrect − χ_correct is found and bracketed; flat components say no change."""
    import numpy as np
    import pandas as pd

    from codedyn.experiments.susceptibility import CONTRAST

    steps = [0, 1000, 2000, 3000, 4000, 5000]
    rows = []
    for component in ("L0.H0", "L0.H1", "L1.H0"):
        for k, step in enumerate(steps):
            for distribution in ("correct", "incorrect", CONTRAST):
                jump = 1.0 if component == "L1.H0" and distribution == CONTRAST and step >= 3000 else 0.0
                noise = 0.01 * np.sin(k + len(component))
                rows.append({"step": step, "component": component, "distribution": distribution,
                             "variant": "standardised", "estimator": "covariance", "chi": jump + noise,
                             "low": jump + noise - 0.05, "high": jump + noise + 0.05})
    run = tmp_path / "run"
    (run / "susceptibility").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(run / "susceptibility" / "susceptibility.parquet")
    from codedyn.report.verdicts import verdict_rows

    assert validation_module._susceptibility_contrast(run) == []  # only the report (which passes its rows) has it
    (name, source, call), = validation_module._susceptibility_contrast(run, verdict_rows)
    assert source == "susceptibility" and name.startswith("χ contrast χ_incorrect − χ_correct")
    assert call["kind"] == "sharp" and call["bracket"] == [2000, 3000] and "L1.H0" in call["verdict"]
    flat = [r | {"chi": r["chi"] % 0.02} for r in rows]
    pd.DataFrame(flat).to_parquet(run / "susceptibility" / "susceptibility.parquet")
    (_, _, call), = validation_module._susceptibility_contrast(run, verdict_rows)
    assert call["kind"] == "no_change", call
    # The null twin's case: one component's contrast dips by 0.011 at one checkpoint, precisely measured. The
    # verdict test calls that sharp; the contrast band (MIN_CHI_CONTRAST) calls it what it is, no change worth
    # calling, while the same dip scaled past the band is still found.
    from codedyn.report.verdicts import transition_calls_for_susceptibility

    def dip(depth):
        return pd.DataFrame([r | ({"chi": -depth, "low": -depth - 0.003, "high": -depth + 0.003}
                                  if r["component"] == "L1.H0" and r["distribution"] == CONTRAST
                                  and r["step"] == 2000 else
                                  {"chi": 0.0, "low": -0.004, "high": 0.004}) for r in rows])

    small, large = (transition_calls_for_susceptibility(dip(d))["L1.H0/" + CONTRAST] for d in (0.011, 0.5))
    assert small["kind"] == "no_change" and "MIN_CHI_CONTRAST" in small["test"]
    assert large["kind"] != "no_change", large
    from codedyn.analysis.transitions import classify_trajectory, replicates_from_intervals

    curve = dip(0.011)
    curve = curve[(curve["component"] == "L1.H0") & (curve["distribution"] == CONTRAST)].sort_values("step")
    reps = replicates_from_intervals(*(curve[c].to_numpy() for c in ("chi", "low", "high")), n_boot=2000, seed=0)
    assert classify_trajectory(curve["step"].to_numpy(), reps)["kind"] != "no_change"  # what the band prevents
