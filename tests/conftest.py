"""Shared fixtures.

Every test gets its own CODEDYN_HOME so caches never leak between tests or into ~/.cache. The end-to-end fixtures
share two session-wide things instead of building their own: ``shared_home`` (datasets and toy suites are
content-addressed caches, so studies with the same dataset and toy settings build each once per session) and
``tiny_run`` (the run folder of the tiny study, tests.studies.TINY_STUDY, whose posterior units every analysis of
it reuses: influence, susceptibility, embryology and the report read the same posteriors). Tests that use them
read, or add outputs that are deterministic functions of the stored units; none deletes or edits a unit.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def codedyn_home(tmp_path, monkeypatch):
    home = tmp_path / "codedyn_home"
    monkeypatch.setenv("CODEDYN_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory):
    """One cache home for the session's tiny studies (their datasets and toy suites)."""
    from tests.studies import shared_home as home

    return home(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_run(shared_home, tmp_path_factory):
    """The tiny study's run folder with every checkpoint's posterior sampled (in ``shared_home``)."""
    from codedyn.config import load_config
    from codedyn.experiments.posteriors import sample_checkpoints
    from codedyn.experiments.study import prepare_study
    from tests.studies import TINY_STUDY, home

    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    with home(shared_home):
        sample_checkpoints(prepare_study(load_config("default", TINY_STUDY), run_dir))
    return run_dir


@pytest.fixture(scope="session")
def tiny_study(shared_home, tiny_run):
    """The tiny study itself (a Study over ``tiny_run``); its posteriors are stored."""
    from codedyn.config import load_config
    from codedyn.experiments.study import prepare_study
    from tests.studies import TINY_STUDY, home

    with home(shared_home):
        return prepare_study(load_config("default", TINY_STUDY), tiny_run)


@pytest.fixture()
def empty_home(tmp_path, monkeypatch):
    """An empty codedyn cache and an empty, offline HF cache."""
    from huggingface_hub import constants

    home = tmp_path / "home"
    monkeypatch.setenv("CODEDYN_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return home


@pytest.fixture(scope="module")
def tokenizer():
    """A small byte-level tokenizer trained on code (tests.code_texts), one per test module."""
    from tests.code_texts import code_tokenizer

    return code_tokenizer()
