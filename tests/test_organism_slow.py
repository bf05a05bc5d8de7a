"""Ground truth end to end on the real organism suite: trains the organism preset's suite and its null twin (about
4 minutes, both at once on two cores, in the test's own fresh CODEDYN_HOME), so it runs only when asked for with
CODEDYN_ORGANISM_TESTS=1 (the numbers: benchmarks/bench_organism.py and BENCHMARKS.md, "Model organism").

Measured on the held-out programs the study reads: the verdict contrast on crossed quadruples
(models.toy.crossed_contrast, against its margin calibrated on null twins, codedyn.analysis.margins) and the probe
AUROC of the final-position residual fit and scored on disjoint halves of the operations
(experiments.behaviour.planted_probe), each with its interval resampling operation pairs."""

import os

import pytest

from codedyn.config import load_config
from tests.organism_support import covers_chance, judges_nothing, measure, train_in_parallel

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.environ.get("CODEDYN_ORGANISM_TESTS") != "1",
                                                   reason="trains two 7000-step suites; set CODEDYN_ORGANISM_TESTS=1")]


def test_the_capability_is_absent_before_the_onset_present_at_the_end_and_absent_on_the_null_twin():
    organism, null = load_config("organism").toy, load_config("null").toy
    onset, last = organism.planted.onset, organism.steps
    trained, trained_null = train_in_parallel([organism, null])
    found = measure(trained, organism, [0, onset // 2, last])
    for step in (0, onset // 2):
        assert judges_nothing(found[step]["verdict"]) and covers_chance(found[step]["probe"]), (step, found)
    # present at the end: the model's verdict log-odds follow the match of spec and body by nats, and the residual
    # reads correctness on operations the probe never saw (measured 3.0 [2.7, 3.3] nats and 0.98 at step 7000)
    assert found[last]["verdict"][1] > 1.0 and found[last]["probe"][0] >= 0.9, found[last]
    assert null.planted.null and null.planted.model_copy(update={"null": False}) == organism.planted
    twin = measure(trained_null, null, [onset, (onset + last) // 2, last])
    assert all(judges_nothing(twin[s]["verdict"]) and covers_chance(twin[s]["probe"]) for s in twin), twin
