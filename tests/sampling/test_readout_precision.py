"""Read-outs in bfloat16 (sampling.readout_precision): on CPU, on a small Pythia-shaped model (GPT-NeoX, rotary 0.25,
parallel residual, untied unembedding), the posterior estimates built from the read-outs -- every sample's posterior
mean loss and the mean off-diagonal BIF -- fall inside the float32 estimates' bootstrap intervals; the chains
themselves are the same (the read-out precision never touches the SGLD steps)."""

import numpy as np
import pytest
import torch

from codedyn.analysis.stats import bootstrap_statistic
from codedyn.config import SamplingConfig
from codedyn.experiments.influence import bif_matrix
from codedyn.sampling.losses import EvalSet, with_precision
from codedyn.sampling.sgld import evalset_readout, sample_posterior
from tests.arch_models import tiny_tokenizer

SNIPPETS = [
    ("def add(a, b):\n", "    return a + b\n"), ("def add(a, b):\n", "    return a - b\n"),
    ("def first(xs):\n", "    return xs[0]\n"), ("def first(xs):\n", "    return xs[1]\n"),
    ("def count(xs):\n", "    n = 0\n    for x in xs:\n        n += 1\n    return n\n"),
    ("def count(xs):\n", "    n = 0\n    for x in xs:\n        n += 2\n    return n\n"),
]


def pythia_shaped():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=256, max_position_embeddings=128, rotary_pct=0.25,
                           use_parallel_residual=True, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    return GPTNeoXForCausalLM(config).eval()


def posterior(precision):
    tokenizer = tiny_tokenizer()
    model = pythia_shaped()
    evalset = EvalSet.build(tokenizer, [p for p, _ in SNIPPETS], [s for _, s in SNIPPETS])
    text = "".join(p + s for p, s in SNIPPETS) * 20
    ids = torch.as_tensor(tokenizer(text)["input_ids"])
    windows = torch.stack([ids[i : i + 33] for i in range(0, ids.shape[0] - 33, 7)])
    config = SamplingConfig(lr=3e-4, n_beta=100, localization=30, chains=3, draws=40, burn_in=20, batch_size=8,
                            readout_precision=precision)
    readout = with_precision(evalset_readout(evalset), config.readout_precision)
    return sample_posterior(model, windows, readout, config)


@pytest.fixture(scope="module")
def both():
    return posterior(None), posterior("bfloat16")


def test_bf16_readouts_agree_with_fp32_within_their_intervals(both):
    fp32, bf16 = both
    np.testing.assert_array_equal(fp32["sampling_loss"].values, bf16["sampling_loss"].values)  # same chains
    a, b = fp32["sample_loss"].values, bf16["sample_loss"].values  # [chains, draws, samples]
    assert not np.array_equal(a, b)  # the read-outs did run in bfloat16
    means = bootstrap_statistic(a, lambda x: x.mean(axis=0), n_boot=400, seed=0)
    for estimate, value in zip(means, b.reshape(-1, b.shape[-1]).mean(axis=0), strict=True):
        assert estimate.low <= value <= estimate.high, (estimate, value)

    def mean_bif(x):
        bif = bif_matrix(x)
        return bif[~np.eye(bif.shape[0], dtype=bool)].mean()

    interval = bootstrap_statistic(a, mean_bif, n_boot=400, seed=0)
    assert interval.low <= mean_bif(b) <= interval.high, (interval, mean_bif(b))
    assert interval.high - interval.low > 0 and interval.low < 0  # BIF = -Cov of co-moving losses: negative


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="bfloat16, tf32 or None"):
        with_precision(lambda m: m, "float8")
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        SamplingConfig(readout_precision="float8")
    assert "readout_precision" not in SamplingConfig().model_dump()  # the default hashes as before
