"""The one registry of experiments: to add an experiment, add one entry to :data:`EXPERIMENTS` here.

An entry names everything the rest of the package iterates:

* ``units``: its per-checkpoint work (:class:`~codedyn.runs.units.UnitKind`: ``run(study, step, progress) -> Path``
  and ``outputs(study, step) -> {folder: key record}``), which the pipeline plans and runs
  (:func:`unit_kinds`);
* ``compute``: its study-level analysis over the stored units (``compute(study)`` returns a frozen dataclass with
  at least a ``folder``), which the pipeline runs after every unit, in the order of :data:`EXPERIMENTS` except that
  an analysis runs after the ones whose tables it ``reads`` (:func:`analysis_order`);
* ``title`` and ``captions``: its section of the report (the folder ``<run>/<name>/``; without a title its folder
  is shown among the other result folders) and what each of its figures (by file-name prefix) shows;
* ``signals``: what its stored results contribute to the run's verdict table and validation table
  (:class:`~codedyn.analysis.signals.Signals`; :func:`signal_sources` hands them to the analysis layer, which knows
  no experiment). The order of :data:`EXPERIMENTS` is the order of both tables and of the report's sections.

Every module imported here is cheap to import (numpy at most; torch and the rest load inside the functions), so
the pipeline, the report and a Ray worker can import the registry at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from codedyn.analysis.curves import behaviour_curves, emergence_curves, influence_curves, susceptibility_curves
from codedyn.analysis.signals import Signals, SignalSources
from codedyn.analysis.verdicts import (
    behaviour_calls,
    behaviour_rows,
    emergence_calls,
    emergence_rows,
    influence_calls,
    influence_rows,
    susceptibility_calls,
    susceptibility_rows,
)
from codedyn.experiments.behaviour import behaviour_analysis
from codedyn.experiments.embryology import compute_embryology
from codedyn.experiments.emergence import compute_emergence, emergence_outputs, emergence_unit, previous_sae
from codedyn.experiments.influence import compute_influence
from codedyn.experiments.posteriors import posterior_outputs, posterior_unit
from codedyn.experiments.rllc import compute_rllc, rllc_enabled, rllc_outputs, rllc_parts, rllc_unit
from codedyn.experiments.step_size import (
    compute_step_size,
    step_size_outputs,
    step_size_parts,
    step_size_unit,
    uses_step_size_check,
)
from codedyn.experiments.susceptibility import (
    compute_susceptibility,
    restricted_outputs,
    restricted_unit,
    uses_restricted,
)
from codedyn.runs.units import Registry, UnitKind

if TYPE_CHECKING:
    from codedyn.experiments.study import Study


@dataclass(frozen=True)
class Experiment:
    """One experiment, as the pipeline, the report and the two tables of signals see it."""

    name: str  # its folder under the run, the name of its analysis, its prefix in the family of shape calls
    compute: Callable[[Study], Any]  # the study-level analysis; returns a frozen dataclass with a ``folder``
    units: tuple[UnitKind, ...] = ()  # its per-checkpoint work
    reads: tuple[str, ...] = ()  # experiments whose stored tables its analysis reads: they run first
    title: str | None = None  # its report section's title; None: its folder is shown with the other folders
    captions: Mapping[str, str] = field(default_factory=dict)  # figure-file prefix -> what it shows, what to see
    signals: Signals | None = None  # its curves in the verdict table and the validation table


# What each experiment's figures show and what to look for in them, by file-name prefix (the longest matching
# prefix wins; a folder's figures are shown in this order: the curves over training before per-checkpoint detail).
BEHAVIOUR_CAPTIONS = {
    "verdict_contrast": "The model's own verdicts on held-out planted programs: how many nats larger log p(ok) − "
                        "log p(bug) after '#' is for a spec with its own body than with another's (crossed "
                        "quadruples; leans towards ok cancel), 95% bands over operation pairs; dashed: the "
                        "emergence threshold. Look for where the curve leaves the threshold: that is the "
                        "behavioural emergence every other signal is compared with.",
    "verdict_accuracy": "Share of crossed quadruples the model orders the right way round, 95% bands. It reads "
                        "only the sign of the verdict contrast, so a model whose margins differ by thousandths of a "
                        "nat can sit far from 0.5: read it beside the contrast, never alone.",
    "loss_gap": "ℓ_mutant − ℓ_reference summed over the mutated tokens, per mutation operator, 95% bands over "
                "problems (planted: operation pairs). Look for the gap rising above zero: the model finding the bug "
                "more surprising than the correct code, which can come before its verdicts do.",
}
EMERGENCE_CAPTIONS = {
    "emergence_auroc": "Validation AUROC for detecting incorrect code from one layer, for the best SAE latent, a "
                       "linear probe on the raw residual stream and two controls (shuffled labels, a random latent), "
                       "with 95% bands. Look for the best latent leaving the controls' 0.5 band, and when relative to "
                       "the known events; the LLC is in the lower panel.",
    "emergence_f1": "F1 at the threshold tuned on the training split, same predictors and controls as the AUROC "
                    "figure. Look for the same rise; F1 also depends on the threshold carrying over to validation.",
    "operator_detection": "Fraction of validation mutants of each operator (rows) that the best latent flags, per "
                          "checkpoint (columns, equal width). Look for operators caught from the first checkpoints "
                          "versus those learned late; intervals for every cell are in the operator table below.",
    "probe_direction": "Where the probe's correctness direction u (raw residual coordinates) goes in the SAE: "
                       "validation AUROC of u·x (the probe itself) and of u·x̂ (the SAE's reconstruction), the best "
                       "latent's AUROC, and the share of the correct-minus-incorrect gap along u that x̂ keeps "
                       "(drawn where u·x has a gap), 95% bands. Look for u·x̂ following u·x while the best latent "
                       "stays low: the SAE keeps the direction but spreads it over several latents (the table's "
                       "top-latent share and latent count); u·x̂ falling to 0.5 means the reconstruction loses it "
                       "and no latent can carry it.",
    "sae_quality": "Explained variance and cross-entropy loss recovered of each layer's SAE per checkpoint (95% CIs "
                   "over held-out windows). Look for values that stay high at every checkpoint: where an SAE is "
                   "poor, that checkpoint's detection numbers say little.",
}
INFLUENCE_CAPTIONS = {
    "influence_cov": "Block means of the Bayesian influence BIF = −Cov(ℓ_i, ℓ_j) between correct (C) and incorrect "
                     "(I) samples, with 95% bootstrap bands; every checkpoint has the same width. Look for where CC, "
                     "CI and II separate (the posterior treating correct and incorrect code differently), and "
                     "whether a change happens inside one checkpoint interval (a vermillion band is a sharp call's "
                     "bracket) or spreads over several; grey bands are known events. The lower panel is the LLC.",
    "influence_corr": "As the covariance figure, for the normalised BIF (−Corr): scale-free, so a change here is a "
                      "change in how samples co-vary, not only in how much the loss moves. Look for the same "
                      "separation and brackets; the lower panel is the LLC.",
    "influence_contrasts": "The correctness contrasts of the BIF, which cancel the shared mode that moves every loss "
                           "together: Δ = (CC + II)/2 − CI, the bug influence BIF(δ_p, ℓ_j) of each pair's loss "
                           "difference δ_p = ℓ_mutant − ℓ_reference on the other samples, and its gap (incorrect − "
                           "correct j), with 95% bands from one joint bootstrap. Look for a band that leaves zero: "
                           "the posterior treating correct and buggy code differently, not only all code alike.",
    "bif_matrix_step": "Normalised BIF between every pair of read-out samples at one checkpoint, rows and columns "
                       "grouped correct / incorrect (diagonal masked). Look for block structure: within-group blocks "
                       "that differ from the off-diagonal block mean correctness shapes the posterior's covariance.",
}
SUSCEPTIBILITY_CAPTIONS = {
    "susceptibility_trajectories": "Standardised susceptibility χ to correct and incorrect code for the components "
                                   "with the largest gaps, 95% bands. Look for a pair of curves that split (a "
                                   "component responding differently to incorrect code) and at which checkpoints.",
}
EMBRYOLOGY_CAPTIONS = {
    "embryology_grid": "Aligned UMAP of per-token susceptibility vectors, one column per checkpoint (the text under "
                       "the grid says what the axes and colours mean). Look for clusters that form or separate "
                       "across columns; the right-hand panels give the measured separation, so the eye is not the "
                       "judge.",
    "embryology_structure": "How well the layout and the full χ vectors separate token kind, sample label and "
                            "mutated tokens (kNN balanced accuracy, 95% CIs; dotted lines: chance). Look for curves "
                            "rising above chance, and whether the 2-d layout keeps what the χ vectors hold.",
}


# In the order of the verdict and validation tables and of the report's sections (the ground truth, then the
# detectors of Experiment 2 before the posterior geometry of Experiment 1); the analyses run in this order except
# where one reads another's tables (analysis_order).
EXPERIMENTS: tuple[Experiment, ...] = (
    # The ground truth (loads checkpoints): every later figure draws the behavioural emergence it stores.
    Experiment(
        "behaviour", behaviour_analysis,
        captions=BEHAVIOUR_CAPTIONS,
        signals=Signals(behaviour_calls, behaviour_rows, behaviour_curves),
    ),
    Experiment(
        "emergence", compute_emergence,
        # One SAE per checkpoint and layer, each started from its predecessor's.
        units=(UnitKind("sae", emergence_unit, emergence_outputs, needs=previous_sae),),
        reads=("behaviour", "influence"),  # its figures draw the LLC
        title="Experiment 2: feature emergence (SAE correctness latents)",
        captions=EMERGENCE_CAPTIONS,
        signals=Signals(emergence_calls, emergence_rows, emergence_curves),
    ),
    Experiment(
        "influence", compute_influence,
        # The posterior that influence, the LLC, the susceptibilities and the embryology share. It records the
        # checkpoint's SAE latents when susceptibility.sae_latents > 0, so it comes after the SAE of its
        # checkpoint (its key includes the SAE unit's key, known before the SAE is trained).
        units=(UnitKind("posterior", posterior_unit, posterior_outputs, after=("sae",)),),
        reads=("behaviour",),
        title="Experiment 1: influence dynamics (Bayesian influence functions)",
        captions=INFLUENCE_CAPTIONS,
        signals=Signals(influence_calls, influence_rows, influence_curves),
    ),
    Experiment(
        "susceptibility", compute_susceptibility,
        # --estimator weight_restricted: the full and every component's restricted posterior
        units=(UnitKind("restricted", restricted_unit, restricted_outputs, enabled=uses_restricted),),
        reads=("behaviour",),
        title="Experiment 3: susceptibilities",
        captions=SUSCEPTIBILITY_CAPTIONS,
        signals=Signals(susceptibility_calls, susceptibility_rows, susceptibility_curves),
    ),
    Experiment(
        "embryology", compute_embryology,
        reads=("behaviour",),
        title="Experiment 4: developmental visualisation",
        captions=EMBRYOLOGY_CAPTIONS,
    ),
    # Refined LLCs (when enabled): one unit per (checkpoint, component), one folder per distribution; the report
    # gives them a section of their own.
    Experiment("rllc", compute_rllc, units=(UnitKind("rllc", rllc_unit, rllc_outputs, enabled=rllc_enabled,
                                                      parts=rllc_parts),),
               reads=("behaviour",)),
    # The step-size check (sampling.step_size_check, off by default): the last checkpoint's posterior once more at
    # a smaller step, compared quantity by quantity; the report shows it among the diagnostics.
    Experiment("step_size", compute_step_size,
               units=(UnitKind("step_size", step_size_unit, step_size_outputs, after=("sae",),
                               enabled=uses_step_size_check, parts=step_size_parts),)),
)


def unit_kinds(experiments: Iterable[Experiment] = EXPERIMENTS) -> Registry:
    """Every experiment's per-checkpoint work, as one registry of unit kinds."""
    return Registry(kind for experiment in experiments for kind in experiment.units)


def analysis_order(experiments: Sequence[Experiment] = EXPERIMENTS) -> list[Experiment]:
    """The experiments in the order their analyses run: the registry's order, except that each waits for the ones
    whose tables it reads (the first of the waiting ones runs as soon as what it reads is done)."""
    names = {e.name for e in experiments}
    for experiment in experiments:
        unknown = set(experiment.reads) - names
        if unknown:
            raise ValueError(f"experiment {experiment.name!r} reads {sorted(unknown)}, which are not registered")
    done: list[Experiment] = []
    waiting = list(experiments)
    while waiting:
        ready = next((e for e in waiting if set(e.reads) <= {d.name for d in done}), None)
        if ready is None:
            raise ValueError(f"experiments that read each other: {[e.name for e in waiting]}")
        done.append(ready)
        waiting.remove(ready)
    return done


def signal_sources(experiments: Iterable[Experiment] = EXPERIMENTS) -> SignalSources:
    """``{experiment: its signals}`` in registry order: what the verdict table and the validation table read."""
    return {e.name: e.signals for e in experiments if e.signals is not None}


def captions(experiments: Iterable[Experiment] = EXPERIMENTS) -> dict[str, str]:
    """Every experiment's figure captions, by file-name prefix, in registry order."""
    return {prefix: text for e in experiments for prefix, text in e.captions.items()}
