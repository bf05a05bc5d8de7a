"""The organism's ground truth in every test run, on a schedule short enough for CI: the planted task from step
250 on in every training window (share 1) and 1500 steps, organism and null twin trained at once on two cores.
Otherwise the organism preset's recipe, so the capability is the same one the demo validates against: absent before
the onset (verdict contrast within its margin, probe at chance), present at the end (the contrast's interval above
its margin, the probe above chance), and absent on the null twin throughout. The margin is the verdict contrast's,
calibrated on null twins of the full schedule at seeds 1 and 2 (codedyn/analysis/margins.json), never on these
suites; the full-schedule version of this check is tests/test_organism_slow.py (opt-in)."""

import pytest

from codedyn.config import load_config
from tests.organism_support import covers_chance, judges_nothing, judges_present, measure, train_in_parallel

SHORT = {"steps": 1500, "checkpoint_every": 250, "planted": {"onset": 250, "share": 1.0}}
BEFORE, AFTER = (0, 128), (1000, 1500)  # checkpoints of the schedule before the onset and well after it

pytestmark = pytest.mark.slow


def test_the_capability_is_absent_before_the_onset_present_at_the_end_and_absent_on_the_null_twin():
    organism, null = (load_config(name, {"toy": SHORT}).toy for name in ("organism", "null"))
    assert null.planted.model_copy(update={"null": False}) == organism.planted
    trained, trained_null = train_in_parallel([organism, null])
    found = measure(trained, organism, [*BEFORE, organism.steps])
    for step in BEFORE:
        assert judges_nothing(found[step]["verdict"]) and covers_chance(found[step]["probe"]), (step, found[step])
    end = found[organism.steps]
    assert judges_present(end["verdict"]) and end["probe"][1] > 0.5, end
    twin = measure(trained_null, null, [organism.planted.onset, *AFTER])
    assert all(judges_nothing(m["verdict"]) and covers_chance(m["probe"]) for m in twin.values()), twin
