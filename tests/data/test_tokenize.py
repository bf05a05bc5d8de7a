import numpy as np
import pytest

from codedyn.data.tokenize import (
    bucketed_batches,
    collate,
    encode_sample,
    length_buckets,
    padding_fraction,
)
from tests.code_texts import PROMPT, SOLUTION, pair_texts


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


# ------------------------------------------------------------------------------------------- in-context windows

def test_windows_stay_inside_the_context_and_end_at_the_end_of_the_code(tokenizer):
    from codedyn.data.tokenize import encode_windows

    reference, mutant = pair_texts(30, 27)
    prompts = [PROMPT] * 3
    solutions = [reference, mutant, SOLUTION]
    encoded, windows = encode_windows(tokenizer, prompts, solutions, [None, 0, None], context=24)
    assert not windows.excluded.any()
    for sample, prompt, solution in zip(encoded, prompts, solutions, strict=True):
        full = np.asarray(tokenizer(prompt + solution, add_special_tokens=False)["input_ids"])
        assert len(sample) <= 24  # no readout position reaches the context
        np.testing.assert_array_equal(sample.input_ids, full[-len(sample):])  # ends at the end of the code
    assert len(encoded[2]) == len(tokenizer(PROMPT + SOLUTION, add_special_tokens=False)["input_ids"])  # short: whole


def test_a_pair_shares_its_window_and_differs_exactly_in_the_mutated_span(tokenizer):
    from codedyn.data.token_kinds import mutation_span
    from codedyn.data.tokenize import encode_windows

    # The mutant is longer than its reference, so "the last 32 tokens of each" would misalign the pair.
    reference, mutant = pair_texts(30, 26, replacement="* b *")
    encoded, windows = encode_windows(tokenizer, [PROMPT, PROMPT], [reference, mutant], [None, 0], context=32)
    assert len(encoded[1]) == 32 and len(encoded[0]) < 32
    ref, mut = encoded
    assert windows.starts[0] == windows.starts[1] and not windows.excluded.any()
    # Strip the common head and tail: what is left is the mutated span, and nothing else differs.
    head = next(k for k in range(min(len(ref), len(mut))) if ref.input_ids[k] != mut.input_ids[k])
    tail = next(k for k in range(min(len(ref), len(mut))) if ref.input_ids[-1 - k] != mut.input_ids[-1 - k])
    differ_ref = tokenizer.decode(ref.input_ids[head:len(ref) - tail].tolist())
    differ_mut = tokenizer.decode(mut.input_ids[head:len(mut) - tail].tolist())
    lo, hi = mutation_span(reference, mutant)
    assert "*" in differ_mut and "+" in differ_ref and mutant[lo:hi] in differ_mut
    assert len(differ_mut) <= 8 and len(differ_ref) <= 4  # the changed characters and at most their token neighbours
    assert ref.loss_mask[head] and mut.loss_mask[head]  # the first changed token is scored in both
    # The mask, too, is the same outside the mutated tokens.
    np.testing.assert_array_equal(ref.loss_mask[:head], mut.loss_mask[:head])


def test_a_mutation_that_cannot_fit_is_counted_out(tokenizer):
    from codedyn.data.tokenize import encode_windows

    reference, early = pair_texts(30, 1)  # the change sits far before the last 24 tokens
    _, late = pair_texts(30, 28)
    encoded, windows = encode_windows(tokenizer, [PROMPT] * 3, [reference, early, late], [None, 0, 0], context=24)
    assert windows.excluded.tolist() == [False, True, False] and windows.n_excluded == 1
    assert encoded[1] is None and windows.lengths[1] == 0
    assert windows.starts[0] == windows.starts[2]


def test_the_shared_start_keeps_as_many_mutants_as_possible():
    """Pure token arithmetic: a long mutant forces a late start that would cut out two early mutations."""
    from codedyn.data.tokenize import window_starts

    ref = np.arange(20)
    early1, early2 = ref.copy(), ref.copy()
    early1[8], early2[9] = 99, 98
    longer = np.concatenate([ref[:18], [97, 96, 95, 94, 93], ref[18:]])  # 25 tokens, changed from index 18
    windows = window_starts([ref, early1, early2, longer], [None, 0, 0, 0], context=16)
    # Start 4 keeps both early mutants (changes at 8, 9 > 4); the long one needs start >= 9: out.
    assert windows.starts[0] == 4 and windows.excluded.tolist() == [False, False, False, True]
    assert (windows.lengths[:3] <= 16).all()
    with pytest.raises(ValueError, match="reference"):
        window_starts([ref, early1], [None, 1], context=16)
