"""Potentials with known learning coefficients, sampled as one-parameter-vector models: shared by the LLC and the
refined-LLC tests."""

from __future__ import annotations

import torch

from codedyn.config import SamplingConfig


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
