"""Readouts inside the training context: the readout context, the sample selection and the evaluation set."""

import numpy as np
import pandas as pd
import pytest

from tests.code_texts import PROMPT, SOLUTION, pair_texts


def test_readout_context_is_the_suite_context_or_a_lower_cap():
    from codedyn.config import ConfigError
    from codedyn.sampling.losses import readout_context

    assert readout_context(64, None, "sampling.max_readout_tokens") == 64
    assert readout_context(2048, 512, "emergence.max_readout_tokens") == 512
    with pytest.raises(ConfigError, match="sampling.max_readout_tokens 256 exceeds .* 64 tokens"):
        readout_context(64, 256, "sampling.max_readout_tokens")
    with pytest.raises(ConfigError, match="does not record its training context"):
        readout_context(None, None, "sampling.max_readout_tokens")
    assert readout_context(None, 128, "sampling.max_readout_tokens") == 128


def _frame():
    reference, early = pair_texts(30, 1)
    _, late = pair_texts(30, 28)
    rows = [
        {"sample_id": "P0:reference", "problem_id": "P0", "is_correct": True, "paired_with": None,
         "prompt": PROMPT, "solution": reference},
        {"sample_id": "P0:mutant0", "problem_id": "P0", "is_correct": False, "paired_with": "P0:reference",
         "prompt": PROMPT, "solution": early},
        {"sample_id": "P0:mutant1", "problem_id": "P0", "is_correct": False, "paired_with": "P0:reference",
         "prompt": PROMPT, "solution": late},
        {"sample_id": "P1:reference", "problem_id": "P1", "is_correct": True, "paired_with": None,
         "prompt": PROMPT, "solution": SOLUTION},
    ]
    return pd.DataFrame(rows)


def test_select_readout_leaves_out_and_counts_the_mutants_that_do_not_fit(tokenizer):  # noqa: F811
    from codedyn.sampling.losses import readout_evalset, select_readout

    readout = select_readout(tokenizer, _frame(), context=24)
    assert readout.excluded == ("P0:mutant0",)
    assert readout.samples["sample_id"].tolist() == ["P0:reference", "P0:mutant1", "P1:reference"]
    assert readout.record()["readout_excluded"] == 1 and readout.record()["readout_context"] == 24
    evalset = readout_evalset(tokenizer, readout)
    # No readout position reaches the context: every batch is at most 24 tokens wide.
    assert max(int(b.input_ids.shape[1]) for b in evalset.batches) <= 24
    assert evalset.n_samples == 3
    # The pair kept is read in one window: the same number of leading tokens is dropped from both.
    full = [len(tokenizer(PROMPT + s, add_special_tokens=False)["input_ids"]) for s in readout.samples["solution"]]
    dropped = np.asarray(full) - readout.lengths
    assert dropped[0] == dropped[1] > 0 and dropped[2] == 0


def test_readout_seed_holds_the_readout_set_while_seed_changes_the_draws(tokenizer):  # noqa: F811
    """Posteriors sampled with different ``seed`` and one ``readout_seed`` read out the same programs (so their
    estimates are of the same quantities) and draw different chains; left at None the readout seed is the seed, and
    the default configuration dumps without the field."""
    import torch

    from codedyn.config import SamplingConfig, load_config
    from codedyn.sampling.posterior import posterior_key, readout_samples
    from codedyn.sampling.sgld import sample_posterior
    from tests.neox_models import row_losses, tiny_lm

    rows = [{"sample_id": f"P{p}:{k}", "problem_id": f"P{p}", "is_correct": k == "reference",
             "paired_with": None if k == "reference" else f"P{p}:reference", "prompt": PROMPT,
             "solution": SOLUTION + f"# {p} {k}\n"} for p in range(12) for k in ("reference", "mutant0")]
    dataset = type("Dataset", (), {"samples": pd.DataFrame(rows)})()

    def chosen(config):
        return readout_samples(dataset, config)["sample_id"].tolist()

    fixed = SamplingConfig(max_problems=4, readout_seed=7, seed=0)
    reseeded = fixed.model_copy(update={"seed": 1})
    ids = chosen(fixed)
    assert ids == chosen(reseeded)
    # Without a readout seed the sampler seed chooses them, so seeds 0 and 1 read different programs.
    assert chosen(SamplingConfig(max_problems=4, seed=0)) != chosen(SamplingConfig(max_problems=4, seed=1))
    assert chosen(SamplingConfig(max_problems=4, seed=7)) == ids  # None = seed: readout_seed 7 is seed 7's set

    model = tiny_lm(seed=2)
    windows = torch.randint(0, 50, (16, 9), generator=torch.Generator().manual_seed(2))
    draws = [sample_posterior(model, windows, row_losses(windows[:4]), config.model_copy(
        update={"lr": 1e-4, "n_beta": 30.0, "localization": 100.0, "chains": 2, "draws": 4, "burn_in": 2,
                "batch_size": 8}))["sample_loss"].values for config in (fixed, reseeded)]
    assert not np.allclose(draws[0], draws[1])

    # The default dumps without the field, so setting it is what changes a key.
    assert "readout_seed" not in SamplingConfig().model_dump(mode="json")
    assert posterior_key("toy", 7000, "d", load_config("default").sampling) != posterior_key(
        "toy", 7000, "d", load_config("default").sampling.model_copy(update={"readout_seed": 0}))
    assert posterior_key("toy", 7000, "d", fixed) != posterior_key("toy", 7000, "d", fixed.model_copy(
        update={"readout_seed": 8}))
