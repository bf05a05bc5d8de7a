"""The run's step-size check (``sampling.step_size_check``, off by default): is a reported value an artefact of ε?

With ``sampling.step_size_check: k`` the last checkpoint's posterior is sampled a second time at ε / k, everything
else as the study's (nβ, γ, seeds, chains, draws, readout, training mix; a unit of its own beside the checkpoint's
posterior, so the study's posteriors and their cache keys are untouched). The analysis estimates every reported
quantity of both posteriors with its 95% interval (:func:`posterior_estimates`: each influence block, contrast and
variant on every readout, the LLC, and the standardised χ contrast and χ_all of every component per readout) and
flags those whose two values differ by more than their combined interval (:mod:`codedyn.analysis.step_size`),
in ``<run>/step_size/step_size.parquet``; the report's diagnostics show the table.

Off by default because it costs one more posterior (a twentieth of the organism run's units at its default
checkpoints); the calibration's own check (``codedyn calibrate``) is on by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from codedyn.progress import SILENT, Progress

if TYPE_CHECKING:
    import pandas as pd

    from codedyn.experiments.study import Study

STEP_SIZE_DIR = "step_size"
SMALLER_STEP = "smaller_step"  # the unit's part name


def uses_step_size_check(study: Study) -> bool:
    return study.config.sampling.step_size_check is not None


def checked_step(study: Study) -> int:
    """The checkpoint the check samples again: the study's last (where the capability is largest and the verdicts
    end)."""
    return study.steps[-1]


def smaller_step_sampling(study: Study):
    """The study's sampling config at ε / ``step_size_check`` (and without the check, which is no input of a
    posterior's draws)."""
    sampling = study.config.sampling
    return sampling.model_copy(update={"lr": sampling.lr / sampling.step_size_check, "step_size_check": None})


def step_size_parts(study: Study, step: int) -> list[str]:
    """One unit at the checked checkpoint, none elsewhere."""
    return [SMALLER_STEP] if step == checked_step(study) else []


def step_size_outputs(study: Study, step: int, part: str = SMALLER_STEP) -> dict[Path, dict]:
    """``{folder: key record}`` of the smaller-step posterior of ``step``."""
    from codedyn.experiments.posteriors import sae_source, training_mix
    from codedyn.runs.units import unit_key
    from codedyn.sampling.posterior import posterior_key_record, posterior_unit_dir

    record = posterior_key_record(study.suite.name, step, study.dataset.card["hash"], smaller_step_sampling(study),
                                  sae_source(study, step), training_mix(study, step))
    return {posterior_unit_dir(study.run_dir, step, unit_key(record)): record}


def step_size_unit(study: Study, step: int, progress: Progress = SILENT, part: str = SMALLER_STEP) -> Path:
    """Sample (or find) the smaller-step posterior of ``step``; its folder."""
    from codedyn.experiments.posteriors import study_sae_latents, training_mix
    from codedyn.runs.store import is_completed
    from codedyn.sampling.posterior import run_posterior

    folder = next(iter(step_size_outputs(study, step)))
    if not is_completed(folder):
        checkpoint = study.suite.load(step, device=study.config.suite.device)
        run_posterior(checkpoint, study.suite.name, study.dataset, smaller_step_sampling(study), study.run_dir,
                      progress, study_sae_latents(study, step), training_mix(study, step))
    return folder


def posterior_estimates(study: Study, traces, n_boot: int, seed: int) -> dict[str, tuple[float, float, float]]:
    """``{quantity: (value, low, high)}`` of every reported quantity of one posterior's traces, 95% intervals:
    ``<quantity>/<variant>`` of the influence table on every readout (the LLC as ``LLC/llc``), and
    ``chi_contrast/<readout>/<component>`` and ``chi_all/<readout>/<component>`` (standardised χ, intervals over
    chains, blocks of draws and the read-out programs' units)."""
    from codedyn.analysis.stats import percentile_ci
    from codedyn.experiments.influence import (
        SampleStructure,
        checkpoint_summary,
        readout_losses,
        readout_summary,
        readouts_of,
        samples_of,
    )
    from codedyn.experiments.susceptibility import (
        ALL_PROGRAMS,
        program_readings,
        sample_groups,
        unit_susceptibility_replicates,
    )
    from codedyn.resample import resampling_units

    held = samples_of(study.readout_samples(), traces)
    structure = SampleStructure.from_frame(held)
    rows, _ = checkpoint_summary(traces, structure, n_boot, seed)
    for readout in readouts_of(traces)[1:]:
        rows += readout_summary(traces, structure, n_boot, seed, readout)[0]
    found = {f"{row['quantity']}/{row['variant']}": (row["value"], row["low"], row["high"]) for row in rows}
    groups = {**sample_groups(held), ALL_PROGRAMS: np.ones(len(held), dtype=bool)}
    order = list(groups)
    correct, incorrect, every = order.index("correct"), order.index("incorrect"), order.index(ALL_PROGRAMS)
    observed = program_readings(traces)
    names = [str(n) for n in traces["observable"].values]
    for readout in readouts_of(traces):
        chi, reps = unit_susceptibility_replicates(observed, readout_losses(traces, readout), groups,
                                                   resampling_units(held), n_boot, seed, standardised=True)
        columns = {"contrast": (chi[:, incorrect] - chi[:, correct], reps[..., incorrect] - reps[..., correct]),
                   "all": (chi[:, every], reps[..., every])}
        for name, (point, replicates) in columns.items():
            for c, component in enumerate(names):
                interval = percentile_ci(replicates[:, c], point[c])
                found[f"chi_{name}/{readout}/{component}"] = (interval.value, interval.low, interval.high)
    return found


@dataclass(frozen=True)
class StepSizeResult:
    """What the step-size check stored under ``<run>/step_size/`` (nothing, with ``folder`` None, when off)."""

    folder: Path | None
    table: pd.DataFrame | None = None  # one row per reported quantity: both values and intervals, flagged
    step: int | None = None  # the checkpoint sampled again
    lr: float | None = None
    smaller_lr: float | None = None
    flagged: list[str] = field(default_factory=list)  # quantities that move with the step size


def compute_step_size(study: Study) -> StepSizeResult:
    """The pipeline's analysis: the comparison table when the check is on (nothing otherwise). Never samples."""
    import pandas as pd

    from codedyn.analysis.step_size import compare_step_sizes
    from codedyn.experiments.posteriors import posterior_folder
    from codedyn.runs.store import write_json
    from codedyn.sampling.traces import load_traces

    if not uses_step_size_check(study):
        return StepSizeResult(None)
    step, sampling = checked_step(study), study.config.sampling
    smaller = smaller_step_sampling(study)
    folder = next(iter(step_size_outputs(study, step)))
    estimates = [posterior_estimates(study, load_traces(f), sampling.n_bootstrap, sampling.seed + step)
                 for f in (posterior_folder(study, step), folder)]
    rows = [{"step": step, **row} for row in compare_step_sizes(*estimates, sampling.lr, smaller.lr)]
    out = study.output_dir(STEP_SIZE_DIR)
    table = pd.DataFrame(rows)
    table.to_parquet(out / "step_size.parquet", index=False)
    flagged = table.loc[table["flagged"], "quantity"].tolist()
    summary = {"step": step, "lr": sampling.lr, "smaller_lr": smaller.lr, "ratio": sampling.step_size_check,
               "quantities": len(table), "flagged": flagged}
    write_json(out / "step_size.json", summary)
    return StepSizeResult(out, table, step, sampling.lr, smaller.lr, flagged)
