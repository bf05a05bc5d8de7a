"""Tokenisation of code samples into batches with loss masks.

Conventions used by every experiment:

* ``input_ids[t]`` is token t; ``loss_mask[t]`` says whether the prediction *of* token t (made at position t-1) is
  scored. Position 0 is never scored (nothing predicts it).
* ``mask="code"`` scores only tokens of the solution (the part after the prompt), found from character offsets of a
  single tokenisation of prompt + solution (tokenising the two parts separately could split differently at the
  seam); ``mask="all"`` scores every token.
* A sample's loss is the mean token loss over its scored positions, so right-padding (masked out, and invisible to
  real tokens under causal attention) cannot change it.
* Batches are formed by length buckets: similar lengths together, at most ``max_tokens`` padded tokens per batch.
* Readouts stay inside the trained context (:func:`window_starts`): a sample longer than the model's training
  context is read in one window of at most ``context`` tokens that ends at the end of its code; a correct reference
  and its mutants share the window start, so a pair's windows differ only in the mutated tokens, and a mutant whose
  first changed token would fall before that start is left out (and counted) rather than read without its bug.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

MaskMode = Literal["code", "all"]


@dataclass(frozen=True)
class EncodedSample:
    input_ids: np.ndarray  # [T] int64
    loss_mask: np.ndarray  # [T] bool, True where token t is scored
    truncated: bool

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def encode_sample(
    tokenizer: Any, prompt: str, solution: str, mask: MaskMode = "code", max_length: int | None = None
) -> EncodedSample:
    """Tokenise ``prompt + solution`` once and mark the scored tokens.

    ``tokenizer`` is a HuggingFace fast tokenizer (offsets are needed). Over-long samples keep their *last*
    ``max_length`` tokens: the code is what is scored, the start of the prompt is what is dropped.
    """
    text = prompt + solution
    encoding = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids = np.asarray(encoding["input_ids"], dtype=np.int64)
    if mask == "code":
        # A token is code if it ends after the prompt: a token straddling the seam contains solution characters.
        ends = np.asarray([end for _, end in encoding["offset_mapping"]], dtype=np.int64)
        scored = ends > len(prompt)
    elif mask == "all":
        scored = np.ones(ids.shape[0], dtype=bool)
    else:
        raise ValueError(f"mask must be 'code' or 'all', got {mask!r}")
    truncated = max_length is not None and ids.shape[0] > max_length
    if truncated:
        ids, scored = ids[-max_length:], scored[-max_length:]
    scored = scored.copy()
    if scored.shape[0]:
        scored[0] = False
    if not scored.any():
        raise ValueError("sample has no scored tokens (empty solution, or truncated away)")
    return EncodedSample(ids, scored, bool(truncated))


def shared_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Number of leading tokens two id sequences have in common."""
    n = min(a.shape[0], b.shape[0])
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


@dataclass(frozen=True)
class ReadoutWindows:
    """Where every sample is read: its window is its last ``lengths[i]`` tokens (``tokens[starts[i]:]``).

    ``excluded[i]``: a mutant whose first changed token cannot be read in a window of at most ``context`` tokens
    shared with its reference (its length is 0). Every other window has at most ``context`` tokens.
    """

    starts: np.ndarray  # [N] int64, first token of the window
    lengths: np.ndarray  # [N] int64, tokens in the window (0 when excluded)
    excluded: np.ndarray  # [N] bool
    context: int

    @property
    def n_excluded(self) -> int:
        return int(self.excluded.sum())


def window_starts(token_ids: Sequence[np.ndarray], references: Sequence[int | None], context: int) -> ReadoutWindows:
    """Choose every sample's readout window inside a training context of ``context`` tokens.

    ``token_ids[i]``: sample i's tokens (prompt + solution); ``references[i]``: the index of sample i's correct
    reference when sample i is a mutant, else None. A window always ends at the sample's last token (the end of its
    code). A reference and its mutants start at one shared token s, so within the shared prefix their windows
    hold the same tokens and, ending together, they differ only where the mutation changed them. Mutant m fits when
    its window and the reference's both fit (s >= len - context for both) and its first changed token p_m is read
    and scored (s < p_m: position 0 of a window is never scored). Of a reference's mutants the shared start keeps
    as many as possible (ties: the earliest start, the most context); the rest are excluded. A sample without
    mutants and a mutant without a reference among ``token_ids`` simply keeps its last ``context`` tokens.
    """
    if context < 2:
        raise ValueError(f"a readout context needs at least 2 tokens, got {context}")
    n = len(token_ids)
    lengths = np.array([len(t) for t in token_ids], dtype=np.int64)
    starts = np.maximum(lengths - context, 0)
    excluded = np.zeros(n, dtype=bool)
    mutants: dict[int, list[int]] = {}
    for i, ref in enumerate(references):
        if ref is not None:
            if not 0 <= ref < n or references[ref] is not None:
                raise ValueError(f"sample {i}: its reference {ref} is not a correct sample of this set")
            mutants.setdefault(int(ref), []).append(i)
    for ref, group in mutants.items():
        base = int(starts[ref])  # the reference's own window must fit
        low = np.array([max(base, int(starts[m])) for m in group])
        high = np.array([shared_prefix(np.asarray(token_ids[ref]), np.asarray(token_ids[m])) - 1 for m in group])
        candidates = sorted(set(low.tolist()) | {base})
        counts = [int(((low <= s) & (s <= high)).sum()) for s in candidates]
        best = candidates[int(np.argmax(counts))]  # argmax takes the first: the earliest start among the best
        starts[ref] = best
        for m, lo, hi in zip(group, low, high, strict=True):
            if lo <= best <= hi:
                starts[m] = best
            else:
                excluded[m] = True
    out_lengths = np.where(excluded, 0, lengths - starts)
    return ReadoutWindows(starts, out_lengths.astype(np.int64), excluded, int(context))


def encode_windows(
    tokenizer: Any, prompts: Sequence[str], solutions: Sequence[str], references: Sequence[int | None],
    context: int, mask: MaskMode = "code",
) -> tuple[list[EncodedSample | None], ReadoutWindows]:
    """Every sample encoded in its readout window (:func:`window_starts`); None for an excluded mutant."""
    token_ids = [
        np.asarray(tokenizer(p + s, add_special_tokens=False)["input_ids"], dtype=np.int64)
        for p, s in zip(prompts, solutions, strict=True)
    ]
    windows = window_starts(token_ids, references, context)
    encoded = [
        None if windows.excluded[i] else encode_sample(tokenizer, p, s, mask, int(windows.lengths[i]))
        for i, (p, s) in enumerate(zip(prompts, solutions, strict=True))
    ]
    return encoded, windows


def length_buckets(lengths: Sequence[int], max_tokens: int, max_batch_size: int | None = None) -> list[list[int]]:
    """Group sample indices into batches of similar length.

    Samples are sorted by length (ties by index, so the result is deterministic) and packed greedily while
    ``batch_size * longest_in_batch <= max_tokens``. A single sample longer than ``max_tokens`` gets its own batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = max(lengths[index], max((lengths[i] for i in current), default=0))
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (full or (len(current) + 1) * longest > max_tokens):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def collate(
    samples: Sequence[EncodedSample], pad_id: int, length: int | None = None
) -> dict[str, np.ndarray]:
    """Right-pad to the longest sample (or to a fixed ``length``): input_ids, attention_mask, loss_mask."""
    longest = max(len(s) for s in samples)
    width = longest if length is None else length
    if width < longest:
        raise ValueError(f"fixed length {width} is shorter than the longest sample ({longest} tokens)")
    input_ids = np.full((len(samples), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(samples), width), dtype=np.int64)
    loss_mask = np.zeros((len(samples), width), dtype=bool)
    for row, sample in enumerate(samples):
        n = len(sample)
        input_ids[row, :n] = sample.input_ids
        attention_mask[row, :n] = 1
        loss_mask[row, :n] = sample.loss_mask
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


def bucketed_batches(
    samples: Sequence[EncodedSample], pad_id: int, max_tokens: int, max_batch_size: int | None = None
) -> list[tuple[list[int], dict[str, np.ndarray]]]:
    """Length-bucketed, collated batches with the sample indices each contains."""
    buckets = length_buckets([len(s) for s in samples], max_tokens, max_batch_size)
    return [(bucket, collate([samples[i] for i in bucket], pad_id)) for bucket in buckets]


def padding_fraction(batches: Sequence[tuple[list[int], dict[str, np.ndarray]]]) -> float:
    """Share of batch positions that are padding (the compute wasted)."""
    total = sum(b["attention_mask"].size for _, b in batches)
    real = sum(int(b["attention_mask"].sum()) for _, b in batches)
    return 1.0 - real / total if total else 0.0
