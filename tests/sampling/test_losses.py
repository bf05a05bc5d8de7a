"""Per-sample losses: bucketing and padding change nothing, order is the caller's."""

import numpy as np
import pytest
import torch

from codedyn.sampling.losses import EvalSet, sample_losses
from tests.neox_models import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def setup():
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    model = tiny_model(seed=0, vocab=len(tokenizer)).eval()
    rng = np.random.default_rng(0)
    prompts = [f"def f{i}(x):\n" for i in range(12)]
    solutions = ["    return x + 1\n" * int(n) for n in rng.integers(1, 6, size=12)]
    return tokenizer, model, prompts, solutions


def _one_by_one(model, tokenizer, prompts, solutions):
    out = []
    for p, s in zip(prompts, solutions, strict=True):
        single = EvalSet.build(tokenizer, [p], [s])
        out.append(float(sample_losses(model, single)[0]))
    return np.asarray(out)


def test_bucketed_losses_equal_unbatched_losses(setup):
    tokenizer, model, prompts, solutions = setup
    evalset = EvalSet.build(tokenizer, prompts, solutions, max_tokens=64)
    assert len(evalset.batches) > 1 and evalset.n_positions > evalset.n_tokens  # several buckets, some padding
    np.testing.assert_allclose(
        sample_losses(model, evalset).numpy(), _one_by_one(model, tokenizer, prompts, solutions), atol=1e-5
    )


def test_losses_are_code_token_means(setup):
    tokenizer, model, prompts, solutions = setup
    ids = tokenizer(prompts[0] + solutions[0], add_special_tokens=False, return_offsets_mapping=True)
    input_ids = torch.tensor([ids["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits
    token_loss = torch.nn.functional.cross_entropy(logits[0, :-1], input_ids[0, 1:], reduction="none")
    is_code = torch.tensor([end > len(prompts[0]) for _, end in ids["offset_mapping"]])[1:]
    expected = float(token_loss[is_code].mean())
    got = float(sample_losses(model, EvalSet.build(tokenizer, prompts[:1], solutions[:1]))[0])
    assert got == pytest.approx(expected, abs=1e-6)


def test_verdict_losses_read_the_token_after_each_window(setup):
    """The verdict loss is -log p(target | the whole window) at the window's last token, whatever its bucket and
    padding; ℓ and the per-token losses of the same pass equal the code-token readout's."""
    from codedyn.sampling.losses import sample_token_losses, sample_token_verdict_losses

    tokenizer, model, prompts, solutions = setup
    evalset = EvalSet.build(tokenizer, prompts, solutions, max_tokens=64)
    targets, wrong = np.random.default_rng(1).integers(0, len(tokenizer), size=(2, len(prompts)))
    losses, tokens, verdict, margin = sample_token_verdict_losses(model, evalset, targets, wrong)
    expected, odds = [], []
    for p, s, target, other in zip(prompts, solutions, targets, wrong, strict=True):
        ids = torch.tensor([tokenizer(p + s, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, -1], dim=-1)
        expected.append(float(-logp[int(target)]))
        odds.append(float(logp[int(target)] - logp[int(other)]))
    np.testing.assert_allclose(verdict.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(margin.numpy(), odds, atol=1e-5)
    code, per_token = sample_token_losses(model, evalset)
    np.testing.assert_allclose(losses.numpy(), code.numpy(), atol=1e-6)
    np.testing.assert_allclose(tokens.numpy(), per_token.numpy(), atol=1e-6)
