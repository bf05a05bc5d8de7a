"""Classifier statistics against references: AUROC and F1 against scikit-learn, Welch's t against scipy, the
non-trivial F1 threshold, the problem bootstrap, split hygiene."""

import numpy as np
import pandas as pd
import pytest

from codedyn.analysis.classifier import (
    Labels,
    SplitLeak,
    auroc,
    best_threshold,
    check_split_hygiene,
    classification_metrics,
    latent_scores,
    problem_weights,
    select_latents,
    welch_t,
)


def _samples(n_problems: int, seed: int) -> pd.DataFrame:
    """Two samples (correct, incorrect) per problem; problems split 50 / 10 / 40."""
    rng = np.random.default_rng(seed)
    sizes = [n_problems // 2, n_problems // 10, n_problems - n_problems // 2 - n_problems // 10]
    splits = rng.permutation(np.repeat(["analysis", "tuning", "validation"], sizes))
    return pd.DataFrame([{"problem_id": f"P{k}", "sample_id": f"P{k}/{kind}", "is_correct": kind == "ref",
                          "split": splits[k], "operator": None if kind == "ref" else "off_by_one"}
                         for k in range(n_problems) for kind in ("ref", "mut")])


def test_a_problem_in_two_splits_is_caught():
    frame = _samples(20, 0)
    check_split_hygiene(frame)
    leaked = frame.copy()
    leaked.loc[leaked.index[1], "split"] = "validation" if leaked.loc[leaked.index[0], "split"] != "validation" \
        else "analysis"  # the mutant of problem P0 moves to another split than its reference
    with pytest.raises(SplitLeak, match="more than one split"):
        Labels.from_samples(leaked)
    with pytest.raises(SplitLeak, match="unknown split"):
        check_split_hygiene(frame.assign(split="train"))


# ------------------------------------------------------------------------------------------ estimators


def test_auroc_and_classification_metrics_match_sklearn():
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    rng = np.random.default_rng(0)
    score = np.round(rng.normal(size=80), 1)  # rounded: ties happen
    positive = rng.random(80) < 0.4
    assert auroc(score, positive) == pytest.approx(roc_auc_score(positive, score))
    predicted = score > 0.2
    got = classification_metrics(predicted, positive, np.ones((1, 80)))
    assert got["precision"][0] == pytest.approx(precision_score(positive, predicted))
    assert got["recall"][0] == pytest.approx(recall_score(positive, predicted))
    assert got["f1"][0] == pytest.approx(f1_score(positive, predicted))
    # Integer weights are the same as duplicating samples.
    weights = rng.integers(0, 3, 80)
    dup = np.repeat(np.arange(80), weights)
    assert auroc(score, positive, weights[None].astype(float))[0] == pytest.approx(
        roc_auc_score(positive[dup], score[dup]))
    assert classification_metrics(predicted, positive, weights[None].astype(float))["f1"][0] == pytest.approx(
        f1_score(positive[dup], predicted[dup]))


def test_best_threshold_maximises_f1_over_non_trivial_thresholds():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    score, positive = rng.normal(size=60), rng.random(60) < 0.5
    score[positive] += 0.8
    threshold = best_threshold(score, positive)
    best = max(f1_score(positive, score > t) for t in score)  # every rule that leaves some sample negative
    assert f1_score(positive, score > threshold) == pytest.approx(best)
    assert (score <= threshold).any()
    # A useless score: max-F1 would call everything positive; the non-trivial rule flags only part of the samples.
    noise = rng.normal(size=60)
    assert (noise <= best_threshold(noise, positive)).any()
    assert best_threshold(np.zeros(5), positive[:5]) == 0.0  # never fires: predicts its class when it fires


def test_welch_t_matches_scipy_and_scores_are_separations():
    from scipy.stats import ttest_ind

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(30, 5)), rng.normal(0.5, 2, size=(45, 5))
    np.testing.assert_allclose(welch_t(a, b), ttest_ind(a, b, equal_var=False).statistic)
    latents = np.maximum(rng.normal(size=(40, 6)), 0)
    is_correct = np.arange(40) < 15
    scores = latent_scores(latents, is_correct)
    np.testing.assert_allclose(scores["separation"],
                               (latents[:15] > 0).mean(0) - (latents[15:] > 0).mean(0))
    eligible = np.ones(6, dtype=bool)
    top_c, top_i = select_latents(scores, eligible)
    assert top_c == int(np.argmax(scores["separation"])) and top_i == int(np.argmin(scores["separation"]))
    eligible[top_c] = False  # a general latent is never chosen
    assert select_latents(scores, eligible)[0] != top_c


def test_problem_bootstrap_keeps_problems_together():
    problem = np.array([0, 0, 1, 1, 2, 2, 2])
    weights = problem_weights(problem, 300, seed=0)
    for p in range(3):
        members = weights[:, problem == p]
        assert (members == members[:, :1]).all()
    # One sample per problem: the multiplicities of the three problems always add up to three draws.
    np.testing.assert_array_equal(weights[:, [0, 2, 4]].sum(axis=1), 3)
    assert weights[:, 0].mean() == pytest.approx(1.0, abs=0.15)
    np.testing.assert_array_equal(weights, problem_weights(problem, 300, seed=0))  # paired across checkpoints
