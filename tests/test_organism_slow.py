"""Ground truth end to end on the real organism suite: trains the organism preset's suite and its null twin (about
4 minutes each on an idle core, in the test's own fresh CODEDYN_HOME), so it runs only when asked for with
CODEDYN_ORGANISM_TESTS=1 (the numbers: benchmarks/bench_organism.py and BENCHMARKS.md, "Model organism").

Measured on the held-out programs the study reads: the verdict contrast on crossed quadruples
(models.toy.crossed_contrast, against its margin calibrated on null twins, codedyn.analysis.margins) and the probe
AUROC of the final-position residual fit and scored on disjoint halves of the operations
(experiments.behaviour.planted_probe), each with its interval resampling operation pairs."""

import os

import numpy as np
import pytest

from codedyn.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.environ.get("CODEDYN_ORGANISM_TESTS") != "1",
                                                   reason="trains two 7000-step suites; set CODEDYN_ORGANISM_TESTS=1")]


def _measure(config, steps):
    from codedyn.experiments.behaviour import EVAL_SEED, VERDICT_QUADS, bootstrap_mean, planted_probe
    from codedyn.models.toy import crossed_contrast, heldout_verdict_set, train_toy_suite, verdict_margins

    trained = train_toy_suite(config)
    texts, _, groups = heldout_verdict_set(config.planted, VERDICT_QUADS, seed=EVAL_SEED)
    found = {}
    for step in steps:
        checkpoint = trained.suite.load(step)
        contrast = crossed_contrast(verdict_margins(checkpoint.model, checkpoint.tokenizer, texts))
        verdict = np.quantile(bootstrap_mean(contrast, groups[::4], 1000, seed=0), [0.025, 0.975])
        probe, reps = planted_probe(checkpoint.model, checkpoint.tokenizer, config.planted)
        found[step] = {"verdict": (contrast.mean(), *verdict), "probe": (probe, *np.quantile(reps, [0.025, 0.975]))}
    return found


def _covers_chance(measured) -> bool:
    _, low, high = measured
    return low <= 0.5 <= high


def _judges_nothing(measured) -> bool:
    """The verdict contrast's interval lies within its margin (calibrated on null twins of other seeds)."""
    from codedyn.analysis.curves import VERDICT_CONTRAST
    from codedyn.analysis.margins import load_margins

    margin = load_margins().margin(VERDICT_CONTRAST)
    _, low, high = measured
    return -margin < low and high < margin


def test_the_capability_is_absent_before_the_onset_present_at_the_end_and_absent_on_the_null_twin():
    organism = load_config("organism").toy
    onset, last = organism.planted.onset, organism.steps
    found = _measure(organism, [0, onset // 2, last])
    for step in (0, onset // 2):
        assert _judges_nothing(found[step]["verdict"]) and _covers_chance(found[step]["probe"]), (step, found)
    # present at the end: the model's verdict log-odds follow the match of spec and body by nats, and the residual
    # reads correctness on operations the probe never saw (measured 3.0 [2.7, 3.3] nats and 0.98 at step 7000)
    assert found[last]["verdict"][1] > 1.0 and found[last]["probe"][0] >= 0.9, found[last]
    null = load_config("null").toy
    assert null.planted.null and null.planted.model_copy(update={"null": False}) == organism.planted
    twin = _measure(null, [onset, (onset + last) // 2, last])
    assert all(_judges_nothing(twin[s]["verdict"]) and _covers_chance(twin[s]["probe"]) for s in twin), twin
