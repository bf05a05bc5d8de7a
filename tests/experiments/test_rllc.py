"""Refined LLCs against known answers: a head whose output projection is zeroed has weight-refined LLC 0 while a
live head's is clearly positive; a normal-crossing potential restricted to one coordinate has that coordinate's
coefficient; data windows come from their own distribution; the tables, verdicts and clusters on planted
trajectories; and a tiny study through the pipeline, one unit per (checkpoint, component), resuming a killed sweep."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from codedyn.sampling.llc import estimate_llc
from codedyn.sampling.mcmc import effective_sample_size
from codedyn.sampling.refined import (
    RefinedLLCError,
    distribution_windows,
    refined_masks,
    sample_refined,
    without_output_projection,
)
from tests.potentials import Vector, normal_crossing, potential_config
from tests.studies import sampled_descriptions

# ------------------------------------------------------------------------------------------- known answers


def _trained_neox_with_dead_head(dead_head: int = 1):
    """A one-layer GPT-NeoX fitted to x_i = x_{i-2} + 1 (mod 40), which needs attention, with head ``dead_head``'s
    columns of the output projection zeroed halfway and kept zero: the loss then does not depend on that head's
    query, key and value weights at all, and the checkpoint is (near) a minimum in the others."""
    from codedyn.sampling.sgld import lm_token_loss
    from tests.arch_models import tiny_model

    torch.manual_seed(0)
    model = tiny_model("gpt_neox", layers=1)
    generator = torch.Generator().manual_seed(0)
    start = torch.randint(0, 40, (32, 2), generator=generator)
    columns = [start[:, 0], start[:, 1]]
    for _ in range(15):
        columns.append((columns[-2] + 1) % 40)
    windows = torch.stack(columns, dim=1)
    dense = model.gpt_neox.layers[0].attention.dense
    dead = slice(4 * dead_head, 4 * dead_head + 4)  # d_head = 4
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for iteration in range(150):
        loss = lm_token_loss(model, windows).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if iteration >= 50:  # after every step: Adam's momentum would move a merely gradient-free column
            with torch.no_grad():
                dense.weight[:, dead] = 0
    assert float(dense.weight.detach()[:, dead].abs().max()) == 0.0
    return model.eval(), windows


def test_a_head_with_a_zeroed_output_projection_has_refined_llc_zero():
    """Restricted to its query, key and value weights, the dead head's LLC is 0 within its interval (the loss does
    not see those weights: only float rounding is left), a live head's is clearly above 0. A mask on the wrong rows
    of the fused QKV matrix would give the dead head a live head's LLC."""
    from codedyn.config import SamplingConfig
    from codedyn.experiments.rllc import refined_estimate
    from codedyn.sampling.llc import FLAT

    torch.set_num_threads(1)
    model, windows = _trained_neox_with_dead_head(1)
    config = SamplingConfig(chains=2, draws=30, burn_in=10, batch_size=8, sampling_windows=32, window_length=17,
                            lr=1e-4, n_beta=100.0, localization=100.0)
    found = {}
    for head in (1, 0):
        masks = without_output_projection(model, refined_masks(model, f"L0.H{head}"))
        assert not any(name.endswith("attention.dense.weight") for name in masks)
        traces = sample_refined(model, windows, config, masks)
        found[head] = refined_estimate(traces, 200, 0)[:4]
    dead, live = found[1], found[0]
    # Every excess loss is rounding (the loss does not see these weights): about half of them fall below L(w*),
    # which the local-minimum rule alone would refuse; the flat rule names it.
    assert dead[3] == FLAT, dead
    assert abs(dead[0]) < 1e-4 and dead[1] <= 1e-4 and dead[2] >= -1e-4, dead
    assert live[3] == "local minimum" and live[1] > 0.5, live  # the live head's interval is well above 0


@pytest.mark.parametrize(("start", "mask", "lr", "truth"), [
    ((0.0, 1.0), (True, False), 1e-6, 0.5),  # K = w0^2 * 1: coordinate 0's coefficient 1 / (2 * 1)
    ((1.0, 0.0), (False, True), 3e-5, 0.25),  # K = 1 * w1^4: coordinate 1's coefficient 1 / (2 * 2)
    ((0.0, 0.0), (True, False), 1e-6, 0.0),  # at the crossing the others' zero kills the coordinate: K = 0
])
def test_a_normal_crossing_potential_restricted_to_a_coordinate(start, mask, lr, truth):
    """K(w) = w0^2 w1^4 restricted to one coordinate (the other fixed at w*): that coordinate's learning
    coefficient 1/(2 k_i) where the other factor is 1, and 0 where it is 0; the estimate lies within 2 standard
    errors of the truth."""
    torch.set_num_threads(1)
    potential = normal_crossing((1, 2))
    config = potential_config(lr=lr, draws=100 if truth else 5)
    traces = sample_refined(Vector(start), torch.zeros(1, 1), config, {"w": torch.tensor(mask)},
                            loss_fn=lambda model, batch: potential(model).expand(batch.shape[0]))
    assert traces["healthy"].values.all(), traces["unhealthy_reason"].values
    llc = estimate_llc(traces)
    assert llc.local_minimum, llc.status
    if truth == 0:
        assert llc.value == 0.0
        return
    scaled = config.n_beta * llc.excess
    se = scaled.std() / math.sqrt(effective_sample_size(scaled))
    assert abs(llc.value - truth) < 2 * se, (llc.value, truth, se)
    assert se < 0.3 * truth


# ------------------------------------------------------------------------------------------------ the data


class _Dataset:
    def __init__(self, samples):
        self.samples = samples
        self.card = {"hash": "planted"}


def test_correct_and_incorrect_windows_come_from_their_own_samples():
    from codedyn.config import SamplingConfig
    from codedyn.data.corpus import encode_stream
    from tests.arch_models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    correct = ["def f(x):\n    return x + 1\n"] * 3
    wrong = ["for i in range(10):\n    print(i)\n"] * 3
    samples = pd.DataFrame({"problem_id": ["p0", "p1", "p2"] * 2, "sample_id": [f"s{i}" for i in range(6)],
                            "prompt": [""] * 6, "solution": correct + wrong, "is_correct": [True] * 3 + [False] * 3})
    config = SamplingConfig(sampling_windows=20, window_length=8, max_problems=None)
    streams = {name: encode_stream(tokenizer, texts, tokenizer.eos_token_id).tolist()
               for name, texts in (("correct", correct), ("incorrect", wrong))}

    def inside(window, stream):
        return any(stream[i:i + len(window)] == window for i in range(len(stream) - len(window) + 1))

    for name, other in (("correct", "incorrect"), ("incorrect", "correct")):
        windows = distribution_windows(tokenizer, _Dataset(samples), config, name)
        assert tuple(windows.shape) == (20, 8)
        assert all(inside(w, streams[name]) for w in windows.tolist())
        assert not all(inside(w, streams[other]) for w in windows.tolist())
    with pytest.raises(RefinedLLCError, match="too few for windows of 200"):
        distribution_windows(tokenizer, _Dataset(samples), config.model_copy(update={"window_length": 200}),
                             "correct")


# ------------------------------------------------------------------------------------- tables on planted data


def _planted(n_boot=400, seed=0):
    """Four heads over six checkpoints: A and B jump at step 16 (A by 4, B by 3), C and D stay flat; the full
    LLC is the sum of the four (so the sum and the full LLC must agree); replicates normal with sd 0.1."""
    rng = np.random.default_rng(seed)
    steps = [0, 2, 4, 8, 16, 32]
    level = {"A": lambda s: 1 + 4 * (s >= 16), "B": lambda s: 0.5 + 3 * (s >= 16), "C": lambda s: 2.0,
             "D": lambda s: 1.0}
    rows, replicates = [], {}
    for step in steps:
        values = {c: float(f(step)) for c, f in level.items()}
        values["full"] = sum(values.values())
        for component, value in values.items():
            reps = value + 0.1 * rng.standard_normal(n_boot)
            low, high = np.quantile(reps, [0.025, 0.975])
            rows.append({"step": step, "component": component, "distribution": "corpus", "llc": value,
                         "low": low, "high": high, "status": "local minimum"})
            replicates[(step, component, "corpus")] = reps
    return pd.DataFrame(rows), replicates


def test_sum_verdicts_clusters_and_figures_on_planted_trajectories(tmp_path):
    from codedyn.experiments.rllc import (
        cluster_components,
        contrast_table,
        sum_sentence,
        sum_table,
        trajectory_verdicts,
    )
    from codedyn.figures.rllc import write_figures
    from codedyn.report.rllc import rllc_section

    table, replicates = _planted()
    sums = sum_table(table, replicates)
    assert set(sums["comparison"]) == {"consistent"}
    assert np.allclose(sums["ratio"], 1.0)
    off = table.copy()
    off.loc[off["component"] == "full", "llc"] += 5  # a full LLC well above the sum
    replicates_off = {k: v + (5 if k[1] == "full" else 0) for k, v in replicates.items()}
    assert set(sum_table(off, replicates_off)["comparison"]) == {"below"}
    assert "below the full LLC in 6" in sum_sentence(sum_table(off, replicates_off))
    calls = trajectory_verdicts(table, replicates)
    assert calls["A/corpus"]["verdict"] == "sharp transition within (8, 16]"
    assert calls["B/corpus"]["verdict"] == "sharp transition within (8, 16]"
    assert calls["C/corpus"]["verdict"] == "no change"
    clusters = cluster_components(table, 2).set_index("component")["cluster"]
    assert clusters["A"] == clusters["B"] != clusters["C"] == clusters["D"]
    assert "full" not in clusters.index
    contrast = contrast_table(table, replicates)
    assert contrast.empty  # no correct / incorrect distributions here
    figures = write_figures(tmp_path, table, sums, contrast, cluster_components(table, 2), calls)
    names = {p.name for p in figures}
    assert {"rllc_heatmap.png", "rllc_heatmap.pdf", "rllc_curves_corpus.png", "rllc_clusters.pdf"} <= names
    run = tmp_path / "run"
    (run / "rllc").mkdir(parents=True)
    table.to_parquet(run / "rllc" / "rllc.parquet")
    sums.to_parquet(run / "rllc" / "rllc_sum.parquet")
    (run / "rllc" / "transitions.json").write_text(json.dumps(calls))
    fragment = rllc_section(run)  # A, B and the full LLC (their sum) jump
    assert "3 sharp" in fragment and "2 no change" in fragment and "consistent with it in 6" in fragment
    assert "<td>A/corpus</td><td>sharp transition within (8, 16]</td>" in fragment  # every verdict is listed
    # Components named like heads get their own per-head curves figure (the embeddings would flatten them).
    heads = table.replace({"component": {"A": "L0.H0", "B": "L1.H2"}})
    named = {p.name for p in write_figures(tmp_path / "heads", heads, sums, contrast,
                                           cluster_components(heads, 2), {})}
    assert "rllc_heads_corpus.png" in named
    assert "not run" in rllc_section(tmp_path / "elsewhere")


# ------------------------------------------------------------------------------------- a tiny study, e2e


RLLC_KIND = "rllc"


def _two_parts(study, step):
    return ["p", "q"] if step else ["p"]


def test_a_unit_kind_with_parts_plans_one_unit_per_part():
    from types import SimpleNamespace

    from codedyn.pipeline import plan_units
    from codedyn.runs.units import Registry, UnitKind

    def run(study, step, progress, *part):
        raise AssertionError("planning runs nothing")

    kinds = Registry((UnitKind("a", run), UnitKind("c", run, after=("a",), parts=_two_parts)))
    units = plan_units(SimpleNamespace(steps=(0, 4)), kinds)
    assert [(u.id, u.after) for u in units] == [
        ("a-step0", ()), ("c:p-step0", ("a-step0",)),
        ("a-step4", ()), ("c:p-step4", ("a-step4",)), ("c:q-step4", ("a-step4",)),
    ]
    assert (units[-1].kind, units[-1].part, units[-1].name) == ("c", "q", "c:q")
    assert (units[0].kind, units[0].part, units[0].name) == ("a", None, "a")
    assert kinds["c:q"].name == "c" and units[0].folders == () and units[0].folder is None


def _run_units(study, only=None):
    """The pipeline's own planning, storage check and unit runner, for the rllc kind alone (the tiny study's
    other kinds are tested elsewhere); the ids computed."""
    from codedyn.pipeline import UNIT_KINDS, plan_units, run_unit, unit_is_stored
    from codedyn.runs.executor import LocalExecutor

    units = plan_units(study, UNIT_KINDS.only(RLLC_KIND))
    pending = [u for u in units if not unit_is_stored(u)]
    LocalExecutor().run(pending, study, run_unit)
    return [u.id for u in units], [u.id for u in pending]


@pytest.fixture(scope="module")
def rllc_run(tmp_path_factory):
    from codedyn.experiments.rllc import rllc_tables
    from codedyn.experiments.study import prepare_study
    from tests.pipeline_support import tiny_config, tiny_home

    mp = pytest.MonkeyPatch()
    mp.setenv("CODEDYN_HOME", str(tiny_home(tmp_path_factory)))
    config = tiny_config(suite={"steps": [4, 12]},
                         rllc={"enabled": True, "components": ["L0.H0", "L1.MLP"], "chains": 2, "draws": 6,
                               "burn_in": 2, "distributions": ["corpus", "correct"]})
    study = prepare_study(config, tmp_path_factory.mktemp("rllc") / "run")
    planned, computed = _run_units(study)
    yield study, planned, computed, rllc_tables(study)
    mp.undo()


def test_one_unit_per_checkpoint_and_component_and_the_tidy_table(rllc_run):
    from codedyn.runs.load import load_run

    study, planned, computed, result = rllc_run
    assert planned == computed == [f"rllc:{c}-step{s}" for s in (4, 12) for c in ("full", "L0.H0", "L1.MLP")]
    table = load_run(study.run_dir).rllc
    assert list(table.columns[:7]) == ["step", "component", "distribution", "llc", "low", "high", "status"]
    assert len(table) == 2 * 3 * 2
    ok = np.isfinite(table["llc"])
    assert table.loc[~ok, "status"].str.len().gt(0).all()  # every missing LLC says why
    assert (table.loc[ok, "low"] <= table.loc[ok, "llc"] + 1e-12).all()
    folder = study.run_dir / "rllc"
    assert {"rllc_sum.parquet", "rllc_contrast.parquet", "clusters.parquet", "transitions.json",
            "rllc_heatmap.png", "rllc_heatmap.pdf"} <= {p.name for p in folder.iterdir()}
    units = sorted(p.name.rsplit("-", 1)[0] for p in (study.run_dir / "units").glob("rllc-step*"))
    assert units == sorted(f"rllc-step{s}-{c}-{d}" for s in (4, 12) for c in ("full", "L0.H0", "L1.MLP")
                           for d in ("corpus", "correct"))


def test_a_killed_sweep_resumes_at_the_missing_unit(rllc_run, monkeypatch):
    from codedyn.experiments.rllc import rllc_tables

    study, _, _, result = rllc_run
    unit = next((study.run_dir / "units").glob("rllc-step12-L0.H0-correct-*"))
    (unit / "completed").unlink()
    calls = sampled_descriptions(monkeypatch)
    _, computed = _run_units(study)
    assert computed == ["rllc:L0.H0-step12"]
    assert calls == ["step 12 L0.H0 correct"]  # the other distribution of that unit stays stored
    pd.testing.assert_frame_equal(rllc_tables(study).table, result.table)  # same seeds, same draws


def test_cli_rllc_reads_the_stored_units(rllc_run, tmp_path, monkeypatch):
    """`codedyn rllc` with the run's config finds every unit stored (nothing is sampled) and prints the folder; a
    distribution codedyn does not know is one clear error."""
    import yaml
    from typer.testing import CliRunner

    import codedyn.sampling.sgld as sgld
    from codedyn.cli import app

    def forbidden(*args, **kwargs):
        raise AssertionError("a stored refined unit was sampled again")

    monkeypatch.setattr(sgld, "sample_posterior", forbidden)
    study, _, _, _ = rllc_run
    run_dir = study.run_dir
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(study.config.model_dump(mode="json")))
    outcome = CliRunner().invoke(app, ["rllc", "--preset", str(preset), "--out", str(run_dir)])
    assert outcome.exit_code == 0, outcome.output
    assert "refined LLCs" in outcome.output and "full LLC" in outcome.output
    assert outcome.stdout.strip().endswith(str(run_dir / "rllc"))
    bad = CliRunner().invoke(app, ["rllc", "--preset", str(preset), "--out", str(run_dir),
                                   "--distributions", "correct,buggy"])
    assert bad.exit_code == 2 and "rllc.distributions" in bad.output


def test_a_component_the_model_lacks_is_one_sentence_at_planning(rllc_run, tmp_path):
    from dataclasses import replace

    from codedyn.pipeline import UNIT_KINDS, plan_units
    from codedyn.sampling.restricted import WeightRestrictionError

    study = rllc_run[0]
    config = study.config.model_copy(update={"rllc": study.config.rllc.model_copy(update={"components": ("L9.H0",)})})
    with pytest.raises(WeightRestrictionError, match="L9.H0"):
        plan_units(replace(study, config=config, run_dir=tmp_path / "run"), UNIT_KINDS.only(RLLC_KIND))


def test_the_rllc_preset_is_the_default_study_with_the_stage_on():
    """configs/rllc.yaml: the default study's dataset and sampler (so its units are the default run's), the rllc
    stage enabled, and no step 0 (a random initialisation is not a local minimum: it would only add "no LLC")."""
    from codedyn.config import load_config

    preset, default = load_config("rllc"), load_config("default")
    assert preset.rllc.enabled and not default.rllc.enabled
    assert preset.sampling == default.sampling and preset.dataset == default.dataset
    assert 0 not in preset.suite.steps and len(preset.suite.steps) >= 4


def test_a_changed_rllc_setting_is_named_before_anything_is_sampled(rllc_run):
    """The refined units record their key inputs, so a unit beside a stored one says which field changed (here
    said by the registry, as the driver does for Ray tasks), for each distribution's folder."""
    from dataclasses import replace

    from codedyn.pipeline import UNIT_KINDS, plan_units

    study, planned = rllc_run[0], rllc_run[1]
    kinds = UNIT_KINDS.only(RLLC_KIND)
    assert all(kinds.notes(study, u) == [] for u in plan_units(study, kinds))  # all stored
    config = study.config.model_copy(update={"rllc": study.config.rllc.model_copy(update={"draws": 7})})
    changed = replace(study, config=config)
    units = plan_units(changed, kinds)
    assert [u.id for u in units] == planned
    for unit in units:
        notes = kinds.notes(changed, unit)
        assert [n.split(":")[0] for n in notes] == [f"rllc-step{unit.step}-{unit.part}-{d}"
                                                    for d in ("corpus", "correct")]
        assert all(n.endswith("in sampling.draws: 6 -> 7") for n in notes)
