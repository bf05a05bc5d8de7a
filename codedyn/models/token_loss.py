"""The next-token loss of a causal LM at every position: what the sampler's losses, the SAE's CE loss recovered and
the behaviour all read, so it lives with the models.

The loss head (log-softmax over the vocabulary, the target's log-probability) runs as a ``torch.nn.Module``: it is
the last layer of the function whose gradient the sampler takes (a Hugging Face model computes it inside its own
forward when given labels), so the run's model clock (:class:`codedyn.runs.timings.ModelClock`, which times
module forwards and the backward passes through them) counts it as model compute, as it does the logits.
"""

from __future__ import annotations

from functools import cache


@cache
def loss_head():
    """The shared loss-head module (built on first use, so importing this module does not import torch)."""
    import torch

    class LossHead(torch.nn.Module):
        """[B, T, V] logits and [B, T] token ids -> [B, T-1] next-token losses (entry j scores token j + 1)."""

        def forward(self, logits, input_ids, gather: bool = False):
            if gather:  # devinterp's formula, so that the sampler's gradients (and draws) equal its bitwise
                log_probs = torch.nn.functional.log_softmax(logits, dim=-1)
                return -log_probs[..., :-1, :].gather(dim=-1, index=input_ids[..., 1:, None])[..., 0]
            batch, length, vocab = logits.shape
            # Flattened rows, not a transposed class dimension: the strided layout is twice as slow on CPU.
            flat = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, vocab).float(), input_ids[:, 1:].reshape(-1), reduction="none"
            )
            return flat.view(batch, length - 1)

    return LossHead()


def token_losses(model, input_ids, attention_mask=None):
    """Next-token cross-entropy per position: [B, T-1], entry j scores token j + 1."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return loss_head()(logits, input_ids)


def gathered_token_losses(model, input_ids):
    """The same losses computed as devinterp does (log_softmax + gather; no attention mask): the sampler's loss,
    whose gradients, and hence draws, are then bitwise identical to devinterp's."""
    return loss_head()(model(input_ids=input_ids).logits, input_ids, gather=True)
