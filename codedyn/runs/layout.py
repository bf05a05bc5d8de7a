"""Every file and folder name of codedyn's caches and run directories, and the shared dimension names, in one place.

A run directory ``<run>/`` holds ``manifest.json`` (config, data hash, versions), ``run.json`` (status, outputs),
``timings.json`` (every stage and unit), ``timings/<unit folder>.json`` (what a unit cost when computed), one folder
per analysis, and ``units/<kind>-step<N>-...-<key>/``: the cached units, each with its ``unit.json`` record and a
``completed`` marker written last. Readers and writers take the names from here, never as literals.
"""

from __future__ import annotations

COMPLETED = "completed"  # written last into a unit / cache folder: it is complete
MANIFEST = "manifest.json"  # a run's (or a dataset's) resolved config, hashes and package versions
RUN_FILE = "run.json"  # a run's status and outputs
TIMINGS_FILE = "timings.json"  # a run's timing of every stage and unit
UNIT_TIMINGS_DIR = "timings"  # <run>/timings/<unit folder>.json
UNITS_DIR = "units"  # <run>/units/<kind>-step<N>-...-<key>/: every cached unit of a run
UNIT_FILE = "unit.json"  # a unit's own record (kind, step, key, settings)
SUITE_FILE = "suite.json"  # a toy suite's training log (induction formation), beside its checkpoints
TRANSITIONS_FILE = "transitions.json"  # <run>/<experiment>/: every curve's transition call (what refine brackets)

# Experiment 2's unit (``units/sae-step<N>-<key>/``; the SAE weights are models.sae.WEIGHTS_FILE): what needs the
# model. Scoring, selection and intervals are computed from it by the analysis (experiments.emergence).
SAE_ARRAYS = "arrays.npz"  # per layer: dataset latents, residuals, general-text firing, decoder cosines
SAE_METRICS = "sae_metrics.json"  # per layer: explained variance, L0, dead fraction, CE loss recovered

# Dimension names shared by the dataset, the experiments and the report.
SPLITS = ("analysis", "tuning", "validation")  # a dataset's problem splits: select on analysis, threshold on tuning,
# report on validation (no problem in two of them)

# Every analysis folder's curves and calls (<run>/<experiment>/...).
REPLICATES_FILE = "bootstrap_replicates.npz"  # the bootstrap replicates [n_steps, n_boot] of every curve
YARDSTICK_FILE = "yardstick.json"  # <run>/validation/: the onset family, relations and co-movement of every curve
