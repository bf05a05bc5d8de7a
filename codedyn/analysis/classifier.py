"""Classifier statistics: how well a scalar score per sample (an SAE latent's activation, a probe's probability)
detects incorrect code, with intervals that resample problems.

Pure functions of arrays (no run folders, no models): the latents' separation scores and Welch's t, the selection of
the top correct- and incorrect-predicting latents, Mann-Whitney AUROC and precision / recall / F1 under bootstrap
weights, the F1-optimal non-trivial threshold, the problem bootstrap, the logistic-regression probe, and the
bootstrap that redoes the latent selection in every replicate. Every function sees the split it is meant to see:
selection on the analysis rows, thresholds on tuning, metrics on validation (:class:`Labels` holds the split of each
row, and :func:`check_split_hygiene` refuses a problem in two splits). Experiment 2
(:mod:`codedyn.experiments.emergence`) applies them to every checkpoint's SAE latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from codedyn.runs.layout import SPLITS

METRICS = ("auroc", "f1", "precision", "recall")


class SplitLeak(ValueError):
    """A problem appears in more than one split (or a split name is unknown)."""


# -------------------------------------------------------------------------------------------------- splits


def check_split_hygiene(samples) -> None:
    """Raise :class:`SplitLeak` if any problem id has samples in two splits, or a split is not a known one."""
    unknown = sorted(set(samples["split"]) - set(SPLITS))
    if unknown:
        raise SplitLeak(f"unknown split name(s) {unknown}; expected {list(SPLITS)}")
    per_problem = samples.groupby("problem_id")["split"].nunique()
    leaked = sorted(per_problem[per_problem > 1].index)
    if leaked:
        raise SplitLeak(f"{len(leaked)} problem(s) appear in more than one split, e.g. {leaked[:3]}")


@dataclass(frozen=True)
class Labels:
    """What the analysis needs about the samples: correctness, split, resampling unit and operator per row."""

    is_correct: np.ndarray  # [N] bool
    split: np.ndarray  # [N] str
    problem: np.ndarray  # [N] int code of the unit intervals resample: the sample's group (its problem, or for
    # planted programs their operation pair, which the programs of one pair share: data.problems.Problem.group)
    operator: np.ndarray  # [N] object (None for correct samples)

    @classmethod
    def from_samples(cls, samples) -> Labels:
        check_split_hygiene(samples)
        units = samples["group"] if "group" in samples else samples["problem_id"]  # (datasets before groups)
        codes = {unit: k for k, unit in enumerate(sorted(set(units)))}
        operator = samples["operator"] if "operator" in samples else [None] * len(samples)
        return cls(samples["is_correct"].to_numpy(dtype=bool), samples["split"].to_numpy(dtype=object),
                   np.asarray([codes[u] for u in units]),
                   np.asarray([o if isinstance(o, str) else None for o in operator], dtype=object))

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)


# -------------------------------------------------------------------------------------------------- scoring


def welch_t(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Welch's t per column of a [n_a, m] vs b [n_b, m]: (mean_a - mean_b) / sqrt(var_a / n_a + var_b / n_b);
    NaN where both groups are constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    se = np.sqrt(a.var(axis=0, ddof=1) / a.shape[0] + b.var(axis=0, ddof=1) / b.shape[0])
    diff = a.mean(axis=0) - b.mean(axis=0)
    return np.divide(diff, se, out=np.full(diff.shape, np.nan), where=se > 0)


def latent_scores(latents: np.ndarray, is_correct: np.ndarray) -> dict[str, np.ndarray]:
    """Per latent (columns of latents [n, m]): firing fractions among correct / incorrect samples, separation score
    (their difference) and Welch's t of the activation (correct minus incorrect)."""
    fires = latents > 0
    correct, incorrect = latents[is_correct], latents[~is_correct]
    if correct.shape[0] < 2 or incorrect.shape[0] < 2:
        raise ValueError("scoring needs at least two correct and two incorrect samples")
    frac_c, frac_i = fires[is_correct].mean(axis=0), fires[~is_correct].mean(axis=0)
    return {"frac_correct": frac_c, "frac_incorrect": frac_i, "separation": frac_c - frac_i,
            "welch_t": welch_t(correct, incorrect)}


def select_latents(scores: dict[str, np.ndarray], eligible: np.ndarray) -> tuple[int, int]:
    """(top correct-predicting, top incorrect-predicting) latent among ``eligible`` ones: largest / smallest
    separation, ties broken by Welch's t (NaN t counts as 0)."""
    idx = np.flatnonzero(eligible)
    if idx.size == 0:
        raise ValueError("no eligible latent to select from")
    sep, t = scores["separation"][idx], np.nan_to_num(scores["welch_t"][idx])
    best_correct = idx[np.lexsort((-t, -sep))[0]]
    best_incorrect = idx[np.lexsort((t, sep))[0]]
    return int(best_correct), int(best_incorrect)


# -------------------------------------------------------------------------------------------------- metrics


def auroc(score: np.ndarray, positive: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | float:
    """Mann-Whitney AUROC of ``score`` for the ``positive`` class (ties count 1/2); with ``weights`` [B, n]
    (bootstrap multiplicities) one value per row."""
    score, positive = np.asarray(score, dtype=np.float64), np.asarray(positive, dtype=bool)
    s_pos, s_neg = score[positive], score[~positive]
    wins = (s_pos[:, None] > s_neg[None, :]) + 0.5 * (s_pos[:, None] == s_neg[None, :])  # [P, Q]
    if weights is None:
        return float(wins.mean()) if wins.size else math.nan
    w = np.atleast_2d(weights)
    w_pos, w_neg = w[:, positive], w[:, ~positive]
    denominator = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    numerator = np.einsum("bp,pq,bq->b", w_pos, wins, w_neg)
    return np.divide(numerator, denominator, out=np.full(w.shape[0], np.nan), where=denominator > 0)


def classification_metrics(predicted: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 of boolean predictions [n] for the ``positive`` class, weighted by rows of [B, n]."""
    w = np.atleast_2d(weights).astype(np.float64)
    tp = w @ (predicted & positive)
    fp = w @ (predicted & ~positive)
    fn = w @ (~predicted & positive)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return {"precision": precision, "recall": recall, "f1": f1}


def best_threshold(score: np.ndarray, positive: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The threshold maximising F1 of "score > threshold" on these (tuning) samples, among the midpoints between
    sorted distinct scores; ties go to the lowest threshold; ``weights`` [n] are bootstrap multiplicities. The
    trivial rule "everything is positive" is not a candidate: it is no detector, yet wins max-F1 whenever the signal
    is weak (F1 = 2p / (1 + p), 0.67 for balanced classes). With a single distinct score the threshold is that score
    (a latent that never fires on the tuning split predicts its class when it fires)."""
    score = np.asarray(score, dtype=np.float64)
    w = np.ones(score.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    values = np.unique(score[w > 0])
    if values.size < 2:
        return float(values[0]) if values.size else 0.0
    candidates = (values[:-1] + values[1:]) / 2
    predicted = score[None, :] > candidates[:, None]  # [C, n]
    tp = predicted.astype(np.float64) @ (w * positive)
    f1 = 2 * tp / (predicted.astype(np.float64) @ w + (w * positive).sum())
    return float(candidates[int(np.argmax(f1))])


def problem_weights(problem: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap weights [n_boot, n] resampling the problems of these samples (each problem's samples share its
    multiplicity). The same seed and problems give the same resamples at every checkpoint."""
    from codedyn.resample import group_multiplicities

    return group_multiplicities(problem, n_boot, seed)


@dataclass(frozen=True)
class Predictor:
    """A scalar score per sample; "score > threshold" predicts class ``positive_correct`` (True = correct)."""

    name: str
    score: np.ndarray  # [N] over all samples
    positive_correct: bool
    threshold: float
    latent: int = -1  # SAE latent index, -1 for the probe
    direction: np.ndarray | None = None  # the probe's unit direction [d] in the raw residual's coordinates (None
    # for a latent): the score rises along it (:func:`raw_direction`)

    def positive(self, labels: Labels) -> np.ndarray:
        return labels.is_correct if self.positive_correct else ~labels.is_correct

    def flags_incorrect(self) -> np.ndarray:
        above = self.score > self.threshold
        return ~above if self.positive_correct else above


def evaluate(predictor: Predictor, labels: Labels, split: str, weights: np.ndarray) -> dict[str, tuple]:
    """metric -> (value, replicates [B]) on one split; ``weights`` [B, n_split] from :func:`problem_weights`."""
    rows = labels.rows(split)
    score, positive = predictor.score[rows], predictor.positive(labels)[rows]
    predicted = score > predictor.threshold
    ones = np.ones((1, rows.size))
    point = {"auroc": auroc(score, positive, ones), **classification_metrics(predicted, positive, ones)}
    reps = {"auroc": auroc(score, positive, weights), **classification_metrics(predicted, positive, weights)}
    return {m: (float(point[m][0]), reps[m]) for m in METRICS}


def make_latent_predictor(name: str, latents: np.ndarray, latent: int, positive_correct: bool,
                          labels: Labels) -> Predictor:
    """A latent's activation as a predictor, thresholded on the tuning split."""
    score = latents[:, latent].astype(np.float64)
    tune = labels.rows("tuning")
    positive = labels.is_correct if positive_correct else ~labels.is_correct
    return Predictor(name, score, positive_correct, best_threshold(score[tune], positive[tune]), latent)


def select_predictors(latents: np.ndarray, is_correct_analysis: np.ndarray, eligible: np.ndarray,
                       labels: Labels, prefix: str = "") -> tuple[list[Predictor], Predictor, dict]:
    """Selection on the analysis rows (with the given analysis labels), thresholds on tuning."""
    analysis = labels.rows("analysis")
    scores = latent_scores(latents[analysis], is_correct_analysis)
    top_correct, top_incorrect = select_latents(scores, eligible)
    chosen = [make_latent_predictor(f"{prefix}correct_latent", latents, top_correct, True, labels),
              make_latent_predictor(f"{prefix}incorrect_latent", latents, top_incorrect, False, labels)]
    in_sample = [auroc(p.score[analysis], is_correct_analysis if p.positive_correct else ~is_correct_analysis)
                 for p in chosen]
    best = chosen[int(np.argmax(in_sample))]
    return chosen, best, scores


def selection_bootstrap(latents: np.ndarray, labels: Labels, eligible: np.ndarray,
                        weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validation replicates [B] of the best latent's metrics with the **selection redone in every replicate**:
    replicate b resamples analysis, tuning and validation problems (``weights[split][b]``), picks the top correct-
    and incorrect-predicting latents by weighted separation (ties by the weighted difference of mean activations,
    a stand-in for Welch's t), keeps the one with the higher weighted analysis AUROC, thresholds it on the weighted
    tuning split and evaluates it on the weighted validation split. Its spread holds the luck of the selection as
    well as the validation sampling, which matters when the chosen latent changes between checkpoints."""
    analysis, tune, valid = labels.rows("analysis"), labels.rows("tuning"), labels.rows("validation")
    acts = latents[analysis].astype(np.float64)
    fires = (acts > 0).astype(np.float64)
    correct = labels.is_correct[analysis]
    w_a = weights["analysis"]
    w_c, w_i = w_a * correct, w_a * ~correct  # [B, n_a]
    n_c, n_i = w_c.sum(axis=1, keepdims=True), w_i.sum(axis=1, keepdims=True)
    sep = w_c @ fires / n_c - w_i @ fires / n_i  # [B, m]
    diff = w_c @ acts / n_c - w_i @ acts / n_i
    key = sep + 1e-6 * diff / (1 + np.abs(diff))  # the tie-breaker never outweighs one sample of separation
    top_c = np.where(eligible, key, -np.inf).argmax(axis=1)
    top_i = np.where(eligible, key, np.inf).argmin(axis=1)
    out = {m: np.empty(w_a.shape[0]) for m in METRICS}
    for b in range(w_a.shape[0]):
        options = []
        for latent, positive_correct in ((top_c[b], True), (top_i[b], False)):
            positive = correct if positive_correct else ~correct
            options.append((float(auroc(acts[:, latent], positive, w_a[b : b + 1])[0]), latent, positive_correct))
        _, latent, positive_correct = max(options, key=lambda o: -np.inf if np.isnan(o[0]) else o[0])
        score = latents[:, latent].astype(np.float64)
        positive = labels.is_correct if positive_correct else ~labels.is_correct
        threshold = best_threshold(score[tune], positive[tune], weights["tuning"][b])
        w_v = weights["validation"][b : b + 1]
        out["auroc"][b] = auroc(score[valid], positive[valid], w_v)[0]
        for m, value in classification_metrics(score[valid] > threshold, positive[valid], w_v).items():
            out[m][b] = value[0]
    return out


def raw_direction(coef: np.ndarray, feature_scale: np.ndarray) -> np.ndarray:
    """The unit direction [d] in the residual's raw coordinates of a linear score fitted on standardised features:
    coef·(x - mean) / scale = (coef / scale)·x + const, so the raw direction is coef / scale, normalised."""
    direction = np.asarray(coef, dtype=np.float64).ravel() / np.asarray(feature_scale, dtype=np.float64).ravel()
    norm = np.linalg.norm(direction)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("the probe has no direction (all coefficients zero or not finite)")
    return direction / norm


def fit_probe(resid: np.ndarray, labels: Labels, c: float, seed: int) -> Predictor:
    """Logistic regression (standardised features, L2, inverse strength ``c``) fitted on the analysis split;
    score = P(correct); threshold on tuning; ``direction`` the unit vector in raw residual coordinates along which
    P(correct) rises."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    analysis, tune = labels.rows("analysis"), labels.rows("tuning")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    model.fit(resid[analysis].astype(np.float64), labels.is_correct[analysis])
    score = model.predict_proba(resid.astype(np.float64))[:, list(model.classes_).index(True)]
    scaler, logistic = model[0], model[-1]
    sign = 1.0 if list(logistic.classes_).index(True) == 1 else -1.0  # sklearn's coef_ points to classes_[1]
    direction = raw_direction(sign * logistic.coef_[0], scaler.scale_)
    return Predictor("probe", score, True, best_threshold(score[tune], labels.is_correct[tune]), direction=direction)
