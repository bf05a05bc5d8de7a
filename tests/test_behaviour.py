"""Behavioural ground truth: verdict accuracy, loss gap at the mutated tokens, the emergence bracket."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from codedyn.config import CodedynConfig, DatasetConfig, PlantedTaskConfig, ToySuiteConfig
from codedyn.experiments.behaviour import (
    VERDICT_QUADS,
    bootstrap_mean,
    compute_behaviour,
    emergence_bracket,
    mutation_loss_gaps,
    run_behaviour,
)

TINY = ToySuiteConfig(
    vocab_size=400, d_model=16, n_layers=2, n_heads=2, d_ff=32, context=64, batch_size=4, steps=12, warmup_steps=2,
    span_min=2, span_max=8, checkpoint_every=5, eval_span=8, eval_sequences=4,
    planted=PlantedTaskConfig(enabled=True, onset=4, eval_quads=8),
)


def test_bootstrap_mean_resamples_whole_groups():
    values = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    groups = np.array([0, 0, 1, 1, 2, 2])  # group means 1, 0, 0.5
    reps = bootstrap_mean(values, groups, 4000, seed=0)
    assert reps.mean() == pytest.approx(0.5, abs=0.02)
    # Each replicate is a mean over three whole groups: only multiples of 1/6 are possible.
    assert np.allclose(reps * 6, np.round(reps * 6))
    assert np.array_equal(reps, bootstrap_mean(values, groups, 4000, seed=0))  # same resamples at every step


def test_emergence_bracket_finds_the_first_checkpoint_above_chance():
    steps = [0, 1000, 2000, 3000, 4000]
    rng = np.random.default_rng(0)
    truth = np.array([0.5, 0.5, 0.5, 0.7, 0.9])
    reps = truth[:, None] + rng.normal(0, 0.01, (5, 1000))
    found = emergence_bracket(steps, truth, reps)
    assert found["between"] == [2000, 3000] and found["emerged"]
    flat = emergence_bracket(steps, np.full(5, 0.5), 0.5 + rng.normal(0, 0.01, (5, 1000)))
    assert not flat["emerged"] and flat["between"] is None


@pytest.fixture(scope="module")
def tiny_model_and_tokenizer():
    from codedyn.data.corpus import CodeCorpus
    from codedyn.models.toy import make_model, train_tokenizer

    corpus = CodeCorpus.stdlib()
    tokenizer = train_tokenizer([p.read_text() for p in corpus.split("train")[:20]], 400)
    torch.manual_seed(0)
    return make_model(TINY, len(tokenizer), tokenizer.eos_token_id), tokenizer


def test_loss_gap_is_the_summed_loss_difference_at_the_edited_tokens(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    prompt = 'def f(a, b):\n    """Return whether a is less than b."""\n'
    reference, mutant = "    return a < b\n", "    return a >= b\n"
    pairs = pd.DataFrame([{"prompt_correct": prompt, "prompt_incorrect": prompt, "solution_correct": reference,
                           "solution_incorrect": mutant, "problem_id_correct": "p", "operator_incorrect": "cmp",
                           "split_correct": "validation"}])
    [row] = mutation_loss_gaps(model, tokenizer, pairs, max_length=None)

    def losses(text):  # every token's next-token loss, by hand
        ids = torch.as_tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
        return ids[0].tolist(), (-logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]]).tolist()

    ref_ids, ref_loss = losses(prompt + reference)
    mut_ids, mut_loss = losses(prompt + mutant)
    lo = next(i for i in range(min(len(ref_ids), len(mut_ids))) if ref_ids[i] != mut_ids[i])
    hi = next(i for i in range(1, len(ref_ids)) if ref_ids[-i] != mut_ids[-i])  # first differing from the end
    expected = sum(mut_loss[lo - 1 : len(mut_ids) - hi]) - sum(ref_loss[lo - 1 : len(ref_ids) - hi])
    assert row["in_window"] and row["gap"] == pytest.approx(expected, abs=1e-4)


def test_behaviour_of_a_planted_suite_end_to_end(tmp_path):
    from codedyn.data.corpus import CodeCorpus
    from codedyn.data.pairs import build_dataset, load_dataset
    from codedyn.models.toy import SUITE_FILE, train_toy_suite

    corpus = CodeCorpus.stdlib()
    small = CodeCorpus(corpus.root, tuple(sorted(corpus.split("train")[:25] + corpus.split("heldout")[:3],
                                                 key=corpus.relative)))
    trained = train_toy_suite(TINY, hub_cache=tmp_path / "hub", corpus=small)
    dataset = load_dataset(build_dataset(DatasetConfig(source="planted", planted_problems=6,
                                                       candidates_per_operator=1), out_dir=tmp_path / "data"))
    config = CodedynConfig.model_validate({"toy": TINY.model_dump(), "sampling": {"n_bootstrap": 200}})
    import json

    study = SimpleNamespace(config=config, run_dir=tmp_path / "run", dataset=dataset, suite=trained.suite,
                            steps=(0, 5, 12), suite_record=json.loads((trained.folder / SUITE_FILE).read_text()),
                            output_dir=lambda name: (tmp_path / "run" / name).mkdir(parents=True, exist_ok=True)
                            or tmp_path / "run" / name)
    result = run_behaviour(study)
    table = result["table"]
    accuracy = table[table["quantity"] == "verdict_accuracy"]
    assert list(accuracy["step"]) == [0, 5, 12] and set(accuracy["n"]) == {VERDICT_QUADS}
    assert ((accuracy["low"] <= accuracy["value"]) & (accuracy["value"] <= accuracy["high"])).all()
    gaps = table[(table["quantity"] == "loss_gap") & (table["operator"] == "all")]
    assert set(gaps["n"]) == {6}
    assert "verdict_accuracy" in result["calls"] and "emergence" in result["calls"]
    assert (tmp_path / "run" / "behaviour" / "transitions.json").is_file()
    # Recomputing from the stored measurements gives the same table (nothing is measured again).
    again = compute_behaviour(study)["table"]
    pd.testing.assert_frame_equal(again, table)


def test_probe_auroc_recovers_a_planted_direction():
    """Two Gaussian classes d apart along one of 20 directions: AUROC = Phi(d / sqrt(2)); none: 1/2."""
    from statistics import NormalDist

    from codedyn.experiments.behaviour import probe_auroc

    rng = np.random.default_rng(0)

    def data(n, d):
        y = np.tile([True, False], n // 2)
        x = rng.normal(size=(n, 20))
        x[:, 3] += d * y
        return x, y

    fit_x, fit_y = data(2000, 1.5)
    eval_x, eval_y = data(4000, 1.5)
    value, reps = probe_auroc(fit_x, fit_y, eval_x, eval_y, np.arange(4000) // 2, 500, seed=0)
    expected = NormalDist().cdf(1.5 / np.sqrt(2))
    assert abs(value - expected) < 0.02 and np.quantile(reps, 0.025) < expected < np.quantile(reps, 0.975)
    fit_x, fit_y = data(2000, 0.0)
    eval_x, eval_y = data(4000, 0.0)
    value, reps = probe_auroc(fit_x, fit_y, eval_x, eval_y, np.arange(4000) // 2, 500, seed=0)
    assert np.quantile(reps, 0.025) < 0.5 < np.quantile(reps, 0.975)
