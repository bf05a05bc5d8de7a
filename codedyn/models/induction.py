"""Induction-head measurements: the known developmental event the toy suite must contain.

On sequences made of a span of real held-out code repeated twice, ``[s_0 .. s_{L-1}, s_0 .. s_{L-1}]``:

* induction score: mean attention from a position t in the second copy to position t - L + 1 (the token that
  followed the earlier occurrence of the current token), per head; the layer score is the max over its heads.
  At initialisation attention is near-uniform, so the score is about 1 / t.
* copy1 / copy2: mean next-token loss on the first / second copy. An induction circuit predicts the second copy
  from the first, so ``copy1 - copy2`` (the in-context drop, nats) grows when it forms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def repeated_spans(stream: np.ndarray, n: int, span: int, seed: int) -> np.ndarray:
    """``n`` sequences ``[s, s]`` of spans of ``span`` tokens drawn from ``stream``: [n, 2 * span] int64."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, stream.shape[0] - span, size=n)
    return np.stack([np.concatenate([stream[s : s + span]] * 2) for s in starts])


@dataclass(frozen=True)
class InductionReport:
    head_scores: np.ndarray  # [layers, heads] mean attention to the induction target
    prev_token_scores: np.ndarray  # [layers, heads] mean attention to the previous token
    copy1_loss: float
    copy2_loss: float

    @property
    def layer_scores(self) -> np.ndarray:
        return self.head_scores.max(axis=1)

    @property
    def score(self) -> float:
        """The model's induction score: its strongest head."""
        return float(self.head_scores.max())

    @property
    def in_context_drop(self) -> float:
        return self.copy1_loss - self.copy2_loss

    def to_dict(self) -> dict:
        return {
            "induction_score": self.score,
            "layer_scores": self.layer_scores.round(4).tolist(),
            "head_scores": self.head_scores.round(4).tolist(),
            "prev_token_scores": self.prev_token_scores.round(4).tolist(),
            "copy1_loss": round(self.copy1_loss, 4),
            "copy2_loss": round(self.copy2_loss, 4),
            "in_context_drop": round(self.in_context_drop, 4),
        }


def measure_induction(model, sequences: np.ndarray) -> InductionReport:
    """Induction scores and copy losses of ``model`` on repeated-span ``sequences`` ([n, 2L]).

    Attention weights need the eager attention implementation; the model's own setting is restored afterwards.
    """
    import torch

    ids = torch.as_tensor(sequences, device=next(model.parameters()).device)
    span = ids.shape[1] // 2
    previous_impl = model.config._attn_implementation
    was_training = model.training
    model.eval()
    try:
        model.set_attn_implementation("eager")
        with torch.no_grad():
            out = model(input_ids=ids, output_attentions=True)
    finally:
        model.set_attn_implementation(previous_impl)
        model.train(was_training)
    token_loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    # Target index j scores token j + 1: the first copy is tokens 1..L-1, the second copy tokens L+1..2L-1
    # (token L, the start of the second copy, cannot be predicted from the first copy).
    copy1 = float(token_loss[:, : span - 1].mean())
    copy2 = float(token_loss[:, span : 2 * span - 1].mean())
    queries = torch.arange(span, 2 * span - 1)
    positions = torch.arange(1, 2 * span)
    head_scores, prev_scores = [], []
    for attention in out.attentions:  # [batch, heads, T, T] per layer
        head_scores.append(attention[:, :, queries, queries - span + 1].mean(dim=(0, 2)).float().cpu().numpy())
        prev_scores.append(attention[:, :, positions, positions - 1].mean(dim=(0, 2)).float().cpu().numpy())
    return InductionReport(np.stack(head_scores), np.stack(prev_scores), copy1, copy2)
