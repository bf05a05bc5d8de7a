"""The LLC against known answers: normal-crossing potentials with known learning coefficients, a reference on the
very minibatches the chains saw, a checkpoint that is not a local minimum, and a step past the stability bound."""

import math

import numpy as np
import pytest
import torch

from codedyn.config import SamplingConfig
from codedyn.sampling.llc import estimate_llc, llc_of
from codedyn.sampling.mcmc import effective_sample_size
from codedyn.sampling.sgld import SamplingDiverged, sample_posterior


class Vector(torch.nn.Module):
    def __init__(self, weights):
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(weights, dtype=torch.float32).clone())


def normal_crossing(powers):
    """K(w) = prod_i w_i^(2 k_i): learning coefficient min_i 1 / (2 k_i)."""
    exponents = 2 * torch.as_tensor(powers)

    def potential(model):
        return (model.w ** exponents).prod()

    return potential


def sample_potential(potential, config: SamplingConfig, start, windows=None, loss_fn=None):
    windows = torch.zeros(1, 1) if windows is None else windows
    loss_fn = loss_fn or (lambda model, batch: potential(model).expand(batch.shape[0]))
    return sample_posterior(Vector(start), windows, lambda model: potential(model).reshape(1), config,
                            loss_fn=loss_fn)


def potential_config(**update) -> SamplingConfig:
    base = dict(n_beta=1e4, localization=1.0, chains=4, burn_in=100, draws=150, steps_between_draws=10,
                batch_size=1, sampling_windows=1)
    return SamplingConfig(**(base | update))


# Step sizes chosen so that the step sharpness ε/2·λ_max stays below ~0.1 where the chains live (discretisation
# bias below ~5%), yet the chains mix within the 1500 post-burn-in steps. The localization γ = 1 against nβ = 1e4
# shifts E[nβ K] by less than 1% of λ (its weight in the rescaled integral is γ nβ^(-1/k) / 2).
@pytest.mark.parametrize(("powers", "lr", "rmsprop_eps"), [((1,), 1e-6, 0.1), ((2,), 3e-5, 0.1), ((3,), 5e-5, 0.1)])
def test_normal_crossing_learning_coefficient_is_bracketed(powers, lr, rmsprop_eps):
    """E_β[nβ K(w)] → λ = min 1/(2k) for K = w^(2k) (nβ K is Gamma(λ, 1) distributed in the limit): the estimate
    must lie within 2 standard errors (from the effective sample size of the excess loss) of λ."""
    torch.set_num_threads(1)
    config = potential_config(lr=lr, rmsprop_eps=rmsprop_eps)
    traces = sample_potential(normal_crossing(powers), config, np.zeros(len(powers)))
    assert traces["healthy"].values.all(), traces["unhealthy_reason"].values
    assert np.nanmax(traces["step_sharpness"].values) < 0.1
    llc = estimate_llc(traces)
    assert llc.local_minimum
    scaled = config.n_beta * llc.excess
    se = scaled.std() / math.sqrt(effective_sample_size(scaled))
    truth = 1 / (2 * max(powers))
    assert abs(llc.value - truth) < 2 * se, (llc.value, truth, se)
    assert se < 0.25 * truth  # the bracket is informative, not just wide


def test_a_step_past_the_stability_bound_is_refused_naming_lr():
    """K(w) = w² (λ = 0.5) at ε = 1e-4, nβ = 1e4, γ = 1: ε/2 · G · 2nβ ≈ 9 at w*, so the chain only stays finite
    because RMSProp shrinks G until it oscillates at the bound, with an LLC near 400. Every chain must be flagged
    and the posterior refused, naming the step size; at ε = 1e-6 the same chains are healthy."""
    torch.set_num_threads(1)
    config = potential_config(lr=1e-4, draws=50)
    with pytest.raises(SamplingDiverged, match=r"0 of 4 chains are healthy.*stability bound.*lower the step size "
                                               r"\(lr=0\.0001\)"):
        sample_potential(normal_crossing((1,)), config, np.zeros(1))
    stable = sample_potential(normal_crossing((1,)), config.model_copy(update={"lr": 1e-6}), np.zeros(1))
    assert stable["healthy"].values.all()


def test_the_llc_above_d_over_2_is_unhealthy_even_when_the_step_is_stable():
    """Turn the stability check off: the oscillating chains are still caught by their LLC far above d/2 = 0.5."""
    torch.set_num_threads(1)
    config = potential_config(lr=1e-4, draws=50, stability_iterations=0)
    with pytest.raises(SamplingDiverged, match=r"above d/2 = 0\.5.*lower the step size"):
        sample_potential(normal_crossing((1,)), config, np.zeros(1))


def test_reference_is_the_same_minibatch_at_the_checkpoint():
    """Windows of very different difficulty (a constant offset c_i per window, which no weight can change): the
    matched reference cancels them exactly, so the LLC equals the one without offsets; a reference on a few fixed
    batches (the old estimator) would be off by the difference in their mean offset."""
    torch.set_num_threads(1)
    potential = normal_crossing((1,))
    offsets = torch.as_tensor(np.random.default_rng(0).exponential(5.0, size=(64, 1)), dtype=torch.float32)
    config = potential_config(lr=1e-6, draws=40, batch_size=4, sampling_windows=64)

    def offset_loss(model, batch):
        return batch[:, 0] + potential(model)

    with_offsets = estimate_llc(sample_potential(potential, config, np.zeros(1), offsets, offset_loss))
    without = estimate_llc(sample_potential(potential, config, np.zeros(1), torch.zeros(64, 1), offset_loss))
    assert with_offsets.value == pytest.approx(without.value, rel=1e-3, abs=1e-3)
    # What a fixed reference on the first 8 batches of chain 0 would have given instead: far off.
    traces = sample_potential(potential, config, np.zeros(1), offsets, offset_loss)
    post = traces["sampling_loss"].values[:, config.burn_in:]
    fixed_reference = float(traces["reference_loss"].values[0, :8].mean())
    assert abs(llc_of(post - fixed_reference, config.n_beta) - with_offsets.value) > 10 * abs(with_offsets.value)


def test_a_checkpoint_that_is_not_a_local_minimum_gets_no_llc():
    """Start on the slope of K(w) = w² (w* = 0.3): the chains slide down and stay below L_B(w*) nearly always."""
    torch.set_num_threads(1)
    config = potential_config(lr=1e-6, draws=40)
    traces = sample_potential(normal_crossing((1,)), config, np.array([0.3]))
    llc = estimate_llc(traces)
    assert not llc.local_minimum and math.isnan(llc.value)
    assert llc.fraction_below_reference > 0.9
    assert "not a local minimum" in llc.status and "gets no LLC" in llc.status
    chain_idx = np.zeros((5, llc.excess.shape[0]), dtype=int)
    draw_idx = np.zeros((5, *llc.excess.shape), dtype=int)
    assert np.isnan(llc.replicates(chain_idx, draw_idx)).all()
    # The threshold is a setting: allowing every step below the reference turns the rule off.
    assert estimate_llc(traces, max_fraction_below_reference=1.0).local_minimum
