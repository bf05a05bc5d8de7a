"""One posterior per checkpoint, cached as a run unit that influence, LLC and susceptibilities all read.

A unit lives in ``<run>/units/posterior-step<N>-<key>/`` where the key hashes everything that changes the draws:
suite, step, dataset hash, sampling config and the observables' names. A changed hyperparameter therefore makes a
new unit and leaves the others valid; a unit without its ``completed`` marker is recomputed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from codedyn.config import SamplingConfig
from codedyn.data.corpus import CodeCorpus, corpus_fingerprints, load_corpus, sample_windows
from codedyn.progress import SILENT, Progress

# UNITS_DIR lives in codedyn.runs.layout; older call sites (sampling.refined) still read it from here.
from codedyn.runs.layout import UNIT_FILE, UNITS_DIR  # noqa: F401
from codedyn.runs.store import is_completed, staging_dir, write_json
from codedyn.sampling.losses import Readout, readout_context, readout_evalset, select_readout, with_precision
from codedyn.sampling.observables import OBSERVED_BY_SAMPLE, ReadoutObservables
from codedyn.sampling.sgld import sample_posterior
from codedyn.sampling.traces import load_traces, save_traces


def sampling_windows(tokenizer, config: SamplingConfig, corpus: CodeCorpus | None = None, mix=None):
    """``sampling_windows`` random windows of the corpus' training split in this checkpoint's tokenisation; with
    ``mix`` (:func:`planted_mix`: the organism's toy config after its onset) a share of them replaced by planted
    windows as the suite trained on them (:func:`mix_planted_windows`), so the posterior is the one of the model's
    own training distribution.

    Only as many files as needed are encoded (a seeded file order, about ten times the tokens the windows use).
    The windows of the default corpus are kept for the process, keyed by the tokenizer's serialisation and the
    settings: the checkpoints of one suite share a tokenizer, so the posteriors after the first skip the encoding
    (about 1.4 CPU s of a 50 CPU s organism posterior; BENCHMARKS.md, issue 24).
    """
    import torch

    backend = getattr(tokenizer, "backend_tokenizer", None)
    key = None if corpus is not None or config.corpus is not None or backend is None else (
        backend.to_str(), config.sampling_windows, config.window_length, config.seed)
    base = _WINDOWS.get(key) if key is not None else None
    if base is None:
        base = sample_windows(tokenizer, corpus or load_corpus(config.corpus), "train", config.sampling_windows,
                              config.window_length, np.random.default_rng(config.seed), oversample=10)
        if key is not None:
            _WINDOWS.clear()  # one suite's tokenizer at a time
            _WINDOWS[key] = base
    windows = mix_planted_windows(base, tokenizer, mix, config.seed) if mix is not None else np.array(base, copy=True)
    return torch.as_tensor(windows)


_WINDOWS: dict[tuple, Any] = {}  # the corpus windows of sampling_windows (before any planted mix), for this process


PLANTED_SAMPLING_STREAM = 0x5A3D  # the planted programs of sampling windows: a stream of their own, not training's


def planted_mix(toy, step: int, config):
    """The toy suite config (a ToySuiteConfig, or its dump ``toy``) whose planted windows the posterior (or SAE) of
    ``step`` mixes into its windows: the suite's when it trained with a planted task and the checkpoint has seen
    planted batches (``step`` after the onset: checkpoint N is saved before batch N, the first planted batch is the
    onset's), and ``config`` (the sampling or emergence section) reads the suite's own corpus (a user ``corpus``
    is the user's choice of distribution). None otherwise: up to the onset the model trained on the corpus alone."""
    from codedyn.config import ToySuiteConfig

    if toy is None or config.corpus is not None:
        return None
    toy = toy if isinstance(toy, ToySuiteConfig) else ToySuiteConfig.model_validate(toy)
    if not toy.planted.enabled or step <= toy.planted.onset:
        return None
    return toy


def mix_planted_windows(windows: np.ndarray, tokenizer, toy, seed: int) -> np.ndarray:
    """``windows`` [n, length] with each replaced, with probability ``toy.planted.share`` (as in training), by a
    planted training window of the suite (:class:`codedyn.models.toy.PlantedWindows`: a program and its verdict
    line at the window's ``position``, the suite's corpus text around it, the null twin's independent verdicts for
    a null suite) cut to ``length`` at the program's side. The programs are drawn from the task's training pool
    with a stream of their own (seeded by ``seed``); the filler text comes from the corpus windows themselves."""
    from codedyn.config import ConfigError
    from codedyn.models.toy import PlantedWindows, RepeatedSpanBatches

    windows = np.array(windows, copy=True)
    n, length = windows.shape
    if length > toy.context + 1:
        raise ConfigError(f"sampling.window_length {length} exceeds the toy suite's training windows of "
                          f"{toy.context + 1} tokens; its planted windows cannot fill it")
    stream = windows.reshape(-1)
    spans = RepeatedSpanBatches(stream, toy, seed)
    mixer = PlantedWindows(stream, toy, tokenizer, spans)
    mixer.rng = np.random.default_rng([toy.planted.seed, PLANTED_SAMPLING_STREAM, seed])
    for k in range(n):
        if mixer.rng.random() < toy.planted.share:
            row = mixer.window()[0]
            windows[k] = row[-length:] if toy.planted.position == "end" else row[:length]
    return windows


# Every posterior unit records these observables, so influence, LLC and susceptibilities share one posterior.
OBSERVABLES = ("components",)  # per-head and MLP output norms of every read-out program (codedyn.sampling.observables)
UNITS_FORMAT = 6  # bump when a change here changes what a unit stores (2: per-token losses and token metadata;
# 3: readouts inside the training context, pairs in one shared window; 4: matched reference losses, own minibatch
# order per chain, chain-health variables; 5: planted programs' verdict losses; 6: observables per read-out program
# from the readout's own forward passes, no probe batch)
VERDICT_LOSS = "verdict_loss"  # the traces variable (chain, draw, sample) of the planted programs' verdict losses
VERDICT_MARGIN = "verdict_margin"  # ... and of their right verdict's log-odds against the wrong one


# Sampling settings that only the analyses read (they never change a draw), so they stay out of the unit key.
# step_size_check asks for a second posterior (codedyn.experiments.step_size) and changes none of this one's draws.
ANALYSIS_ONLY = frozenset({"n_bootstrap", "max_fraction_below_reference", "max_rhat", "min_ess",
                           "max_chain_correlation", "step_size_check"})


def posterior_key(suite: str, step: int, dataset_hash: str, config: SamplingConfig, sae_latents=None,
                  mix=None) -> str:
    """Everything that changes the draws (the hash of :func:`posterior_key_record`)."""
    from codedyn.runs.units import unit_key

    return unit_key(posterior_key_record(suite, step, dataset_hash, config, sae_latents, mix))


def posterior_key_record(suite: str, step: int, dataset_hash: str, config: SamplingConfig, sae_latents=None,
                         mix=None) -> dict:
    """The inputs of a posterior unit's key; ``sae_latents`` (a
    :class:`~codedyn.sampling.sae_observables.SaeLatentSet` or ``SaeLatentSource``, or None) adds the fingerprint
    of the observed SAE latents' source (the SAE unit's key and the choice settings); ``mix`` (:func:`planted_mix`)
    the toy config whose planted windows enter the sampling windows."""
    sampling = config.model_dump(mode="json", exclude=set(ANALYSIS_ONLY))
    record = {"suite": suite, "step": step, "dataset": dataset_hash, "sampling": sampling,
              "observables": list(OBSERVABLES), "format": UNITS_FORMAT}
    if sae_latents is not None:
        record["sae_latents"] = sae_latents.fingerprint
    if mix is not None:
        record["training_mix"] = mix.model_dump(mode="json")
    record.update(corpus_fingerprints(corpus=config.corpus))  # a user corpus: its contents, not only its paths
    return record


def posterior_unit_dir(run_dir: Path, step: int, key: str) -> Path:
    return Path(run_dir) / UNITS_DIR / f"posterior-step{step}-{key}"


def readout_samples(dataset, config: SamplingConfig):
    """The samples read out at every draw: all samples of ``max_problems`` problems drawn with the readout seed
    (``readout_seed``, else ``seed``; whole problems, so every correct reference keeps its mutants), in dataset
    order."""
    samples = dataset.samples
    problems = sorted(set(samples["problem_id"]))
    if config.max_problems is not None and config.max_problems < len(problems):
        rng = np.random.default_rng(config.readout_rng_seed)
        chosen = set(rng.choice(problems, config.max_problems, replace=False))
        samples = samples[samples["problem_id"].isin(chosen)]
    return samples.reset_index(drop=True)


def posterior_readout(checkpoint, dataset, config: SamplingConfig) -> Readout:
    """The read-out samples (:func:`readout_samples`) in their in-context windows, the mutants that do not fit left
    out (:func:`codedyn.sampling.losses.select_readout`)."""
    context = readout_context(getattr(checkpoint, "context", None), config.max_readout_tokens,
                              "sampling.max_readout_tokens")
    return select_readout(checkpoint.tokenizer, readout_samples(dataset, config), context)


def verdict_targets(tokenizer, samples) -> np.ndarray | None:
    """[N, 2] token ids of each read-out sample's right and wrong verdict (`` ok`` and `` bug`` for a correct
    program, the other way round for a buggy one) when every sample is a planted program (source ``planted``: its
    solution ends in the ``#`` that opens the verdict line, :func:`codedyn.data.problems.planted_problems`); None
    for any other dataset, which has no verdict to read."""
    if "source" not in samples or len(samples) == 0 or not (samples["source"] == "planted").all():
        return None
    from codedyn.models.toy import verdict_token_ids

    ok, bug = verdict_token_ids(tokenizer)
    correct = samples["is_correct"].to_numpy(dtype=bool)
    return np.column_stack([np.where(correct, ok, bug), np.where(correct, bug, ok)]).astype(np.int64)


def posterior_evalset_readout(evalset, verdicts: np.ndarray | None, observables=None):
    """The readout every posterior unit records: ℓ_i and the per-token losses, with ``verdicts`` (planted programs,
    :func:`verdict_targets`) each sample's verdict loss and verdict margin, and with ``observables``
    (:class:`codedyn.sampling.observables.ReadoutObservables`) each sample's component (and SAE latent) readings
    [N, K], all from the same forward passes; recorded as :data:`VERDICT_LOSS`, :data:`VERDICT_MARGIN` and
    :data:`codedyn.sampling.observables.OBSERVED_BY_SAMPLE`."""
    from contextlib import nullcontext

    from codedyn.sampling.losses import sample_token_losses, sample_token_verdict_losses

    def readout(model):
        with (observables.recording(model, evalset.n_samples) if observables is not None
              else nullcontext()) as recording:
            collect = recording.collect if recording is not None else None
            if verdicts is None:
                losses, tokens = sample_token_losses(model, evalset, after_batch=collect)
                extras = {}
            else:
                losses, tokens, verdict, margin = sample_token_verdict_losses(model, evalset, verdicts[:, 0],
                                                                              verdicts[:, 1], after_batch=collect)
                extras = {VERDICT_LOSS: verdict, VERDICT_MARGIN: margin}
        if recording is not None:
            extras[OBSERVED_BY_SAMPLE] = recording.values
        return losses, tokens, extras

    return readout


def token_metadata(tokenizer, readout: Readout, width: int) -> dict:
    """Static (sample, token) variables describing the code tokens whose losses ``token_loss`` records: ``token_id``
    (-1 after a sample's last token), ``token_start`` / ``token_end`` (characters of the solution), ``token_text``,
    ``token_kind`` (see :mod:`codedyn.data.token_kinds`) and ``token_in_mutation`` (incorrect samples only)."""
    from codedyn.data.token_kinds import code_tokens

    samples = readout.samples
    n = len(samples)
    token_id = np.full((n, width), -1, dtype=np.int64)
    start = np.full((n, width), -1, dtype=np.int64)
    end = np.full((n, width), -1, dtype=np.int64)
    text = np.full((n, width), "", dtype=object)
    kind = np.full((n, width), "", dtype=object)
    in_mutation = np.zeros((n, width), dtype=bool)
    solutions = dict(zip(samples["sample_id"], samples["solution"], strict=True))
    for row, sample in enumerate(samples.itertuples(index=False)):
        original = solutions.get(sample.paired_with) if isinstance(sample.paired_with, str) else None
        tokens = code_tokens(tokenizer, sample.prompt, sample.solution, original, int(readout.lengths[row]))
        k = tokens.token_id.shape[0]
        token_id[row, :k], start[row, :k], end[row, :k] = tokens.token_id, tokens.start, tokens.end
        text[row, :k], kind[row, :k], in_mutation[row, :k] = tokens.text, tokens.kind, tokens.in_mutation
    dims = ("sample", "token")
    return {"token_id": (dims, token_id), "token_start": (dims, start), "token_end": (dims, end),
            "token_text": (dims, text.astype(str)), "token_kind": (dims, kind.astype(str)),
            "token_in_mutation": (dims, in_mutation)}


def with_sample_means(traces):
    """``traces`` with ``observed`` (chain, draw, observable) and ``init_observed`` (observable): each observable of
    the whole read-out set, the mean of its per-sample readings (:data:`OBSERVED_BY_SAMPLE`), as every analysis
    that does not resample programs reads it."""
    by_sample = traces[OBSERVED_BY_SAMPLE]
    return traces.assign(observed=by_sample.mean("sample"),
                         init_observed=traces[f"init_{OBSERVED_BY_SAMPLE}"].mean("sample"))


def load_posterior(run_dir: Path, suite_name: str, step: int, dataset_hash: str, config: SamplingConfig,
                   sae_latents=None, mix=None) -> Any:
    """The stored traces of one checkpoint's posterior (FileNotFoundError when it was never sampled)."""
    key = posterior_key(suite_name, step, dataset_hash, config, sae_latents, mix)
    return load_traces(posterior_unit_dir(run_dir, step, key))


def run_posterior(
    checkpoint,
    suite_name: str,
    dataset,
    config: SamplingConfig,
    run_dir: Path,
    progress: Progress = SILENT,
    sae_latents=None,
    mix=None,
) -> Any:
    """Sample (or load the cached) posterior of ``checkpoint`` and return its traces (xarray Dataset).

    ``sae_latents`` (:func:`codedyn.sampling.sae_observables.study_sae_latents`): SAE latents recorded beside the
    head and MLP norms; their names (``L<layer>.SAE<latent>``) follow the components' on the ``observable`` axis.
    ``mix`` (:func:`planted_mix`): sample on the organism's training mix, planted windows included."""
    from codedyn.runs.units import KEY_INPUTS, new_unit_note, unit_key

    record = posterior_key_record(suite_name, checkpoint.step, dataset.card["hash"], config, sae_latents, mix)
    key = unit_key(record)
    unit = posterior_unit_dir(run_dir, checkpoint.step, key)
    if is_completed(unit):
        return load_traces(unit)
    note = new_unit_note(unit, record)
    if note:
        progress.log(note)
    tokenizer = checkpoint.tokenizer
    device = next(checkpoint.model.parameters()).device
    readout = posterior_readout(checkpoint, dataset, config)
    samples = readout.samples
    evalset = readout_evalset(tokenizer, readout, device=str(device))
    windows = sampling_windows(tokenizer, config, mix=mix).to(device)
    observables = ReadoutObservables.of(sae_latents, str(device))
    traces = sample_posterior(
        checkpoint.model, windows,
        with_precision(posterior_evalset_readout(evalset, verdict_targets(tokenizer, samples), observables),
                       config.readout_precision),
        config, progress=progress, description=f"sampling step {checkpoint.step}",
    )
    from codedyn.models.hooks import component_names

    names = component_names(checkpoint.model) + (sae_latents.names() if sae_latents is not None else [])
    traces = with_sample_means(traces.assign_coords(sample=samples["sample_id"].tolist(), observable=names))
    traces = traces.assign(token_metadata(tokenizer, readout, traces.sizes["token"]))
    traces.attrs.update({"suite": suite_name, "step": checkpoint.step, "dataset": dataset.card["hash"],
                         **{k: v for k, v in readout.record().items() if k != "readout_excluded_ids"},
                         "readout_excluded_ids": json.dumps(readout.record()["readout_excluded_ids"])})
    with staging_dir(unit) as stage:
        save_traces(traces, stage)
        write_json(stage / UNIT_FILE, {"kind": "posterior", "suite": suite_name, "step": checkpoint.step,
                                         "dataset": dataset.card["hash"], "key": key,
                                         "sampling": config.model_dump(mode="json"), **readout.record(),
                                         "sae_latents": sae_latents.fingerprint if sae_latents else None,
                                         KEY_INPUTS: record})
    return traces
