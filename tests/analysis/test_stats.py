"""Monte Carlo intervals and diagnostics: known answers, coverage of planted means, AR(1) processes with known SE."""

import math

import numpy as np
import pytest

from codedyn.analysis.stats import (
    Estimate,
    batch_means_se,
    block_indices,
    bootstrap_draws,
    bootstrap_replicates,
    bootstrap_statistic,
    effective_sample_size,
    percentile_ci,
    split_rhat,
)

PHI = 0.9


def ar1(rng: np.random.Generator, shape: tuple[int, ...], n: int, phi: float = PHI) -> np.ndarray:
    """Stationary AR(1) with unit innovations: [*shape, n], marginal variance 1 / (1 - phi^2)."""
    x = np.empty((*shape, n))
    x[..., 0] = rng.standard_normal(shape) / math.sqrt(1 - phi**2)
    noise = rng.standard_normal((*shape, n))
    for t in range(1, n):
        x[..., t] = phi * x[..., t - 1] + noise[..., t]
    return x


def ar1_mean_se(phi: float, n: int, chains: int) -> float:
    """Exact SE of the pooled mean of `chains` independent stationary AR(1) chains of length n."""
    k = np.arange(1, n)
    var_chain_mean = (1 + 2 * np.sum((1 - k / n) * phi**k)) / (1 - phi**2) / n
    return math.sqrt(var_chain_mean / chains)


def batch_mean(d: np.ndarray) -> np.ndarray:
    return d.mean(axis=1)


def coverage(data: np.ndarray, truth: float, **kwargs) -> tuple[float, float]:
    """Fraction of data sets [reps, chains, draws] whose 95% bootstrap CI of the mean covers truth; mean width."""
    hits, widths = [], []
    for i, x in enumerate(data):
        est = bootstrap_statistic(x, batch_mean, n_boot=250, seed=i, batched=True, **kwargs)
        hits.append(est.low <= truth <= est.high)
        widths.append(est.high - est.low)
    return float(np.mean(hits)), float(np.mean(widths))


def test_estimate_excludes_zero_and_sign():
    assert Estimate(0.2, 0.1, 0.3).excludes_zero() and Estimate(0.2, 0.1, 0.3).sign == 1
    assert Estimate(-0.2, -0.3, -0.1).excludes_zero() and Estimate(-0.2, -0.3, -0.1).sign == -1
    assert not Estimate(0.1, -0.1, 0.3).excludes_zero() and Estimate(0.1, -0.1, 0.3).sign == 0
    assert not Estimate(0.1, 0.0, 0.3).excludes_zero()  # an endpoint on zero does not exclude it
    assert not Estimate(math.nan, math.nan, math.nan).excludes_zero()
    assert Estimate(1.0, 0.5, 2.0, 0.9).to_dict() == {"value": 1.0, "low": 0.5, "high": 2.0, "level": 0.9}


def test_percentile_ci_known_quantiles_and_nan():
    reps = np.arange(1001.0)  # quantile q sits exactly at 1000 q
    est = percentile_ci(reps, 500.0, level=0.9)
    assert (est.low, est.high, est.level) == (pytest.approx(50.0), pytest.approx(950.0), 0.9)
    est = percentile_ci(np.concatenate([reps, [np.nan, np.inf]]), 500.0)
    assert est.low == pytest.approx(25.0) and est.high == pytest.approx(975.0)
    assert math.isnan(percentile_ci(np.full(5, np.nan), 1.0).low)
    with pytest.raises(ValueError):
        percentile_ci(reps, 0.0, level=1.0)


def test_block_indices_are_circular_blocks():
    rng = np.random.default_rng(0)
    idx = block_indices(100, 10, rng)
    assert idx.shape == (100,) and idx.min() >= 0 and idx.max() < 100
    steps = np.diff(idx.reshape(10, 10), axis=1) % 100
    assert np.all(steps == 1)  # consecutive inside a block, wrapping at the end
    # Every draw is equally likely under the circular scheme, the ends included.
    counts = np.bincount(np.concatenate([block_indices(50, 7, rng) for _ in range(4000)]), minlength=50)
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()
    with pytest.raises(ValueError):
        block_indices(10, 11, rng)


def test_bootstrap_draws_shapes_and_chain_schemes():
    rng = np.random.default_rng(1)
    chain_idx, draw_idx = bootstrap_draws(4, 30, 500, rng, block=5)
    assert chain_idx.shape == (500, 4) and draw_idx.shape == (500, 4, 30)
    assert chain_idx.min() == 0 and chain_idx.max() == 3
    assert np.mean([len(set(row)) < 4 for row in chain_idx]) > 0.8  # with replacement: repeats are the rule (P=0.91)
    assert np.all(np.diff(draw_idx[..., :5], axis=-1) % 30 == 1)  # first block is contiguous
    kept, _ = bootstrap_draws(4, 30, 10, rng, resample_chains=False)
    assert np.all(kept == np.arange(4))
    x = np.arange(4 * 30).reshape(4, 30) * 1.0
    replicate = x[chain_idx[0][:, None], draw_idx[0]]
    assert np.array_equal(replicate // 30, np.repeat(chain_idx[0][:, None], 30, axis=1))  # draws come from the chain


def test_bootstrap_statistic_value_vector_and_seed():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 50, 2)) + np.array([0.0, 5.0])
    est = bootstrap_statistic(x, lambda d: d.mean(axis=0), n_boot=300)
    assert isinstance(est, list) and len(est) == 2
    assert est[1].value == pytest.approx(x[..., 1].mean())
    assert est[0].low < 0.0 < est[0].high and est[1].excludes_zero()
    value, reps = bootstrap_replicates(x, lambda d: d[:, 0].var(), n_boot=50, seed=7)
    assert reps.shape == (50,) and value == pytest.approx(x[..., 0].var())
    assert np.array_equal(reps, bootstrap_replicates(x, lambda d: d[:, 0].var(), n_boot=50, seed=7)[1])
    # The batched path draws the same resamples and so gives the same replicates.
    _, batched = bootstrap_replicates(x, lambda d: d[:, :, 0].var(axis=1), n_boot=50, seed=7, batched=True)
    assert np.allclose(batched, reps)


def test_coverage_iid_gaussian():
    rng = np.random.default_rng(10)
    data = rng.normal(loc=3.0, size=(200, 4, 200))
    stratified, width_kept = coverage(data, 3.0, resample_chains=False)
    assert 0.88 <= stratified <= 0.99
    # Resampling chains counts each chain's Monte Carlo noise twice: conservative when chains agree.
    two_stage, width_two = coverage(data, 3.0)
    assert two_stage >= 0.93 and width_two > 1.15 * width_kept


def test_block_bootstrap_ar1_wider_than_iid_and_covers():
    rng = np.random.default_rng(11)
    data = ar1(rng, (200, 4), 200)
    cover_block, width_block = coverage(data, 0.0)
    cover_iid, width_iid = coverage(data, 0.0, block=1, resample_chains=False)
    assert width_block > 2 * width_iid  # sqrt(tau) = sqrt(19) ~ 4.4 times wider in the limit
    assert cover_iid < 0.6  # the iid bootstrap ignores the autocorrelation (planted failure the blocks must fix)
    assert cover_block >= 0.85


def test_chain_resampling_sees_disagreeing_chains():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(4, 200))
    x[0] += 3.0  # one chain stuck elsewhere
    kept = bootstrap_statistic(x, np.mean, n_boot=500, resample_chains=False)
    resampled = bootstrap_statistic(x, np.mean, n_boot=500)
    assert resampled.high - resampled.low > 4 * (kept.high - kept.low)


def test_ess_iid_and_ar1():
    rng = np.random.default_rng(20)
    for _ in range(3):
        assert effective_sample_size(rng.normal(size=(4, 1000))) == pytest.approx(4000, rel=0.2)
        target = 4 * 2000 * (1 - PHI) / (1 + PHI)
        assert effective_sample_size(ar1(rng, (4,), 2000)) == pytest.approx(target, rel=0.35)
    assert math.isnan(effective_sample_size(np.ones((2, 10))))


def test_split_rhat():
    rng = np.random.default_rng(30)
    same = rng.normal(size=(4, 500))
    assert split_rhat(same) == pytest.approx(1.0, abs=0.02)
    shifted = same.copy()
    shifted[2] += 2.0
    assert split_rhat(shifted) > 1.1
    drifting = same + np.linspace(0, 3, 500)  # every chain drifts: only the split into halves can see it
    assert split_rhat(drifting) > 1.1


def test_batch_means_se_matches_ar1_se():
    rng = np.random.default_rng(40)
    known = ar1_mean_se(PHI, 2000, 4)
    estimates = [batch_means_se(x) for x in ar1(rng, (20, 4), 2000)]
    assert np.sqrt(np.mean(np.square(estimates))) == pytest.approx(known, rel=0.3)
    assert estimates[0] == pytest.approx(known, rel=0.3)
    # iid: the plain SE sigma / sqrt(N)
    assert batch_means_se(rng.normal(size=(4, 2500))) == pytest.approx(0.01, rel=0.3)
