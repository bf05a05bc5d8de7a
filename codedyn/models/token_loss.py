"""The next-token cross-entropy of a causal LM at every position: what the sampler's losses, the SAE's CE loss
recovered and the behaviour all read, so it lives with the models."""

from __future__ import annotations


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
