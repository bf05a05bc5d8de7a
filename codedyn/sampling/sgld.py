"""Localised RMSProp-SGLD around a checkpoint: one posterior, many readouts.

The update rule is devinterp's (``SGMCMC.rmsprop_sgld``); the loop around it is ours, so that one run records
everything the experiments need: the minibatch sampling loss at every step and the checkpoint's loss on the same
minibatch (LLC, diagnostics) and, at every kept draw, the loss of every dataset sample (BIF, susceptibilities) plus
any registered observables.

Seeding: chain c deep-copies the model and seeds torch's global RNG (the optimizer's noise stream) from the seed
sequence (seed, c), and its minibatches come from a separate generator seeded the same way, so chains are
independent and their R-hat / ESS can fail, and runs with seeds s and s + 1 share no chain (devinterp's ``seed + c``
made seed s's chain 1 seed s + 1's chain 0: BENCHMARKS.md, "seed-to-seed agreement"). With
``shared_minibatch_order`` the sampler is devinterp's: noise seeded ``seed + c`` and every chain cycling one shuffled
order (seeded ``seed``), which makes the draws bitwise identical to devinterp's on CPU (tested) but the chains' loss
traces follow the same batches.
Readouts happen after the optimizer step, without gradients and without touching the global RNG.

The LLC reference: L_B(w*) is evaluated once per sampling window the chains visit (the loss of a fixed-length window
does not depend on the batch it is in), so every step's ``reference_loss`` is the checkpoint's loss on exactly the
minibatch that step used (:mod:`codedyn.sampling.llc`). Burn-in is excluded from the LLC, results stay on the device
until a draw is complete (no sync per step).

Chain health: a chain is unhealthy, and enters no estimate, when it diverges (non-finite loss or readout), when its
step exceeds the RMSProp-SGLD stability bound (``step_sharpness`` = ε/2 · λ_max of the preconditioned drift Jacobian
G^½ (nβ H + γ) G^½, measured by power iteration at the first draw; a quadratic direction with curvature λ is stable
for ε/2 · λ < 2 and resolved only well below it), when its excess loss L_B(w_t) - L_B(w*) spikes or oscillates
(period-2 flips give a strongly negative lag-1 autocorrelation), or when its LLC exceeds d/2 (no model has a larger
learning coefficient) by more than three Monte Carlo standard errors. Too few healthy chains refuse the posterior
with one sentence naming the setting to lower.
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
from codedyn.sampling.losses import EvalSet, sample_losses, sample_token_losses

# An observable maps the current model (no grad) to a 1-d tensor of component readings (see susceptibilities).
Observable = Callable[[object], object]


class SamplingDiverged(RuntimeError):
    """Too many chains produced non-finite losses; the message names them and the step."""


def lm_token_loss(model, input_ids):
    """Per-token next-token loss [B, T-1], computed exactly as devinterp does (log_softmax + gather) so that the
    gradients, and hence the draws, are bitwise identical."""
    from codedyn.models.token_loss import gathered_token_losses

    return gathered_token_losses(model, input_ids)


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


def chain_noise_seed(config, chain: int) -> int:
    """The seed of chain ``chain``'s SGLD noise: devinterp's ``seed + chain`` with ``shared_minibatch_order``
    (the parity mode), else one drawn from the seed sequence (seed, chain), independent across seeds and chains."""
    if config.shared_minibatch_order:
        return config.seed + chain
    return int(np.random.SeedSequence([config.seed, chain, 1]).generate_state(1)[0])


def chain_minibatch_order(n_windows: int, config: SamplingConfig, chain: int) -> np.ndarray:
    """Chain ``chain``'s minibatch order: devinterp's shared one (seeded ``seed``) with ``shared_minibatch_order``,
    else its own, from a generator seeded by (seed, chain) (a seed sequence, so chain c's order never equals the
    shared order or another chain's by construction)."""
    if config.shared_minibatch_order:
        return minibatch_order(n_windows, config.batch_size, config.seed)
    seed = int(np.random.SeedSequence([config.seed, chain]).generate_state(1)[0])
    return minibatch_order(n_windows, config.batch_size, seed)


def window_reference_losses(model, windows, loss_fn, batch_size: int, needed: np.ndarray):
    """L(w*) of each window in ``needed`` (the others NaN): [M] float32 on the windows' device, evaluated in
    chunks of ``batch_size``. ``loss_fn`` must give per-window (or per-token) losses, so that a minibatch's mean
    loss is the mean of its windows'."""
    import torch

    out = torch.full((windows.shape[0],), float("nan"), device=windows.device)
    needed = np.unique(needed)
    with torch.no_grad():
        for start in range(0, needed.size, batch_size):
            rows = torch.as_tensor(needed[start:start + batch_size], device=windows.device)
            losses = loss_fn(model, windows[rows]).float()
            if losses.ndim == 0 or losses.shape[0] != rows.shape[0]:
                raise ValueError(f"loss_fn must return one loss per window (or per token) of the batch, got shape "
                                 f"{tuple(losses.shape)} for {rows.shape[0]} windows")
            out[rows] = losses.reshape(rows.shape[0], -1).mean(dim=1)
    return out


@dataclass(frozen=True)
class ChainHealth:
    diverged_at_step: int | None
    drift_to_noise: float  # mean ||eps/2 G (n_beta grad)|| / ||sqrt(eps G) xi|| at draw steps
    step_sharpness: float = float("nan")  # eps/2 lambda_max(G^1/2 (n_beta H + gamma) G^1/2) at the first draw
    spikiness: float = float("nan")  # (max - median) / (1.4826 MAD) of the post-burn-in excess loss
    loss_autocorrelation: float = float("nan")  # lag-1 autocorrelation of the post-burn-in excess loss
    llc: float = float("nan")  # this chain's nβ · mean excess loss
    llc_se: float = float("nan")  # its Monte Carlo standard error (ESS of the excess loss)
    problem: str = ""  # why the chain is unhealthy; "" when healthy

    @property
    def healthy(self) -> bool:
        return not self.problem


def spikiness(x: np.ndarray, unit: float = 0.0) -> np.ndarray:
    """Largest excursion above the median of each row of ``x`` [chains, steps] (excess losses), in units of the
    row's robust standard deviation (1.4826 x the median absolute deviation) plus ``unit``.

    ``unit`` = 1/nβ is the posterior's own scale of loss fluctuations: nβ · (excess loss) of a tempered posterior
    fluctuates by O(1) (exactly Gamma(λ, 1) for a normal-crossing potential), so in a low-dimensional, heavy-tailed
    posterior, whose robust sd is far below 1/nβ, a healthy excursion of a few units is not counted as a spike; in a
    neural network, whose minibatch noise makes the robust sd much larger than 1/nβ, it changes nothing. inf for
    a constant row with one excursion (and unit 0), 0 for a constant row."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    median = np.median(x, axis=1)
    scale = 1.4826 * np.median(np.abs(x - median[:, None]), axis=1) + unit
    peak = x.max(axis=1) - median
    return np.divide(peak, scale, out=np.where(peak > 0, np.inf, 0.0), where=scale > 0)


# The spike rule's threshold is stated for chains of up to SPIKE_REFERENCE_STEPS post-burn-in steps. The largest
# excursion of a longer chain grows with its length even when nothing is wrong: for a tail that decays like an
# exponential of scale s, the maximum of n draws grows by s · ln(n / n_ref), and a unit exponential's robust
# standard deviation (1.4826 · its MAD 0.4812) is 0.713, so in robust standard deviations the growth is
# ln(n / n_ref) / 0.713. An exponential tail is the heaviest a stable chain's excess loss has (nβ · excess loss of a
# tempered posterior is Gamma-distributed near a normal-crossing singularity); a Gaussian tail's maximum grows only
# like sqrt(2 ln n), so this allowance keeps the false-refusal rate of any length at or below the reference length's.
SPIKE_REFERENCE_STEPS = 100
SPIKE_GROWTH_PER_LOG_STEP = 1 / (1.4826 * 0.4812)  # robust sds per e-fold of chain length, exponential tail


def spike_allowance(steps: int) -> float:
    """How many robust standard deviations a chain of ``steps`` post-burn-in steps may exceed ``max_spikiness``
    by (0 up to :data:`SPIKE_REFERENCE_STEPS`): the growth of a stable chain's largest excursion with its length,
    so that the spike rule refuses a long stable chain no more often than a short one (comment above)."""
    return SPIKE_GROWTH_PER_LOG_STEP * math.log(max(steps, SPIKE_REFERENCE_STEPS) / SPIKE_REFERENCE_STEPS)


def lag1_autocorrelation(x: np.ndarray) -> float:
    """Lag-1 autocorrelation of a 1-d series (NaN when constant)."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    denominator = float(x @ x)
    return float(x[1:] @ x[:-1] / denominator) if denominator > 0 else float("nan")


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


def _sampled_params(optimizer):
    """(parameter, mask or None) of every parameter the optimizer moves."""
    return [(p, group.get("mask")) for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


def step_sharpness(model, optimizer, batch, loss_fn, config: SamplingConfig) -> float:
    """ε/2 · λ_max(G^½ (nβ H_B + γ I) G^½) at the current weights: the factor by which one step contracts the
    stiffest preconditioned direction (stable below 2, accurate well below it), G the current RMSProp
    preconditioner, H_B the Hessian of the minibatch loss. Power iteration with finite-difference Hessian-vector
    products (the CPU attention kernels have no double backward); the difference step is the expected Langevin noise
    norm per SGLD step, the scale on which stability matters. The weights are restored bitwise and torch's global
    RNG is untouched (so the draws do not change)."""
    import torch

    params = _sampled_params(optimizer)
    if config.stability_iterations == 0 or not params:
        return float("nan")
    device = params[0][0].device
    scales = []
    for p, mask in params:
        square_avg = optimizer.state[p].get("square_avg", torch.zeros_like(p))
        scale = (1.0 / (torch.sqrt(square_avg) + config.rmsprop_eps)).sqrt()
        scales.append(scale if mask is None else scale * mask)
    saved = [p.detach().clone() for p, _ in params]
    tensors = [p for p, _ in params]

    def gradient():
        return torch.autograd.grad(loss_fn(model, batch).float().mean(), tensors)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        generator = torch.Generator(device=device).manual_seed(config.seed)
        u = [torch.randn(p.shape, generator=generator, device=device) * (s != 0)
             for p, s in zip(tensors, scales, strict=True)]
        radius = math.sqrt(config.lr * float(sum(float((s**2).sum()) for s in scales)))
        base = gradient()
        sharpness = float("nan")
        try:
            for _ in range(config.stability_iterations):
                norm = math.sqrt(sum(float((v**2).sum()) for v in u))
                if norm == 0:
                    break
                u = [v / norm for v in u]
                x = [s * v for s, v in zip(scales, u, strict=True)]  # the direction in weight space
                x_norm = math.sqrt(sum(float((v**2).sum()) for v in x))
                if x_norm == 0:
                    break
                with torch.no_grad():
                    for p, w0, v in zip(tensors, saved, x, strict=True):
                        p.copy_(w0 + (radius / x_norm) * v)
                hx = [(g1 - g0) * (x_norm / radius) for g1, g0 in zip(gradient(), base, strict=True)]
                with torch.no_grad():
                    for p, w0 in zip(tensors, saved, strict=True):
                        p.copy_(w0)
                mu = [s * (config.n_beta * h + config.localization * v) for s, h, v in zip(scales, hx, x, strict=True)]
                sharpness = 0.5 * config.lr * float(sum(float((a * b).sum()) for a, b in zip(u, mu, strict=True)))
                u = mu
        finally:
            with torch.no_grad():
                for p, w0 in zip(tensors, saved, strict=True):
                    p.copy_(w0)
    return sharpness


def chain_health(diverged_at: int | None, drift: float, sharpness: float, excess: np.ndarray, n_params: int,
                 config: SamplingConfig) -> ChainHealth:
    """Judge one chain from its post-burn-in excess losses [steps] (rules in the module docstring)."""
    from codedyn.sampling.llc import llc_of
    from codedyn.sampling.mcmc import effective_sample_size

    if diverged_at is not None:
        return ChainHealth(diverged_at, drift, sharpness, problem=f"diverged at step {diverged_at}")
    problems = []
    if math.isfinite(sharpness) and sharpness > config.max_step_sharpness:
        problems.append(f"step past the stability bound (ε/2·λ_max = {sharpness:.3g} > {config.max_step_sharpness:g})")
    spike, autocorrelation = float("nan"), float("nan")
    llc, llc_se = float(llc_of(excess, config.n_beta)), float("nan")
    if excess.size >= 4 and np.ptp(excess) > 0:
        spike = float(spikiness(excess, 1 / config.n_beta)[0])
        autocorrelation = lag1_autocorrelation(excess)
        ess = effective_sample_size(excess[None])
        llc_se = config.n_beta * float(np.std(excess, ddof=1)) / math.sqrt(ess) if ess > 0 else float("nan")
        threshold = config.max_spikiness + spike_allowance(excess.size)
        if spike > threshold:
            problems.append(f"loss spikes ({spike:.3g} robust sd > {threshold:.3g} for {excess.size} steps)")
        # Under white noise the lag-1 estimate has standard error 1/sqrt(n): short chains need a clearer signal.
        if autocorrelation + 2 / math.sqrt(excess.size) < config.min_loss_autocorrelation:
            problems.append(f"loss oscillates (lag-1 autocorrelation {autocorrelation:.2f} < "
                            f"{config.min_loss_autocorrelation:g})")
    bound = n_params / 2
    if llc - 3 * (llc_se if math.isfinite(llc_se) else 0.0) > bound:
        problems.append(f"LLC {llc:.3g} above d/2 = {bound:.3g}")
    return ChainHealth(None, drift, sharpness, spike, autocorrelation, llc, llc_se, "; ".join(problems))


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


def evalset_readout(evalset: EvalSet, tokens: bool = False) -> Callable[[object], object]:
    """The default readout: ℓ_i(w) of every dataset sample; with ``tokens``, also their per-token losses (the pair
    ``(ℓ [N], token losses [N, T])`` from the same forward pass, see :func:`sample_token_losses`)."""
    if tokens:
        return lambda model: sample_token_losses(model, evalset)
    return lambda model: sample_losses(model, evalset)


def _split_readout(value):
    """A readout returns ℓ [N] or the pair (ℓ [N], per-token losses [N, T])."""
    return (value[0], value[1]) if isinstance(value, tuple) else (value, None)


def _extra_readouts(value) -> dict:
    """The per-sample readouts beside ℓ that a readout returning ``(ℓ, token losses, {name: [N]})`` adds (e.g. the
    planted programs' verdict losses, :func:`codedyn.sampling.losses.sample_token_verdict_losses`); {} otherwise."""
    return dict(value[2]) if isinstance(value, tuple) and len(value) > 2 else {}


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
    ``readout(model)`` gives the per-sample losses ℓ_i recorded at every draw (:func:`evalset_readout`), or the pair
    (ℓ_i, per-token losses [N, T], NaN-padded), recorded as ``token_loss`` (chain, draw, sample, token), or the
    triple (ℓ_i, per-token losses, {name: [N] or [N, K]}) whose named per-sample readouts are recorded as ``name``
    (chain, draw, sample), or (chain, draw, sample, observable) for per-sample observables
    (:mod:`codedyn.sampling.observables`), beside ``sample_loss`` (and ``init_<name>`` at w*).
    ``param_masks``: sample only these parameters (devinterp's ``ParamMasks``: parameter name -> boolean mask of
    the entries that move, or None for the whole tensor); every other weight stays at w* (weight-restricted
    posteriors, :mod:`codedyn.sampling.restricted`). None samples every parameter.
    Returns an xarray Dataset (see :mod:`codedyn.sampling.traces`).
    """
    import torch
    import xarray as xr
    from devinterp.optim import SGMCMC

    from codedyn.sampling.llc import excess_losses, fraction_below

    observables = dict(observables or {})
    device = next(model.parameters()).device
    n_steps = config.burn_in + config.draws * config.steps_between_draws
    chains, draws = config.chains, config.draws
    orders = [torch.as_tensor(chain_minibatch_order(windows.shape[0], config, c), device=device)
              for c in range(chains)]
    visited = np.concatenate([o[: min(n_steps, o.shape[0])].reshape(-1).cpu().numpy() for o in orders])

    with torch.no_grad():
        # L(w*) once per window any chain visits: every step's reference is then the same minibatch at w*.
        window_reference = window_reference_losses(model, windows, loss_fn, config.batch_size, visited)
        init_sampling_loss = float(window_reference[torch.as_tensor(np.unique(visited), device=device)].mean())
        init_read = readout(model)
        init_sample_loss, init_token_loss = _split_readout(init_read)
        init_extra = _extra_readouts(init_read)
        init_sample_loss = init_sample_loss.float().cpu().numpy()
        init_obs = {name: fn(model) for name, fn in observables.items()}
    n = init_sample_loss.shape[0]
    obs_names = sorted(observables)
    obs_sizes = [int(init_obs[name].numel()) for name in obs_names]

    sampling_loss = torch.full((chains, n_steps), float("nan"), device=device)
    reference_loss = torch.stack([window_reference[o[torch.arange(n_steps, device=device) % o.shape[0]]].mean(dim=1)
                                  for o in orders])  # [chains, steps]
    sample_loss = torch.full((chains, draws, n), float("nan"), device=device)
    token_loss = None if init_token_loss is None else torch.full(
        (chains, draws, *init_token_loss.shape), float("nan"), device=device
    )
    extra = {name: torch.full((chains, draws, *values.shape), float("nan"), device=device)
             for name, values in init_extra.items()}
    observed = torch.full((chains, draws, sum(obs_sizes)), float("nan"), device=device)
    health: list[ChainHealth] = []
    bar = progress.task(description, total=chains * n_steps)

    for chain in range(chains):
        sampler_model = copy.deepcopy(model)
        torch.manual_seed(chain_noise_seed(config, chain))
        optimizer = SGMCMC.rmsprop_sgld(
            _param_groups(sampler_model, param_masks), lr=config.lr, nbeta=config.n_beta,
            localization=config.localization, alpha=config.rmsprop_alpha, eps=config.rmsprop_eps,
            noise_level=config.noise_level,
        )
        n_params = sum(int(p.numel()) if mask is None else int((mask != 0).sum())
                       for p, mask in _sampled_params(optimizer))
        sampler_model.train()
        order = orders[chain]
        ratios, diverged_at, sharpness = [], None, float("nan")
        for step in range(n_steps):
            batch = windows[order[step % order.shape[0]]]
            loss = loss_fn(sampler_model, batch).float().mean()
            loss.backward()
            sampling_loss[chain, step] = loss.detach()
            optimizer.step()
            draw, remainder = divmod(step - config.burn_in, config.steps_between_draws)
            if draw >= 0 and remainder == 0:
                ratios.append(_drift_to_noise(optimizer, config))
                if draw == 0:
                    sharpness = step_sharpness(sampler_model, optimizer, batch, loss_fn, config)
                with torch.no_grad():
                    read = readout(sampler_model)
                    read_sample, read_tokens = _split_readout(read)
                    sample_loss[chain, draw] = read_sample
                    for name, values in _extra_readouts(read).items():
                        extra[name][chain, draw] = values
                    if token_loss is not None:
                        token_loss[chain, draw] = read_tokens
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
        excess = (sampling_loss[chain, config.burn_in:] - reference_loss[chain, config.burn_in:]).double()
        verdict = chain_health(diverged_at, float(np.mean(ratios)) if ratios else float("nan"), sharpness,
                               excess.cpu().numpy(), n_params, config)
        if diverged_at is None and not verdict.healthy:
            progress.log(f"[yellow]chain {chain} is unhealthy ({verdict.problem}): dropped from every readout")
        health.append(verdict)
        del sampler_model, optimizer

    healthy = np.array([h.healthy for h in health])
    if healthy.sum() < max(1, math.ceil(chains / 2)):
        diverged = {c: h.diverged_at_step for c, h in enumerate(health) if h.diverged_at_step is not None}
        if len(diverged) == int((~healthy).sum()):
            raise SamplingDiverged(
                f"{description}: {len(diverged)} of {chains} chains diverged (chain: step {diverged}); lower the step "
                f"size (lr={config.lr}) or raise the localization (gamma={config.localization})"
            )
        problems = "; ".join(f"chain {c}: {h.problem}" for c, h in enumerate(health) if not h.healthy)
        raise SamplingDiverged(
            f"{description}: only {int(healthy.sum())} of {chains} chains are healthy ({problems}), too few for a "
            f"posterior; "
            f"lower the step size (lr={config.lr})"
        )
    sl = sampling_loss.cpu().numpy()
    rl = reference_loss.cpu().numpy()
    excess = excess_losses(sl, rl, config.burn_in)

    def per_chain(field):
        return ("chain",), np.array([getattr(h, field) for h in health], dtype=np.float64)

    dataset = xr.Dataset(
        {
            "sample_loss": (("chain", "draw", "sample"), sample_loss.cpu().numpy()),
            "init_sample_loss": (("sample",), init_sample_loss),
            "sampling_loss": (("chain", "step"), sl),
            "reference_loss": (("chain", "step"), rl),
            "init_sampling_loss": ((), init_sampling_loss),
            "healthy": (("chain",), healthy),
            "unhealthy_reason": (("chain",), np.array([h.problem for h in health], dtype=str)),
            "drift_to_noise": per_chain("drift_to_noise"),
            "step_sharpness": per_chain("step_sharpness"),
            "spikiness": per_chain("spikiness"),
            "loss_autocorrelation": per_chain("loss_autocorrelation"),
            "chain_llc": per_chain("llc"),
            "chain_llc_se": per_chain("llc_se"),
            "fraction_below_init": (("chain",), np.array([fraction_below(excess[c]) for c in range(chains)])),
        },
        coords={"chain": np.arange(chains), "draw": np.arange(draws), "step": np.arange(n_steps),
                "sample": np.arange(n)},
        attrs={"sampling_config": json.dumps(config.model_dump(mode="json")), "n_beta": config.n_beta},
    )
    if token_loss is not None:
        dataset["token_loss"] = (("chain", "draw", "sample", "token"), token_loss.cpu().numpy())
        dataset["init_token_loss"] = (("sample", "token"), init_token_loss.float().cpu().numpy())
        dataset = dataset.assign_coords(token=np.arange(init_token_loss.shape[1]))
    for name, values in extra.items():
        dims = ("sample", "observable")[: init_extra[name].dim()]  # [N] per sample, [N, K] per-sample observables
        dataset[name] = (("chain", "draw", *dims), values.cpu().numpy())
        dataset[f"init_{name}"] = (dims, init_extra[name].float().cpu().numpy())
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
