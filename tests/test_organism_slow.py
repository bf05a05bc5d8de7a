"""Ground truth end to end on the real organism suite: trains the organism preset's suite and its null twin (about
4 minutes each on an idle core, in the test's own fresh CODEDYN_HOME), so it runs only when asked for with
CODEDYN_ORGANISM_TESTS=1 (the numbers: benchmarks/bench_organism.py and BENCHMARKS.md, "Model organism").

Measured on the held-out programs the study reads: the verdict accuracy on crossed quadruples
(models.toy.crossed_hits) and the probe AUROC of the final-position residual fit and scored on disjoint halves of
the operations (experiments.behaviour.planted_probe), each with its interval resampling operation pairs."""

import os

import numpy as np
import pytest

from codedyn.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.environ.get("CODEDYN_ORGANISM_TESTS") != "1",
                                                   reason="trains two 7000-step suites; set CODEDYN_ORGANISM_TESTS=1")]


def _measure(config, steps):
    from codedyn.experiments.behaviour import EVAL_SEED, VERDICT_QUADS, bootstrap_mean, planted_probe
    from codedyn.models.toy import crossed_hits, heldout_verdict_set, train_toy_suite, verdict_margins

    trained = train_toy_suite(config)
    texts, _, groups = heldout_verdict_set(config.planted, VERDICT_QUADS, seed=EVAL_SEED)
    found = {}
    for step in steps:
        checkpoint = trained.suite.load(step)
        hits = crossed_hits(verdict_margins(checkpoint.model, checkpoint.tokenizer, texts))
        verdict = np.quantile(bootstrap_mean(hits, groups[::4], 1000, seed=0), [0.025, 0.975])
        probe, reps = planted_probe(checkpoint.model, checkpoint.tokenizer, config.planted)
        found[step] = {"verdict": (hits.mean(), *verdict), "probe": (probe, *np.quantile(reps, [0.025, 0.975]))}
    return found


def _covers_chance(measured) -> bool:
    _, low, high = measured
    return low <= 0.5 <= high


def test_the_capability_is_absent_before_the_onset_present_at_the_end_and_absent_on_the_null_twin():
    organism = load_config("organism").toy
    onset, last = organism.planted.onset, organism.steps
    found = _measure(organism, [0, onset // 2, last])
    for step in (0, onset // 2):
        assert _covers_chance(found[step]["verdict"]) and _covers_chance(found[step]["probe"]), (step, found)
    # present at the end: the model's own verdicts order >= 90% of the crossed quadruples, and the residual reads
    # correctness on operations the probe never saw (measured 0.97 and 0.89 [0.81, 0.96] at step 7000)
    assert found[last]["verdict"][0] >= 0.9 and found[last]["probe"][1] > 0.75, found[last]
    null = load_config("null").toy
    assert null.planted.null and null.planted.model_copy(update={"null": False}) == organism.planted
    twin = _measure(null, [onset, (onset + last) // 2, last])
    assert all(_covers_chance(twin[s]["verdict"]) and _covers_chance(twin[s]["probe"]) for s in twin), twin
