"""Mixing diagnostics that can fail: chains too short, too correlated in time, identical to each other, or
disagreeing must be flagged; independent, well-mixed chains must pass. Block lengths follow the autocorrelation."""

import math

import numpy as np
import pytest
import xarray as xr

from codedyn.analysis.stats import autocorrelation_block, autocorrelation_time, rank_split_rhat
from codedyn.config import SamplingConfig
from codedyn.sampling.diagnostics import chain_correlation, mixing_row, posterior_diagnostics, summary_series


def ar1(rng, chains: int, n: int, phi: float) -> np.ndarray:
    x = np.empty((chains, n))
    x[:, 0] = rng.standard_normal(chains) / math.sqrt(1 - phi**2)
    noise = rng.standard_normal((chains, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x


def test_independent_well_mixed_chains_pass():
    row = mixing_row("x", np.random.default_rng(0).standard_normal((4, 200)))
    assert row["passed"], row["problem"]
    assert 0.95 < row["rhat"] < 1.05 and row["ess"] > 400
    assert abs(row["chain_correlation"]) < 0.2
    assert row["autocorrelation_time"] == pytest.approx(1.0, abs=0.3)


def test_strongly_autocorrelated_chains_fail_on_ess():
    """AR(1) with φ = 0.99: τ = (1 + φ) / (1 - φ) = 199, so 4 x 200 draws carry about 4 effective draws."""
    row = mixing_row("x", ar1(np.random.default_rng(1), 4, 200, 0.99))
    assert not row["passed"] and "ESS" in row["problem"]
    assert row["ess"] < 20


def test_too_short_chains_fail():
    row = mixing_row("x", np.random.default_rng(2).standard_normal((4, 3)))
    assert not row["passed"] and "too few draws" in row["problem"]
    short = mixing_row("x", np.random.default_rng(2).standard_normal((2, 6)))  # 12 draws in all: ESS < 20
    assert not short["passed"] and "ESS" in short["problem"]


def test_identical_chains_fail_on_chain_correlation():
    """Identical chains have R-hat ≈ 1 and an ESS that counts every copy: only the correlation between chains sees
    that they carry the information of one chain."""
    chain = np.random.default_rng(3).standard_normal(200)
    x = np.stack([chain] * 4)
    assert rank_split_rhat(x) < 1.05  # R-hat is fooled ...
    row = mixing_row("x", x)
    assert row["chain_correlation"] == pytest.approx(1.0)
    assert not row["passed"] and "chains correlated" in row["problem"]  # ... the correlation is not


def test_disagreeing_chains_fail_on_rhat():
    x = np.random.default_rng(4).standard_normal((4, 200))
    x[0] += 2.0  # one chain stuck elsewhere
    row = mixing_row("x", x)
    assert not row["passed"] and "R-hat" in row["problem"] and row["rhat"] > 1.1


def test_rank_normalised_rhat_sees_chains_that_differ_in_scale_only():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 400)) * np.array([[1.0], [1.0], [1.0], [4.0]])
    assert rank_split_rhat(x) > 1.05


def test_summary_series_recovers_a_planted_shared_mode():
    """ℓ = shared mode s(t) · loading + small noise: the first principal component is the mode (up to sign)."""
    rng = np.random.default_rng(6)
    loading = rng.uniform(0.5, 1.5, 50)
    mode = ar1(rng, 4, 100, 0.8)
    values = mode[..., None] * loading + 0.05 * rng.standard_normal((4, 100, 50))
    series = summary_series(values)
    corr = np.corrcoef(series["pc1"].ravel(), mode.ravel())[0, 1]
    assert abs(corr) > 0.99
    assert series["mean"].shape == (4, 100)


def test_block_length_follows_the_autocorrelation():
    rng = np.random.default_rng(7)
    assert autocorrelation_block(rng.standard_normal((4, 200))) <= 3
    correlated = ar1(rng, 4, 400, 0.9)  # τ = 19
    assert autocorrelation_time(correlated) == pytest.approx(19, rel=0.4)
    assert 25 <= autocorrelation_block(correlated) <= 60
    assert autocorrelation_block(correlated[..., None] * np.ones(5)) == autocorrelation_block(correlated)
    assert autocorrelation_block(np.ones((2, 10))) == 4  # undefined τ: the sqrt fallback


def test_posterior_diagnostics_table_flags_shared_batches_and_passes_independent_ones():
    """Chains whose loss follows the same minibatch difficulty (shared order) are correlated draw by draw; their
    table must fail on excess_loss, while independent chains pass every row."""
    rng = np.random.default_rng(8)
    chains, steps, draws, n = 4, 240, 200, 30
    batch_difficulty = rng.standard_normal(steps)

    def traces(shared: bool):
        noise = 0.3 * rng.standard_normal((chains, steps))
        sampling = 4.0 + 0.2 + noise + (batch_difficulty if shared else rng.standard_normal((chains, steps)))
        config = SamplingConfig(chains=chains, burn_in=steps - draws, draws=draws)
        return xr.Dataset(
            {"sampling_loss": (("chain", "step"), sampling),
             "reference_loss": (("chain", "step"), sampling - 0.2 - noise),
             "sample_loss": (("chain", "draw", "sample"), rng.standard_normal((chains, draws, n))),
             "observed": (("chain", "draw", "observable"), rng.standard_normal((chains, draws, 2))),
             "healthy": (("chain",), np.ones(chains, bool))},
            coords={"observable": ["L0.H0", "L0.MLP"]},
            attrs={"sampling_config": config.model_dump_json(), "n_beta": 1.0, "step": 7},
        )

    independent = posterior_diagnostics(traces(shared=False))
    assert [r["quantity"] for r in independent] == ["excess_loss", "mean_loss", "loss_pc1", "phi:L0.H0", "phi:L0.MLP"]
    assert all(r["passed"] for r in independent), [r["problem"] for r in independent]
    assert all(r["step"] == 7 for r in independent)
    # The reference removes the batch difficulty, so the excess loss of shared-order chains is independent too;
    # the raw minibatch loss is what follows the batches: check the correlation diagnostic on it directly.
    shared = traces(shared=True)
    burn = shared.sizes["step"] - draws
    assert chain_correlation(shared["sampling_loss"].values[:, burn:]) > 0.8
    assert not mixing_row("sampling_loss", shared["sampling_loss"].values[:, burn:])["passed"]
