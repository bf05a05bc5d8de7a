"""A study's shared posterior units: where each checkpoint's is, and sampling the missing ones.

The sampler (:mod:`codedyn.sampling.posterior`) takes plain inputs: a checkpoint, the dataset, the sampling config
and, when the posterior observes SAE latents, a :class:`~codedyn.sampling.sae_observables.SaeLatentSet` naming an
SAE unit folder. This module turns a study and a step into those inputs; it is the only place that knows that a
posterior observes the SAE of Experiment 2 (:mod:`codedyn.experiments.emergence`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from codedyn.progress import SILENT, Progress

if TYPE_CHECKING:
    from codedyn.experiments.study import Study


def sae_source(study: Study, step: int):
    """Which SAE latents the posterior of ``step`` observes (a ``SaeLatentSource``: known from the config alone), or
    None when SAE components are off."""
    from codedyn.experiments.emergence import emergence_unit_dir
    from codedyn.sampling.sae_observables import SaeLatentSource

    per_layer = study.config.susceptibility.sae_latents
    if per_layer == 0:
        return None
    return SaeLatentSource(emergence_unit_dir(study, step), per_layer,
                           {"general_threshold": study.config.emergence.general_threshold})


def study_sae_latents(study: Study, step: int):
    """The SAE latents the posterior of ``step`` observes (a ``SaeLatentSet``), or None when SAE components are off.
    The SAE unit must exist (the pipeline trains it first; FileNotFoundError names the command otherwise)."""
    from codedyn.experiments.emergence import latent_choices
    from codedyn.runs.store import is_completed
    from codedyn.sampling.sae_observables import SaeLatentSet, choose_latents

    source = sae_source(study, step)
    if source is None:
        return None
    if not is_completed(source.unit):
        raise FileNotFoundError(
            f"step {step} has no trained SAE at {source.unit}, which its posterior observes; run `codedyn "
            "emergence` first (or `codedyn run`), or set susceptibility.sae_latents: 0"
        )
    return SaeLatentSet(source, choose_latents(latent_choices(study, step), source.per_layer))


def training_mix(study: Study, step: int):
    """The toy config whose planted windows enter the sampling windows of ``step``'s posterior (the organism after
    its onset: :func:`codedyn.sampling.posterior.planted_mix`), or None (any other suite, or before the onset)."""
    from codedyn.sampling.posterior import planted_mix

    toy = (study.suite_record or {}).get("config")
    return planted_mix(toy, step, study.config.sampling) if toy else None


def posterior_folder(study: Study, step: int) -> Path:
    """Where the posterior unit of ``step`` is (or will be) stored."""
    from codedyn.sampling.posterior import posterior_key, posterior_unit_dir

    key = posterior_key(study.suite.name, step, study.dataset.card["hash"], study.config.sampling,
                        sae_source(study, step), training_mix(study, step))
    return posterior_unit_dir(study.run_dir, step, key)


def posterior_outputs(study: Study, step: int) -> dict[Path, dict]:
    """The pipeline unit of one checkpoint's posterior: ``{folder: key record}``."""
    from codedyn.sampling.posterior import posterior_key_record

    record = posterior_key_record(study.suite.name, step, study.dataset.card["hash"], study.config.sampling,
                                  sae_source(study, step), training_mix(study, step))
    return {posterior_folder(study, step): record}


def posterior_unit(study: Study, step: int, progress: Progress = SILENT) -> Path:
    """The posterior unit of one checkpoint of the study, sampled if missing; its folder. When the study observes SAE
    latents, the checkpoint's SAE unit must be stored already (the pipeline orders it first; so does
    :func:`sample_checkpoints`)."""
    from codedyn.runs.store import is_completed
    from codedyn.sampling.posterior import run_posterior

    folder = posterior_folder(study, step)
    if not is_completed(folder):
        checkpoint = study.suite.load(step, device=study.config.suite.device)
        run_posterior(checkpoint, study.suite.name, study.dataset, study.config.sampling, study.run_dir, progress,
                      study_sae_latents(study, step), training_mix(study, step))
    return folder


def sample_checkpoints(study: Study, progress: Progress = SILENT) -> None:
    """Make sure every checkpoint of the study has its posterior unit (sampling only the missing ones); when the
    posteriors observe SAE latents, each checkpoint's SAE unit (Experiment 2) is trained first if missing."""
    bar = progress.task("posteriors: checkpoints", total=len(study.steps))
    for step in study.steps:
        if study.config.susceptibility.sae_latents:
            from codedyn.experiments.emergence import emergence_unit

            emergence_unit(study, step, progress)
        posterior_unit(study, step, progress)
        bar.advance()
