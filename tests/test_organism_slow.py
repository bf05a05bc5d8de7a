"""Ground truth end to end on the real organism suite: trains the default preset's organism and its null twin (about
4-5 minutes each on an idle core, in the test's own fresh CODEDYN_HOME), so it runs only when asked for with
CODEDYN_ORGANISM_TESTS=1 (the numbers: benchmarks/bench_organism.py and BENCHMARKS.md, "Model organism")."""

import os

import numpy as np
import pytest

from codedyn.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.environ.get("CODEDYN_ORGANISM_TESTS") != "1",
                                                   reason="trains two 7000-step suites; set CODEDYN_ORGANISM_TESTS=1")]


def _measure(config, steps):
    from codedyn.experiments.behaviour import EVAL_SEED, VERDICT_PAIRS, bootstrap_mean, planted_probe
    from codedyn.models.toy import heldout_verdict_set, train_toy_suite, verdict_margins

    trained = train_toy_suite(config)
    texts, correct = heldout_verdict_set(config.planted, VERDICT_PAIRS, seed=EVAL_SEED)
    found = {}
    for step in steps:
        checkpoint = trained.suite.load(step)
        hits = ((verdict_margins(checkpoint.model, checkpoint.tokenizer, texts) > 0) == correct).astype(float)
        verdict = np.quantile(bootstrap_mean(hits, np.arange(len(texts)) // 2, 1000, seed=0), [0.025, 0.975])
        probe, reps = planted_probe(checkpoint.model, checkpoint.tokenizer, config.planted)
        found[step] = {"verdict": (hits.mean(), *verdict), "probe": (probe, *np.quantile(reps, [0.025, 0.975]))}
    return found


def _covers_chance(measured) -> bool:
    _, low, high = measured
    return low <= 0.5 <= high


def test_verdicts_are_at_chance_before_the_onset_and_on_the_null_twin():
    organism = load_config("default").toy
    onset, last = organism.planted.onset, organism.steps
    before = [s for s in (0, onset // 2) if s < onset]
    found = _measure(organism, before)
    assert all(_covers_chance(found[s]["verdict"]) for s in before), found
    null = load_config("null").toy
    assert null.planted.null and null.planted.model_copy(update={"null": False}) == organism.planted
    twin = _measure(null, [onset, last])
    assert all(_covers_chance(twin[s]["verdict"]) for s in twin), twin


@pytest.mark.xfail(strict=True, reason="measured 2026-12-02 (BENCHMARKS.md, 'Model organism'): the probe on the "
                   "final-position residual reads AUROC 0.533 [0.514, 0.554] at step 0 and 0.550 [0.522, 0.578] on "
                   "the null twin at 7000: its chance level on these programs is not 1/2 (compare with the null twin)")
def test_probe_is_at_chance_before_the_onset_and_on_the_null_twin():
    organism = load_config("default").toy
    assert _covers_chance(_measure(organism, [0])[0]["probe"])
    null = load_config("null").toy
    assert _covers_chance(_measure(null, [null.steps])[null.steps]["probe"])


@pytest.mark.xfail(strict=True, reason="measured 2026-12-02 (BENCHMARKS.md, 'Model organism'): the default recipe "
                   "has not learned the planted task by step 7000 (verdicts 0.500, probe AUROC 0.539 [0.508, 0.570], "
                   "the null twin's 0.550)")
def test_capability_is_present_at_the_end():
    organism = load_config("default").toy
    found = _measure(organism, [organism.steps])[organism.steps]
    assert found["probe"][0] >= 0.9 and found["verdict"][1] > 0.6, found
