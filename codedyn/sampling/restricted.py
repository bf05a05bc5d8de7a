"""Weight-restricted posteriors (Baker et al. 2025): one localised posterior per component, in which only that
component's weights move and every other weight stays at the checkpoint w*.

Components are the ones the covariance estimator reads (``L<l>.H<h>`` heads, ``L<l>.MLP``; see
:func:`codedyn.models.hooks.component_names`), plus ``full`` (no restriction), whose posterior supplies the
full-posterior mean that Baker et al.'s estimator needs (:mod:`codedyn.experiments.susceptibility`).

Masks come from devinterp's ``create_param_masks`` (``l0h1``, ``l0 mlp``) for the architectures of codedyn's table
(:data:`codedyn.models.hooks.ARCHITECTURES`: GPT-NeoX, GPT-2, the Llama family) and are checked before use: every
mask must name parameters of the model and select at least one weight, and a head's mask must select exactly its
share of the query-key-value projection(s) and of the output projection. devinterp 2.0.1 knows GPT-NeoX's unembedding as
``embed_out.weight``, which transformers 5 renamed ``lm_head.weight``; its ``unembed`` restriction is then silently
empty, so ``unembed`` is resolved here instead (and a tied unembedding is refused: it is the embedding).

At every draw a restricted posterior records the losses ℓ_i of the read-out samples (as the shared posterior does)
and the observable ``corpus_loss``: the mean next-token loss on a fixed set of ``observation_windows`` sampling
windows, from which φ_C(w) = L_obs(w) - L_obs(w*) is formed.

A unit lives in ``<run>/units/restricted-step<N>-<component>-<key>/``; the key hashes suite, step, dataset, the
resolved sampling config, the observation windows and the component, so an interrupted sweep resumes at the first
component without a ``completed`` marker.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from codedyn.config import ConfigError, SamplingConfig, updated
from codedyn.progress import SILENT, Progress
from codedyn.runs.layout import UNIT_FILE
from codedyn.runs.store import content_hash, is_completed, staging_dir, write_json
from codedyn.sampling.traces import load_traces, save_traces

FULL = "full"  # the unrestricted posterior, sampled with the same readout as the restricted ones
CORPUS_LOSS = "corpus_loss"
RESTRICTED_FORMAT = 1  # bump when a change here changes what a unit stores


class WeightRestrictionError(ConfigError):
    """A component that cannot be turned into a (non-empty, correctly shaped) weight restriction of this model."""


def devinterp_restriction(component: str) -> str:
    """Our component name -> devinterp's restriction string: ``L0.H1`` -> ``l0h1``, ``L1.MLP`` -> ``l1 mlp``."""
    if component in (FULL, "embed", "unembed"):
        return component
    head = re.fullmatch(r"L(\d+)\.H(\d+)", component)
    if head:
        return f"l{head[1]}h{head[2]}"
    mlp = re.fullmatch(r"L(\d+)\.MLP", component)
    if mlp:
        return f"l{mlp[1]} mlp"
    raise WeightRestrictionError(
        f"unknown component {component!r}: expected L<layer>.H<head>, L<layer>.MLP, embed, unembed or full"
    )


def _unembed_masks(model) -> dict[str, Any]:
    named = dict(model.named_parameters())
    found = [name for name in ("lm_head.weight", "embed_out.weight") if name in named]
    if not found:
        tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
        why = "its unembedding is tied to the embedding" if tied else "no lm_head.weight or embed_out.weight"
        raise WeightRestrictionError(f"cannot restrict to the unembedding of {type(model).__name__}: {why}")
    return {found[0]: None}


def component_masks(model, component: str) -> dict[str, Any] | None:
    """devinterp ``ParamMasks`` (parameter name -> boolean mask, or None for the whole tensor) of ``component``,
    None for ``full``. Raises :class:`WeightRestrictionError` instead of returning an empty or misnamed mask."""
    from devinterp.slt.weight_restrictions import create_param_masks

    from codedyn.models.hooks import architecture

    restriction = devinterp_restriction(component)
    if restriction == FULL:
        return None
    architecture(model)  # one sentence for an architecture outside codedyn's table, before devinterp guesses
    if restriction == "unembed":
        masks = _unembed_masks(model)
    else:
        try:
            masks = create_param_masks(model, restriction)
        except ValueError as exc:
            raise WeightRestrictionError(f"component {component!r}: {exc}") from None
    named = dict(model.named_parameters())
    if not masks:
        raise WeightRestrictionError(f"component {component!r} selects no parameter of {type(model).__name__}")
    for name, mask in masks.items():
        if name not in named:
            raise WeightRestrictionError(f"component {component!r} names {name!r}, which the model does not have")
        if mask is not None and (tuple(mask.shape) != tuple(named[name].shape) or not bool(mask.any())):
            raise WeightRestrictionError(f"component {component!r}: the mask of {name!r} is empty or misshapen")
    if restriction.startswith("l") and "h" in restriction and " " not in restriction:
        _check_head_share(model, component, masks)
    return masks


def _check_head_share(model, component: str, masks: dict[str, Any]) -> None:
    """A head owns its share of every per-head tensor of its architecture's table entry
    (:data:`codedyn.models.hooks.ARCHITECTURES`): GPT-NeoX / GPT-2 3 * d_head rows of the fused QKV weight (and
    bias) and d_head columns of the output projection; the Llama family its d_head rows of q_proj, its KV group's
    d_head rows of k_proj and v_proj, and d_head columns of o_proj."""
    from codedyn.models.hooks import architecture, head_dim

    width, d_head = model.config.hidden_size, head_dim(model.config)
    expected = {suffix: factor * d_head * (width if times_width else 1)
                for suffix, factor, times_width in architecture(model).head_share}
    named = dict(model.named_parameters())
    expected = {suffix: count for suffix, count in expected.items() if any(n.endswith(suffix) for n in named)}
    got = {suffix: sum(int(m.sum()) for n, m in masks.items() if n.endswith(suffix) and m is not None)
           for suffix in expected}
    if got != expected:
        raise WeightRestrictionError(f"component {component!r}: head masks select {got}, expected {expected}")


def corpus_loss_observable(windows):
    """Observable ``corpus_loss``: mean next-token loss [1] on the fixed observation windows [M, T]."""
    from codedyn.sampling.sgld import lm_token_loss

    def observe(model):
        import torch

        with torch.no_grad():
            return lm_token_loss(model, windows).float().mean().reshape(1)

    return observe


def restricted_sampling(config: SamplingConfig, chains: int | None, draws: int | None,
                        burn_in: int | None) -> SamplingConfig:
    """The study's sampling config with the restricted posteriors' (smaller) chain, draw and burn-in counts."""
    update = {k: v for k, v in {"chains": chains, "draws": draws, "burn_in": burn_in}.items() if v is not None}
    return updated(config, update)


def restricted_key(suite: str, step: int, dataset_hash: str, config: SamplingConfig, observation_windows: int,
                   component: str) -> str:
    return content_hash(restricted_key_record(suite, step, dataset_hash, config, observation_windows, component))


def restricted_key_record(suite: str, step: int, dataset_hash: str, config: SamplingConfig, observation_windows: int,
                          component: str) -> dict:
    """The inputs of a restricted unit's key (the sampling settings that only the analyses read left out, as for
    the shared posterior)."""
    from codedyn.data.corpus import corpus_fingerprints
    from codedyn.sampling.posterior import ANALYSIS_ONLY

    return {"suite": suite, "step": step, "dataset": dataset_hash,
            "sampling": config.model_dump(mode="json", exclude=set(ANALYSIS_ONLY)),
            "observation_windows": observation_windows, "component": component, "format": RESTRICTED_FORMAT,
            **corpus_fingerprints(corpus=config.corpus)}  # nothing for the standard library


def restricted_unit_dir(run_dir: Path, step: int, component: str, key: str) -> Path:
    from codedyn.runs.store import UNITS_DIR

    return Path(run_dir) / UNITS_DIR / f"restricted-step{step}-{component}-{key}"


def load_restricted(run_dir: Path, step: int, suite: str, dataset_hash: str, config: SamplingConfig,
                    observation_windows: int, component: str):
    """Stored traces of one (checkpoint, component) restricted posterior; FileNotFoundError when never sampled."""
    key = restricted_key(suite, step, dataset_hash, config, observation_windows, component)
    unit = restricted_unit_dir(run_dir, step, component, key)
    if not is_completed(unit):
        raise FileNotFoundError(f"{unit}: no weight-restricted posterior for {component} at step {step}; "
                                "run `codedyn susceptibility --estimator weight_restricted` first")
    return load_traces(unit)


def run_restricted(
    checkpoint,
    suite_name: str,
    dataset,
    config: SamplingConfig,
    observation_windows: int,
    components: list[str] | None,
    run_dir: Path,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Sample (or load) the ``full`` posterior and one restricted posterior per component of ``checkpoint``.

    ``config`` is the resolved sampling config of the restricted posteriors (:func:`restricted_sampling`);
    ``components`` None means every head and MLP. Returns ``{component: traces}``, ``full`` first.
    """
    from codedyn.models.hooks import component_names
    from codedyn.runs.units import KEY_INPUTS, new_unit_note
    from codedyn.sampling.losses import readout_evalset, with_precision
    from codedyn.sampling.posterior import posterior_readout, sampling_windows
    from codedyn.sampling.sgld import evalset_readout, sample_posterior

    model = checkpoint.model
    names = [FULL, *(components or component_names(model))]
    masks = {name: component_masks(model, name) for name in names}  # every mask checked before any sampling
    step, data_hash = checkpoint.step, dataset.card["hash"]
    keys = {name: restricted_key(suite_name, step, data_hash, config, observation_windows, name) for name in names}
    missing = [n for n in names if not is_completed(restricted_unit_dir(run_dir, step, n, keys[n]))]
    out: dict[str, Any] = {}
    if missing:
        device = next(model.parameters()).device
        samples = (readout := posterior_readout(checkpoint, dataset, config)).samples
        evalset = readout_evalset(checkpoint.tokenizer, readout, device=str(device))
        windows = sampling_windows(checkpoint.tokenizer, config).to(device)
        if observation_windows > windows.shape[0]:
            raise ConfigError(f"observation_windows {observation_windows} exceeds the {windows.shape[0]} "
                              "sampling windows")
        observables = {CORPUS_LOSS: corpus_loss_observable(windows[:observation_windows])}
    bar = progress.task(f"restricted posteriors step {step}", total=len(names))
    for name in names:
        unit = restricted_unit_dir(run_dir, step, name, keys[name])
        if name not in missing:
            out[name] = load_traces(unit)
            bar.advance()
            continue
        note = new_unit_note(unit, restricted_key_record(suite_name, step, data_hash, config, observation_windows,
                                                         name))
        if note:
            progress.log(note)
        readout = with_precision(evalset_readout(evalset), config.readout_precision)
        traces = sample_posterior(model, windows, readout, config, observables=observables,
                                  progress=progress, description=f"step {step} {name}", param_masks=masks[name])
        traces = traces.assign_coords(sample=samples["sample_id"].tolist())
        traces.attrs.update({"suite": suite_name, "step": step, "dataset": data_hash, "component": name,
                             "order": names.index(name), "observation_windows": observation_windows})
        with staging_dir(unit) as stage:
            save_traces(traces, stage)
            write_json(stage / UNIT_FILE, {"kind": "restricted", "suite": suite_name, "step": step,
                                             "component": name, "order": names.index(name),
                                             "dataset": data_hash, "key": keys[name],
                                             "observation_windows": observation_windows,
                                             "model_components": component_names(model),
                                             "sampling": config.model_dump(mode="json"),
                                             KEY_INPUTS: restricted_key_record(suite_name, step, data_hash, config,
                                                                               observation_windows, name)})
        out[name] = traces
        bar.advance()
    return out


def restricted_components(run_dir: Path, step: int, suite: str, dataset_hash: str, config: SamplingConfig,
                          observation_windows: int, components: list[str] | None) -> list[str]:
    """The components whose restricted posteriors an analysis reads: ``components``, or every head and MLP of the
    checkpoint (as recorded by its ``full`` unit)."""
    import json

    if components:
        return list(components)
    key = restricted_key(suite, step, dataset_hash, config, observation_windows, FULL)
    record = restricted_unit_dir(run_dir, step, FULL, key) / UNIT_FILE
    if not record.is_file():
        raise FileNotFoundError(f"{record.parent}: no weight-restricted posteriors at step {step}; "
                                "run `codedyn susceptibility --estimator weight_restricted` first")
    return list(json.loads(record.read_text())["model_components"])
