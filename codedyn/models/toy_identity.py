"""What names a toy suite and which steps it saves, computed from its config alone (no training, no torch).

:mod:`codedyn.models.suite` resolves a study's ``toy`` suite by this name and schedule before anything is trained;
:mod:`codedyn.models.toy` trains the suite under the same name. Both import this module, which imports neither.
"""

from __future__ import annotations

from codedyn.config import ToySuiteConfig
from codedyn.runs.store import content_hash

TRAINER_VERSION = 1  # bump when a change to codedyn.models.toy changes the trained weights
# Bumped whenever codedyn.data.planted or PlantedWindows would plant other programs for the same config (2: the
# substitution task, one twin per correct program, the null twin's unrelated bodies), so a cached suite is never
# taken for one it is not.
PLANTED_GENERATOR_VERSION = 2


def checkpoint_schedule(steps: int, every: int) -> tuple[int, ...]:
    """0, powers of two, then every ``every`` steps, and the last step: log-spaced early like Pythia's."""
    schedule = {0, steps}
    power = 1
    while power < steps:
        schedule.add(power)
        power *= 2
    schedule.update(range(every, steps + 1, every))
    return tuple(sorted(schedule))


def suite_name(config: ToySuiteConfig, corpus_fingerprint: str) -> str:
    """``toy-<hash>`` of everything that decides the trained weights: the config, the corpus, the trainer version
    (and the planted generator's, for a suite with the planted task)."""
    dumped = config.model_dump(mode="json")
    identity = {"config": dumped, "corpus": corpus_fingerprint, "trainer": TRAINER_VERSION}
    if config.planted.enabled:  # the programs it plants are part of what a planted suite is
        identity["planted_generator"] = PLANTED_GENERATOR_VERSION
    else:  # a suite without the planted task keeps the name it had before the task existed
        dumped.pop("planted")
    return "toy-" + content_hash(identity, length=10)
