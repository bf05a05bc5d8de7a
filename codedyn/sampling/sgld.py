"""Localised RMSProp-SGLD around a checkpoint: one posterior, many readouts.

The update rule is devinterp's (``SGMCMC.rmsprop_sgld``); the loop around it is ours, so that one run records
everything the experiments need: the minibatch sampling loss at every step (diagnostics, LLC) and, at every kept
draw, the loss of every dataset sample (BIF, susceptibilities) plus any registered observables.

Seeding matches devinterp's ``sample()`` so that draws are bitwise identical on CPU (tested): chain c deep-copies
the model, seeds torch's global RNG with ``seed + c`` (the optimizer's noise stream) and draws minibatches from a
separate generator seeded with ``seed``: one random permutation of the sampling windows, cycled, shared by all
chains. Readouts happen after the optimizer step, without gradients and without touching the global RNG.

Differences from devinterp's high-level calls, on purpose: L_n(w*) is computed once (not once per chain), burn-in is
excluded from the LLC, results stay on the device until a draw is complete (no sync per step), and divergence is
detected per chain and reported instead of silently averaged.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from codedyn.config import SamplingConfig
from codedyn.progress import SILENT, Progress
from codedyn.sampling.losses import EvalSet, sample_losses

# An observable maps the current model (no grad) to a 1-d tensor of component readings (see susceptibilities).
Observable = Callable[[object], object]


class SamplingDiverged(RuntimeError):
    """Too many chains produced non-finite losses; the message names them and the step."""


def lm_token_loss(model, input_ids):
    """Per-token next-token loss [B, T-1], computed exactly as devinterp does (log_softmax + gather) so that the
    gradients, and hence the draws, are bitwise identical."""
    import torch

    logits = model(input_ids=input_ids).logits
    log_probs = torch.nn.functional.log_softmax(logits, dim=-1)
    return -log_probs[..., :-1, :].gather(dim=-1, index=input_ids[..., 1:, None])[..., 0]


def minibatch_order(n_windows: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the minibatches [n_batches, batch_size], cycled by the sampler.

    Taken from a shuffled DataLoader (drop_last) over the window indices with a generator seeded ``seed``: the
    loader draws a base seed from the generator before the permutation, so only the loader itself reproduces
    devinterp's order across torch versions.
    """
    import torch
    from torch.utils.data import DataLoader

    if n_windows < batch_size:
        raise ValueError(f"{n_windows} sampling windows are fewer than one batch of {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(range(n_windows), batch_size=batch_size, shuffle=True, generator=generator, drop_last=True)
    return np.stack([batch.numpy() for batch in loader])


@dataclass(frozen=True)
class ChainHealth:
    diverged_at_step: int | None
    drift_to_noise: float  # mean ||eps/2 G (n_beta grad)|| / ||sqrt(eps G) xi|| at draw steps


def _drift_to_noise(optimizer, config: SamplingConfig) -> float:
    """Ratio of the gradient drift norm to the expected noise norm for the step just taken."""
    import torch

    drift_sq, noise_sq = 0.0, 0.0
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            state = optimizer.state[p]
            precond = 1.0 / (torch.sqrt(state["square_avg"]) + config.rmsprop_eps)
            drift_sq += float(((0.5 * config.lr * config.n_beta) * precond * p.grad).pow(2).sum())
            noise_sq += float((config.lr * precond).sum())  # E||sqrt(eps G) xi||^2
    return math.sqrt(drift_sq / noise_sq) if noise_sq > 0 else float("nan")


def _param_groups(model, param_masks: Mapping[str, object] | None):
    """The optimizer's parameters: all of them, or one group per restricted parameter with its mask (the weights
    outside the restriction are frozen so that no gradient is computed for them)."""
    if param_masks is None:
        return model.parameters()
    named = dict(model.named_parameters())
    unknown = sorted(set(param_masks) - set(named))
    if unknown or not param_masks:
        raise ValueError(f"weight restriction names no parameter of the model (unknown: {unknown})")
    for name, param in named.items():
        if name not in param_masks:
            param.requires_grad_(False)
    groups = []
    for name, mask in param_masks.items():
        group = {"params": [named[name]]}
        if mask is not None:
            group["mask"] = mask.to(device=named[name].device, dtype=named[name].dtype)
        groups.append(group)
    return groups


def evalset_readout(evalset: EvalSet) -> Callable[[object], object]:
    """The default readout: ℓ_i(w) of every dataset sample."""
    return lambda model: sample_losses(model, evalset)


def sample_posterior(
    model,
    windows,
    readout: Callable[[object], object],
    config: SamplingConfig,
    observables: Mapping[str, Observable] | None = None,
    loss_fn: Callable[[object, object], object] = lm_token_loss,
    progress: Progress = SILENT,
    description: str = "sampling",
    param_masks: Mapping[str, object] | None = None,
):
    """Sample the localised posterior around ``model``'s weights (the model itself is never modified).

    ``windows``: tensor [M, ...] of sampling data (token windows for a language model), on the model's device;
    ``loss_fn(model, batch)`` gives per-token (or per-example) losses whose mean is the sampling loss;
    ``readout(model)`` gives the per-sample losses ℓ_i recorded at every draw (:func:`evalset_readout`).
    ``param_masks``: sample only these parameters (devinterp's ``ParamMasks``: parameter name -> boolean mask of
    the entries that move, or None for the whole tensor); every other weight stays at w* (weight-restricted
    posteriors, :mod:`codedyn.sampling.restricted`). None samples every parameter.
    Returns an xarray Dataset (see :mod:`codedyn.sampling.traces`).
    """
    import torch
    import xarray as xr
    from devinterp.optim import SGMCMC

    observables = dict(observables or {})
    device = next(model.parameters()).device
    order = torch.as_tensor(minibatch_order(windows.shape[0], config.batch_size, config.seed), device=device)
    n_steps = config.burn_in + config.draws * config.steps_between_draws
    chains, draws = config.chains, config.draws

    with torch.no_grad():
        reference = torch.stack(
            [loss_fn(model, windows[order[k % order.shape[0]]]).float().mean()
             for k in range(config.reference_batches)]
        )
        init_sampling_loss = float(reference.mean())
        init_sample_loss = readout(model).float().cpu().numpy()
        init_obs = {name: fn(model) for name, fn in observables.items()}
    n = init_sample_loss.shape[0]
    obs_names = sorted(observables)
    obs_sizes = [int(init_obs[name].numel()) for name in obs_names]

    sampling_loss = torch.full((chains, n_steps), float("nan"), device=device)
    sample_loss = torch.full((chains, draws, n), float("nan"), device=device)
    observed = torch.full((chains, draws, sum(obs_sizes)), float("nan"), device=device)
    health: list[ChainHealth] = []
    bar = progress.task(description, total=chains * n_steps)

    for chain in range(chains):
        sampler_model = copy.deepcopy(model)
        torch.manual_seed(config.seed + chain)
        optimizer = SGMCMC.rmsprop_sgld(
            _param_groups(sampler_model, param_masks), lr=config.lr, nbeta=config.n_beta,
            localization=config.localization, alpha=config.rmsprop_alpha, eps=config.rmsprop_eps,
            noise_level=config.noise_level,
        )
        sampler_model.train()
        ratios, diverged_at = [], None
        for step in range(n_steps):
            batch = windows[order[step % order.shape[0]]]
            loss = loss_fn(sampler_model, batch).float().mean()
            loss.backward()
            sampling_loss[chain, step] = loss.detach()
            optimizer.step()
            draw, remainder = divmod(step - config.burn_in, config.steps_between_draws)
            if draw >= 0 and remainder == 0:
                ratios.append(_drift_to_noise(optimizer, config))
                with torch.no_grad():
                    sample_loss[chain, draw] = readout(sampler_model)
                    if obs_names:
                        observed[chain, draw] = torch.cat([observables[k](sampler_model).reshape(-1).float()
                                                           for k in obs_names])
                # One host sync per draw: a diverged chain stops here instead of burning the remaining steps.
                finite = torch.isfinite(sampling_loss[chain, step]) & torch.isfinite(sample_loss[chain, draw]).all()
                if not bool(finite):
                    diverged_at = step
            optimizer.zero_grad(set_to_none=True)
            bar.advance()
            if diverged_at is not None:
                bar.advance(n_steps - step - 1)
                progress.log(f"[yellow]chain {chain} diverged at step {step}: dropped from every readout")
                break
        health.append(ChainHealth(diverged_at, float(np.mean(ratios)) if ratios else float("nan")))
        del sampler_model, optimizer

    healthy = np.array([h.diverged_at_step is None for h in health])
    if healthy.sum() < max(1, math.ceil(chains / 2)):
        steps = {c: h.diverged_at_step for c, h in enumerate(health) if h.diverged_at_step is not None}
        raise SamplingDiverged(
            f"{len(steps)} of {chains} chains diverged (chain: step {steps}); lower the step size (lr={config.lr}) "
            f"or raise the localization (gamma={config.localization})"
        )
    sl = sampling_loss.cpu().numpy()
    dataset = xr.Dataset(
        {
            "sample_loss": (("chain", "draw", "sample"), sample_loss.cpu().numpy()),
            "init_sample_loss": (("sample",), init_sample_loss),
            "sampling_loss": (("chain", "step"), sl),
            "init_sampling_loss": ((), init_sampling_loss),
            "healthy": (("chain",), healthy),
            "drift_to_noise": (("chain",), np.array([h.drift_to_noise for h in health])),
            "fraction_below_init": (
                ("chain",),
                np.array([np.mean(sl[c, config.burn_in:] < init_sampling_loss) for c in range(chains)]),
            ),
        },
        coords={"chain": np.arange(chains), "draw": np.arange(draws), "step": np.arange(n_steps),
                "sample": np.arange(n)},
        attrs={"sampling_config": json.dumps(config.model_dump(mode="json")), "n_beta": config.n_beta},
    )
    if obs_names:
        labels = [f"{name}[{k}]" for name, size in zip(obs_names, obs_sizes, strict=True) for k in range(size)]
        dataset["observed"] = (("chain", "draw", "observable"), observed.cpu().numpy())
        dataset["init_observed"] = (
            ("observable",), torch.cat([init_obs[k].reshape(-1).float() for k in obs_names]).cpu().numpy()
        )
        dataset = dataset.assign_coords(observable=labels)
    return dataset


def healthy_sample_losses(traces) -> np.ndarray:
    """[healthy chains, draws, N] sample losses: diverged chains never enter an estimate."""
    return traces["sample_loss"].values[traces["healthy"].values]


def llc_per_chain(traces) -> np.ndarray:
    """LLC_c = n_beta (mean post-burn-in minibatch loss of chain c - L_n(w*)), healthy chains only."""
    from codedyn.sampling.traces import post_burn_in_losses

    losses = post_burn_in_losses(traces)[traces["healthy"].values]
    return traces.attrs["n_beta"] * (losses.mean(axis=1) - float(traces["init_sampling_loss"]))
