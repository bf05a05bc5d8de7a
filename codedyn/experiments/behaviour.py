"""Behavioural ground truth at every checkpoint: does the model itself tell correct code from buggy code?

Two measurements, each with a bootstrap interval and a transition call over training:

* **Verdict contrast** (suites with the planted task, :mod:`codedyn.data.planted`): on held-out crossed quadruples
  ending in ``#`` (spec s with its own body, t with its own, s with t's, t with s's), how many nats larger the
  model's log-odds log p(`` ok``) - log p(`` bug``) at the final position are for a spec with its own body than
  with the other's (:func:`codedyn.models.toy.crossed_contrast`). A lean towards ``ok``, overall, per spec word or
  per body, cancels exactly; what is left is whether the model's verdict follows the match of spec and body. The
  interval resamples operation pairs. Beside it the table keeps the **verdict accuracy**, the share of quadruples
  the model orders the right way round (:func:`codedyn.models.toy.crossed_hits`): readable, but it reads only the
  contrast's sign, so a model whose margins differ by thousandths of a nat can score far from 1/2 (measured: a
  null twin at 0.81 from a contrast of 0.005 nats, the organism at 0.80 from 0.012 nats long before its verdicts
  move; BENCHMARKS.md, "Model organism"). It is drawn, never called.
* **Loss gap at the mutated tokens**, per mutation operator and over all pairs (any suite, any dataset, e.g. the
  HumanEval pairs): ℓ_mutant - ℓ_reference, the summed next-token loss of the mutant's tokens inside its mutated
  span minus that of the reference's tokens in the same place (:func:`codedyn.data.token_kinds.code_tokens`), read
  in the window Experiment 2 reads (inside the suite's training context, capped by
  ``emergence.max_readout_tokens``). Positive: the model finds the
  bug more surprising than the correct code. A pair whose edit lies outside the window is left out (and counted).
  The interval resamples problems (planted problems by their operation pair, which they share).

The **behavioural emergence** is the onset of the verdict contrast (:mod:`codedyn.analysis.onset`): its first
checkpoint that departs from the pre-data-onset baseline by more than the contrast's equivalence margin, with
family-wise control over the checkpoints, bracketed by the checkpoint before it. The margin, not zero, is the line
because every model, even at initialisation or trained on the null twin, has some spec-body interaction in its
margins, of either sign and measurable to thousandths of a nat; it is calibrated on null twins of seeds that are
never validated (:mod:`codedyn.analysis.margins`). The ground truth is tested in its own family (it is the
yardstick, not a signal under test), and stored before any other analysis runs, so every figure draws it. The same
test gives the contrast's "flat" (every change inside the margin) or "not detected".
``codedyn refine`` densifies inside the bracket like any other.

``run_behaviour`` measures the checkpoints not yet stored (``<run>/behaviour/step<N>-<key>/``, a ``completed``
marker written last; a forward pass over a few thousand short programs per checkpoint); ``compute_behaviour`` is
the pure analysis of the stored measurements: ``behaviour.parquet`` (step, quantity, operator, value, low, high,
n), ``transitions.json`` and figures. In ``codedyn run`` it is the analysis :func:`behaviour_analysis`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codedyn.progress import SILENT, Progress
from codedyn.runs.layout import TRANSITIONS_FILE, UNIT_FILE

if TYPE_CHECKING:
    import pandas as pd

    from codedyn.experiments.study import Study

BEHAVIOUR_DIR = "behaviour"
UNIT_FORMAT = 1  # bump when a change here changes what a stored measurement holds
VERDICT_FILE = "verdicts.parquet"
GAP_FILE = "loss_gaps.parquet"
ALL_OPERATORS = "all"
EVAL_SEED = 2024  # the held-out verdict programs: the same at every checkpoint and in every run of a suite
# Held-out crossed quadruples per checkpoint (models.toy.heldout_verdict_set), all distinct: 300 quadruples (1200
# programs) spread over the substitution family's 45 operation pairs, the units the interval resamples; the default
# task's held-out pool holds about 400 distinct quadruples (planted.heldout_share, function_names).
VERDICT_QUADS = 300

def planted_config(study: Study):
    """The planted task the study's suite was trained with (a PlantedTaskConfig), or None."""
    from codedyn.config import PlantedTaskConfig

    record = study.suite_record or {}
    planted = (record.get("config") or {}).get("planted")
    if planted and planted.get("enabled"):
        return PlantedTaskConfig.model_validate(planted)
    return None


def behaviour_key(study: Study, step: int) -> str:
    from codedyn.runs.store import content_hash

    planted = planted_config(study)
    return content_hash({
        "format": UNIT_FORMAT, "suite": study.suite.name, "step": step, "data": study.dataset.card["hash"],
        "planted": planted.model_dump(mode="json") if planted else None,
        "quadruples": VERDICT_QUADS,
        "max_tokens": study.config.emergence.max_readout_tokens,
    }, length=10)


def behaviour_unit_dir(study: Study, step: int) -> Path:
    return Path(study.run_dir) / BEHAVIOUR_DIR / f"step{step}-{behaviour_key(study, step)}"


# ------------------------------------------------------------------------------------------------- measurement


def mutation_loss_gaps(model, tokenizer, pairs, max_length: int | None) -> list[dict[str, Any]]:
    """ℓ_mutant - ℓ_reference summed over each pair's mutated tokens. ``pairs``: a CodeDataset.pairs() frame."""
    import torch

    from codedyn.data.token_kinds import code_tokens
    from codedyn.sampling.losses import EvalSet, sample_token_losses

    prompts = [*pairs["prompt_correct"], *pairs["prompt_incorrect"]]
    solutions = [*pairs["solution_correct"], *pairs["solution_incorrect"]]
    device = next(model.parameters()).device
    evalset = EvalSet.build(tokenizer, prompts, solutions, max_length=max_length, device=str(device))
    with torch.no_grad():
        _, tokens = sample_token_losses(model, evalset)
    tokens = tokens.cpu().numpy()
    n = len(pairs)
    rows = []
    for k, pair in enumerate(pairs.itertuples(index=False)):
        ref = code_tokens(tokenizer, pair.prompt_correct, pair.solution_correct, pair.solution_incorrect, max_length)
        mut = code_tokens(tokenizer, pair.prompt_incorrect, pair.solution_incorrect, pair.solution_correct,
                          max_length)
        inside = bool(ref.in_mutation.any() and mut.in_mutation.any())
        gap = (float(np.sum(tokens[n + k, : mut.in_mutation.size][mut.in_mutation]))
               - float(np.sum(tokens[k, : ref.in_mutation.size][ref.in_mutation]))) if inside else float("nan")
        rows.append({"problem_id": pair.problem_id_correct,
                     "group": getattr(pair, "group_correct", pair.problem_id_correct),
                     "operator": pair.operator_incorrect,
                     "split": pair.split_correct, "gap": gap, "in_window": inside,
                     "n_mutant_tokens": int(mut.in_mutation.sum()), "n_reference_tokens": int(ref.in_mutation.sum())})
    return rows


def measure_checkpoint(checkpoint, dataset, planted, max_length: int | None, n_quads: int) -> dict[str, Any]:
    """The raw measurements of one checkpoint: verdict margins (when ``planted``) and per-pair loss gaps."""
    import pandas as pd

    from codedyn.models.toy import heldout_verdict_set, verdict_margins

    out: dict[str, Any] = {"verdicts": None}
    if planted is not None:
        texts, correct, groups = heldout_verdict_set(planted, n_quads, seed=EVAL_SEED)
        margins = verdict_margins(checkpoint.model, checkpoint.tokenizer, texts)
        out["verdicts"] = pd.DataFrame({"program": np.arange(len(texts)), "quad": np.arange(len(texts)) // 4,
                                        "operations": groups, "correct": correct, "margin": margins})
    out["gaps"] = pd.DataFrame(mutation_loss_gaps(checkpoint.model, checkpoint.tokenizer, dataset.pairs(), max_length))
    return out


def behaviour_unit(study: Study, step: int, progress: Progress = SILENT) -> Path:
    """Measure and store one checkpoint (or find it stored)."""
    from codedyn.runs.store import is_completed, staging_dir, write_json

    folder = behaviour_unit_dir(study, step)
    if is_completed(folder):
        return folder
    from codedyn.sampling.losses import readout_context

    checkpoint = study.suite.load(step, device=study.config.suite.device)
    max_length = readout_context(checkpoint.context, study.config.emergence.max_readout_tokens,
                                 "emergence.max_readout_tokens")
    found = measure_checkpoint(checkpoint, study.dataset, planted_config(study), max_length, VERDICT_QUADS)
    with staging_dir(folder) as stage:
        if found["verdicts"] is not None:
            found["verdicts"].to_parquet(stage / VERDICT_FILE, index=False)
        found["gaps"].to_parquet(stage / GAP_FILE, index=False)
        write_json(stage / UNIT_FILE, {"step": step, "suite": study.suite.name, "format": UNIT_FORMAT})
    return folder


def run_behaviour(study: Study, progress: Progress | None = None) -> BehaviourResult:
    """Measure every checkpoint not yet stored, then compute and store the results over training."""
    progress = progress or SILENT
    bar = progress.task("behaviour: checkpoints", total=len(study.steps))
    for step in study.steps:
        behaviour_unit(study, step, progress)
        bar.advance()
    return compute_behaviour(study)


def behaviour_analysis(study: Study) -> BehaviourResult:
    """The pipeline's analysis: the stored checkpoints' measurements (measuring the missing ones, which costs a
    checkpoint load and a forward pass each) and their analysis."""
    return run_behaviour(study)


# ------------------------------------------------------------------------------------------------- analysis


def bootstrap_mean(values: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Replicates [n_boot] of the mean of ``values`` when whole ``groups`` (pairs, problems) are resampled; the same
    ``seed`` and group labels give the same resamples at every checkpoint (paired differences)."""
    labels, index = np.unique(groups, return_inverse=True)
    sums = np.bincount(index, weights=values, minlength=labels.size)
    counts = np.bincount(index, minlength=labels.size).astype(float)
    weights = np.random.default_rng(seed).multinomial(labels.size, np.full(labels.size, 1 / labels.size), n_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ sums) / (weights @ counts)


def emergence_call(steps, values: np.ndarray, replicates: np.ndarray, onset: int) -> dict[str, Any]:
    """The behavioural emergence: the onset test on the verdict contrast alone (its own family), with the margin
    calibrated on the declared null twins. ``emerged`` and ``bracket`` (a, b] when it departs; the call's
    ``kind`` says flat or not detected otherwise."""
    from codedyn.analysis.curves import VERDICT_CONTRAST
    from codedyn.analysis.margins import load_margins
    from codedyn.analysis.onset import Curve
    from codedyn.analysis.yardstick import ground_truth_call

    steps = [int(s) for s in steps]
    if not any(s > onset for s in steps):
        return {"emerged": False, "kind": "untestable", "bracket": None,
                "verdict": f"no checkpoint after the data onset ({onset}): nothing to test"}
    margin = load_margins().margin(VERDICT_CONTRAST)
    curve = Curve(VERDICT_CONTRAST, tuple(steps), values, replicates, margin=margin, units="nats")
    call = ground_truth_call(curve, onset).to_dict()
    verdict = (f"emerges within ({call['bracket'][0]}, {call['bracket'][1]}]" if call["kind"] == "onset"
               else call["verdict"])
    return {**call, "emerged": call["kind"] == "onset" and call["direction"] > 0, "verdict": verdict,
            "criterion": "the onset test (codedyn.analysis.onset) on the verdict contrast: first checkpoint whose "
                         f"change from the pre-onset baseline exceeds ±{margin:.3g} nats (the calibrated margin) "
                         f"at family-wise level 0.05 over the checkpoints"}


def _stored(study: Study) -> list[tuple[int, Path]]:
    from codedyn.runs.store import is_completed

    units = []
    for step in study.steps:
        folder = behaviour_unit_dir(study, step)
        if not is_completed(folder):
            raise FileNotFoundError(f"step {step} has no stored behaviour measurement ({folder}); run "
                                    "`codedyn run` (or codedyn.experiments.behaviour.run_behaviour) first")
        units.append((step, folder))
    return units


def _row(step: int, quantity: str, operator: str | None, value: float, reps: np.ndarray, n: int) -> dict:
    low, high = np.nanquantile(reps, [0.025, 0.975]) if np.isfinite(reps).any() else (np.nan, np.nan)
    return {"step": step, "quantity": quantity, "operator": operator, "value": value, "low": float(low),
            "high": float(high), "n": n}


@dataclass(frozen=True)
class BehaviourResult:
    """What the behaviour analysis stored under ``<run>/behaviour/``."""

    folder: Path
    table: pd.DataFrame  # step, quantity, operator, value, low, high, n
    calls: dict[str, dict]  # curve -> its shape call; "emergence" -> the behavioural emergence (planted runs)


def compute_behaviour(study: Study) -> BehaviourResult:
    """Pure analysis of the stored measurements: table, transition calls, emergence bracket, figures."""
    import pandas as pd

    from codedyn.analysis.events import EMERGENCE_KEY
    from codedyn.analysis.transitions import classify_trajectory
    from codedyn.figures.plots import save_figure
    from codedyn.models.toy import crossed_contrast, crossed_hits
    from codedyn.runs.store import write_json

    out = study.output_dir(BEHAVIOUR_DIR)
    units = _stored(study)
    steps = [s for s, _ in units]
    n_boot, seed = study.config.sampling.n_bootstrap, study.config.sampling.seed
    rows, replicates = [], {}
    for step, folder in units:
        if (folder / VERDICT_FILE).is_file():
            verdicts = pd.read_parquet(folder / VERDICT_FILE)
            verdicts = verdicts.sort_values("program", kind="stable")
            margins, pairs = verdicts["margin"].to_numpy(), verdicts["operations"].to_numpy()[::4]
            for quantity, per_quad in (("verdict_contrast", crossed_contrast(margins)),
                                       ("verdict_accuracy", crossed_hits(margins))):
                # resampled by operation pair: the independent units of the verdict set (heldout_verdict_set)
                reps = bootstrap_mean(per_quad, pairs, n_boot, seed)
                rows.append(_row(step, quantity, None, float(per_quad.mean()), reps, len(per_quad)))
                replicates.setdefault(quantity, []).append(reps)
        gaps = pd.read_parquet(folder / GAP_FILE)
        gaps = gaps[gaps["in_window"]]
        for operator in [ALL_OPERATORS, *sorted(gaps["operator"].unique())]:
            part = gaps if operator == ALL_OPERATORS else gaps[gaps["operator"] == operator]
            values = part["gap"].to_numpy(dtype=float)
            units = part["group"] if "group" in part else part["problem_id"]  # a planted pair's operations
            reps = (bootstrap_mean(values, units.to_numpy(), n_boot, seed) if len(part)
                    else np.full(n_boot, np.nan))
            rows.append(_row(step, "loss_gap", operator, float(values.mean()) if len(part) else float("nan"),
                             reps, len(part)))
            replicates.setdefault(f"loss_gap/{operator}", []).append(reps)
    table = pd.DataFrame(rows)
    table.to_parquet(out / "behaviour.parquet", index=False)
    stacked = {name: np.stack(reps) for name, reps in replicates.items() if len(reps) == len(steps)}
    np.savez_compressed(out / "bootstrap_replicates.npz", steps=np.asarray(steps), **stacked)

    calls: dict[str, Any] = {}
    for name, reps in stacked.items():
        quantity, _, operator = name.partition("/")
        if quantity == "verdict_accuracy":  # tabulated and drawn, never called: it reads the contrast's sign only
            continue
        part = table[(table["quantity"] == quantity) & (table["operator"].fillna("") == operator)].set_index("step")
        values = part.loc[steps, "value"].to_numpy(dtype=float)
        if len(steps) < 2 or not np.isfinite(reps).all():
            calls[name] = {"verdict": "no change", "step": None, "evidence": [],
                           "test": "needs at least two checkpoints with a finite measurement"}
        elif np.all(reps == reps[:1, :1]):
            # A curve without any sampling noise and one value everywhere (a model with a constant verdict scores
            # exactly 1/2 on balanced pairs in every resample): nothing changes, and the studentised test is undefined.
            calls[name] = {"verdict": "no change", "step": None, "evidence": [],
                           "test": "every checkpoint and every bootstrap replicate has the same value"}
        elif np.all(reps.std(axis=1) == 0):  # e.g. an operator with a single pair: no interval, so no test
            calls[name] = {"verdict": "not tested", "step": None, "evidence": [],
                           "test": "no bootstrap spread at any checkpoint (too few problems)"}
        else:
            calls[name] = classify_trajectory(steps, reps, values=values)
    if "verdict_contrast" in stacked and planted_config(study) is not None and len(steps) > 1:
        values = table[table["quantity"] == "verdict_contrast"].set_index("step").loc[steps, "value"].to_numpy()
        calls[EMERGENCE_KEY] = emergence_call(steps, values, stacked["verdict_contrast"], planted_config(study).onset)
    write_json(out / TRANSITIONS_FILE, calls)
    for quantity in ("verdict_contrast", "verdict_accuracy", "loss_gap"):
        if (table["quantity"] == quantity).any():
            save_figure(behaviour_figure(table, quantity, steps, study, calls), out / quantity)
    return BehaviourResult(out, table, calls)


def behaviour_events(study: Study, calls: dict | None = None) -> list[dict]:
    """The known events of the study's suite, as figure markers: planted onset, behavioural emergence, induction."""
    events = []
    planted = planted_config(study)
    if planted is not None:
        events.append({"step": planted.onset, "kind": "transition",
                       "label": "planted data onset" + (" (null twin)" if planted.null else "")})
    found = (calls or {}).get("emergence") or {}
    if found.get("emerged") and found.get("bracket"):
        events.append({"step": found["bracket"][1], "kind": "jump", "label": "verdicts judge"})
    formation = (study.suite_record or {}).get("formation", {})
    if formation.get("formed"):
        events.append({"step": formation["first_formed_step"], "kind": "transition", "label": "induction heads"})
    return events


def behaviour_figure(table, quantity: str, steps, study: Study, calls: dict):
    from codedyn.figures.plots import training_curves

    part = table[table["quantity"] == quantity]
    curves = {}
    for operator, rows in part.groupby(part["operator"].fillna("")):
        rows = rows.set_index("step").reindex(steps)
        label = quantity.replace("_", " ") if quantity.startswith("verdict") else operator
        curves[label] = (rows["value"].to_numpy(), rows["low"].to_numpy(), rows["high"].to_numpy())
    if quantity == "verdict_contrast":
        found = calls.get("emergence") or {}
        styles = {}
        if found.get("margin") and found.get("baseline"):  # the band the onset test needs the change to leave
            base = float(part.set_index("step").loc[found["baseline"], "value"].mean())
            label = f"baseline ± margin ({found['margin']:.3g} nats)"
            curves[label] = (np.full(len(steps), base + found["margin"]), None, None)
            curves[" "] = (np.full(len(steps), base - found["margin"]), None, None)
            styles = {label: {"colour": 1, "dashed": True}, " ": {"colour": 1, "dashed": True}}
        return training_curves(steps, curves, ylabel="log-odds of ok: own body minus other's (nats)",
                               title="Does the model judge planted programs correctly?",
                               events=behaviour_events(study, calls), styles=styles)
    if quantity == "verdict_accuracy":
        return training_curves(steps, curves, ylabel="crossed quadruples ordered correctly (chance 0.5)",
                               zero_line=False, title="Which way round does the model order matched and crossed "
                               "programs (sign only)?", events=behaviour_events(study, calls))
    return training_curves(steps, curves, ylabel="ℓ_mutant − ℓ_reference at the mutated tokens (nats)",
                           title="Loss gap at the mutated tokens, per operator", events=behaviour_events(study, calls),
                           height_in=4.4)


# ------------------------------------------------------------------------------------- the representation probe


def probe_auroc(fit_x: np.ndarray, fit_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
                eval_groups: np.ndarray, n_boot: int, seed: int, c: float = 0.1) -> tuple[float, np.ndarray]:
    """Validation AUROC of a logistic-regression probe (standardised features, L2 with inverse strength ``c``)
    fitted on ``fit_x``; replicates [n_boot] resample whole ``eval_groups`` (pairs) of the evaluation set."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from codedyn.analysis.classifier import auroc

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    model.fit(np.asarray(fit_x, dtype=np.float64), np.asarray(fit_y, dtype=bool))
    score = model.predict_proba(np.asarray(eval_x, dtype=np.float64))[:, list(model.classes_).index(True)]
    labels, index = np.unique(eval_groups, return_inverse=True)
    draws = np.random.default_rng(seed).multinomial(labels.size, np.full(labels.size, 1 / labels.size), n_boot)
    return float(auroc(score, eval_y)), auroc(score, eval_y, draws[:, index])


def final_position_features(model, tokenizer, texts: list[str]) -> np.ndarray:
    """resid_post of every layer at the last token of every text, concatenated: [N, n_layers * d_model]."""
    from codedyn.models.activations import final_token_residuals

    layers = list(range(model.config.num_hidden_layers))
    found = final_token_residuals(model, tokenizer, [""] * len(texts), texts, layers, max_tokens=10**6)
    return np.concatenate([found[layer] for layer in layers], axis=1)


def planted_probe(model, tokenizer, planted, n_boot: int = 1000, fit_pairs: int = 200, eval_pairs: int = 200,
                  seed: int = 0) -> tuple[float, np.ndarray]:
    """Is correctness linearly decodable where the model writes its verdict? The probe AUROC on held-out planted
    programs, fit on pairs of half the operations and scored on pairs of the other half (so the probe cannot learn
    the spec-body table itself: :func:`codedyn.models.toy.heldout_probe_set`), with replicates that resample the
    (spec, bug body) operation pairs."""
    from codedyn.models.toy import heldout_probe_set

    fit_texts, fit_y, _ = heldout_probe_set(planted, fit_pairs, seed=seed + 1, part=0)
    eval_texts, eval_y, eval_groups = heldout_probe_set(planted, eval_pairs, seed=EVAL_SEED, part=1)
    fit_x = final_position_features(model, tokenizer, fit_texts)
    eval_x = final_position_features(model, tokenizer, eval_texts)
    return probe_auroc(fit_x, fit_y, eval_x, eval_y, eval_groups, n_boot, seed)  # resampled by operation pair
