"""Per-token losses from the same forward pass as ℓ_i, token kinds and mutation spans, per-token susceptibilities
against a direct computation."""

import io
import tokenize

import numpy as np
import pytest
import torch

from codedyn.config import SamplingConfig
from codedyn.data.token_kinds import TOKEN_KINDS, character_kinds, code_tokens, mutation_span, piece_kind
from codedyn.experiments.token_susceptibility import bootstrap_token_intervals, token_susceptibilities
from codedyn.sampling.losses import EvalSet, sample_losses, sample_token_losses
from codedyn.sampling.sgld import evalset_readout, sample_posterior
from tests.neox_models import tiny_model


def byte_tokenizer():
    """A byte-level BPE that can encode any text (every byte is in its alphabet)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["def f(x):\n    return x + 1\n", "    y = x <= 2  # step\n"] * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def setup():
    tokenizer = byte_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    model = tiny_model(seed=0, vocab=len(tokenizer)).eval()
    rng = np.random.default_rng(0)
    prompts = [f"def f{i}(x):\n    \"\"\"Add one.\"\"\"\n" for i in range(10)]
    solutions = ["    y = x + 1  # step\n" * int(n) + "    return len([y, 'a'])\n" for n in rng.integers(1, 5, size=10)]
    return tokenizer, model, prompts, solutions


def test_token_losses_average_to_the_sample_losses(setup):
    tokenizer, model, prompts, solutions = setup
    evalset = EvalSet.build(tokenizer, prompts, solutions, max_tokens=96)
    assert len(evalset.batches) > 1
    losses, tokens = sample_token_losses(model, evalset)
    torch.testing.assert_close(losses, sample_losses(model, evalset), rtol=0, atol=0)  # the same computation
    tokens = tokens.numpy()
    np.testing.assert_allclose(np.nanmean(tokens.astype(np.float64), axis=1), losses.numpy(), rtol=1e-6)
    # Row i holds exactly sample i's code tokens, in order, then NaN.
    for i, (p, s) in enumerate(zip(prompts, solutions, strict=True)):
        code = code_tokens(tokenizer, p, s)
        n = code.token_id.shape[0]
        assert np.isfinite(tokens[i, :n]).all() and np.isnan(tokens[i, n:]).all()
        ids = tokenizer(p + s, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        direct = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none").numpy()
        np.testing.assert_allclose(tokens[i, :n], direct[-n:], atol=1e-5)  # code tokens are the last n
        assert list(np.asarray(ids)[-n:]) == list(code.token_id)


def test_sampler_records_token_losses_consistent_with_sample_losses(setup):
    tokenizer, model, prompts, solutions = setup
    evalset = EvalSet.build(tokenizer, prompts, solutions)
    windows = torch.randint(0, len(tokenizer), (32, 12), generator=torch.Generator().manual_seed(0))
    config = SamplingConfig(chains=2, draws=3, burn_in=1, batch_size=8, lr=1e-4)  # 1e-3: past the stability bound
    traces = sample_posterior(model, windows, evalset_readout(evalset, tokens=True), config)
    assert traces["token_loss"].dims == ("chain", "draw", "sample", "token")
    assert traces.sizes["token"] == evalset.max_scored
    means = np.nanmean(traces["token_loss"].values.astype(np.float64), axis=-1)
    np.testing.assert_allclose(means, traces["sample_loss"].values, rtol=1e-6)
    assert np.ptp(traces["token_loss"].values[:, :, 0, 0]) > 0  # draws differ: the comparison is not vacuous
    plain = sample_posterior(model, windows, evalset_readout(evalset), config)
    np.testing.assert_array_equal(plain["sample_loss"].values, traces["sample_loss"].values)
    assert "token_loss" not in plain


def test_character_kinds_follow_python_tokenize():
    program = "def f(x):\n    # note\n    return len(x) + 1.5 if x else 'no'\n"
    kinds = [TOKEN_KINDS[k] for k in character_kinds(program)]
    expected = {"def": "keyword", "f(": "identifier", "(": "operator", "# note": "comment", "return": "keyword",
                "len": "builtin", "+": "operator", "1.5": "number", "'no'": "string", "else": "keyword"}
    for text, kind in expected.items():
        start = program.index(text)
        length = 1 if text == "f(" else len(text)
        assert set(kinds[start:start + length]) == {kind}, text
    assert kinds[program.index("    return")] == "whitespace"
    # Independent check: every Python NAME token that is a keyword is labelled keyword.
    for tok in tokenize.generate_tokens(io.StringIO(program).readline):
        if tok.string in ("def", "return", "if", "else"):
            offset = sum(len(line) for line in program.splitlines(keepends=True)[: tok.start[0] - 1]) + tok.start[1]
            assert kinds[offset] == "keyword"


def test_piece_kind_uses_the_first_visible_character():
    program = "x = (a):\n"
    kinds = character_kinds(program)
    assert piece_kind(kinds, " (", 3, 5) == "operator"
    assert piece_kind(kinds, "a", 5, 6) == "identifier"
    assert piece_kind(kinds, "\n", 8, 9) == "whitespace"


@pytest.mark.parametrize(("original", "mutant", "span"), [
    ("    return a < b\n", "    return a <= b\n", (14, 15)),  # the inserted "="
    ("    x = 1\n    y = 2\n", "    y = 2\n", (4, 4)),  # a deletion: an empty span at the cut
    ("    return f(a, b)\n", "    return f(b, a)\n", (13, 17)),
])
def test_mutation_span(original, mutant, span):
    lo, hi = mutation_span(original, mutant)
    assert (lo, hi) == span
    assert original[:lo] == mutant[:lo] and original[len(original) - (len(mutant) - hi):] == mutant[hi:]


def test_code_tokens_flag_the_mutated_tokens():
    tokenizer = byte_tokenizer()
    prompt, original, mutant = "def f(a, b):\n", "    return a < b\n", "    return a <= b\n"
    tokens = code_tokens(tokenizer, prompt, mutant, original)
    assert "".join(tokens.text) == mutant  # the code tokens tile the solution
    flagged = "".join(t for t, m in zip(tokens.text, tokens.in_mutation, strict=True) if m)
    assert "<=" in flagged and "return" not in flagged
    assert not code_tokens(tokenizer, prompt, original).in_mutation.any()
    kinds = dict(zip(tokens.text, tokens.kind, strict=True))
    assert any(kinds[t] == "keyword" for t in kinds if "return" in t)


def _planted(chains=3, draws=400, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(chains, draws))
    observed = np.stack([f, np.full_like(f, 0.7), rng.normal(size=f.shape)], axis=-1)  # K = 3
    token_loss = np.empty((chains, draws, 2, 4))
    token_loss[..., 0, 0] = 2.0 * f + 0.1 * rng.normal(size=f.shape)  # responds to component 0
    token_loss[..., 0, 1] = -f
    token_loss[..., 0, 2] = 5.0  # constant token loss
    token_loss[..., 0, 3] = rng.normal(size=f.shape)
    token_loss[..., 1, :2] = rng.normal(size=(chains, draws, 2))
    token_loss[..., 1, 2:] = np.nan  # padding
    return observed, token_loss


def test_token_susceptibilities_match_a_direct_computation():
    observed, token_loss = _planted()
    chi, rho = token_susceptibilities(observed, token_loss)
    assert chi.shape == rho.shape == (3, 2, 4)
    phi, loss = observed.reshape(-1, 3), token_loss.reshape(-1, 2, 4)
    for k in range(3):
        for s, t in [(0, 0), (0, 1), (0, 3), (1, 0), (1, 1)]:
            cov = np.cov(phi[:, k], loss[:, s, t])
            assert chi[k, s, t] == pytest.approx(-cov[0, 1], abs=1e-12)
            if k != 1:
                assert rho[k, s, t] == pytest.approx(-np.corrcoef(phi[:, k], loss[:, s, t])[0, 1], abs=1e-12)
    assert chi[0, 0, 0] == pytest.approx(-2.0, abs=0.2) and rho[0, 0, 1] == pytest.approx(1.0, abs=1e-12)
    assert (chi[1] [~np.isnan(chi[1])] == 0).all() and (rho[1][~np.isnan(rho[1])] == 0).all()  # constant φ
    assert (chi[:, 0, 2] == 0).all() and (rho[:, 0, 2] == 0).all()  # constant token loss
    assert np.isnan(chi[:, 1, 2:]).all() and np.isnan(rho[:, 1, 2:]).all()  # padding stays NaN


def test_token_intervals_cover_the_estimate_and_exclude_zero_for_planted_responses():
    observed, token_loss = _planted()
    flat = token_loss[..., 0, :]
    chi, _ = token_susceptibilities(observed, flat)
    low, high = bootstrap_token_intervals(observed, flat, n_boot=100, seed=0, chunk=3)
    assert (low <= chi + 1e-12).all() and (chi <= high + 1e-12).all()
    assert high[0, 0] < 0 < low[0, 1]  # planted: -2 Var f and +Var f
    assert low[2, 3] <= 0 <= high[2, 3]  # independent noise covers zero
    assert (low[1] == 0).all() and (high[1] == 0).all()
