"""The LLC against known answers: normal-crossing potentials with known learning coefficients, a reference on the
very minibatches the chains saw, a checkpoint that is not a local minimum, and a step past the stability bound."""

import math

import numpy as np
import pytest
import torch

from codedyn.sampling.llc import FLAT, LOCAL_MINIMUM, NOT_A_LOCAL_MINIMUM, estimate_llc, is_flat, llc_of
from codedyn.sampling.mcmc import effective_sample_size
from codedyn.sampling.sgld import SamplingDiverged
from tests.potentials import normal_crossing, potential_config, sample_potential, tempered_mean

# Why these exponents. For K = prod_i w_i^(2 k_i) near w* = 0 the learning coefficient is λ = min_i 1/(2 k_i) and
# its multiplicity m is the number of i attaining the minimum; the tempered mean E[nβ K] approaches λ as
# λ - O((m - 1) / log nβ) (ties) or λ - O(nβ^-(λ' - λ)) (λ' the next-smallest 1/(2 k_i)). Only untied exponents
# with a gap to the next coefficient give λ at a feasible nβ: (1,) → 0.5 (any product with λ = 0.5 in d ≥ 2 has all
# k_i = 1, a tie), (1, 2) → 0.25, (1, 3) → 1/6. (3, 3), (2, 2) and (1, 1) tie: their tempered mean at nβ = 1e4 is 36%,
# 29% and 18% below λ, and (2, 3)'s gap 1/4 - 1/6 leaves it 20% below; test_the_exponents_are_well_posed checks
# both by quadrature.
UNTIED = [((1,), 0.5), ((1, 2), 0.25), ((1, 3), 1 / 6)]


@pytest.mark.parametrize(("powers", "truth"), UNTIED)
def test_the_exponents_are_well_posed(powers, truth):
    """At the test's nβ = 1e4, γ = 1 the exact tempered mean of the untied potentials is within 6% of λ (well
    inside the sampler test's 2σ bracket, σ ≈ 0.1-0.15 λ)."""
    assert tempered_mean(powers, 1e4, 1.0) == pytest.approx(truth, rel=0.06)


def test_tied_or_close_exponents_would_not_be():
    """Why no tie is used: a tie's tempered mean at nβ = 1e4 is far below λ (the log correction of multiplicity 2),
    and so is (2, 3)'s, whose next coefficient 1/4 is too close to λ = 1/6."""
    assert tempered_mean((1, 1), 1e4, 1.0) < 0.85 * 0.5
    assert tempered_mean((3, 3), 1e4, 1.0, grid=800) < 0.7 / 6
    assert tempered_mean((2, 3), 1e4, 1.0, grid=800) < 0.85 / 6


# Step sizes chosen so that the step sharpness ε/2·λ_max stays below ~0.1 where the chains live (discretisation
# bias below ~5%) and no chain's excess loss spikes past the health check, yet the chains mix within the
# post-burn-in steps. Along an axis of the product the other coordinate's curvature grows, so one chain of four
# wandering far enough out reaches sharpness 0.15 at 3e-5 on (1, 2) and 0.59 at 7e-5 on (1, 3) (measured with the
# sampler's independent chain seeds); 2e-5 and 3e-5 keep all four below 0.1. The localization γ = 1 against
# nβ = 1e4 is part of the quadrature above.
@pytest.mark.parametrize(("powers", "truth", "lr", "draws"),
                         [(p, t, lr, d) for (p, t), (lr, d) in zip(UNTIED, [(1e-6, 150), (2e-5, 250), (3e-5, 300)],
                                                                      strict=True)])
def test_normal_crossing_learning_coefficient_is_bracketed(powers, truth, lr, draws):
    """E_β[nβ K(w)] → λ = min_i 1/(2 k_i) for K = prod_i w_i^(2 k_i) (nβ K is Gamma(λ, 1) distributed in the limit
    for one factor): the project's LLC (matched reference, healthy chains) must lie within 2 standard errors (from
    the effective sample size of the excess loss) of λ, with a standard error small enough to mean something."""
    torch.set_num_threads(1)
    config = potential_config(lr=lr, rmsprop_eps=0.1, draws=draws)
    traces = sample_potential(normal_crossing(powers), config, np.zeros(len(powers)))
    assert traces["healthy"].values.all(), traces["unhealthy_reason"].values
    assert np.nanmax(traces["step_sharpness"].values) < 0.1
    llc = estimate_llc(traces)
    assert llc.local_minimum
    scaled = config.n_beta * llc.excess
    se = scaled.std() / math.sqrt(effective_sample_size(scaled))
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


def test_a_posterior_whose_loss_ignores_the_moved_weights_is_flat_not_refused():
    """A loss that does not depend on w (a dead component's refined posterior): every excess loss is 0 or
    rounding, so the chains sit "below" L(w*) on about half the steps by chance; the status is FLAT with LLC 0,
    not "not a local minimum". A potential that does depend on w stays a local minimum."""
    torch.set_num_threads(1)
    config = potential_config(lr=1e-6, draws=20)
    offsets = torch.as_tensor(np.random.default_rng(1).exponential(5.0, size=(16, 1)), dtype=torch.float32)

    def ignores_w(model, batch):
        return batch[:, 0] + 0.0 * model.w.sum()

    flat = estimate_llc(sample_potential(normal_crossing((1,)), config, np.zeros(1), offsets, ignores_w))
    assert flat.status == FLAT and flat.local_minimum and abs(flat.value) < 1e-3
    live = estimate_llc(sample_potential(normal_crossing((1,)), config, np.zeros(1)))
    assert live.status == LOCAL_MINIMUM and live.value > 0.1
    # The rule's threshold: rounding of a loss near 3 passes, an excess 100x the float32 ulp scale does not.
    ulp = float(np.finfo(np.float32).eps) * 3.0
    rounding = np.array([[ulp, -ulp, 0.0, 2 * ulp]])
    assert is_flat(rounding, 3.0) and not is_flat(100 * rounding, 3.0) and not is_flat(np.empty((0, 4)), 3.0)
    assert NOT_A_LOCAL_MINIMUM in estimate_llc(sample_potential(normal_crossing((1,)), config, np.array([0.3]))).status
