"""Potentials with known learning coefficients, sampled as one-parameter-vector models: shared by the LLC and the
refined-LLC tests."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from codedyn.config import SamplingConfig
from codedyn.sampling.sgld import sample_posterior


class Vector(torch.nn.Module):
    def __init__(self, weights):
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(weights, dtype=torch.float32).clone())


def normal_crossing(powers):
    """K(w) = prod_i w_i^(2 k_i): learning coefficient min_i 1 / (2 k_i) (see UNTIED for when it is well posed)."""
    exponents = 2 * torch.as_tensor(powers)

    def potential(model):
        return (model.w ** exponents).prod()

    return potential


def potential_config(**update) -> SamplingConfig:
    base = dict(n_beta=1e4, localization=1.0, chains=4, burn_in=100, draws=150, steps_between_draws=10,
                batch_size=1, sampling_windows=1)
    return SamplingConfig(**(base | update))


def sample_potential(potential, config: SamplingConfig, start, windows=None, loss_fn=None):
    windows = torch.zeros(1, 1) if windows is None else windows
    loss_fn = loss_fn or (lambda model, batch: potential(model).expand(batch.shape[0]))
    return sample_posterior(Vector(start), windows, lambda model: potential(model).reshape(1), config,
                            loss_fn=loss_fn)


def tempered_mean(powers, n_beta: float, localization: float, grid: int = 1200) -> float:
    """E[nβ K(w)] under exp(-nβ K(w) - γ/2 |w|²) by quadrature (what the sampler's excess loss averages to
    without discretisation error): on a log-spaced grid per coordinate, K being even in every w_i."""
    x = np.logspace(-12, np.log10(8 / math.sqrt(localization)), grid)
    mesh = np.meshgrid(*[x] * len(powers), indexing="ij")
    k = n_beta * np.prod([m ** (2 * p) for m, p in zip(mesh, powers, strict=True)], axis=0)
    weight = np.exp(-k - 0.5 * localization * sum(m ** 2 for m in mesh))
    integrate = lambda f: functools.reduce(lambda acc, _: np.trapezoid(acc, x, axis=-1), powers, f)  # noqa: E731
    return float(integrate(k * weight) / integrate(weight))
