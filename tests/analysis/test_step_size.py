"""The step-size check (codedyn.analysis.step_size): its rule on made-up estimates, and the LLC of a potential with
a known learning coefficient over a grid of step sizes and chain lengths, each estimate within 2 standard errors
of the truth or flagged by the check."""

import math

import numpy as np
import pytest
import torch

from codedyn.analysis.step_size import compare_step_sizes, flagged_quantities
from codedyn.sampling.llc import estimate_llc
from codedyn.sampling.mcmc import effective_sample_size
from codedyn.sampling.sgld import SamplingDiverged
from tests.potentials import normal_crossing, potential_config, sample_potential, tempered_mean


def test_a_difference_beyond_the_combined_interval_is_flagged():
    at_lr = {"moves": (1.0, 0.9, 1.1), "stays": (1.0, 0.9, 1.1), "undefined": (math.nan, math.nan, math.nan),
             "only here": (0.0, -1.0, 1.0)}
    smaller = {"moves": (1.3, 1.2, 1.4), "stays": (1.1, 1.0, 1.2), "undefined": (1.0, 0.9, 1.1)}
    rows = {row["quantity"]: row for row in compare_step_sizes(at_lr, smaller, 1e-4, 1e-4 / 3)}
    assert set(rows) == {"moves", "stays", "undefined"}
    # se = 0.2 / 3.92 each: the combined margin is 1.96 · √2 · 0.051 = 0.141; 0.3 is beyond it, 0.1 is not.
    assert rows["moves"]["margin"] == pytest.approx(0.1414, abs=1e-3)
    assert rows["moves"]["difference"] == pytest.approx(-0.3)
    assert flagged_quantities(list(rows.values())) == ["moves"]
    assert not rows["undefined"]["comparable"] and not rows["undefined"]["flagged"]


def _llc_with_interval(traces) -> tuple[float, float, float]:
    """The LLC and a 95% interval from the effective sample size of the healthy chains' excess loss (the
    known-value tests' standard error)."""
    llc = estimate_llc(traces)
    scaled = traces.attrs["n_beta"] * llc.excess
    se = scaled.std() / math.sqrt(effective_sample_size(scaled))
    return llc.value, llc.value - 1.96 * se, llc.value + 1.96 * se


STEP_SIZE_RATIO = 3


@pytest.mark.parametrize("lr", [2e-5, 1e-4])
@pytest.mark.parametrize("draws", [100, 400])
def test_llc_of_a_known_potential_is_right_or_flagged_at_every_step_size_and_length(lr, draws):
    """K(w) = w1² w2⁴ (λ = 1/4; the sampler's target, the tempered mean of nβ K at nβ = 1e4, γ = 1, by quadrature)
    at a step the known-value tests use (2e-5) and one five times larger, each with short (500 steps) and
    four-times-longer chains: the LLC at ε is within 2 standard errors of the truth, or the same posterior at ε/3
    moves it beyond the combined interval (the check flags it), or the sampler refuses the posterior (a step past its
    health rules)."""
    torch.set_num_threads(1)
    truth = tempered_mean((1, 2), 1e4, 1.0)
    config = potential_config(lr=lr, chains=4, draws=draws, steps_between_draws=5)
    try:
        at_lr = _llc_with_interval(sample_potential(normal_crossing((1, 2)), config, np.zeros(2)))
        smaller = config.model_copy(update={"lr": lr / STEP_SIZE_RATIO})
        at_smaller = _llc_with_interval(sample_potential(normal_crossing((1, 2)), smaller, np.zeros(2)))
    except SamplingDiverged:
        return  # refused with a sentence naming the step size: nothing is reported, so nothing is wrong
    value, low, high = at_lr
    within = abs(value - truth) < 2 * (high - low) / 3.92
    flagged = flagged_quantities(compare_step_sizes({"LLC": at_lr}, {"LLC": at_smaller}, lr, smaller.lr))
    assert within or flagged == ["LLC"], (at_lr, at_smaller, truth)


def test_a_step_that_inflates_the_posterior_is_flagged():
    """K(w) = w1² + 1e-5 (w2² + w3²), a Gaussian posterior with E[nβ K] = Σ nβ a / (2 (nβ a + γ/2)) in closed form
    (0.667 at nβ = 1e4, γ = 1): at ε = 1e-5 the stiff direction's step sharpness is ~0.9, inside the health rules,
    and its variance inflated by 2 / (2 − 0.9), so the LLC is far above the truth, beyond its own interval; at ε/3
    it comes back down, and the check flags the difference."""
    torch.set_num_threads(1)
    curvature = torch.tensor([1.0, 1e-5, 1e-5])

    def potential(model):
        return (curvature * model.w**2).sum()

    truth = sum(1e4 * a / (2 * (1e4 * a + 0.5)) for a in curvature.tolist())
    config = potential_config(lr=1e-5, chains=4, draws=100, steps_between_draws=5)
    smaller = config.model_copy(update={"lr": config.lr / STEP_SIZE_RATIO})
    at_lr = _llc_with_interval(sample_potential(potential, config, np.zeros(3)))
    at_smaller = _llc_with_interval(sample_potential(potential, smaller, np.zeros(3)))
    assert at_lr[1] > truth  # biased beyond its interval: the Monte Carlo error does not hold it
    assert abs(at_smaller[0] - truth) < abs(at_lr[0] - truth) / 2
    assert flagged_quantities(compare_step_sizes({"LLC": at_lr}, {"LLC": at_smaller}, config.lr, smaller.lr)) == [
        "LLC"]
