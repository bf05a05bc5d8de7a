import numpy as np
import pytest

from codedyn.data.tokenize import (
    bucketed_batches,
    collate,
    encode_sample,
    length_buckets,
    padding_fraction,
)

PROMPT = 'def add(a, b):\n    """Return the sum."""\n'
SOLUTION = "    return a + b\n"


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [PROMPT + SOLUTION, "def mul(x, y):\n    return x * y\n", "for i in range(10):\n    print(i)\n"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


def test_code_mask_covers_exactly_the_solution(tokenizer):
    sample = encode_sample(tokenizer, PROMPT, SOLUTION, mask="code")
    ids = sample.input_ids
    first_scored = int(np.argmax(sample.loss_mask))
    assert sample.loss_mask[first_scored:].all()  # scored tokens are one contiguous tail
    assert tokenizer.decode(ids[first_scored:].tolist()).strip() == SOLUTION.strip()
    assert PROMPT.startswith(tokenizer.decode(ids[:first_scored].tolist()).rstrip(" "))


def test_all_mask_scores_everything_but_the_first_token(tokenizer):
    sample = encode_sample(tokenizer, PROMPT, SOLUTION, mask="all")
    assert not sample.loss_mask[0]
    assert sample.loss_mask[1:].all()


def test_truncation_keeps_the_code(tokenizer):
    full = encode_sample(tokenizer, PROMPT, SOLUTION)
    short = encode_sample(tokenizer, PROMPT, SOLUTION, max_length=8)
    assert short.truncated and len(short) == 8
    np.testing.assert_array_equal(short.input_ids, full.input_ids[-8:])
    with pytest.raises(ValueError, match="no scored tokens"):
        encode_sample(tokenizer, PROMPT, "")


def test_length_buckets_partition_and_respect_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 300, size=200).tolist()
    batches = length_buckets(lengths, max_tokens=1024, max_batch_size=16)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(200))
    for batch in batches:
        assert len(batch) <= 16
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 1024
    assert batches == length_buckets(lengths, max_tokens=1024, max_batch_size=16)


def test_bucketing_wastes_less_padding_than_arbitrary_batches(tokenizer):
    rng = np.random.default_rng(1)
    samples = [
        encode_sample(tokenizer, PROMPT, SOLUTION * int(n)) for n in rng.integers(1, 30, size=64)
    ]
    bucketed = bucketed_batches(samples, tokenizer.pad_token_id, max_tokens=4096, max_batch_size=8)
    naive = [(list(range(i, i + 8)), collate(samples[i : i + 8], tokenizer.pad_token_id)) for i in range(0, 64, 8)]
    assert padding_fraction(bucketed) < 0.5 * padding_fraction(naive)


def test_collate_pads_right_and_masks_pads(tokenizer):
    a = encode_sample(tokenizer, PROMPT, SOLUTION)
    b = encode_sample(tokenizer, PROMPT, SOLUTION * 3)
    batch = collate([a, b], pad_id=tokenizer.pad_token_id, length=len(b) + 5)
    assert batch["input_ids"].shape == (2, len(b) + 5)
    assert (batch["input_ids"][0, len(a):] == tokenizer.pad_token_id).all()
    assert not batch["loss_mask"][0, len(a):].any()
    assert batch["attention_mask"][0].sum() == len(a)
    with pytest.raises(ValueError, match="shorter"):
        collate([a, b], pad_id=0, length=3)


def test_sample_loss_is_padding_invariant(tokenizer):
    """The mean token loss of a sample must not depend on how much right-padding its batch adds."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=512, rotary_pct=0.25, use_parallel_residual=True,
        tie_word_embeddings=False,
    )
    model = GPTNeoXForCausalLM(config).eval()
    sample = encode_sample(tokenizer, PROMPT, SOLUTION)

    def loss_with_padding(extra: int) -> float:
        padded = collate([sample], tokenizer.pad_token_id, len(sample) + extra)
        batch = {k: torch.as_tensor(v) for k, v in padded.items()}
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        token_loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), batch["input_ids"][:, 1:], reduction="none"
        )
        mask = batch["loss_mask"][:, 1:].float()
        return float((token_loss * mask).sum() / mask.sum())

    reference = loss_with_padding(0)
    for extra in (1, 7, 64):
        assert loss_with_padding(extra) == pytest.approx(reference, abs=1e-5)
