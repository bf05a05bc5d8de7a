"""The validation yardstick end to end on stored run folders with planted curves: the ground truth, every signal's
onset and relation, co-movement, the null twin, calibrated margins and their declaration, and the report's section
and answer built from it."""

import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from codedyn.analysis.curves import chi_group
from codedyn.analysis.margins import Margins, calibrate, held_out, load_margins, write_margins
from codedyn.analysis.yardstick import table, yardstick
from codedyn.experiments.behaviour import emergence_call
from codedyn.experiments.registry import signal_sources
from codedyn.paths import cache_dir
from codedyn.report.validation import answer_sentences, method_reasons, render_method_reasons, render_validation

STEPS = [0, 1000, 2000, 3000, 4000, 5000, 5500, 7000]
ONSET = 1000
RISE = np.array([0, 0, 0, 0, 1, 2, 3, 4], dtype=float)  # the verdicts rise within (3000, 4000]
EARLY = np.array([0, 0, 0, 1, 2, 3, 3.5, 4], dtype=float)  # a signal one checkpoint earlier


def _write(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _measure(truth, sd, rng, n_boot=400):
    values = truth + sd * rng.standard_normal(truth.size)
    return values, values[:, None] + sd * rng.standard_normal((truth.size, n_boot))


def _run(root, name, seed, null, margins_patch=None):
    """A finished run folder with the tables and replicates the experiments store."""
    rng = np.random.default_rng(seed)
    run = root / name
    suite = f"toy-{name}-{seed}"
    _write(run / "manifest.json", {"suite": suite, "steps": STEPS})
    _write(run / "run.json", {"status": "finished"})
    _write(cache_dir("suites") / suite / "suite.json",
           {"config": {"seed": seed, "planted": {"enabled": True, "onset": ONSET, "null": null, "seed": seed}}})
    zero = np.zeros(len(STEPS))
    # behaviour: verdict contrast (nats) and loss gap
    verdict, verdict_reps = _measure(zero if null else RISE, 0.02, rng)
    gap, gap_reps = _measure(zero, 0.05, rng)
    rows = [{"step": s, "quantity": q, "operator": op, "value": v[k], "low": v[k] - 0.1, "high": v[k] + 0.1, "n": 300}
            for q, op, v in (("verdict_contrast", None, verdict), ("loss_gap", "all", gap)) for k, s in
            enumerate(STEPS)]
    folder = run / "behaviour"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "behaviour.parquet")
    np.savez(folder / "bootstrap_replicates.npz", steps=STEPS, verdict_contrast=verdict_reps,
             **{"loss_gap/all": gap_reps})
    _write(folder / "transitions.json", {"emergence": emergence_call(STEPS, verdict, verdict_reps, ONSET)})
    # Experiment 2: the probe leads by a checkpoint on the organism; the best latent moves on every run alike
    probe, probe_reps = _measure(0.5 + (zero if null else EARLY / 8), 0.01, rng)
    drift = np.where(np.array(STEPS) > ONSET, 0.01, 0.0)  # a small, precisely measured change of the data onset
    latent, latent_reps = _measure(0.5 + drift, 0.0005, rng)
    rows = [{"step": s, "layer": 1, "predictor": p, "split": "validation", "metric": "auroc", "value": v[k],
             "low": v[k] - 0.02, "high": v[k] + 0.02} for p, v in (("probe", probe), ("best_latent", latent))
            for k, s in enumerate(STEPS)]
    folder = run / "emergence"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "emergence.parquet")
    np.savez(folder / "bootstrap_replicates.npz", steps=STEPS, **{"L1/probe/auroc": probe_reps,
                                                                  "L1/best_latent/auroc": latent_reps})
    # Experiment 1: a noisy Δ (not detected) and an LLC that jumps at the data onset on both runs
    delta, delta_reps = _measure(zero, 0.5, rng)
    llc, llc_reps = _measure(np.where(np.array(STEPS) > ONSET, 30.0, 10.0), 0.5, rng)
    # a verdict readout: meaningless before the onset (the model never saw a verdict line), flat after it
    verdict_readout, verdict_reps = _measure(np.where(np.array(STEPS) > ONSET, 0.0, 5.0), 0.01, rng)
    rows = [{"step": s, "quantity": q, "variant": var, "value": v[k], "low": v[k] - 1, "high": v[k] + 1,
             "local_minimum": s > 0} for q, var, v in (("delta", "cov", delta), ("LLC", "llc", llc),
                                                      ("delta", "verdict_corr_no_pc1", verdict_readout))
            for k, s in enumerate(STEPS)]
    folder = run / "influence"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "influence.parquet")
    np.savez(folder / "bootstrap_replicates.npz", steps=STEPS, **{"delta/cov": delta_reps, "LLC/llc": llc_reps,
                                                                  "delta/verdict_corr_no_pc1": verdict_reps})
    # Experiment 3: one head's χ contrast coincides with the emergence on the organism; one is flat
    rows = []
    for component, truth in (("L0.H0", zero if null else np.where(np.array(STEPS) >= 4000, 0.5, 0.0)),
                             ("L0.H1", 10 * drift)):
        for k, s in enumerate(STEPS):
            value = truth[k] + 0.001 * rng.standard_normal()
            rows.append({"step": s, "component": component, "distribution": "incorrect-correct",
                         "variant": "standardised", "chi": value, "low": value - 0.004, "high": value + 0.004})
    folder = run / "susceptibility"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "susceptibility.parquet")
    return run


@pytest.fixture
def runs(tmp_path, monkeypatch):
    import codedyn.analysis.margins as margins

    monkeypatch.setattr(margins, "MARGINS_FILE", tmp_path / "margins.json")
    calibration = [_run(tmp_path / "calibration", f"null-s{s}", s, null=True) for s in (1, 2)]
    records = [(path, ONSET, {"null": True, "toy_seed": s, "planted_seed": s, "onset": ONSET})
               for path, s in zip(calibration, (1, 2), strict=True)]
    write_margins(calibrate(records, signal_sources()))
    organism = _run(tmp_path / "runs", "organism", 0, null=False)
    null = _run(tmp_path / "runs", "null", 0, null=True)
    return organism, null


def test_margins_are_twice_the_calibration_twins_reach_and_declare_their_seeds(runs):
    margins = load_margins()
    assert margins.seeds == {1, 2} and "2 x the largest" in margins.rule
    assert margins.margin("verdict contrast") > 0 and margins.margin("χ contrast (any component)") > 0
    assert margins.margin("never calibrated") == 0.0
    assert held_out(margins, [0, 0]) and not held_out(margins, [0, 2])
    with pytest.raises(ValueError, match="not a null twin"):
        calibrate([(runs[0], ONSET, {"null": False})], signal_sources())


def test_every_signal_is_related_to_the_emergence_by_the_same_onset_test(runs):
    organism, _ = runs
    found = yardstick(organism, signal_sources())
    assert found.is_organism and found.held_out and found.null_dir is not None
    assert found.emergence.kind == "onset" and found.emergence.bracket == [3000, 4000]
    rows = {r.name: r for r in found.signals}
    assert "verdict contrast" not in rows  # the ground truth is not a signal under test
    probe = rows["probe AUROC, layer 1"]
    assert probe.call.bracket == [2000, 3000] and probe.relation == "leads the emergence by 1 checkpoint"
    assert probe.comovement.tracks == 1 and probe.null_comovement.tracks == 0
    assert rows["χ contrast L0.H0"].relation == "coincides with the emergence"
    assert rows["SAE best latent AUROC, layer 1"].call.kind == "flat"
    assert rows["BIF delta/cov"].call.kind == "not_detected"
    assert rows["χ contrast L0.H1"].call.kind == "flat"
    # the verdict readout starts at the first checkpoint after the onset: its pre-onset values are no baseline
    readout = rows["BIF delta/verdict_corr_no_pc1"]
    assert readout.call.baseline == [2000] and readout.call.kind != "onset"
    # The LLC jumps at the data onset on the calibration twins too, so its margin absorbs that jump.
    assert rows["LLC"].call.kind != "onset" and rows["LLC"].call.margin > 0
    assert found.null_emergence.kind in ("flat", "not_detected")
    assert not any(r.null_departs for r in found.signals)
    assert "Holm over" in found.family
    frame = table(found)
    assert frame.iloc[0]["relation"] == "defines the emergence" and len(frame) == len(found.signals) + 1


def test_the_report_section_and_the_answer_come_from_the_yardstick(runs):
    organism, _ = runs
    found = yardstick(organism, signal_sources())
    page = render_validation(found)
    # head, ground truth, the five other signals, one χ summary; folded: head and both components
    assert page.count("<tr") == 1 + 1 + (len(found.signals) - 2) + 1 + (1 + 2)
    head = re.search(r"<thead><tr>(.*?)</tr></thead>", page, re.S).group(1)
    assert head.count("<th>") == 10  # eight columns of the run, two of its null twin
    assert re.search(r'<tr class="event"><td>verdict contrast', page)  # the ground truth's row first
    # every signal's noise against its margin, in its own column, as the call computed it
    for row in found.signals:
        if row.call.noise is not None and row.call.margin and not chi_group(row.name):
            verdict = "resolves it" if row.call.noise < row.call.margin else "too noisy to resolve it"
            assert f"±{row.call.noise:.3g} vs ±{row.call.margin:.3g}: {verdict}" in page
    sentences = answer_sentences(found)
    emerged = [s for s in sentences if "(3000, 4000]" in s and str(found.onset) in s]
    assert len(emerged) == 1 and sentences.index(emerged[0]) == 0  # the emergence and the data onset, first
    assert any("probe AUROC, layer 1" in s and "1 checkpoint" in s for s in sentences)
    flat = [r.name for r in found.signals if r.call.kind == "flat"]
    undetected = [r.name for r in found.signals if r.call.kind == "not_detected"]
    assert flat and undetected
    # each named, or its χ table's group for a component
    assert all(any((chi_group(name) or name) in s for s in sentences) for name in flat + undetected)
    twin = found.null_emergence
    assert twin is not None and any(("onset" if twin.kind == "onset" else twin.kind.replace("_", " ")) in s
                                    for s in sentences[1:])


def test_a_run_without_a_known_onset_gets_onsets_but_no_validation(tmp_path):
    run = _run(tmp_path / "runs", "organism", 0, null=False)
    _write(cache_dir("suites") / "toy-organism-0" / "suite.json", {"config": {"seed": 0}})  # no planted task
    found = yardstick(run, signal_sources(), margins=Margins())
    assert not found.is_organism and found.emergence is None and render_validation(found) == ""
    assert all(len(r.call.baseline) == 1 and r.relation == "" for r in found.signals)  # its first checkpoint
    (sentence,) = answer_sentences(found)  # one sentence: how many curves depart from their first checkpoint
    departing = [r for r in found.signals if r.call.kind == "onset"]
    assert f"{len(departing)} of {len(found.signals)}" in sentence


def test_a_validated_seed_among_the_calibration_seeds_is_flagged(runs, tmp_path):
    organism, _ = runs
    twin = _run(tmp_path / "other", "organism", 2, null=False)
    found = yardstick(twin, signal_sources())
    assert not found.held_out and yardstick(organism, signal_sources()).held_out
    # the caveat closes the answer of a run whose seed calibrated the margins, and only of that run
    caveat = answer_sentences(found)[-1]
    assert caveat not in answer_sentences(replace(found, margins=Margins()))


def test_a_report_of_an_unfinished_run_is_refused_in_one_sentence(tmp_path):
    from codedyn.report.html import write_report

    run = tmp_path / "half"
    _write(run / "run.json", {"status": "running"})
    with pytest.raises(FileNotFoundError, match="not finished"):
        write_report(run)
    with pytest.raises(FileNotFoundError, match="not a codedyn run folder"):
        write_report(tmp_path)


def test_a_fresh_run_draws_the_emergence_in_every_figure(runs):
    """The behaviour analysis runs first and stores the emergence; every later figure's known events include it."""
    from types import SimpleNamespace

    from codedyn.analysis.events import known_events, suite_record_of
    from codedyn.pipeline import ANALYSES

    assert ANALYSES[0].name == "behaviour"
    organism, null = runs
    events = known_events(SimpleNamespace(suite_record=suite_record_of(organism), run_dir=organism))
    assert [e["bracket"] for e in events if e["name"] == "verdicts judge correctness"] == [[3000, 4000]]
    twin = known_events(SimpleNamespace(suite_record=suite_record_of(null), run_dir=null))
    assert not any(e["name"] == "verdicts judge correctness" for e in twin)  # the null twin's never emerge


def test_the_verdict_table_and_the_validation_table_agree_call_for_call(runs):
    """Both read the run's one family of shape calls: the probe's adjusted call is the same object in both."""
    from codedyn.analysis.transitions import classify_trajectory
    from codedyn.analysis.verdicts import verdict_rows

    organism, _ = runs
    with np.load(organism / "emergence" / "bootstrap_replicates.npz") as stored:
        calls = {key: classify_trajectory(STEPS, stored[key]) for key in ("L1/probe/auroc", "L1/best_latent/auroc")}
    _write(organism / "emergence" / "transitions.json", calls)
    rows, _ = verdict_rows(organism, signal_sources())
    shown = {row.curve: row for row in rows}
    found = {r.name: r for r in yardstick(organism, signal_sources()).signals}
    for curve, name in (("L1/probe/auroc", "probe AUROC, layer 1"),
                        ("L1/best_latent/auroc", "SAE best latent AUROC, layer 1")):
        assert found[name].shape["verdict"] == shown[curve].verdict
        assert found[name].shape["p_adjusted"] == shown[curve].p_adjusted


def test_the_yardstick_is_stored_and_loads_in_a_notebook(runs):
    from codedyn.analysis.yardstick import write_yardstick
    from codedyn.runs.load import load_run

    organism, _ = runs
    found = write_yardstick(organism, signal_sources())
    run = load_run(organism)
    frame = run.validation
    assert list(frame["name"])[0] == "verdict contrast" and len(frame) == len(found.signals) + 1
    assert frame.set_index("name").loc["probe AUROC, layer 1", "relation"] == "leads the emergence by 1 checkpoint"
    stored = json.loads((organism / "validation" / "yardstick.json").read_text())
    assert stored["emergence"]["bracket"] == [3000, 4000] and stored["held_out"] is True
    assert run.yardstick().emergence.bracket == [3000, 4000]


def test_methods_that_miss_the_emergence_are_read_as_blind_or_too_noisy(runs):
    """Every method none of whose curves finds the emergence gets its correctness-specific change (organism less
    null twin, in margins) against its noise floor at 10x the draws (or programs); methods that find it get none."""
    from codedyn.analysis.yardstick import MORE, MethodReading, method_readings

    organism, _ = runs
    found = yardstick(organism, signal_sources())
    readings = {m.method: m for m in method_readings(found)}
    # the probe and Experiment 3 (L0.H0) find it; the best latent, the BIF, the LLC and the loss gap do not
    assert set(readings) == {"Experiment 2, SAE best latent", "Experiment 1, BIF", "LLC",
                             "loss gap at the mutated tokens"}
    latent = readings["Experiment 2, SAE best latent"]  # the same data-onset drift on both runs
    assert latent.curve == "SAE best latent AUROC, layer 1" and latent.curves == 1
    assert latent.resampled == "programs" and readings["Experiment 1, BIF"].resampled == "draws"
    assert latent.organism == pytest.approx(latent.null, abs=0.25) and latent.blind
    llc = readings["LLC"]  # the same jump at the data onset on both runs, inside the margin that absorbed it
    assert llc.organism > 0.4 and llc.effect == pytest.approx(0.0, abs=1e-9) and llc.blind
    # the numbers are the calls' own: |change| / margin and noise / margin
    row = next(r for r in found.signals if r.name == latent.curve)
    assert latent.organism == pytest.approx(abs(row.call.change) / row.call.margin)
    assert latent.null == pytest.approx(abs(row.null_call.change) / row.call.margin)
    assert latent.noise_floor == pytest.approx(row.call.noise / row.call.margin / MORE ** 0.5)
    # both runs' numbers are maxima over the method's curves: the BIF's on the null twin is its largest over both
    bif = readings["Experiment 1, BIF"]
    bif_rows = [r for r in found.signals if r.source == "influence" and r.name != "LLC"]
    assert bif.curves == len(bif_rows) == 2
    assert bif.null == pytest.approx(max(abs(r.null_call.change) / r.call.margin for r in bif_rows))
    assert bif.organism == pytest.approx(max(abs(r.call.change) / r.call.margin for r in bif_rows))
    sentences = " ".join(method_reasons(found))
    assert "Experiment 2, SAE best latent does not find it" in sentences and "blind at these settings" in sentences
    rendered = render_method_reasons(found)
    assert rendered.count("<li>") == len(readings) and "Why each method that misses it" in rendered
    assert not any("does not find it." in s for s in answer_sentences(found))  # the reasons are their own list
    stored = json.loads(json.dumps(found.to_dict()))["methods_that_miss"]  # what yardstick.json holds
    assert {m["method"] for m in stored} == set(readings) and all("noise_floor" in m for m in stored)
    # a change beyond the null twin's that exceeds the floor is called possibly too noisy, not blind
    noisy = MethodReading("m", "c", 1, organism=0.9, null=0.1, noise=1.5)
    assert noisy.effect == pytest.approx(0.8) and noisy.noise_floor == pytest.approx(1.5 / 10 ** 0.5)
    assert not noisy.blind
    assert MethodReading("m", "c", 1, organism=0.4, null=0.5, noise=0.1).blind  # less than the twin: blind
    # a curve shown flat is blind whatever its difference from the twin (the run-to-run variation of two suites
    # is not a change of correctness, and the interval is already inside the margin)
    assert MethodReading("m", "c", 1, organism=0.6, null=0.5, noise=0.03, flat=True).blind
    assert latent.flat and "shown inside its margin" in sentences
    # without a null twin there is nothing to read a correctness-specific change against
    assert method_readings(replace(found, null_dir=None)) == []
