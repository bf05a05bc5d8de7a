"""report.html on a tiny study (influence + susceptibility run, the other experiments absent or planted), and the
susceptibility transition calls on curves with a known answer."""

import base64
import io
import json
import re
import shutil

import numpy as np
import pandas as pd

from codedyn.analysis.transitions import TEST_ID
from codedyn.analysis.verdicts import (
    VerdictRow,
    normalise_call,
    susceptibility_summary,
    transition_calls_for_susceptibility,
)
from codedyn.report.html import write_report
from codedyn.report.markup import esc
from codedyn.report.sections import CAPTIONS

SECTIONS = ("answer", "summary", "dataset", "influence", "emergence", "susceptibility", "embryology", "llc",
            "calibration", "hyperparameters", "diagnostics", "timings")


def _sentence(text, *parts):
    """The one sentence of ``text`` that holds every part (names and numbers that belong together)."""
    found = [s for s in re.split(r"(?<=[.;])\s+(?=[A-Z])", text) if all(p in s for p in parts)]
    assert len(found) == 1, (parts, text)
    return found[0]


def _page(path):
    return path.read_text(encoding="utf-8")


def _section(page, anchor):
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert match, f"section {anchor} missing"
    return match.group(1)


def test_report_has_every_section_and_is_self_contained(study):
    path = write_report(study)
    assert path == study.run_dir / "report.html"
    page = _page(path)
    for anchor in SECTIONS:
        _section(page, anchor)
    # Missing experiments are shown as not run, present ones are not.
    assert "not run" in _section(page, "emergence") and "not run" in _section(page, "embryology")
    assert "not run" not in _section(page, "influence")
    assert "humaneval-" + study.dataset.card["hash"] in _section(page, "dataset")
    # No external resources: every src/href is a data URI or a relative path.
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and not [r for r in refs if r.startswith(("http:", "https:", "//"))]
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page
    assert path.stat().st_size < 5 * 2**20  # the whole report, figures included, stays under 5 MB
    # The answer comes first, then the verdict table; the test is described once, not in every row.
    assert page.index('id="answer"') < page.index('id="summary"') < page.index('id="dataset"')
    summary = _section(page, "summary")
    assert summary.count("<div class=method>") == 1 and page.count("<div class=method>") == 1
    assert summary.count("<table class=verdicts>") == 1
    assert page.count(TEST_ID) <= 1  # the test's id is named once, under the table, not in every row


def test_every_figure_has_a_caption_saying_what_to_look_for(study):
    page = _page(write_report(study))
    figures = re.findall(r"<figure>(.*?)</figure>", page, re.S)
    assert figures
    known = {esc(text) for text in CAPTIONS.values()}  # what each registered figure shows and what to look for
    for figure in figures:
        caption = re.search(r"<figcaption>(.*?)</figcaption>", figure, re.S)
        assert caption and any(caption.group(1).startswith(text) for text in known), figure[:200]


def test_embedded_images_decode_as_png(study):
    from PIL import Image

    page = _page(write_report(study))
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    # influence_cov/corr, two BIF matrices, susceptibility trajectories, the LLC figure, three loss traces
    assert len(images) >= 9
    for data in images:
        raw = base64.b64decode(data, validate=True)
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(raw)) as image:
            image.verify()
    assert (study.run_dir / "report" / "llc.png").is_file() and (study.run_dir / "report" / "llc.pdf").is_file()


def test_verdict_rows_match_the_transition_calls(study):
    page = _page(write_report(study))
    summary = _section(page, "summary")
    shown = dict(re.findall(r'data-curve="([^"]+)">([^<]*)<', summary))
    calls = json.loads((study.run_dir / "influence" / "transitions.json").read_text())
    rows = {r["curve"]: r for r in json.loads((study.run_dir / "verdicts.json").read_text())}
    llc = pd.read_parquet(study.run_dir / "influence" / "influence.parquet").query("quantity == 'LLC'")
    if "LLC/llc" not in calls:  # no LLC curve: fewer than two checkpoints are local minima
        assert llc["local_minimum"].sum() < 2 and rows["LLC/llc"]["verdict"] == "not run"
    for curve in ("delta/cov", "delta/corr", "bug_gap/cov", "bug_gap/corr", "CC/corr", "CI/corr", "II/corr",
                  "paired/corr", "LLC/llc"):
        if curve == "LLC/llc" and curve not in calls:
            continue
        # The table shows the Holm-adjusted call: the stored one, or its downgrade, said so, when it does not survive.
        row = rows[curve]
        assert row["fwer"].startswith("Holm over ")
        if "did not survive" in row["fwer"]:
            assert f'"{calls[curve]["verdict"]}" did not survive' in row["fwer"]
            assert row["kind"] in {"gradual", "no_change"} and shown[curve] == row["verdict"]
        else:
            assert shown[curve] == calls[curve]["verdict"] and row["kind"] == calls[curve]["kind"]
    assert shown["AUROC"] == "not run"
    # The susceptibility rows summarise one call per component, made from the parquet intervals.
    table = pd.read_parquet(study.run_dir / "susceptibility" / "susceptibility.parquet")
    suscept = transition_calls_for_susceptibility(table)
    assert len(suscept) == 3 * table["component"].nunique()  # correct, incorrect and their contrast
    for distribution in ("correct", "incorrect", "incorrect-correct"):
        call, row = susceptibility_summary(suscept, distribution), rows[f"*/{distribution}"]
        if "did not survive" in row["fwer"]:  # Holm over the table downgrades a call it does not support
            kind = call["verdict"].split(" in ")[0]  # "gradual in 1 of 6 components": the kind Holm tested
            assert f'"{kind}" did not survive' in row["fwer"] and shown[f"*/{distribution}"] == row["verdict"]
        else:
            assert shown[f"*/{distribution}"] == call["verdict"]
    stored = json.loads((study.run_dir / "verdicts.json").read_text())
    assert {r["curve"]: r["verdict"] for r in stored} == shown
    # Every measured row carries its curve for the sparkline: one value per checkpoint.
    for row in stored:
        if row["kind"] != "not run":
            assert row["steps"] == sorted(study.steps) and len(row["values"]) == len(row["steps"])
    drawn = [r for r in stored if r["kind"] != "not run" and any(v == v for v in r["values"])]  # NaN: left out
    assert summary.count("<svg class=spark") == len(drawn) >= 9


def test_diagnostics_warn_about_bad_chains(study):
    diagnostics = pd.read_parquet(study.run_dir / "influence" / "diagnostics.parquet")
    section = _section(_page(write_report(study)), "diagnostics")
    assert section.count("<tr") == len(diagnostics) + 1  # header + one row per (checkpoint, chain)
    from codedyn.report.answer import diagnostic_warnings

    bad = diagnostics.iloc[0].copy()
    bad["healthy"], bad["drift_to_noise"], bad["fraction_below_init"], bad["split_rhat"] = False, 1e-4, 0.9, 1.5
    warnings = diagnostic_warnings(bad)
    assert len(warnings) == 4 and warnings[0] == "diverged"
    good = diagnostics.iloc[0].copy()
    good["healthy"], good["drift_to_noise"], good["fraction_below_init"], good["split_rhat"] = True, 0.1, 0.0, 1.0
    assert diagnostic_warnings(good) == []


def test_planted_experiments_timings_and_escaping(study, tmp_path):
    """Other experiments' folders are rendered generically: the emergence AUROC verdict becomes the SAE row, the
    embryology grid PNG is embedded and its interactive page linked relatively; timings are shown, escaped."""
    run = tmp_path / "run"
    shutil.copytree(study.run_dir, run, ignore=shutil.ignore_patterns("units"))
    (run / "run.json").write_text(json.dumps({"status": "finished"}))  # `codedyn report` reports finished runs
    emergence = run / "emergence"
    emergence.mkdir()
    calls = {  # the layout Experiment 2 writes: classify_trajectory's output per layer / predictor / metric
        "L1/best_latent/auroc": {"kind": "sharp", "verdict": "sharp transition within (4, 12]", "bracket": [4, 12],
                                 "effect": 0.35, "effect_low": 0.25, "effect_high": 0.45, "p_value": 0.0004,
                                 "p_adjusted": 0.003, "fwer": "Holm over the 14 curves of this table",
                                 "evidence": [{"kind": "jump", "detail": "largest jump 4 -> 12"}], "test": "seg"},
        "L1/probe/auroc": {"kind": "gradual", "verdict": "gradual", "bracket": None, "evidence": [], "test": "seg"},
    }
    (emergence / "transitions.json").write_text(json.dumps(calls))
    pd.DataFrame({"step": [0, 4, 12], "layer": 1, "predictor": "best_latent", "split": "validation",
                  "metric": "auroc", "value": [0.5, 0.55, 0.9], "low": [0.4, 0.45, 0.85],
                  "high": [0.6, 0.65, 0.95]}).to_parquet(emergence / "emergence.parquet")
    pd.DataFrame({"step": [0, 12, 0, 12, 0, 12], "layer": 1,
                  "quantity": ["auroc_reconstruction"] * 2 + ["max_decoder_cosine"] * 2 + ["auroc_resid"] * 2,
                  "value": [0.52, 0.96, 0.3, 0.32, 0.5, 1.0], "low": [0.4, 0.92, None, None, 0.4, 0.98],
                  "high": [0.63, 1.0, None, None, 0.6, 1.0]}).to_parquet(emergence / "probe_direction.parquet")
    embryology = run / "embryology"
    embryology.mkdir()
    shutil.copy(run / "influence" / "influence_cov.png", embryology / "umap_grid.png")
    (embryology / "umap_interactive.html").write_text("<html></html>")
    pd.DataFrame({"step": [0, 0, 12, 12], "space": ["umap", "chi"] * 2, "labelling": "kind",
                  "accuracy": [0.72, 0.8, 0.6, 0.7], "low": [0.69, 0.75, 0.55, 0.65], "high": [0.74, 0.85, 0.65, 0.75],
                  "chance": 1 / 7}).to_parquet(embryology / "structure.parquet")
    pd.DataFrame({"point": [0], "x": [0.0]}).to_parquet(embryology / "embedding.parquet")
    (run / "timings.json").write_text(json.dumps({"influence": {"seconds": 12.5}, "note": "<script>x</script>"}))

    from typer.testing import CliRunner

    from codedyn.cli import app

    outcome = CliRunner().invoke(app, ["report", str(run)])  # from the run folder alone (manifest + cache)
    assert outcome.exit_code == 0, outcome.output
    page = _page(run / "report.html")
    assert 'data-curve="L1/best_latent/auroc">sharp transition within (4, 12]<' in page
    # the SAE row is the best latent's; the probe, in the same family, has its own row
    assert re.search(r'<td>Probe accuracy \(L1/probe/auroc\)</td>.*?data-curve="L1/probe/auroc"', page, re.S)
    assert "largest jump 4 -&gt; 12" in page
    row = re.search(r'<tr class="sharp">(.*?)</tr>', _section(page, "summary"), re.S).group(1)
    assert "(4, 12]" in row and "0.35 [0.25, 0.45]" in row and "0.003" in row
    assert "<rect" in row  # the sparkline shades the bracket
    answer = _section(page, "answer")
    sharp = _sentence(answer, "SAE accuracy (L1/best_latent/auroc)", "(4, 12]")
    assert "0.35 [0.25, 0.45]" in sharp and "0.003" in sharp
    assert re.search(r"\b14\b", answer)  # the family's size: every curve of the verdict table
    assert "0.9 [0.85, 0.95]" in _section(page, "emergence")
    # how much of the probe's direction the SAE keeps: quantity x checkpoint, intervals where there are any
    direction = _section(page, "emergence")
    assert "how much of the probe's correctness direction the SAE reconstructs" in direction
    assert "0.96 [0.92, 1.00]" in direction and "<td>0.32</td>" in direction
    assert "<h3>probe_direction.parquet</h3>" not in direction
    assert "at step 12 the probe" in direction and "reconstruction keeps it (u·x̂ 0.96 [0.92, 1.00])" in direction
    assert 'href="embryology/umap_interactive.html"' in page
    embryology_html = _section(page, "embryology")
    assert "umap grid" in embryology_html
    # The structure measure as a labelling x checkpoint table; the raw embedding stays in its file.
    assert "0.72 [0.69, 0.74]" in embryology_html and "χ vectors" in embryology_html
    assert "<h3>embedding.parquet</h3>" not in embryology_html
    timings = _section(page, "timings")
    assert "influence.seconds" in timings and "12.5" in timings
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_report_command_on_a_folder_without_manifest_is_a_clear_error(tmp_path):
    from typer.testing import CliRunner

    from codedyn.cli import app

    outcome = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert outcome.exit_code == 2 and "not a codedyn run folder" in outcome.output


# ------------------------------------------------------------------------------------------ known answers


def test_susceptibility_calls_find_a_planted_jump_and_nothing_in_noise():
    steps = [0, 10, 100, 1000, 2000, 4000, 8000]
    rows = []

    def add(component, distribution, values, half_width):
        for step, value in zip(steps, values, strict=True):
            rows.append({"step": step, "component": component, "distribution": distribution,
                         "variant": "standardised", "chi": value, "low": value - half_width,
                         "high": value + half_width})

    add("L1.H0", "correct", [0, 0, 0, 0, 1, 1, 1], 0.05)  # a sharp rise between 1000 and 2000
    add("L1.H0", "incorrect", np.log1p(steps) / np.log1p(8000), 0.05)  # linear in log-step: gradual
    add("L0.MLP", "correct", [0.02, -0.01, 0.0, 0.01, -0.02, 0.0, 0.01], 0.5)  # noise inside wide intervals
    add("L0.MLP", "incorrect", [0, 0, 0, 0, 0, 0, 0], 0.5)
    calls = transition_calls_for_susceptibility(pd.DataFrame(rows))
    kinds = {k: normalise_call(v)["kind"] for k, v in calls.items()}
    assert kinds["L1.H0/correct"] == "sharp" and normalise_call(calls["L1.H0/correct"])["bracket"] == [1000, 2000]
    assert kinds["L1.H0/incorrect"] == "gradual"
    assert kinds["L0.MLP/correct"] == "no_change"
    assert "normal sampling distribution" in calls["L1.H0/correct"]["replicates"]
    summary = susceptibility_summary(calls, "correct")
    assert summary["verdict"] == "sharp in 1 of 2 components: L1.H0 within (1000, 2000]"
    assert summary["kind"] == "sharp" and summary["bracket"] == [1000, 2000] and summary["leader"] == "L1.H0"
    assert susceptibility_summary(calls, "incorrect")["kind"] == "gradual"
    assert susceptibility_summary({}, "correct")["verdict"] == "not run"


def test_old_calls_read_as_brackets_never_as_a_step():
    old = {"verdict": "phase transition at step 2000", "step": 2000, "change_p_value": 0.001,
           "evidence": [{"kind": "jump", "step": 2000, "between": [1000, 2000], "detail": "jump 1000 -> 2000"}],
           "test": "a long description " * 10}
    call = normalise_call(old)
    assert call["kind"] == "sharp" and call["bracket"] == [1000, 2000]
    assert call["verdict"] == "sharp transition within (1000, 2000]"
    assert call["p_value"] == 0.001 and call["p_adjusted"] is None and call["test"] == ""
    assert normalise_call({"verdict": "gradual", "events": []})["kind"] == "gradual"
    new = {"kind": "unresolved", "verdict": "change within (0, 1000], not resolved by this schedule",
           "bracket": [0, 1000], "p_adjusted": 0.01, "test": "seg-v1"}
    call = normalise_call(new)
    assert call["kind"] == "unresolved" and call["bracket"] == [0, 1000] and call["test"] == "seg-v1"
    assert call["p_adjusted"] == 0.01 and call["verdict"] == new["verdict"]


def _row(signal, kind, bracket=None, effect=None, p_adjusted=None):
    low, high = (effect - 0.1, effect + 0.1) if effect is not None else (None, None)
    return VerdictRow(signal, signal, kind, kind=kind, bracket=bracket, effect=effect, effect_low=low,
                      effect_high=high, p_adjusted=p_adjusted, fwer="Holm over 5 curves" if kind != "not run" else "",
                      steps=[0, 1000, 5000, 5500, 6000], values=[0.0, 0.1, 0.2, 0.3, 0.9])


def test_the_answer_is_built_from_the_calls():
    from codedyn.report.answer import compose_answer

    rows = [_row("CC", "sharp", [5500, 6000], 0.8, 0.001), _row("CI", "sharp", [5500, 6000], 0.6, 0.02),
            _row("LLC", "unresolved", [0, 1000]), _row("II", "gradual"), _row("paired", "no_change"),
            _row("SAE", "not run")]
    events = [{"name": "induction heads form", "bracket": [5000, 5500], "kind": "reference"}]
    answer = compose_answer(rows, events, ["Diagnostics: all chains pass."])
    # The counts first: 5 measured over the 5 checkpoints from 0 to 6000, 2 of them sharp, 1 gradual, 1 not run.
    assert all(part in answer[0] for part in ("5 signals", "5 checkpoints", "(0 to 6000)", "2 sharp", "1 gradual",
                                              "1 not run"))
    # One sentence per kind, each naming its curves with their bracket, effect and adjusted p.
    sharp = next(s for s in answer if "(5500, 6000]" in s)
    assert all(part in sharp for part in ("CC", "CI", "0.8 [0.7, 0.9]", "0.02", "induction heads form",
                                          "(5000, 5500]"))
    unresolved = next(s for s in answer if "LLC" in s)
    assert "(0, 1000]" in unresolved and "codedyn refine" in unresolved  # the command that resolves it
    assert sum("II" in s for s in answer) == 1 and sum("paired" in s for s in answer) == 1
    assert not any("SAE" in s for s in answer[1:])  # a signal that was not run gets no verdict sentence
    assert any("Holm over 5 curves" in s for s in answer) and answer[-1] == "Diagnostics: all chains pass."
    assert len({sharp, unresolved, next(s for s in answer if "II" in s), next(s for s in answer if "paired" in s)}) == 4
    # Other outcomes give other sentences: nothing is canned.
    alone = compose_answer([_row("CC", "sharp", [0, 1000], 0.5, 0.04)],
                           [{"name": "onset", "step": 500, "kind": "reference"}], [])
    assert all(part in alone[1] for part in ("CC", "(0, 1000]", "onset", "500", "0.04"))
    nothing = compose_answer([_row("SAE", "not run")], [], [])
    assert len(nothing) == 1 and not any(char.isdigit() for char in nothing[0])  # no count, bracket or effect


def test_sparkline_draws_the_curve_band_and_bracket():
    from codedyn.report.sections import sparkline

    row = _row("CC", "sharp", [5500, 6000], 0.8, 0.001)
    row = VerdictRow(**{**row.to_dict(), "lows": [v - 0.05 for v in row.values],
                        "highs": [v + 0.05 for v in row.values]})
    svg = sparkline(row)
    assert svg.startswith("<svg") and svg.count("<circle") == 5 and "<polygon" in svg and "<rect" in svg
    gap = VerdictRow(**{**row.to_dict(), "values": [float("nan"), 0.1, 0.2, 0.3, 0.9], "kind": "gradual"})
    assert "<rect" not in sparkline(gap) and sparkline(gap).count("<circle") == 4
    assert sparkline(VerdictRow("x", "x", "not run")) == ""


def test_known_events_from_the_stored_induction_curve():
    from codedyn.analysis.events import known_events

    log = [{"step": s, "induction_score": a, "in_context_drop": d}
           for s, a, d in ((0, 0.0, 0.0), (1000, 0.05, 0.1), (5000, 0.1, 0.3), (5500, 0.45, 1.6), (6000, 0.6, 2.0))]
    events = known_events({"log": log})  # no stored formation: recomputed from the logged curve
    assert len(events) == 1
    assert events[0]["name"] == "induction heads form" and events[0]["bracket"] == [5000, 5500]
    assert events[0]["kind"] == "reference"
    stored = {"log": log, "formation": {"formed": True, "first_formed_step": 6000, "last_step_before": 5500,
                                        "criterion": "c"}}
    assert known_events(stored)[0]["bracket"] == [5500, 6000]
    assert known_events({"log": log[:3]}) == [] and known_events(None) == []


def test_sharp_calls_become_one_band_per_bracket():
    from codedyn.analysis.events import sharp_call_events

    calls = {"CC/cov": {"kind": "sharp", "bracket": [5500, 6000]}, "CI/cov": {"kind": "sharp", "bracket": [5500, 6000]},
             "II/cov": {"kind": "sharp", "bracket": [0, 1000]}, "paired/cov": {"kind": "gradual", "bracket": None},
             "CC/corr": {"kind": "sharp", "bracket": [1000, 3000]}}
    names = {f"{q}/cov": q for q in ("CC", "CI", "II", "paired")}
    assert sharp_call_events(calls, names) == [
        {"name": "II sharp", "bracket": [0, 1000], "kind": "sharp"},
        {"name": "CC, CI sharp", "bracket": [5500, 6000], "kind": "sharp"}]
    assert sharp_call_events({"CC/cov": {"verdict": "phase transition at step 12"}}, names) == []


def test_the_probe_direction_reading_says_whether_the_sae_loses_or_splits_the_direction():
    from codedyn.report.sections import probe_direction_reading

    def rows(hat_low):
        return pd.DataFrame([
            {"step": 4, "quantity": "auroc_resid", "value": 0.8, "low": 0.7, "high": 0.9},
            {"step": 8, "quantity": "auroc_resid", "value": 0.55, "low": 0.45, "high": 0.65},  # no gap: not read
            {"step": 4, "quantity": "auroc_reconstruction", "value": 0.6, "low": hat_low, "high": 0.7},
            {"step": 4, "quantity": "top_latent_gap_share", "value": 0.2, "low": 0.1, "high": 0.3},
            {"step": 4, "quantity": "latents_for_half_gap", "value": 3.0, "low": 2.0, "high": 4.0},
            {"step": 4, "quantity": "max_decoder_cosine", "value": 0.31, "low": None, "high": None}])

    lost = probe_direction_reading(rows(0.45))
    assert lost.startswith("at step 4 ") and "loses it" in lost and "no latent can carry it" in lost
    kept = probe_direction_reading(rows(0.52))
    assert "keeps it" in kept and "holds 20%" in kept and "takes 3 latent(s)" in kept and "0.31" in kept
    flat = rows(0.45)
    flat.loc[flat["quantity"] == "auroc_resid", ["low", "high"]] = [0.4, 0.6]
    assert probe_direction_reading(flat) == ""
