"""Checkpoint suites load by revision through a real HF hub-cache layout, offline."""

import pytest
import torch

from codedyn.models.suite import (
    CheckpointSuite,
    SuiteError,
    pythia_schedule,
    pythia_suite,
    toy_suite,
    write_revision,
)
from tests.neox_models import tiny_model, tiny_tokenizer

STEPS = (0, 1, 512, 1000)


@pytest.fixture()
def offline_pythia_cache(tmp_path, monkeypatch):
    """A hub cache holding revisions of a fake EleutherAI/pythia-14m, as `huggingface-cli download` leaves it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = tiny_tokenizer()
    weights = {}
    for step in STEPS:
        model = tiny_model(seed=step, vocab=len(tokenizer))
        write_revision(tmp_path, "EleutherAI/pythia-14m", step, model, tokenizer)
        weights[step] = model.gpt_neox.embed_in.weight.detach().clone()
    return tmp_path, weights


def test_pythia_schedule_matches_the_published_one():
    schedule = pythia_schedule()
    assert schedule[:11] == (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    assert schedule[11:14] == (1000, 2000, 3000)
    assert schedule[-1] == 143000 and len(schedule) == 154


def test_loads_each_revision_offline(offline_pythia_cache):
    cache, weights = offline_pythia_cache
    suite = pythia_suite("14m", hub_cache=cache)
    assert suite.repo_id == "EleutherAI/pythia-14m"
    assert suite.cached_steps() == STEPS
    for step in (0, 512, 1000):
        checkpoint = suite.load(step)
        assert checkpoint.step == step
        assert not checkpoint.model.training
        torch.testing.assert_close(checkpoint.model.gpt_neox.embed_in.weight, weights[step])
        assert checkpoint.tokenizer("def f").input_ids


def test_missing_revision_says_which_and_how_to_fetch(offline_pythia_cache):
    cache, _ = offline_pythia_cache
    suite = pythia_suite("14m", hub_cache=cache)
    with pytest.raises(SuiteError, match=r"step2000 of EleutherAI/pythia-14m.*codedyn suite prefetch pythia-14m"):
        suite.load(2000)


def test_steps_outside_the_schedule_are_rejected_with_nearest():
    suite = pythia_suite("160m")
    with pytest.raises(SuiteError, match=r"no checkpoint at step 1500; nearest saved steps: \[1000, 2000\]"):
        suite.validate_steps([1000, 1500])
    assert suite.validate_steps([2000, 1000, 1000]) == (1000, 2000)
    with pytest.raises(SuiteError, match="unknown Pythia size"):
        pythia_suite("13m")


def test_toy_suite_uses_the_same_loading_path(tmp_path):
    tokenizer = tiny_tokenizer()
    suite = toy_suite("toy-test", schedule=(0, 8), hub_cache=tmp_path)
    assert isinstance(suite, CheckpointSuite) and suite.local_only
    write_revision(tmp_path, suite.repo_id, 8, tiny_model(8, len(tokenizer)), tokenizer)
    assert suite.cached_steps() == (8,)
    assert suite.load(8).step == 8
    with pytest.raises(SuiteError, match=r"step0 of codedyn/toy-test.*train-toy"):
        suite.load(0)
