"""One posterior per checkpoint, cached as a run unit that influence, LLC and susceptibilities all read.

A unit lives in ``<run>/units/posterior-step<N>-<key>/`` where the key hashes everything that changes the draws:
suite, step, dataset hash, sampling config and the observables' names. A changed hyperparameter therefore makes a
new unit and leaves the others valid; a unit without its ``completed`` marker is recomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from codedyn.config import SamplingConfig
from codedyn.data.corpus import CodeCorpus, encode_stream, random_windows
from codedyn.progress import SILENT, Progress
from codedyn.runs.store import content_hash, is_completed, staging_dir, write_json
from codedyn.sampling.losses import EvalSet
from codedyn.sampling.sgld import Observable, evalset_readout, sample_posterior
from codedyn.sampling.traces import load_traces, save_traces

UNITS_DIR = "units"


def sampling_windows(tokenizer, config: SamplingConfig, corpus: CodeCorpus | None = None):
    """``sampling_windows`` random windows of the corpus' training split in this checkpoint's tokenisation.

    Only as many files as needed are encoded (a seeded file order, about ten times the tokens the windows use).
    """
    import torch

    corpus = corpus or CodeCorpus.stdlib()
    files = list(corpus.split("train"))
    rng = np.random.default_rng(config.seed)
    rng.shuffle(files)
    needed = 10 * config.sampling_windows * config.window_length
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    texts, approx_tokens = [], 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        approx_tokens += len(text) // 3  # code averages well over 3 characters per BPE token
        if approx_tokens >= needed:
            break
    stream = encode_stream(tokenizer, texts, eos)
    return torch.as_tensor(random_windows(stream, config.sampling_windows, config.window_length, rng))


def posterior_key(suite: str, step: int, dataset_hash: str, config: SamplingConfig, observables: list[str]) -> str:
    return content_hash(
        {"suite": suite, "step": step, "dataset": dataset_hash, "sampling": config.model_dump(mode="json"),
         "observables": sorted(observables)}
    )


def posterior_unit_dir(run_dir: Path, step: int, key: str) -> Path:
    return Path(run_dir) / UNITS_DIR / f"posterior-step{step}-{key}"


def readout_samples(dataset, config: SamplingConfig):
    """The samples read out at every draw: all samples of ``max_problems`` problems drawn with the sampling seed
    (whole problems, so every correct reference keeps its mutants), in dataset order."""
    samples = dataset.samples
    problems = sorted(set(samples["problem_id"]))
    if config.max_problems is not None and config.max_problems < len(problems):
        chosen = set(np.random.default_rng(config.seed).choice(problems, config.max_problems, replace=False))
        samples = samples[samples["problem_id"].isin(chosen)]
    return samples.reset_index(drop=True)


def run_posterior(
    checkpoint,
    suite_name: str,
    dataset,
    config: SamplingConfig,
    run_dir: Path,
    observables: dict[str, Observable] | None = None,
    progress: Progress = SILENT,
) -> Any:
    """Sample (or load the cached) posterior of ``checkpoint`` and return its traces (xarray Dataset)."""
    observables = observables or {}
    key = posterior_key(suite_name, checkpoint.step, dataset.card["hash"], config, list(observables))
    unit = posterior_unit_dir(run_dir, checkpoint.step, key)
    if is_completed(unit):
        return load_traces(unit)
    tokenizer = checkpoint.tokenizer
    device = next(checkpoint.model.parameters()).device
    samples = readout_samples(dataset, config)
    evalset = EvalSet.build(
        tokenizer, samples["prompt"].tolist(), samples["solution"].tolist(), max_length=config.max_sample_tokens,
        device=str(device),
    )
    windows = sampling_windows(tokenizer, config).to(device)
    traces = sample_posterior(
        checkpoint.model, windows, evalset_readout(evalset), config, observables=observables, progress=progress,
        description=f"sampling step {checkpoint.step}",
    )
    traces = traces.assign_coords(sample=samples["sample_id"].tolist())
    traces.attrs.update({"suite": suite_name, "step": checkpoint.step, "dataset": dataset.card["hash"]})
    with staging_dir(unit) as stage:
        save_traces(traces, stage)
        write_json(stage / "unit.json", {"kind": "posterior", "suite": suite_name, "step": checkpoint.step,
                                         "dataset": dataset.card["hash"], "key": key,
                                         "sampling": config.model_dump(mode="json")})
    return traces
