"""The spike rule of chain health refuses a long stable chain no more often than a short one: its threshold grows
with the chain's length as a stable chain's largest excursion does (codedyn.sampling.sgld.spike_allowance)."""

import numpy as np
import torch

from codedyn.config import SamplingConfig
from codedyn.sampling.sgld import SPIKE_REFERENCE_STEPS, chain_health, spike_allowance, spikiness
from tests.potentials import normal_crossing, potential_config, sample_potential


def _refusal_rate(chains: np.ndarray, max_spikiness: float, allowance: bool = True) -> float:
    """Share of the rows of ``chains`` (stationary excess losses) that the sampler's health check refuses for
    spikes; without ``allowance`` the fixed threshold of the short-chain rule is applied to every length."""
    # nβ so large that the posterior's own unit (1/nβ) vanishes next to the noise, as for a network's minibatches;
    # d large enough that the LLC bound never refuses.
    config = SamplingConfig(n_beta=1e6, max_spikiness=max_spikiness, min_loss_autocorrelation=-1.0)
    if not allowance:
        return float(np.mean(spikiness(chains, 1 / config.n_beta) > max_spikiness))
    return float(np.mean(["spikes" in chain_health(None, 0.1, np.nan, row, 10**9, config).problem
                          for row in chains]))


def test_long_stationary_chains_are_refused_as_often_as_short_ones():
    """Exponential tails (the heaviest a stable chain's excess loss has): the refusal rate of 100-step and
    10000-step chains agrees at a threshold that refuses about half the short ones, while a fixed threshold refuses
    nearly every long chain; Gaussian tails (lighter) are refused less often when long, never more."""
    rng = np.random.default_rng(0)
    short, long = SPIKE_REFERENCE_STEPS, 100 * SPIKE_REFERENCE_STEPS
    exponential = {n: rng.exponential(1.0, size=(k, n)) for n, k in ((short, 1500), (long, 400))}
    rates = {n: _refusal_rate(x, 6.0) for n, x in exponential.items()}
    assert 0.3 < rates[short] < 0.7  # the comparison is made where a rate can move either way
    assert abs(rates[long] - rates[short]) < 0.12, rates
    assert _refusal_rate(exponential[long], 6.0, allowance=False) > 0.95
    gaussian = {n: rng.normal(size=(k, n)) for n, k in ((short, 1500), (long, 400))}
    assert _refusal_rate(gaussian[long], 3.0) <= _refusal_rate(gaussian[short], 3.0) + 0.05
    assert spike_allowance(10) == spike_allowance(SPIKE_REFERENCE_STEPS) == 0.0


def test_a_long_stable_chain_of_a_known_potential_is_accepted_where_short_ones_are():
    """K(w) = w1² w2⁴ (λ = 1/4) at the known-value test's stable step size: with a spike threshold of 4, short
    chains (100 steps) are accepted; a chain 40x longer at the same step size reaches an excursion past 4 (it is
    longer, not less stable) and is accepted too, with a real spike (an unstable step's) still refused."""
    torch.set_num_threads(1)
    potential = normal_crossing((1, 2))
    short = sample_potential(potential, potential_config(lr=2e-5, chains=4, draws=50, steps_between_draws=2,
                                                         max_spikiness=4.0), np.zeros(2))
    assert short["healthy"].values.all(), short["unhealthy_reason"].values
    long = sample_potential(potential, potential_config(lr=2e-5, chains=2, draws=100, steps_between_draws=40,
                                                        max_spikiness=4.0), np.zeros(2))
    assert long["healthy"].values.all(), long["unhealthy_reason"].values
    assert np.nanmax(long["spikiness"].values) > 4.0  # the fixed short-chain threshold would have refused it
    # A spike of an unstable step: one excursion 50 posterior units above a stable chain's excess loss.
    config = potential_config(lr=2e-5, max_spikiness=4.0)
    burn_in = config.burn_in
    excess = long["sampling_loss"].values[0, burn_in:] - long["reference_loss"].values[0, burn_in:]
    thrown = excess.copy()
    thrown[len(thrown) // 2] += 50 / config.n_beta
    assert not chain_health(None, 0.1, np.nan, excess, 2, config).problem
    assert "loss spikes" in chain_health(None, 0.1, np.nan, thrown, 2, config).problem
