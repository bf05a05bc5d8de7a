"""Behavioural ground truth: verdict contrast and accuracy, loss gap at the mutated tokens, the emergence bracket."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from codedyn.config import CodedynConfig, DatasetConfig, ToySuiteConfig
from codedyn.experiments.behaviour import (
    VERDICT_QUADS,
    bootstrap_mean,
    compute_behaviour,
    emergence_call,
    mutation_loss_gaps,
    run_behaviour,
)
from tests.studies import TINY_PLANTED_TOY_FIELDS

TINY = ToySuiteConfig(**TINY_PLANTED_TOY_FIELDS)


def test_bootstrap_mean_resamples_whole_groups():
    values = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    groups = np.array([0, 0, 1, 1, 2, 2])  # group means 1, 0, 0.5
    reps = bootstrap_mean(values, groups, 4000, seed=0)
    assert reps.mean() == pytest.approx(0.5, abs=0.02)
    # Each replicate is a mean over three whole groups: only multiples of 1/6 are possible.
    assert np.allclose(reps * 6, np.round(reps * 6))
    assert np.array_equal(reps, bootstrap_mean(values, groups, 4000, seed=0))  # same resamples at every step


def test_the_emergence_is_the_onset_of_the_verdict_contrast(monkeypatch):
    """Departure from the pre-onset baseline by more than the calibrated margin, bracketed by the checkpoint
    before; a precisely measured change inside the margin is flat, not an emergence."""
    import codedyn.analysis.margins as margins

    monkeypatch.setattr(margins, "MARGINS_FILE", margins.MARGINS_FILE.with_name("absent.json"))  # no margin: 0
    steps = [0, 1000, 2000, 3000, 4000]
    rng = np.random.default_rng(0)
    truth = np.array([0.0, 0.0, 0.01, 0.2, 0.9])
    reps = truth[:, None] + rng.normal(0, 0.002, (5, 1000))
    plain = emergence_call(steps, truth, reps, onset=1000)
    assert plain["emerged"] and plain["bracket"] == [1000, 2000]  # 0.01 is a departure from 0 without a margin
    monkeypatch.setattr(margins, "load_margins", lambda path=None: margins.Margins({"verdict contrast": 0.05}))
    found = emergence_call(steps, truth, reps, onset=1000)
    assert found["emerged"] and found["bracket"] == [2000, 3000] and "0.05" in found["criterion"]
    flat = emergence_call(steps, np.zeros(5), rng.normal(0, 0.002, (5, 1000)), onset=1000)
    assert not flat["emerged"] and flat["kind"] == "flat" and flat["bracket"] is None


def _verdict_margins(n_quads: int, contrast: float, rng, lean: float = 3.0, noise: float = 0.1) -> np.ndarray:
    """Margins of crossed quadruples: random spec and body leans, per-program noise, and a match bonus
    ``contrast`` (so the quadruple's crossed contrast is ``contrast`` on average)."""
    spec, body = rng.normal(size=(n_quads, 2)) * lean, rng.normal(size=(n_quads, 2)) * lean
    m = np.stack([spec[:, 0] + body[:, 0], spec[:, 1] + body[:, 1], spec[:, 0] + body[:, 1],
                  spec[:, 1] + body[:, 0]], axis=1) + rng.normal(0, noise, (n_quads, 4))
    return (m + np.array([contrast, contrast, -contrast, -contrast])).ravel()


def test_the_verdict_contrast_separates_null_like_bias_from_judgement(monkeypatch):
    """Calibration on planted margins. A null-like model (a consistent match bias of 0.005 nats, as a null twin
    measured) orders most quadruples the same way round, so its verdict accuracy leaves 1/2, but with a margin of
    0.05 nats its contrast never emerges and reads flat: over 20 such curves, no emergence. A model whose match bonus
    grows to 0.3 nats is found, bracketed where its bonus leaves the margin."""
    import codedyn.analysis.margins as margins
    from codedyn.models.toy import crossed_contrast, crossed_hits

    monkeypatch.setattr(margins, "load_margins", lambda path=None: margins.Margins({"verdict contrast": 0.05}))
    rng = np.random.default_rng(0)
    pairs = np.repeat(np.arange(45), 7)[:300]
    steps = [0, 1000, 2000, 3000, 4000]
    false_emergences, flat, nulls_off_chance = 0, 0, 0
    for _ in range(20):
        curves = [_verdict_margins(300, 0.005 * rng.choice([-1, 1]), rng, lean=0.1, noise=0.01) for _ in steps]
        reps = np.stack([bootstrap_mean(crossed_contrast(m), pairs, 400, 1) for m in curves])
        values = np.array([crossed_contrast(m).mean() for m in curves])
        found = emergence_call(steps, values, reps, onset=1000)
        false_emergences += found["emerged"]
        flat += found["kind"] == "flat"
        nulls_off_chance += any(abs(crossed_hits(m).mean() - 0.5) > 0.1 for m in curves)
    assert false_emergences == 0 and flat == 20 and nulls_off_chance >= 15  # what the accuracy alone would call
    bonus = [0.0, 0.0, 0.01, 0.3, 1.0]
    curves = [_verdict_margins(300, b, rng) for b in bonus]
    reps = np.stack([bootstrap_mean(crossed_contrast(m), pairs, 400, 1) for m in curves])
    values = np.array([crossed_contrast(m).mean() for m in curves])
    assert emergence_call(steps, values, reps, onset=1000)["bracket"] == [2000, 3000]
    # Leans of several nats per spec and body cancel exactly: the contrast reads the bonus alone.
    assert values == pytest.approx(bonus, abs=0.02)


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
    from codedyn.models.toy import train_toy_suite
    from codedyn.runs.layout import SUITE_FILE

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
    table = result.table
    for quantity in ("verdict_contrast", "verdict_accuracy"):
        verdicts = table[table["quantity"] == quantity]
        assert list(verdicts["step"]) == [0, 5, 12] and set(verdicts["n"]) == {VERDICT_QUADS}
        assert ((verdicts["low"] <= verdicts["value"]) & (verdicts["value"] <= verdicts["high"])).all()
    gaps = table[(table["quantity"] == "loss_gap") & (table["operator"] == "all")]
    assert set(gaps["n"]) == {6}
    assert "verdict_contrast" in result.calls and "emergence" in result.calls
    assert "verdict_accuracy" not in result.calls  # its sign-only reading is drawn, never called
    assert (tmp_path / "run" / "behaviour" / "transitions.json").is_file()
    # Recomputing from the stored measurements gives the same table (nothing is measured again).
    again = compute_behaviour(study).table
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
