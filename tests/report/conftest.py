"""The report tests' study: the session's tiny study with influence and susceptibilities computed, once per test
module that asks for it."""

import pytest


@pytest.fixture(scope="module")
def study(tiny_study, shared_home):
    """The session's tiny study (its posteriors stored once), with influence and susceptibilities computed."""
    from codedyn.experiments.influence import run_influence
    from codedyn.experiments.susceptibility import run_susceptibility
    from tests.studies import home

    with home(shared_home):
        run_influence(tiny_study)
        run_susceptibility(tiny_study)
        yield tiny_study
