"""report.html on a tiny study (influence + susceptibility run, the other experiments absent or planted), and the
susceptibility transition calls on curves with a known answer."""

import base64
import io
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from codedyn.config import load_config
from codedyn.experiments.influence import run_influence
from codedyn.experiments.study import prepare_study
from codedyn.experiments.susceptibility import run_susceptibility
from codedyn.report.html import write_report
from codedyn.report.verdicts import susceptibility_summary, transition_calls_for_susceptibility
from tests.test_experiments_run import TINY_STUDY

SECTIONS = ("summary", "dataset", "influence", "emergence", "susceptibility", "embryology", "llc", "calibration",
            "hyperparameters", "diagnostics", "timings")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("CODEDYN_HOME", str(home))
    study = prepare_study(load_config("default", TINY_STUDY), home / "run")
    run_influence(study)
    run_susceptibility(study)
    yield study
    mp.undo()


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
    for curve in ("CC/cov", "CI/cov", "II/cov", "paired/cov", "CC/corr", "CI/corr", "II/corr", "paired/corr",
                  "LLC/llc"):
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
    assert len(suscept) == 2 * table["component"].nunique()
    for distribution in ("correct", "incorrect"):
        assert shown[f"*/{distribution}"] == susceptibility_summary(suscept, distribution)[0]
    stored = json.loads((study.run_dir / "verdicts.json").read_text())
    assert {r["curve"]: r["verdict"] for r in stored} == shown


def test_diagnostics_warn_about_bad_chains(study):
    diagnostics = pd.read_parquet(study.run_dir / "influence" / "diagnostics.parquet")
    section = _section(_page(write_report(study)), "diagnostics")
    assert section.count("<tr") == len(diagnostics) + 1  # header + one row per (checkpoint, chain)
    from codedyn.report.html import diagnostic_warnings

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
    emergence = run / "emergence"
    emergence.mkdir()
    verdict = {"kind": "sharp", "verdict": "sharp transition within (4, 12]", "bracket": [4, 12], "effect": 0.35,
               "effect_low": 0.3, "effect_high": 0.4, "p_value": 1e-9, "change_p_value": 1e-9, "p_adjusted": None,
               "candidates": {"sharp": {"p_value": 1e-9, "bracket": [4, 12], "effect": 0.35, "effect_low": 0.3,
                                        "effect_high": 0.4},
                              "gradual": {"p_value": 1e-9, "bracket": None, "effect": 0.4, "effect_low": 0.3,
                                          "effect_high": 0.5}},
               "test": "changepoint-scan"}
    calls = {  # the layout Experiment 2 writes: classify_trajectory's output per layer / predictor / metric
        "L1/best_latent/auroc": {**verdict, "evidence": [{"kind": "jump", "step": 12, "between": [4, 12],
                                                          "detail": "largest jump 0.35 within (4, 12]"}]},
        "L1/probe/auroc": {**verdict, "kind": "gradual", "verdict": "gradual", "bracket": None, "evidence": []},
    }
    (emergence / "transitions.json").write_text(json.dumps(calls))
    pd.DataFrame({"step": [0, 4, 12], "layer": 1, "predictor": "best_latent", "split": "validation",
                  "metric": "auroc", "value": [0.5, 0.55, 0.9], "low": [0.4, 0.45, 0.85],
                  "high": [0.6, 0.65, 0.95]}).to_parquet(emergence / "emergence.parquet")
    embryology = run / "embryology"
    embryology.mkdir()
    shutil.copy(run / "influence" / "influence_cov.png", embryology / "umap_grid.png")
    (embryology / "umap_interactive.html").write_text("<html></html>")
    (run / "timings.json").write_text(json.dumps({"influence": {"seconds": 12.5}, "note": "<script>x</script>"}))

    from typer.testing import CliRunner

    from codedyn.cli import app

    outcome = CliRunner().invoke(app, ["report", str(run)])  # from the run folder alone (manifest + cache)
    assert outcome.exit_code == 0, outcome.output
    page = _page(run / "report.html")
    assert 'data-curve="L1/best_latent/auroc">sharp transition within (4, 12]<' in page
    assert 'data-curve="L1/probe/auroc"' not in page  # the SAE row is the best latent's
    assert "largest jump 0.35 within (4, 12]" in page
    assert "0.9 [0.85, 0.95]" in _section(page, "emergence")
    assert 'href="embryology/umap_interactive.html"' in page
    assert "umap grid" in _section(page, "embryology")
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
    assert calls["L1.H0/correct"]["verdict"] == "sharp transition within (1000, 2000]"
    assert calls["L1.H0/incorrect"]["verdict"] == "gradual"
    assert calls["L0.MLP/correct"]["verdict"] == "no change"
    assert "normal sampling distribution" in calls["L1.H0/correct"]["test"]
    verdict, evidence, bracket = susceptibility_summary(calls, "correct")
    assert verdict == "sharp transition in 1 of 2 components: L1.H0 within (1000, 2000]" and bracket == [1000, 2000]
    assert susceptibility_summary(calls, "incorrect")[0].startswith("gradual")
