"""The posterior sampler against known answers: devinterp's own draws, a Gaussian posterior in closed form, and
preconditioned gradient descent when the noise is off."""

import random

import numpy as np
import pytest
import torch

from codedyn.config import SamplingConfig
from codedyn.experiments.influence import bif_matrix
from codedyn.sampling.llc import estimate_llc
from codedyn.sampling.sgld import (
    SamplingDiverged,
    chain_minibatch_order,
    healthy_sample_losses,
    lm_token_loss,
    minibatch_order,
    sample_posterior,
)
from tests.neox_models import row_losses, tiny_lm


def test_draws_reproduce_devinterp_sample(tmp_path):
    """Same seed, fixed-length data, devinterp's shared minibatch order: every step's sampling loss and every draw's
    probe losses equal devinterp's."""
    from datasets import Dataset
    from devinterp.slt.sampling import sample

    torch.set_num_threads(1)
    model = tiny_lm()
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (40, 9), generator=generator)
    probe = torch.randint(0, 50, (8, 9), generator=generator)
    config = SamplingConfig(lr=1e-3, n_beta=20.0, localization=50.0, chains=2, draws=4, burn_in=3,
                            steps_between_draws=2, batch_size=8, rmsprop_alpha=0.9, rmsprop_eps=0.05, seed=100,
                            shared_minibatch_order=True)
    theirs = sample(
        model, Dataset.from_dict({"input_ids": ids.tolist()}).with_format("torch"),
        {"probe": (Dataset.from_dict({"input_ids": probe.tolist()}).with_format("torch"), 1)},
        lr=config.lr, n_beta=config.n_beta, num_chains=config.chains, num_draws=config.draws,
        batch_size=config.batch_size, num_burnin_steps=config.burn_in, num_steps_bw_draws=config.steps_between_draws,
        init_seed=config.seed, localization=config.localization, sampling_method="rmsprop_sgld",
        rmsprop_eps=config.rmsprop_eps, rmsprop_alpha=config.rmsprop_alpha, device="cpu",
        num_init_loss_batches=1, output_path=str(tmp_path / "devinterp.zarr"),
    ).dataset
    probe_order = random.Random(1337).sample(range(8), 8)  # devinterp's fixed observable rows
    ours = sample_posterior(model, ids, row_losses(probe[probe_order]), config)
    # The chains really move (the comparison would be vacuous otherwise) ...
    assert np.ptp(ours["sampling_loss"].values) > 0.05
    # ... and agree with devinterp's to float32 rounding of the means (the per-token arrays are averaged by numpy
    # on their side and by torch on ours).
    np.testing.assert_allclose(
        ours["sampling_loss"].values, theirs["sampling_loss_micro"].values.mean(axis=(2, 3)), rtol=1e-6, atol=0
    )
    np.testing.assert_allclose(
        ours["sample_loss"].values, theirs["loss_probe"].values.mean(axis=3), rtol=1e-6, atol=0
    )


def test_minibatch_order_is_a_shuffled_dataloader_order():
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(7)
    loader = DataLoader(list(range(50)), batch_size=8, shuffle=True, generator=generator, drop_last=True)
    expected = np.stack([batch.numpy() for batch in loader])
    np.testing.assert_array_equal(minibatch_order(50, 8, seed=7), expected)


class LinearRegression(torch.nn.Module):
    def __init__(self, weights):
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(weights, dtype=torch.float32).clone())

    def residuals(self, rows):
        return rows[:, -1] - rows[:, :-1] @ self.w


def _squared_error(model, rows):
    return 0.5 * model.residuals(rows) ** 2


def test_loss_covariance_matches_the_gaussian_posterior_in_closed_form():
    """Bayesian linear regression: p(w) ∝ exp(-nβ L(w) - γ/2 |w - w*|²) is Gaussian, and the per-point losses are
    quadratic in w, so Cov(ℓ_i, ℓ_j) = r_i r_j S_ij + S_ij² / 2 with S = X Σ Xᵀ and r the residuals at the mean.
    Full-batch gradients and a near-constant preconditioner (large rmsprop eps) make SGLD sample it up to a
    discretisation bias of about ε G λ / 4 ≈ 1% in variance."""
    rng = np.random.default_rng(0)
    n, d = 32, 2
    x = rng.normal(size=(n, d))
    y = x @ np.array([1.0, -0.5]) + 0.3 * rng.normal(size=n)
    rows = torch.as_tensor(np.column_stack([x, y]), dtype=torch.float32)
    w_star = np.array([0.8, -0.2])
    config = SamplingConfig(lr=0.05, n_beta=200.0, localization=20.0, chains=4, draws=3000, burn_in=300,
                            steps_between_draws=2, batch_size=n, rmsprop_eps=100.0, seed=3)
    model = LinearRegression(w_star)
    traces = sample_posterior(model, rows, lambda m: _squared_error(m, rows[:6]), config, loss_fn=_squared_error)

    precision = config.n_beta * x.T @ x / n + config.localization * np.eye(d)
    sigma = np.linalg.inv(precision)
    mean = sigma @ (config.n_beta * x.T @ y / n + config.localization * w_star)
    s = x[:6] @ sigma @ x[:6].T
    r = y[:6] - x[:6] @ mean
    expected_cov = np.outer(r, r) * s + 0.5 * s**2
    estimated = -bif_matrix(healthy_sample_losses(traces))
    relative_error = np.linalg.norm(estimated - expected_cov) / np.linalg.norm(expected_cov)
    assert relative_error < 0.15, relative_error


def test_noise_free_unlocalised_sampling_is_rmsprop_descent():
    """With noise 0 and γ = 0, each step is w -= ε/2 · nβ · g / (sqrt(V) + eps): torch's RMSprop with lr = ε nβ / 2."""
    model = tiny_lm(seed=2)
    ids = torch.randint(0, 50, (16, 9), generator=torch.Generator().manual_seed(2))
    config = SamplingConfig(lr=1e-3, n_beta=10.0, localization=0.0, noise_level=0.0, chains=1, draws=5, burn_in=0,
                            batch_size=8, rmsprop_alpha=0.95, rmsprop_eps=1e-2, seed=0)
    traces = sample_posterior(model, ids, row_losses(ids[:4]), config)

    reference = tiny_lm(seed=2)
    optimizer = torch.optim.RMSprop(reference.parameters(), lr=config.lr * config.n_beta / 2,
                                    alpha=config.rmsprop_alpha, eps=config.rmsprop_eps)
    order = chain_minibatch_order(16, config, chain=0)
    expected = []
    for step in range(5):
        optimizer.zero_grad()
        lm_token_loss(reference, ids[order[step % 2]]).float().mean().backward()
        optimizer.step()
        with torch.no_grad():
            expected.append(lm_token_loss(reference, ids[:4]).mean(dim=1).numpy())
    np.testing.assert_allclose(traces["sample_loss"].values[0], np.stack(expected), atol=1e-6)


def test_model_is_not_modified_and_llc_is_positive_near_a_minimum():
    model = tiny_lm(seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 50, (32, 9), generator=torch.Generator().manual_seed(3))
    config = SamplingConfig(lr=1e-4, n_beta=30.0, localization=100.0, chains=2, draws=20, burn_in=10, batch_size=8)
    traces = sample_posterior(model, ids, row_losses(ids[:4]), config)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert traces["sample_loss"].dims == ("chain", "draw", "sample")
    assert traces["healthy"].values.all()
    llc = estimate_llc(traces)
    assert llc.per_chain.shape == (2,) and np.isfinite(llc.per_chain).all()
    # The reference is the checkpoint's loss on the very minibatch each step used.
    order = chain_minibatch_order(32, config, chain=1)
    step = config.burn_in + 3
    with torch.no_grad():
        expected = lm_token_loss(model, ids[order[step % order.shape[0]]]).mean()
    assert float(traces["reference_loss"].values[1, step]) == pytest.approx(float(expected), rel=1e-5)


def test_chains_get_their_own_minibatch_order_unless_shared():
    independent = SamplingConfig(chains=3, batch_size=8, seed=5)
    orders = [chain_minibatch_order(64, independent, c) for c in range(3)]
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    assert not np.array_equal(orders[0], minibatch_order(64, 8, seed=5))
    for order in orders:  # each is a permutation of (a drop_last subset of) the windows
        assert len(set(order.ravel())) == order.size
    shared = independent.model_copy(update={"shared_minibatch_order": True})
    assert all(np.array_equal(chain_minibatch_order(64, shared, c), minibatch_order(64, 8, seed=5)) for c in range(3))


def test_divergence_is_reported_not_averaged():
    model = tiny_lm(seed=4)
    ids = torch.randint(0, 50, (16, 9), generator=torch.Generator().manual_seed(4))
    config = SamplingConfig(lr=1e6, n_beta=1e4, localization=0.0, chains=2, draws=5, burn_in=0, batch_size=8)
    with pytest.raises(SamplingDiverged, match=r"2 of 2 chains diverged.*lower the step size"):
        sample_posterior(model, ids, row_losses(ids[:4]), config)


def test_the_default_preset_runs_the_sampler_defaults_with_at_least_four_chains():
    from codedyn.config import load_config

    preset, defaults = load_config("default").sampling, SamplingConfig()
    assert preset.chains >= 4 and not preset.shared_minibatch_order
    for field in ("lr", "n_beta", "localization", "chains", "burn_in", "draws"):
        assert getattr(preset, field) == getattr(defaults, field), field


def test_chains_of_neighbouring_seeds_share_no_noise_stream():
    """devinterp's seed + chain made seed 0's chain 1 seed 1's chain 0, and seed-to-seed agreement then measured
    shared noise (BENCHMARKS.md): independent chains draw their noise seed from the sequence (seed, chain)."""
    from codedyn.sampling.sgld import chain_noise_seed

    seeds = {s: {chain_noise_seed(SamplingConfig(seed=s, chains=4), c) for c in range(4)} for s in range(3)}
    assert all(len(v) == 4 for v in seeds.values())
    assert not (seeds[0] & seeds[1]) and not (seeds[1] & seeds[2]) and not (seeds[0] & seeds[2])
    parity = SamplingConfig(seed=5, shared_minibatch_order=True)
    assert [chain_noise_seed(parity, c) for c in range(3)] == [5, 6, 7]  # devinterp's seeding in the parity mode


def test_named_per_sample_readouts_are_recorded_beside_the_losses():
    """A readout returning (ℓ, token losses, {name: [N]}) gets each name recorded per draw and at w*, from the same
    draws as ℓ (here a fixed function of ℓ, so any misalignment of chains or draws shows)."""
    model = tiny_lm(seed=4)
    ids = torch.randint(0, 50, (16, 9), generator=torch.Generator().manual_seed(4))
    probe_losses = row_losses(ids[:4])

    def readout(m):
        losses = probe_losses(m)
        return losses, losses[:, None].repeat(1, 2), {"verdict_loss": 2 * losses + 1}

    config = SamplingConfig(lr=1e-4, n_beta=30.0, localization=100.0, chains=2, draws=6, burn_in=3, batch_size=8)
    traces = sample_posterior(model, ids, readout, config)
    assert traces["verdict_loss"].dims == ("chain", "draw", "sample")
    np.testing.assert_allclose(traces["verdict_loss"].values, 2 * traces["sample_loss"].values + 1, rtol=1e-6)
    np.testing.assert_allclose(traces["init_verdict_loss"].values, 2 * traces["init_sample_loss"].values + 1,
                               rtol=1e-6)
