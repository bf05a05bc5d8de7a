"""Refined LLC posteriors (Wang et al. 2025, "Differentiation and specialization of attention heads via the refined
local learning coefficient"): one localised posterior per (component, sampling distribution) of a checkpoint.

* **weight-refined**: only the component's weights move (the masks of :mod:`codedyn.sampling.restricted`, so a head
  inside a fused query-key-value matrix moves exactly its rows of it and its columns of the output projection);
  ``full`` moves every weight;
* **data-refined**: the sampling loss is the mean next-token loss on windows of one distribution: ``corpus`` (the
  sampling section's corpus, the windows of every other posterior), ``correct`` / ``incorrect`` (windows of the
  read-out set's correct / incorrect samples, prompt and code, cut from their concatenation as a corpus is), or
  ``user`` (a user corpus).

Its LLC is the project's one formula (:mod:`codedyn.sampling.llc`): nβ times the mean excess of the chains' loss
over the checkpoint's loss on the *same* minibatch, healthy chains only (the sampler's health checks), with the
local-minimum rule. These posteriors read nothing out per sample (the LLC needs only the sampling-loss traces), so a
draw costs no forward pass beyond the SGLD step's.

A unit lives in ``<run>/units/rllc-step<N>-<component>-<distribution>-<key>/``; the key hashes suite, step,
component, distribution, the resolved sampling config (less the settings only analyses read), the dataset (for
``correct`` / ``incorrect``) and the contents of a user corpus, so an interrupted sweep resumes at the first unit
without a ``completed`` marker. A posterior whose chains are too few healthy is stored too, without traces, its
``status`` saying why: that (component, distribution) then has no LLC at that checkpoint, and the sweep goes on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from codedyn.config import ConfigError, CorpusConfig, SamplingConfig, updated
from codedyn.progress import SILENT, Progress
from codedyn.runs.layout import UNIT_FILE
from codedyn.runs.store import content_hash, is_completed, staging_dir, write_json
from codedyn.sampling.restricted import FULL, component_masks

REFINED_FORMAT = 1  # bump when a change here changes what a unit stores
DISTRIBUTIONS = ("corpus", "correct", "incorrect", "user")


class RefinedLLCError(ConfigError):
    """A distribution that cannot be sampled (too little text for a minibatch of windows, no such samples)."""


def default_components(model) -> list[str]:
    """Every head and MLP (the susceptibilities' components), the embedding, and the unembedding unless it is tied
    to the embedding (then it is the same weights)."""
    from codedyn.models.hooks import component_names

    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    return [*component_names(model), "embed", *([] if tied else ["unembed"])]


def refined_masks(model, component: str):
    """The weight restriction of ``component`` (None for ``full``), checked by the restricted estimator's rules."""
    return component_masks(model, component)


def without_output_projection(model, masks: dict[str, Any]) -> dict[str, Any]:
    """A head's masks less its columns of the attention output projection: only its query, key and value weights
    (with a zeroed output projection the loss does not depend on these at all)."""
    from codedyn.models.hooks import architecture

    out_weight = architecture(model).attention_out + ".weight"
    kept = {name: mask for name, mask in masks.items() if not name.endswith(out_weight)}
    if not kept:
        raise RefinedLLCError("the restriction has no weights besides the output projection")
    return kept


def sample_text_windows(tokenizer, texts: list[str], config: SamplingConfig, what: str):
    """``sampling_windows`` windows of ``window_length`` tokens at seeded random offsets of the concatenated,
    EOS-separated texts (as corpus windows are cut), [M, T] int64."""
    import torch

    from codedyn.data.corpus import encode_stream, random_windows

    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    stream = encode_stream(tokenizer, texts, eos) if texts else np.empty(0, dtype=np.int64)
    if stream.shape[0] <= config.window_length:
        raise RefinedLLCError(f"the {what} samples make {stream.shape[0]} tokens, too few for windows of "
                              f"{config.window_length}; lower sampling.window_length or read out more problems "
                              "(sampling.max_problems)")
    rng = np.random.default_rng([config.seed, 17])  # its own stream: not the corpus windows' offsets
    return torch.as_tensor(random_windows(stream, config.sampling_windows, config.window_length, rng))


def distribution_windows(tokenizer, dataset, config: SamplingConfig, distribution: str,
                         user_corpus: CorpusConfig | None = None):
    """The sampling windows [M, T] of one distribution (module docstring)."""
    from codedyn.data.corpus import load_corpus
    from codedyn.sampling.posterior import readout_samples, sampling_windows

    if distribution == "corpus":
        return sampling_windows(tokenizer, config)
    if distribution == "user":
        if user_corpus is None:
            raise RefinedLLCError("the 'user' distribution needs rllc.user_corpus")
        return sampling_windows(tokenizer, config, load_corpus(user_corpus))
    if distribution in ("correct", "incorrect"):
        samples = readout_samples(dataset, config)
        chosen = samples[samples["is_correct"] == (distribution == "correct")]
        texts = [p + s for p, s in zip(chosen["prompt"], chosen["solution"], strict=True)]
        return sample_text_windows(tokenizer, texts, config, distribution)
    raise RefinedLLCError(f"unknown distribution {distribution!r}: expected one of {', '.join(DISTRIBUTIONS)}")


def refined_key(suite: str, step: int, component: str, distribution: str, config: SamplingConfig,
                dataset_hash: str, user_corpus: CorpusConfig | None = None) -> str:
    """The hash of :func:`refined_key_record`."""
    return content_hash(refined_key_record(suite, step, component, distribution, config, dataset_hash, user_corpus))


def refined_key_record(suite: str, step: int, component: str, distribution: str, config: SamplingConfig,
                       dataset_hash: str, user_corpus: CorpusConfig | None = None) -> dict:
    """The inputs of a refined unit's key (the dataset only for the distributions that read it, the user corpus'
    contents only for ``user``)."""
    from codedyn.data.corpus import corpus_fingerprints
    from codedyn.sampling.posterior import ANALYSIS_ONLY

    record = {"suite": suite, "step": step, "component": component, "distribution": distribution,
              "sampling": config.model_dump(mode="json", exclude=set(ANALYSIS_ONLY)), "format": REFINED_FORMAT,
              **corpus_fingerprints(corpus=config.corpus)}
    if distribution in ("correct", "incorrect"):
        record["dataset"] = dataset_hash
    if distribution == "user":
        record.update(corpus_fingerprints(user=user_corpus))
    return record


def refined_unit_dir(run_dir: Path, step: int, component: str, distribution: str, key: str) -> Path:
    from codedyn.sampling.posterior import UNITS_DIR

    return Path(run_dir) / UNITS_DIR / f"rllc-step{step}-{component}-{distribution}-{key}"


def _no_readout(model):
    """Nothing per sample: the LLC reads only the sampling-loss traces."""
    import torch

    return torch.zeros(0, device=next(model.parameters()).device)


def sample_refined(model, windows, config: SamplingConfig, masks, progress: Progress = SILENT,
                   description: str = "refined posterior", loss_fn=None):
    """Traces of the posterior around ``model`` with loss on ``windows`` and only ``masks``' weights moving (None:
    all); ``loss_fn(model, batch)`` defaults to the next-token loss. Raises
    :class:`~codedyn.sampling.sgld.SamplingDiverged` when too few chains are healthy."""
    from codedyn.sampling.sgld import lm_token_loss, sample_posterior

    return sample_posterior(model, windows, _no_readout, config, loss_fn=loss_fn or lm_token_loss,
                            progress=progress, description=description, param_masks=masks)


def run_refined(checkpoint, suite_name: str, dataset, config: SamplingConfig, component: str,
                distributions: list[str], run_dir: Path, user_corpus: CorpusConfig | None = None,
                progress: Progress = SILENT) -> dict[str, Path]:
    """Sample (or find stored) the refined posteriors of one component of ``checkpoint``, one per distribution;
    ``{distribution: unit folder}``. ``config`` is the resolved sampling config (:func:`refined_sampling`)."""
    import time

    from codedyn.runs.units import KEY_INPUTS, new_unit_note
    from codedyn.sampling.sgld import SamplingDiverged
    from codedyn.sampling.traces import save_traces

    model, step, data_hash = checkpoint.model, checkpoint.step, dataset.card["hash"]
    masks = refined_masks(model, component)  # a bad component is one sentence before any sampling
    out: dict[str, Path] = {}
    for distribution in distributions:
        inputs = refined_key_record(suite_name, step, component, distribution, config, data_hash, user_corpus)
        key = content_hash(inputs)
        unit = refined_unit_dir(run_dir, step, component, distribution, key)
        out[distribution] = unit
        if is_completed(unit):
            continue
        note = new_unit_note(unit, inputs)
        if note:
            progress.log(note)
        device = next(model.parameters()).device
        windows = distribution_windows(checkpoint.tokenizer, dataset, config, distribution, user_corpus).to(device)
        started = time.perf_counter()
        try:
            traces, status = sample_refined(model, windows, config, masks, progress,
                                            f"step {step} {component} {distribution}"), "sampled"
        except SamplingDiverged as exc:  # no LLC for this one; the record says why
            traces, status = None, f"no LLC: {exc}"
        record = {"kind": "rllc", "suite": suite_name, "step": step, "component": component,
                  "distribution": distribution, "key": key, "dataset": data_hash, "status": status,
                  "seconds": time.perf_counter() - started,
                  "moved_weights": _moved_weights(model, masks), "sampling": config.model_dump(mode="json"),
                  KEY_INPUTS: inputs}
        with staging_dir(unit) as stage:
            if traces is not None:
                traces.attrs.update({"suite": suite_name, "step": step, "component": component,
                                     "distribution": distribution})
                save_traces(traces, stage)
            write_json(stage / UNIT_FILE, record)
    return out


def _moved_weights(model, masks) -> int:
    if masks is None:
        return sum(int(p.numel()) for p in model.parameters())
    named = dict(model.named_parameters())
    return sum(int(named[n].numel()) if m is None else int(m.sum()) for n, m in masks.items())


def load_refined(unit: Path) -> tuple[Any | None, dict]:
    """(traces or None, record) of a stored refined unit; FileNotFoundError when it was never sampled."""
    from codedyn.sampling.traces import load_traces

    unit = Path(unit)
    if not is_completed(unit):
        raise FileNotFoundError(f"{unit}: no refined LLC posterior here; run `codedyn rllc` first")
    record = json.loads((unit / UNIT_FILE).read_text())
    return (load_traces(unit) if record["status"] == "sampled" else None), record


def refined_sampling(config: SamplingConfig, chains: int | None, draws: int | None, burn_in: int | None,
                     lr: float | None) -> SamplingConfig:
    """The sampling config with the refined posteriors' chain, draw, burn-in counts and step size."""
    update = {k: v for k, v in {"chains": chains, "draws": draws, "burn_in": burn_in, "lr": lr}.items()
              if v is not None}
    return updated(config, update)


__all__ = ["DISTRIBUTIONS", "FULL", "RefinedLLCError", "default_components", "distribution_windows", "load_refined",
           "refined_key", "refined_key_record", "refined_sampling", "refined_unit_dir", "run_refined",
           "sample_refined", "without_output_projection"]
