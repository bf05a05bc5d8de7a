"""Experiment 2: feature emergence. An SAE per checkpoint, correctness latents, their accuracy over training.

The method of Tahimic & Cheng (2025), "Mechanistic Interpretability of Code Correctness in LLMs via Sparse
Autoencoders", applied at every checkpoint with the same SAE architecture and hyperparameters:

1. read resid_post at the **final token** of prompt + code for every dataset sample, and at every token of corpus
   windows (SAE training and metrics) and at the final token of held-out corpus windows (the general text);
2. train a TopK SAE per layer (:mod:`codedyn.models.sae`); report explained variance, L0, dead fraction and the CE
   loss recovered when the reconstruction is spliced into the model, each with an interval over held-out windows;
3. score every latent on the **analysis split** only: separation = P(fires | correct) - P(fires | incorrect)
   and Welch's t of its activation; latents firing on more than ``general_threshold`` of the general windows' final
   tokens are dropped ("general" latents, the thesis' per-sample filter);
4. pick the top correct-predicting latent (largest separation, ties by t) and the top incorrect-predicting one
   (smallest separation); the "best latent" is the one of the two with the larger AUROC on the analysis split;
5. choose each predictor's threshold on the **tuning split** (max F1 over non-trivial thresholds, see
   :func:`best_threshold`; "score > threshold" predicts the predictor's class), and
   report AUROC, F1, precision and recall on the **validation split**, with bootstrap intervals that resample
   validation problems (a problem's samples stay together). The best latent's interval redoes the selection and
   the threshold in every replicate on resampled analysis and tuning problems (:func:`selection_bootstrap`), so it
   also covers the luck of picking a latent; the other intervals are conditional on the chosen predictor. The same
   problem resamples are used at every checkpoint, so differences between checkpoints are paired;
6. controls: a logistic-regression probe on the raw standardised residual (fitted on analysis, threshold on
   tuning), the same selection under labels permuted within the analysis split (``shuffles`` permutations: how
   good does a latent look that was selected on noise?), and a seeded random live, non-general latent;
7. per mutation operator: the fraction of validation incorrect samples each predictor flags as incorrect at its
   threshold (and the false-alarm rate on correct samples).
8. where the probe's direction goes in the SAE (:func:`probe_direction_rows`): on the validation samples, how much
   of the spread and of the correctness gap along the probe's raw-coordinate direction the SAE's reconstruction
   keeps, and over how many latents it is spread (:mod:`codedyn.analysis.direction`). When the probe detects
   correctness and the best latent does not, this says whether the SAE lost the direction or split it.

Split hygiene is enforced (:func:`check_split_hygiene`: no problem in two splits) and the selection functions only
ever receive the analysis rows. Over training (:func:`compute_emergence`): AUROC / F1 curves with intervals, the LLC
of Experiment 1 on a twin axis when it exists, the toy suite's induction formation, and the sharp-vs-gradual verdict
of :func:`codedyn.analysis.transitions.classify_trajectory` on the validation bootstrap replicates. The classifier
statistics named here (scores, selection, AUROC and F1, thresholds, the probe, their bootstrap) are
:mod:`codedyn.analysis.classifier`'s; this module applies them to every checkpoint's SAE latents.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codedyn.analysis.classifier import (
    METRICS,
    Labels,
    Predictor,
    check_split_hygiene,
    evaluate,
    fit_probe,
    make_latent_predictor,
    problem_weights,
    select_predictors,
    selection_bootstrap,
)
from codedyn.progress import SILENT, Progress
from codedyn.runs.layout import SAE_ARRAYS, SAE_METRICS, SPLITS, TRANSITIONS_FILE, UNIT_FILE

if TYPE_CHECKING:
    import pandas as pd

    from codedyn.experiments.study import Study

EMERGENCE_DIR = "emergence"
UNIT_FORMAT = 4  # bump when a change here changes what a unit stores (4: the SAEs, their quality and the latents
# only; scoring, selection, controls and bootstrap moved to the analysis)
# Settings only the analysis reads (scoring, selection, controls): they stay out of the SAE unit's key, so changing
# one never retrains an SAE. (n_bootstrap stays in: the SAE quality intervals are computed with the unit.)
ANALYSIS_ONLY = frozenset({"general_threshold", "probe_c", "shuffles"})
PREDICTORS = ("best_latent", "correct_latent", "incorrect_latent", "probe", "shuffled", "random_latent")
DIRECTION_TABLE = "probe_direction.parquet"  # how much of the probe's direction each SAE keeps (step, layer, quantity)
CURVES = ("best_latent", "probe", "shuffled", "random_latent")  # drawn over training and tested for transitions


@dataclass
class LayerAnalysis:
    """Everything one layer of one checkpoint contributes: latent scores, selection, metrics with replicates."""

    scores: Any  # DataFrame, one row per latent
    selection: dict
    metrics: list[dict]  # rows: predictor, latent, split, metric, value, low, high
    replicates: dict[str, np.ndarray]  # "<predictor>/<metric>" -> validation replicates [B]
    operators: list[dict]  # rows: predictor, operator, n, value, low, high
    probe_direction: np.ndarray | None = None  # [d] the probe's unit direction in raw residual coordinates
    direction: list[dict] = field(default_factory=list)  # rows: quantity, value, low, high (probe_direction_rows)


def eligible_latents(general_freq: np.ndarray, general_threshold: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(general, eligible, fallback)``: latents firing on more than ``general_threshold`` of the general windows'
    final tokens are general and not eligible; when every latent is general all are scored (``fallback``)."""
    general = general_freq > general_threshold
    eligible = ~general
    fallback = not eligible.any()
    if fallback:  # every latent is general: score all of them rather than none (recorded in the selection)
        eligible = np.ones_like(general)
    return general, eligible, fallback


def latent_choice(latents: np.ndarray, general_freq: np.ndarray, labels: Labels, general_threshold: float):
    """The selection of :func:`analyse_layer` without its controls and bootstrap (cheap): ``(scores, selection)``,
    scores a DataFrame per latent (separation, welch_t, general_freq, general), selection the chosen
    ``correct_latent`` / ``incorrect_latent`` / ``best_latent``. The same choice analyse_layer makes."""
    general, eligible, _ = eligible_latents(general_freq, general_threshold)
    chosen, best, scores = select_predictors(latents, labels.is_correct[labels.rows("analysis")], eligible, labels)
    return _scores_table(scores, general_freq, general), {
        "correct_latent": chosen[0].latent, "incorrect_latent": chosen[1].latent, "best_latent": best.latent}


def _scores_table(scores: dict[str, np.ndarray], general_freq: np.ndarray, general: np.ndarray):
    """One row per latent: its index, separation, Welch t, general-text firing rate and general flag."""
    import pandas as pd

    return pd.DataFrame({"latent": np.arange(general_freq.shape[0]), **scores, "general_freq": general_freq,
                         "general": general})


def analyse_layer(latents: np.ndarray, resid: np.ndarray, general_freq: np.ndarray, labels: Labels,
                  general_threshold: float, probe_c: float, shuffles: int, n_boot: int, seed: int) -> LayerAnalysis:
    """Score, select and evaluate every predictor of one layer.

    latents [N, m]: final-token SAE latent activations of every sample; resid [N, d]: the raw final-token
    residuals (probe); general_freq [m]: firing fraction on the general windows' final tokens.
    """

    from codedyn.analysis.stats import percentile_ci

    analysis = labels.rows("analysis")
    general, eligible, fallback = eligible_latents(general_freq, general_threshold)
    chosen, best, scores = select_predictors(latents, labels.is_correct[analysis], eligible, labels)
    predictors = [Predictor("best_latent", best.score, best.positive_correct, best.threshold, best.latent), *chosen,
                  fit_probe(resid, labels, probe_c, seed)]
    rng = np.random.default_rng(seed)
    live = eligible & (latents[analysis] > 0).any(axis=0)
    pool = np.flatnonzero(live) if live.any() else np.flatnonzero(eligible)
    random_latent = int(rng.choice(pool))
    predictors.append(make_latent_predictor("random_latent", latents, random_latent,
                                            bool(scores["separation"][random_latent] >= 0), labels))
    shuffled = []
    for s in range(shuffles):
        permuted = np.random.default_rng([seed, s]).permutation(labels.is_correct[analysis])
        shuffled.append(select_predictors(latents, permuted, eligible, labels, prefix="shuffled_")[1])

    weights = {split: problem_weights(labels.problem[labels.rows(split)], n_boot, seed) for split in SPLITS}
    metrics, replicates = [], {}
    for split in SPLITS:
        for predictor in predictors:
            for metric, (value, reps) in evaluate(predictor, labels, split, weights[split]).items():
                metrics.append({"predictor": predictor.name, "latent": predictor.latent, "split": split,
                                "metric": metric, **percentile_ci(reps, value).to_dict()})
                if split == "validation":
                    replicates[f"{predictor.name}/{metric}"] = reps
        if split == "validation":  # the best latent's interval also covers the luck of its selection
            redone = selection_bootstrap(latents, labels, eligible, weights)
            for row in metrics:
                if row["predictor"] == "best_latent" and row["split"] == "validation":
                    row.update(percentile_ci(redone[row["metric"]], row["value"]).to_dict())
                    replicates[f"best_latent/{row['metric']}"] = redone[row["metric"]]
        # Shuffled control: mean over permutations; replicate b comes from permutation b mod shuffles, so the
        # interval holds both the permutation spread and the validation resampling.
        results = [evaluate(p, labels, split, weights[split]) for p in shuffled]
        for metric in METRICS:
            value = float(np.mean([r[metric][0] for r in results]))
            stacked = np.stack([r[metric][1] for r in results])  # [S, B]
            reps = stacked[np.arange(n_boot) % len(shuffled), np.arange(n_boot)]
            metrics.append({"predictor": "shuffled", "latent": -1, "split": split, "metric": metric,
                            **percentile_ci(reps, value).to_dict()})
            if split == "validation":
                replicates[f"shuffled/{metric}"] = reps

    operators = operator_breakdown([predictors[0], predictors[3]], labels, weights["validation"])
    table = _scores_table(scores, general_freq, general)
    selection = {
        "correct_latent": chosen[0].latent, "incorrect_latent": chosen[1].latent,
        "best_latent": best.latent, "best_predicts": "correct" if best.positive_correct else "incorrect",
        "thresholds": {p.name: p.threshold for p in predictors},
        "random_latent": random_latent,
        "shuffled_latents": [p.latent for p in shuffled],
        "n_general": int(general.sum()), "n_eligible": int(eligible.sum()), "general_filter_fallback": fallback,
        "separation": {name: float(scores["separation"][p.latent]) for name, p in
                       (("correct_latent", chosen[0]), ("incorrect_latent", chosen[1]))},
        "welch_t": {name: float(scores["welch_t"][p.latent]) for name, p in
                    (("correct_latent", chosen[0]), ("incorrect_latent", chosen[1]))},
    }
    return LayerAnalysis(table, selection, metrics, replicates, operators, predictors[3].direction)


def probe_direction_rows(resid: np.ndarray, latents: np.ndarray, sae, direction: np.ndarray, labels: Labels,
                         n_boot: int, seed: int) -> list[dict]:
    """How much of the probe's direction the SAE's reconstruction keeps on the **validation** samples (held out
    from the probe's fit), :func:`codedyn.analysis.direction.direction_kept` with problem-bootstrap intervals:
    rows ``quantity, value, low, high``. The reconstruction is the SAE's decoding of the stored latents."""
    import torch

    from codedyn.analysis.direction import direction_kept
    from codedyn.analysis.stats import percentile_ci

    rows = labels.rows("validation")
    with torch.no_grad():
        x_hat = sae.decode(torch.as_tensor(latents[rows], dtype=sae.W_dec.dtype)).double().numpy()
    weights = problem_weights(labels.problem[rows], n_boot, seed)
    decoder = sae.W_dec.detach().double().numpy() * sae.scale  # rows in the residual's units
    found = direction_kept(resid[rows], x_hat, direction, labels.is_correct[rows], latents[rows], decoder, weights)
    out = []
    for quantity, (value, reps) in found.items():
        estimate = percentile_ci(reps, value).to_dict() if reps.size else {"value": value, "low": np.nan,
                                                                             "high": np.nan}
        out.append({"quantity": quantity, **estimate})
    return out


def operator_breakdown(predictors: list[Predictor], labels: Labels, weights: np.ndarray) -> list[dict]:
    """Per predictor and mutation operator: fraction of validation incorrect samples flagged incorrect at the
    predictor's threshold (``operator`` "correct (false alarm)" for the correct samples), with problem-bootstrap
    intervals."""
    from codedyn.analysis.stats import percentile_ci

    rows = labels.rows("validation")
    groups = {op: (labels.operator[rows] == op) & ~labels.is_correct[rows]
              for op in sorted({o for o in labels.operator[rows] if o is not None})}
    groups["correct (false alarm)"] = labels.is_correct[rows]
    out = []
    for predictor in predictors:
        flagged = predictor.flags_incorrect()[rows].astype(np.float64)
        for operator, mask in groups.items():
            if not mask.any():
                continue
            w = weights[:, mask]
            total = w.sum(axis=1)
            reps = np.divide(w @ flagged[mask], total, out=np.full(total.shape, np.nan), where=total > 0)
            out.append({"predictor": predictor.name, "operator": operator, "n": int(mask.sum()),
                        **percentile_ci(reps, float(flagged[mask].mean())).to_dict()})
    return out


# ---------------------------------------------------------------------------------------------------- units


def previous_step(study: Study, step: int) -> int | None:
    """The study checkpoint before ``step`` (None for the first)."""
    earlier = [s for s in study.steps if s < step]
    return earlier[-1] if earlier else None


def emergence_key(study: Study, step: int) -> str:
    """Hash of everything that changes a unit (:func:`emergence_key_record`)."""
    from codedyn.runs.units import unit_key

    return unit_key(emergence_key_record(study, step))


def emergence_key_record(study: Study, step: int) -> dict:
    """The inputs of an SAE unit's key: suite, step, dataset, EmergenceConfig, and (init from previous) the
    previous unit's key."""
    from codedyn.data.corpus import corpus_fingerprints
    from codedyn.runs.units import without

    config = study.config.emergence
    previous = previous_step(study, step) if config.init_from_previous else None

    record = {
        "suite": study.suite.name, "step": step, "dataset": study.dataset.card["hash"],
        "emergence": without(config.model_dump(mode="json"), ANALYSIS_ONLY), "format": UNIT_FORMAT,
        "previous": emergence_key(study, previous) if previous is not None else None,
        **corpus_fingerprints(corpus=config.corpus, general_corpus=config.general_corpus),
    }
    mix = sae_mix(study, step)
    if mix is not None:
        record["training_mix"] = mix.model_dump(mode="json")
    return record


def sae_mix(study: Study, step: int):
    """The toy config whose planted windows enter the SAE's training and evaluation windows at ``step``: the
    organism's after its onset, so each SAE learns (and is scored on) the model's own training mix, planted
    programs included (:func:`codedyn.sampling.posterior.planted_mix`); None for any other suite, before the
    onset, or with a user ``emergence.corpus``. The general windows stay corpus text."""
    from codedyn.sampling.posterior import planted_mix

    toy = (study.suite_record or {}).get("config")
    return planted_mix(toy, step, study.config.emergence) if toy else None


def emergence_unit_dir(study: Study, step: int) -> Path:
    from codedyn.runs.store import UNITS_DIR

    return Path(study.run_dir) / UNITS_DIR / f"sae-step{step}-{emergence_key(study, step)}"


def emergence_outputs(study: Study, step: int) -> dict[Path, dict]:
    """The pipeline unit of one checkpoint's SAEs: ``{folder: key record}``."""
    return {emergence_unit_dir(study, step): emergence_key_record(study, step)}


def previous_sae(study: Study, step: int) -> tuple[str, ...]:
    """An SAE initialised from the previous checkpoint's needs that one stored first (the pipeline's unit id)."""
    from codedyn.runs.units import unit_id

    previous = previous_step(study, step) if study.config.emergence.init_from_previous else None
    return (unit_id("sae", previous),) if previous is not None else ()


def _flat(x):
    return x.reshape(-1, x.shape[-1])


def emergence_unit(study: Study, step: int, progress: Progress = SILENT) -> Path:
    """Train (or find cached) the SAEs of one checkpoint and store what needs the model: the SAEs, their quality
    metrics, and per layer the samples' final-token latents and residuals and the general windows' firing rates.
    Returns the unit folder ``<run>/units/sae-step<N>-<key>/``. Depends only on (study, step); written atomically.
    Scoring, selection, controls and intervals are the analysis' (:func:`step_analysis`)."""
    import time

    import torch

    from codedyn.models.activations import (
        ce_loss_recovered,
        final_token_residuals,
        resolve_layers,
        sae_windows,
        window_residuals,
    )
    from codedyn.models.sae import TopKSAE, decoder_cosines, sae_metrics, train_sae
    from codedyn.runs.store import is_completed, staging_dir, write_json
    from codedyn.runs.units import KEY_INPUTS, new_unit_note, without
    from codedyn.sampling.losses import readout_context, select_readout

    unit = emergence_unit_dir(study, step)
    if is_completed(unit):
        return unit
    note = new_unit_note(unit, emergence_key_record(study, step))
    if note:
        progress.log(note)
    config = study.config.emergence
    previous = previous_step(study, step) if config.init_from_previous else None
    previous_unit = emergence_unit(study, previous, progress) if previous is not None else None
    started = time.perf_counter()
    checkpoint = study.suite.load(step, device=study.config.suite.device)
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    # Read every sample inside the training context, a pair in one shared window (mutants that do not fit: out).
    readout = select_readout(tokenizer, study.dataset.samples, readout_context(
        checkpoint.context, config.max_readout_tokens, "emergence.max_readout_tokens"))
    samples = readout.samples
    check_split_hygiene(samples)
    layers = resolve_layers(model.config.num_hidden_layers, config.layers)
    train_windows, eval_windows, general_windows = sae_windows(tokenizer, config)
    mix = sae_mix(study, step)
    if mix is not None:  # the organism after its onset: the SAE sees what the model trained on
        from codedyn.sampling.posterior import mix_planted_windows

        train_windows = mix_planted_windows(train_windows, tokenizer, mix, config.seed)
        eval_windows = mix_planted_windows(eval_windows, tokenizer, mix, config.seed + 1)
    train_resid = window_residuals(model, train_windows, layers)
    eval_resid = window_residuals(model, eval_windows, layers)
    general_resid = {layer: r[:, -1] for layer, r in window_residuals(model, general_windows, layers).items()}
    dataset_resid = final_token_residuals(model, tokenizer, samples["prompt"].tolist(), samples["solution"].tolist(),
                                          layers, readout.lengths)
    captured = time.perf_counter()

    bar = progress.task(f"SAEs step {step}: epochs", total=config.epochs * len(layers))
    saes, metrics_by_layer, arrays = {}, {}, {"sample_id": samples["sample_id"].to_numpy(dtype=str)}
    for layer in layers:
        init = TopKSAE.load(previous_unit, layer) if previous_unit is not None else None
        sae, log = train_sae(_flat(train_resid[layer]), config.width, config.k, config.epochs, config.batch_size,
                             config.lr, config.aux_k, config.aux_coef, config.dead_tokens, config.seed + layer,
                             init=init, progress_task=bar)
        sae.meta.update({"step": step, "suite": study.suite.name})
        saes[layer] = sae
        metrics = {"layer": layer, **sae_metrics(sae, eval_resid[layer], config.n_bootstrap, config.seed),
                   **ce_loss_recovered(model, eval_windows, layer, sae, config.n_bootstrap, config.seed),
                   **{f"train_{key}": value for key, value in log.to_dict().items()}}
        if init is not None:
            cosines = decoder_cosines(sae, init)
            arrays[f"decoder_cosine_L{layer}"] = cosines
            metrics.update({"decoder_cosine_mean": float(cosines.mean()),
                            "decoder_cosine_median": float(np.median(cosines))})
        with torch.no_grad():
            latents = sae.encode(torch.as_tensor(dataset_resid[layer], device=sae.W_enc.device)).cpu().numpy()
            general_freq = (sae.encode(general_resid[layer]) > 0).float().mean(dim=0).cpu().numpy()
        arrays[f"latents_L{layer}"] = latents.astype(np.float32)
        arrays[f"resid_L{layer}"] = dataset_resid[layer]
        arrays[f"general_freq_L{layer}"] = general_freq
        metrics_by_layer[layer] = metrics
    finished = time.perf_counter()

    with staging_dir(unit) as stage:
        for layer, sae in saes.items():
            sae.save(stage, layer)
        np.savez_compressed(stage / SAE_ARRAYS, **arrays)
        write_json(stage / SAE_METRICS, {str(layer): m for layer, m in metrics_by_layer.items()})
        write_json(stage / UNIT_FILE, {
            "kind": "sae", "suite": study.suite.name, "step": step, "dataset": study.dataset.card["hash"],
            "key": emergence_key(study, step), KEY_INPUTS: emergence_key_record(study, step),
            "layers": list(layers), "previous_step": previous,
            # the settings the unit was made with (the analysis-only ones belong to each analysis, not here)
            "emergence": without(config.model_dump(mode="json"), ANALYSIS_ONLY), **readout.record(),
            "seconds": {"capture": captured - started, "train": finished - captured,
                        "total": finished - started},
        })
    return unit


def load_sae(source, step: int | None = None, layer: int | None = None, device: str = "cpu"):
    """The SAE(s) of one checkpoint: ``load_sae(unit_dir)`` or ``load_sae(study, step)``; returns {layer: TopKSAE},
    or one TopKSAE when ``layer`` is given (FileNotFoundError when the unit was never trained)."""
    import json

    from codedyn.models.sae import TopKSAE
    from codedyn.runs.store import is_completed

    if isinstance(source, str | Path):
        unit = Path(source)
    else:
        if step is None:
            raise ValueError("load_sae(study, step): the step is required with a study")
        unit = emergence_unit_dir(source, step)
    if not is_completed(unit):
        raise FileNotFoundError(f"no completed SAE unit at {unit}; run `codedyn emergence` first")
    layers = json.loads((unit / UNIT_FILE).read_text())["layers"]
    if layer is not None:
        return TopKSAE.load(unit, layer, device)
    return {int(lay): TopKSAE.load(unit, int(lay), device) for lay in layers}


# ------------------------------------------------------------------------------------------------ the analysis


def step_inputs(study: Study, step: int) -> tuple[Labels, dict[int, dict[str, np.ndarray]]]:
    """What the analysis of one checkpoint reads from its SAE unit: the labels of the samples it captured (in its
    order) and per layer ``{"latents", "resid", "general_freq"}`` (FileNotFoundError when the unit is missing)."""
    import json

    from codedyn.runs.store import is_completed

    unit = emergence_unit_dir(study, step)
    if not is_completed(unit):
        raise FileNotFoundError(f"step {step} has no completed SAE unit ({unit}); run `codedyn emergence`")
    layers = json.loads((unit / UNIT_FILE).read_text())["layers"]
    with np.load(unit / SAE_ARRAYS) as stored:
        ids = stored["sample_id"].tolist()
        per_layer = {int(layer): {"latents": stored[f"latents_L{layer}"], "resid": stored[f"resid_L{layer}"],
                                  "general_freq": stored[f"general_freq_L{layer}"]} for layer in layers}
    samples = study.dataset.samples.set_index("sample_id").loc[ids].reset_index()
    return Labels.from_samples(samples), per_layer


def latent_choices(study: Study, step: int) -> dict[int, tuple[Any, dict]]:
    """Per SAE layer of a checkpoint: :func:`latent_choice`'s ``(scores, selection)`` (cheap: no bootstrap), what the
    posterior's SAE-latent observables are chosen from."""
    labels, per_layer = step_inputs(study, step)
    threshold = study.config.emergence.general_threshold
    return {layer: latent_choice(a["latents"], a["general_freq"], labels, threshold)
            for layer, a in per_layer.items()}


def step_analysis(study: Study, step: int) -> dict[int, LayerAnalysis]:
    """Scoring, selection, controls and bootstrap of one checkpoint's SAE latents (:func:`analyse_layer` per
    layer), and how much of the probe's direction each layer's SAE keeps (:func:`probe_direction_rows`), from its
    stored unit."""
    from codedyn.models.sae import TopKSAE

    config = study.config.emergence
    labels, per_layer = step_inputs(study, step)
    unit = emergence_unit_dir(study, step)
    out = {}
    for layer, a in per_layer.items():
        found = analyse_layer(a["latents"], a["resid"], a["general_freq"], labels, config.general_threshold,
                              config.probe_c, config.shuffles, config.n_bootstrap, config.seed)
        direction = probe_direction_rows(a["resid"], a["latents"], TopKSAE.load(unit, layer), found.probe_direction,
                                         labels, config.n_bootstrap, config.seed)
        out[layer] = replace(found, direction=direction)
    return out


# ---------------------------------------------------------------------------------------------------- run / compute


def run_emergence(study: Study, progress: Progress | None = None) -> EmergenceResult:
    """Train (or reuse) every checkpoint's SAE unit, then compute and store the results over training."""
    progress = progress or SILENT
    bar = progress.task("emergence: checkpoints", total=len(study.steps))
    for step in study.steps:
        emergence_unit(study, step, progress)
        bar.advance()
    return compute_emergence(study)


def _stored_units(study: Study) -> list[tuple[int, Path]]:
    from codedyn.runs.store import is_completed

    units = []
    for step in study.steps:
        unit = emergence_unit_dir(study, step)
        if not is_completed(unit):
            raise FileNotFoundError(f"step {step} has no completed SAE unit ({unit}); run `codedyn emergence`")
        units.append((step, unit))
    return units


def _llc_curve(study: Study, steps):
    """(values, lows, highs, note) of the LLC at these steps from Experiment 1's table, when every step is there."""
    import pandas as pd

    path = Path(study.run_dir) / "influence" / "influence.parquet"
    if not path.is_file():
        return None
    from codedyn.analysis.curves import llc_from_table

    table = pd.read_parquet(path)
    if not set(steps) <= set(table.loc[table["quantity"] == "LLC", "step"]):
        return None
    return llc_from_table(table, list(steps))  # (values, lows, highs, note): non-minima left out, named


@dataclass(frozen=True)
class EmergenceResult:
    """What Experiment 2 stored under ``<run>/emergence/``."""

    folder: Path
    table: pd.DataFrame  # step, layer, predictor, split, metric, value, low, high
    calls: dict[str, dict]  # curve ("L1/best_latent/auroc", ...) -> its shape call


def compute_emergence(study: Study) -> EmergenceResult:
    """Analysis of the stored units (read only; deterministic given them), written as tables (parquet), transition
    calls (json) and figures (PNG + PDF).

    Returns ``{"table", "calls", "folder"}``; ``table`` holds every (step, layer, predictor, split, metric) with its
    interval.
    """
    import json

    import pandas as pd

    from codedyn.analysis.transitions import classify_trajectory
    from codedyn.figures.plots import save_figure
    from codedyn.runs.store import write_json

    out = study.output_dir(EMERGENCE_DIR)
    units = _stored_units(study)
    steps = [s for s, _ in units]
    rows, operator_rows, scores, sae_rows, selections, replicates = [], [], [], [], [], {}
    direction_rows = []
    for step, unit in units:
        for layer, metrics in json.loads((unit / SAE_METRICS).read_text()).items():
            sae_rows.append({"step": step, **metrics, "layer": int(layer)})
        for layer, found in step_analysis(study, step).items():
            rows.extend({"step": step, "layer": layer, **row} for row in found.metrics)
            operator_rows.extend({"step": step, "layer": layer, **row} for row in found.operators)
            direction_rows.extend({"step": step, "layer": layer, **row} for row in found.direction)
            scores.append(found.scores.assign(step=step, layer=layer))
            selections.append({"step": step, "layer": layer, **{k: v for k, v in found.selection.items()
                                                                 if not isinstance(v, dict | list)}})
            for name, reps in found.replicates.items():
                replicates.setdefault(f"L{layer}/{name}", []).append(reps)
    table, operators = pd.DataFrame(rows), pd.DataFrame(operator_rows)
    sae_table = pd.DataFrame(sae_rows)
    pd.concat(scores, ignore_index=True).to_parquet(out / "scores.parquet", index=False)
    table.to_parquet(out / "emergence.parquet", index=False)
    operators.to_parquet(out / "operators.parquet", index=False)
    direction = pd.DataFrame(direction_rows)
    direction.to_parquet(out / DIRECTION_TABLE, index=False)
    sae_table.to_parquet(out / "sae_metrics.parquet", index=False)
    pd.DataFrame(selections).to_parquet(out / "selection.parquet", index=False)
    stacked = {name: np.stack(reps) for name, reps in replicates.items()}  # [n_steps, B]
    np.savez_compressed(out / "bootstrap_replicates.npz", steps=np.asarray(steps), **stacked)

    layers = sorted(set(table["layer"]))
    validation = table[table["split"] == "validation"]
    calls = {}
    for layer in layers:
        for predictor in CURVES:
            for metric in ("auroc", "f1"):
                if predictor in ("shuffled", "random_latent") and metric == "f1":
                    continue
                rows = validation[(validation["layer"] == layer) & (validation["predictor"] == predictor)
                                  & (validation["metric"] == metric)].set_index("step").loc[steps]
                reps = stacked[f"L{layer}/{predictor}/{metric}"]
                name = f"L{layer}/{predictor}/{metric}"
                if len(steps) < 2:
                    calls[name] = {"verdict": "no change", "step": None, "evidence": [],
                                   "test": "needs at least two checkpoints"}
                    continue
                found = classify_trajectory(steps, np.nan_to_num(reps, nan=float(np.nanmean(reps))),
                                            values=rows["value"].to_numpy())
                calls[name] = found
    write_json(out / TRANSITIONS_FILE, calls)
    llc = _llc_curve(study, steps)
    for layer in layers:
        for metric in ("auroc", "f1"):
            save_figure(emergence_figure(validation, layer, metric, calls, study, steps, llc),
                        out / f"emergence_{metric}_L{layer}")
        save_figure(operator_figure(operators, layer, steps), out / f"operator_detection_L{layer}")
    save_figure(sae_quality_figure(sae_table, steps), out / "sae_quality")
    for layer in layers:
        save_figure(probe_direction_figure(direction, validation, layer, steps), out / f"probe_direction_L{layer}")
    return EmergenceResult(out, table, calls)


LABELS = {"best_latent": "best latent", "probe": "probe (raw residual)", "shuffled": "shuffled labels",
          "random_latent": "random latent"}


def _events(calls: dict, layer: int, metric: str, study: Study) -> list[dict]:
    from codedyn.analysis.events import known_events, sharp_call_events

    names = {f"L{layer}/{predictor}/{metric}": LABELS[predictor] for predictor in ("best_latent", "probe")}
    return sharp_call_events(calls, names) + known_events(study)  # a sharp call is a bracket, never a step


def emergence_figure(validation, layer: int, metric: str, calls: dict, study: Study, steps, llc=None):
    """Validation AUROC or F1 of the best latent, the probe and the controls over training (95% CIs)."""
    from codedyn.figures.plots import training_curves

    curves = {}
    for predictor in CURVES:
        rows = validation[(validation["layer"] == layer) & (validation["predictor"] == predictor)
                          & (validation["metric"] == metric)].set_index("step").loc[steps]
        curves[LABELS[predictor]] = (rows["value"].to_numpy(), rows["low"].to_numpy(), rows["high"].to_numpy())
    name = "AUROC" if metric == "auroc" else "F1 at the tuned threshold"
    return training_curves(steps, curves, ylabel=f"validation {name}", zero_line=False, llc=llc,
                           title=f"Correctness detection from layer {layer} resid_post over training",
                           events=_events(calls, layer, metric, study))


def operator_figure(operators, layer: int, steps):
    """Fraction of validation incorrect samples the best latent flags, per mutation operator, over training."""
    from codedyn.figures.plots import step_heatmap

    part = operators[(operators["layer"] == layer) & (operators["predictor"] == "best_latent")]
    rows = {operator: part[part["operator"] == operator].set_index("step").reindex(steps)["value"].to_numpy()
            for operator in sorted(part["operator"].unique())}  # intervals: the report's operator table
    return step_heatmap(steps, rows, title=f"Best layer-{layer} latent: fraction of validation mutants flagged, "
                        "by mutation operator", cbar_label="flagged incorrect")


def probe_direction_figure(direction, validation, layer: int, steps):
    """One layer: validation AUROC along the probe's direction u in the residual (u·x, the probe's own AUROC) and in
    the SAE's reconstruction (u·x̂), the best latent's AUROC, and the share of the correctness gap along u that the
    reconstruction keeps, drawn only where u·x has a gap (its AUROC interval excludes 0.5); 95% CIs."""
    from codedyn.figures.plots import training_curves

    part = direction[direction["layer"] == layer]

    def rows(quantity):
        return part[part["quantity"] == quantity].set_index("step").reindex(steps)

    resid = rows("auroc_resid")
    has_gap = ((resid["low"] > 0.5) | (resid["high"] < 0.5)).to_numpy()
    best = validation[(validation["layer"] == layer) & (validation["predictor"] == "best_latent")
                      & (validation["metric"] == "auroc")].set_index("step").reindex(steps)
    curves = {"AUROC u·x (probe)": resid, "AUROC u·x̂ (SAE)": rows("auroc_reconstruction"),
              "AUROC best latent": best}
    curves = {name: (r["value"].to_numpy(), r["low"].to_numpy(), r["high"].to_numpy()) for name, r in curves.items()}
    kept = rows("separation_kept")
    curves["gap kept by x̂"] = tuple(np.where(has_gap, kept[c].to_numpy(), np.nan)
                                             for c in ("value", "low", "high"))
    return training_curves(steps, curves, ylabel="AUROC / fraction", zero_line=True,
                           title=f"Layer {layer}: the probe's direction u in the SAE's reconstruction")


def sae_quality_figure(sae_table, steps):
    """Explained variance and CE loss recovered of every layer's SAE over training (95% CIs over windows)."""
    from codedyn.figures.plots import training_curves

    curves = {}
    for layer in sorted(sae_table["layer"].unique()):
        rows = sae_table[sae_table["layer"] == layer].set_index("step").loc[steps]
        for metric, label in (("explained_variance", "explained variance"), ("ce_loss_recovered", "CE recovered")):
            curves[f"L{layer} {label}"] = (rows[metric].to_numpy(), rows[f"{metric}_low"].to_numpy(),
                                           rows[f"{metric}_high"].to_numpy())
    return training_curves(steps, curves, ylabel="fraction", zero_line=False,
                           title="SAE quality per checkpoint (held-out corpus windows)")
