"""Suites from anywhere: an HF series under any revision-naming scheme, and a local folder of Trainer-style
checkpoints, loaded through from_pretrained, with steps checked against what exists before any work starts."""

import pytest
import torch
from typer.testing import CliRunner

from codedyn.cli import app
from codedyn.models.suite import (
    RevisionPattern,
    SuiteError,
    folder_suite,
    get_suite,
    hf_suite,
    suite_from_config,
    write_revision,
)
from tests.arch_models import tiny_model, tiny_tokenizer
from tests.user_errors import built_nothing, one_sentence

runner = CliRunner()
OLMO_STEPS = {1000: "step1000-tokens4B", 2000: "step2000-tokens8B", 3000: "step3000-tokens12B"}


def first_weight(model):
    return next(model.parameters()).detach().clone()


@pytest.fixture()
def olmo_like_cache(tmp_path, monkeypatch):
    """An offline HF cache holding three revisions of a Llama-type series named like OLMo's (stepN-tokensMB)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = tiny_tokenizer()
    weights = {}
    for step, revision in OLMO_STEPS.items():
        model = tiny_model("llama", seed=step)
        write_revision(tmp_path / "hf", "acme/olmo-tiny", step, model, tokenizer, revision=revision)
        weights[step] = first_weight(model)
    return tmp_path / "hf", weights


@pytest.fixture()
def trainer_folder(tmp_path):
    """checkpoint-N/ folders as a transformers Trainer writes them: weights per checkpoint, the tokenizer only
    beside the final model in the folder itself."""
    root = tmp_path / "my-run"
    weights = {}
    for step in (10, 20, 40):
        model = tiny_model("gpt2", seed=step)
        model.save_pretrained(root / f"checkpoint-{step}")
        weights[step] = first_weight(model)
    tiny_tokenizer().save_pretrained(root)
    (root / "runs").mkdir()  # a Trainer's logging folder: not a checkpoint
    return root, weights


def test_revision_patterns_read_steps_and_refuse_bad_patterns():
    olmo = RevisionPattern("step{step}-tokens{tokens}B")
    assert olmo.step("step1000-tokens4B") == 1000
    assert olmo.step("step1000") is None and olmo.step("main") is None
    assert RevisionPattern("step{step}").name(5) == "step5"
    for bad in ("tokens{tokens}", "step{step}-{step}", "step{step}-{to ken}"):
        with pytest.raises(SuiteError, match="must contain exactly one {step} field"):
            RevisionPattern(bad)


def test_hf_series_with_its_own_revision_names_loads_by_revision(olmo_like_cache):
    cache, weights = olmo_like_cache
    suite = hf_suite("acme/olmo-tiny", "step{step}-tokens{tokens}B", hub_cache=cache)
    assert suite.schedule == (1000, 2000, 3000) and suite.cached_steps() == (1000, 2000, 3000)
    assert suite.revision(2000) == "step2000-tokens8B"
    for step in (1000, 3000):
        checkpoint = suite.load(step)
        assert checkpoint.model.config.model_type == "llama" and not checkpoint.model.training
        torch.testing.assert_close(first_weight(checkpoint.model), weights[step])
    assert suite.training_context() == 64
    with pytest.raises(SuiteError, match=r"no checkpoint at step 1500; nearest saved steps: \[1000, 2000\]"):
        suite.check_available([1000, 1500])


def test_explicit_revision_lists_and_missing_revisions(olmo_like_cache):
    cache, _ = olmo_like_cache
    listed = hf_suite("acme/olmo-tiny", "step{step}-tokens{tokens}B", revisions=["step1000-tokens4B",
                      "step4000-tokens16B"], hub_cache=cache)
    assert listed.schedule == (1000, 4000)
    assert listed.check_available([1000]) == (1000,)
    with pytest.raises(SuiteError, match=r"revision step4000-tokens16B of acme/olmo-tiny is not in the HF cache.*"
                                         r"codedyn suite prefetch acme/olmo-tiny --steps 4000 --revision-pattern"):
        listed.check_available([1000, 4000])
    with pytest.raises(SuiteError, match="'main' of acme/olmo-tiny does not match the revision pattern"):
        hf_suite("acme/olmo-tiny", "step{step}-tokens{tokens}B", revisions=["main"], hub_cache=cache)
    with pytest.raises(SuiteError, match=r"no revision of acme/olmo-tiny matching 'ckpt{step}'"):
        hf_suite("acme/olmo-tiny", "ckpt{step}", hub_cache=cache)
    with pytest.raises(SuiteError, match="is not a HF repository id"):
        hf_suite("acme/olmo tiny/x", hub_cache=cache)


def test_trainer_checkpoint_folders_are_a_suite(trainer_folder):
    root, weights = trainer_folder
    suite = get_suite(str(root))
    assert suite.schedule == (10, 20, 40) and suite.cached_steps() == (10, 20, 40)
    assert suite.name.startswith("my-run-") and suite.local_only
    assert suite.revision(20) == "checkpoint-20"
    checkpoint = suite.load(20)
    assert checkpoint.model.config.model_type == "gpt2"
    torch.testing.assert_close(first_weight(checkpoint.model), weights[20])
    assert checkpoint.tokenizer("def f").input_ids  # the folder's own tokenizer
    assert checkpoint.context == 64
    assert suite.training_context() == 64  # GPT-2's n_positions
    with pytest.raises(SuiteError, match=r"no checkpoint at step 30; nearest saved steps: \[20, 40\]"):
        suite.check_available([10, 30])


def test_step_folders_and_folder_mistakes(tmp_path):
    root = tmp_path / "ckpts"
    tokenizer = tiny_tokenizer()
    for step in (0, 5):
        tiny_model("gpt_neox", seed=step).save_pretrained(root / f"step{step}")
    with pytest.raises(SuiteError, match=r"no tokenizer in .*step0 or in .*ckpts"):
        folder_suite(root).check_available([0])
    tokenizer.save_pretrained(root / "step5")  # a checkpoint's own tokenizer is used where it has one
    suite = folder_suite(root)
    assert suite.check_available([5]) == (5,) and suite.load(5).tokenizer("x").input_ids
    with pytest.raises(SuiteError, match=r"suite folder .*nowhere does not exist"):
        folder_suite(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SuiteError, match="holds no checkpoints: expected subfolders checkpoint-<step>/"):
        folder_suite(tmp_path / "empty")
    tiny_model("gpt_neox").save_pretrained(root / "checkpoint-5")
    with pytest.raises(SuiteError, match="both checkpoint-5/ and step5/ claim step 5"):
        folder_suite(root)


def test_toy_suite_is_known_before_it_is_trained():
    from codedyn.config import load_config

    config = load_config("default")
    suite = suite_from_config(config.suite, config.toy)
    assert suite.schedule[-1] == config.toy.steps and 5500 in suite.schedule
    assert suite.training_context() == config.toy.context == 64
    assert suite_from_config(config.suite.model_copy(update={"name": "pythia-160m"})).training_context() == 2048
    assert suite.check_available([0, 7000]) == (0, 7000)  # nothing trained yet: the schedule is what it will save


def test_cli_runs_point_at_folders_and_series_but_stop_on_bad_steps_first(empty_home, trainer_folder,
                                                                          olmo_like_cache, tmp_path, monkeypatch):
    from huggingface_hub import constants

    root, _ = trainer_folder
    cache, _ = olmo_like_cache
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    result = runner.invoke(app, ["run", "--suite", str(root), "--steps", "10,30", "--out", str(tmp_path / "r")])
    assert one_sentence(result, "no checkpoint at step 30; nearest saved steps: [20, 40]")
    result = runner.invoke(app, ["run", "--suite", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    assert one_sentence(result, "missing does not exist")
    result = runner.invoke(app, ["run", "--suite", "acme/olmo-tiny", "--steps", "1000",
                                 "--out", str(tmp_path / "r")])
    assert one_sentence(result, "no revision of acme/olmo-tiny matching 'step{step}'")
    assert built_nothing(empty_home)

    info = runner.invoke(app, ["suite", "info", str(root)])
    assert info.exit_code == 0, info.output
    assert "3 cached" in info.stdout and "checkpoint-10, checkpoint-20, checkpoint-40" in info.stdout
    info = runner.invoke(app, ["suite", "info", "acme/olmo-tiny", "--revision-pattern", "step{step}-tokens{t}B"])
    assert info.exit_code == 0, info.output
    assert "cached steps: [1000, 2000, 3000]" in info.stdout
    listed = runner.invoke(app, ["suite", "list"])
    assert listed.exit_code == 0 and "acme/olmo-tiny\t3 revisions\tstep1000-tokens4B" in listed.stdout
