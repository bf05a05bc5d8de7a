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
