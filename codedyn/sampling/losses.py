"""Per-sample losses of code samples: the quantity every posterior readout is built from.

ℓ_i(w) is the mean next-token loss of sample i over its scored tokens (the solution, by default). Samples are
tokenised once, grouped in length buckets and right-padded; pads are masked out and, under causal attention,
invisible to real tokens, so a sample's loss does not depend on its batch (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from codedyn.data.tokenize import MaskMode, bucketed_batches, encode_sample


@dataclass(frozen=True)
class EvalBatch:
    indices: np.ndarray  # [B] positions of these samples in the evaluation set
    input_ids: object  # torch.LongTensor [B, T]
    attention_mask: object  # torch.LongTensor [B, T]
    loss_mask: object  # torch.BoolTensor [B, T]: True where token t is scored
    scored_rows: object  # torch.LongTensor [S]: batch row of each scored token (row-major order)
    scored_cols: object  # torch.LongTensor [S]: its column in the [B, T-1] token-loss matrix
    scored_slots: object  # torch.LongTensor [S]: its rank among its sample's scored tokens (0, 1, ...)


@dataclass(frozen=True)
class EvalSet:
    """Tokenised, bucketed evaluation samples, ready to be scored at every posterior draw."""

    batches: tuple[EvalBatch, ...]
    n_samples: int
    n_tokens: int  # real (non-pad) tokens
    n_positions: int  # padded positions computed
    max_scored: int  # most scored tokens of one sample: the width of the per-token loss matrix

    @classmethod
    def build(
        cls,
        tokenizer,
        prompts: Sequence[str],
        solutions: Sequence[str],
        mask: MaskMode = "code",
        max_length: int | None = None,
        max_tokens: int = 8192,
        device: str = "cpu",
    ) -> EvalSet:
        import torch

        encoded = [encode_sample(tokenizer, p, s, mask, max_length) for p, s in zip(prompts, solutions, strict=True)]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        batches = []
        for indices, arrays in bucketed_batches(encoded, pad_id, max_tokens=max_tokens):
            scored = arrays["loss_mask"][:, 1:]  # entry j of a token-loss row scores token j + 1
            rows, cols = np.nonzero(scored)
            slots = (np.cumsum(scored, axis=1) - 1)[rows, cols]
            batches.append(
                EvalBatch(
                    indices=np.asarray(indices),
                    input_ids=torch.as_tensor(arrays["input_ids"], device=device),
                    attention_mask=torch.as_tensor(arrays["attention_mask"], device=device),
                    loss_mask=torch.as_tensor(arrays["loss_mask"], device=device),
                    scored_rows=torch.as_tensor(rows, device=device),
                    scored_cols=torch.as_tensor(cols, device=device),
                    scored_slots=torch.as_tensor(slots, device=device),
                )
            )
        return cls(
            batches=tuple(batches),
            n_samples=len(encoded),
            n_tokens=sum(len(e) for e in encoded),
            n_positions=sum(int(b.input_ids.numel()) for b in batches),
            max_scored=max(int(e.loss_mask.sum()) for e in encoded),
        )


def token_losses(model, input_ids, attention_mask=None):
    """Next-token cross-entropy per position: [B, T-1], entry j scores token j + 1."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    batch, length, vocab = logits.shape
    # Flattened rows, not a transposed class dimension: the strided layout is twice as slow on CPU.
    flat = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, vocab).float(), input_ids[:, 1:].reshape(-1), reduction="none"
    )
    return flat.view(batch, length - 1)


def masked_mean_losses(token_loss, loss_mask):
    """Mean over each row's scored tokens: [B]."""
    mask = loss_mask[:, 1:].to(token_loss.dtype)
    return (token_loss * mask).sum(dim=1) / mask.sum(dim=1)


def sample_losses(model, evalset: EvalSet):
    """ℓ_i(w) for every sample of ``evalset``, in its original order: float32 tensor [N] on the model's device."""
    import torch

    out = None
    with torch.no_grad():
        for batch in evalset.batches:
            losses = masked_mean_losses(token_losses(model, batch.input_ids, batch.attention_mask), batch.loss_mask)
            if out is None:
                out = torch.empty(evalset.n_samples, dtype=torch.float32, device=losses.device)
            out[torch.as_tensor(batch.indices, device=losses.device)] = losses.float()
    return out


def sample_token_losses(model, evalset: EvalSet):
    """ℓ_i(w) [N] and the per-token losses behind them [N, max_scored] from one forward pass per batch.

    Row i of the token matrix holds sample i's scored tokens in order (entry t: the t-th code token), NaN after
    its last one; the mean of a row's real entries is ℓ_i up to float32 summation order (tested).
    """
    import torch

    out = tokens = None
    with torch.no_grad():
        for batch in evalset.batches:
            per_token = token_losses(model, batch.input_ids, batch.attention_mask)
            losses = masked_mean_losses(per_token, batch.loss_mask)
            if out is None:
                out = torch.empty(evalset.n_samples, dtype=torch.float32, device=losses.device)
                tokens = torch.full((evalset.n_samples, evalset.max_scored), float("nan"), device=losses.device)
            index = torch.as_tensor(batch.indices, device=losses.device)
            out[index] = losses.float()
            tokens[index[batch.scored_rows], batch.scored_slots] = per_token[batch.scored_rows,
                                                                             batch.scored_cols].float()
    return out, tokens


def with_precision(readout, precision: str | None):
    """``readout`` (model -> losses) evaluated in ``precision`` (``bfloat16``: autocast on the model's device type;
    ``tf32``: TF32 CUDA matmuls, restored afterwards); None returns ``readout`` itself (float32)."""
    if precision is None:
        return readout
    if precision not in ("bfloat16", "tf32"):
        raise ValueError(f"readout precision must be bfloat16, tf32 or None, got {precision!r}")

    def in_precision(model):
        import torch

        if precision == "bfloat16":
            with torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16):
                return readout(model)
        before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            return readout(model)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before

    return in_precision
