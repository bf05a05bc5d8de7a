"""Residual-stream capture (resid_post) with plain forward hooks on a HuggingFace causal LM of any architecture in
:data:`codedyn.models.hooks.ARCHITECTURES` (GPT-NeoX, GPT-2, the Llama family).

resid_post of layer l is the output of block l (``gpt_neox.layers[l]``, ``transformer.h[l]``, ``model.layers[l]``):
the residual stream after block l, before the final layer norm for the last layer. Hooks are registered for one
forward pass and removed in ``finally`` (:func:`codedyn.models.hooks.forward_hooks`); a capture stops the forward
pass after the highest requested layer, so reading an early layer of a big model does not pay for the rest of it.

Dataset samples are read at their **final token** (the last token of prompt + solution): samples are tokenised once
(:func:`codedyn.data.tokenize.encode_sample`), over-long ones keep their last ``max_tokens`` tokens, batches are
length-bucketed and right-padded, and the final real position of each row is gathered. Padding is invisible to real
tokens under causal attention, so a sample's activation does not depend on its batch.

The CE loss recovered splices an SAE's reconstruction into the forward pass in place of resid_post (a forward hook
returning the replacement), compared with the clean model and with zero ablation:
(L_zero - L_spliced) / (L_zero - L_clean).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class _StopForward(Exception):
    """Raised by a capture hook after the last layer it needs: the rest of the forward pass is skipped."""


def resolve_layers(n_layers: int, layers: Sequence[int] | None) -> tuple[int, ...]:
    """Sorted unique non-negative layer indices; None = a middle layer ((n - 1) // 2) and the last."""
    from codedyn.config import ConfigError

    if layers is None:
        return tuple(sorted({(n_layers - 1) // 2, n_layers - 1}))
    resolved = set()
    for layer in layers:
        index = layer + n_layers if layer < 0 else layer
        if not 0 <= index < n_layers:
            raise ConfigError(f"emergence.layers: layer {layer} does not exist in a model with {n_layers} layers")
        resolved.add(index)
    return tuple(sorted(resolved))


def _output_tensor(output):
    return output[0] if isinstance(output, tuple) else output


def resid_post(model, layers: Sequence[int], input_ids, attention_mask=None) -> dict[int, Any]:
    """``{layer: resid_post [B, T, D]}`` for one batch (no gradients; hooks removed; forward stopped early)."""
    import torch

    from codedyn.models.hooks import blocks as model_blocks
    from codedyn.models.hooks import forward_hooks

    blocks = model_blocks(model)
    wanted = sorted(set(layers))
    last = wanted[-1]
    captured: dict[int, Any] = {}

    def hook(index: int):
        def grab(module, args, output):
            captured[index] = _output_tensor(output).detach()
            if index == last:
                raise _StopForward

        return grab

    with torch.no_grad(), forward_hooks([(blocks[i], hook(i), False) for i in wanted]):
        try:
            model(input_ids=input_ids, attention_mask=attention_mask)
        except _StopForward:
            pass
    return {i: captured[i] for i in wanted}


def window_residuals(model, windows, layers: Sequence[int], batch_size: int = 64) -> dict[int, Any]:
    """``{layer: [N, T, D] float32}`` (on the model's device) for token windows [N, T] without padding."""
    import torch

    device = next(model.parameters()).device
    parts: dict[int, list] = {layer: [] for layer in layers}
    for begin in range(0, windows.shape[0], batch_size):
        batch = torch.as_tensor(windows[begin : begin + batch_size], device=device)
        for layer, resid in resid_post(model, layers, batch).items():
            parts[layer].append(resid.float())
    return {layer: torch.cat(chunks) for layer, chunks in parts.items()}


def final_token_residuals(
    model, tokenizer, prompts: Sequence[str], solutions: Sequence[str], layers: Sequence[int],
    max_tokens: int | Sequence[int], batch_tokens: int = 8192,
) -> dict[int, np.ndarray]:
    """``{layer: [N, D] float32}``: resid_post at the final token of every prompt + solution, in input order;
    ``max_tokens``: one cap, or each sample's readout window length (:func:`codedyn.sampling.losses.select_readout`)."""
    import torch

    from codedyn.data.tokenize import collate, encode_sample, length_buckets

    caps = [max_tokens] * len(prompts) if np.ndim(max_tokens) == 0 else list(max_tokens)
    encoded = [encode_sample(tokenizer, p, s, max_length=int(cap))
               for p, s, cap in zip(prompts, solutions, caps, strict=True)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out: dict[int, np.ndarray] = {}
    for bucket in length_buckets([len(e) for e in encoded], batch_tokens):
        arrays = collate([encoded[i] for i in bucket], pad)
        ids = torch.as_tensor(arrays["input_ids"], device=device)
        mask = torch.as_tensor(arrays["attention_mask"], device=device)
        final = mask.sum(dim=1) - 1  # right padding: the last real position
        rows = torch.arange(ids.shape[0], device=device)
        for layer, resid in resid_post(model, layers, ids, mask).items():
            if layer not in out:
                out[layer] = np.zeros((len(encoded), resid.shape[-1]), dtype=np.float32)
            out[layer][bucket] = resid[rows, final].float().cpu().numpy()
    return out


def window_losses(model, windows, replace: Callable | None = None, layer: int | None = None,
                  batch_size: int = 64) -> np.ndarray:
    """Mean next-token cross-entropy of each token window [N, T] -> [N] float64; with ``replace``, layer
    ``layer``'s resid_post is replaced by ``replace(resid)`` during the forward pass (hook removed afterwards)."""
    import torch

    from codedyn.models.hooks import blocks as model_blocks
    from codedyn.models.hooks import forward_hooks
    from codedyn.models.token_loss import token_losses

    device = next(model.parameters()).device
    hooks = []
    if replace is not None:
        block = model_blocks(model)[layer]

        def splice(module, args, output):
            if isinstance(output, tuple):
                return (replace(output[0]).to(output[0].dtype), *output[1:])
            return replace(output).to(output.dtype)

        hooks.append((block, splice, False))
    parts = []
    with torch.no_grad(), forward_hooks(hooks):
        for begin in range(0, windows.shape[0], batch_size):
            batch = torch.as_tensor(windows[begin : begin + batch_size], device=device)
            parts.append(token_losses(model, batch).double().mean(dim=1).cpu().numpy())
    return np.concatenate(parts)


def ce_loss_recovered(model, windows, layer: int, sae, n_boot: int = 0, seed: int = 0) -> dict:
    """CE losses clean / with the SAE reconstruction spliced in / with resid_post zero-ablated, and the fraction
    recovered (L_zero - L_sae) / (L_zero - L_clean); with ``n_boot`` > 0 its 95% interval over resampled windows."""
    import torch

    clean = window_losses(model, windows)
    spliced = window_losses(model, windows, sae.to(next(model.parameters()).device).reconstruct, layer)
    zero = window_losses(model, windows, torch.zeros_like, layer)

    def recovered(weights):  # [B, N] -> [B]
        c, s, z = weights @ clean, weights @ spliced, weights @ zero
        return np.divide(z - s, z - c, out=np.full(c.shape, np.nan), where=(z - c) != 0)

    out = {"ce_clean": float(clean.mean()), "ce_spliced": float(spliced.mean()),
           "ce_zero_ablation": float(zero.mean()),
           "ce_loss_recovered": float(recovered(np.ones((1, clean.size)))[0])}
    if n_boot > 0:
        from codedyn.resample import multiplicities

        reps = recovered(multiplicities(np.random.default_rng(seed), clean.size, n_boot))
        out["ce_loss_recovered_low"], out["ce_loss_recovered_high"] = (
            float(v) for v in np.nanquantile(reps, [0.025, 0.975]))
    return out


def corpus_windows(tokenizer, split: str, n: int, length: int, seed: int, corpus=None) -> np.ndarray:
    """``n`` random windows [n, length] of the corpus split (``train`` or ``heldout``) in this tokenisation; only as
    many files as needed are encoded (a seeded file order, about three times the tokens the windows use)."""
    from codedyn.data.corpus import CodeCorpus, sample_windows

    return sample_windows(tokenizer, corpus or CodeCorpus.stdlib(), split, n, length, np.random.default_rng(seed),
                          oversample=3)


def sae_windows(tokenizer, config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Experiment 2's corpus windows for one checkpoint (``config`` an :class:`~codedyn.config.EmergenceConfig`):
    ``(train [N, T], eval [eval_windows, T], general [general_windows, T])``. Training and evaluation windows come
    from ``config.corpus`` (train / held-out split), the general windows from the held-out split of the same corpus
    or, when given, from every document of ``config.general_corpus``."""
    import math

    from codedyn.data.corpus import load_corpus

    corpus = load_corpus(config.corpus)
    n_train = math.ceil(config.train_tokens / config.window_length)
    train = corpus_windows(tokenizer, "train", n_train, config.window_length, config.seed, corpus)
    n_general = 0 if config.general_corpus is not None else config.general_windows
    held = corpus_windows(tokenizer, "heldout", config.eval_windows + n_general, config.window_length,
                          config.seed + 1, corpus)
    if config.general_corpus is None:
        return train, held[: config.eval_windows], held[config.eval_windows :]
    general = corpus_windows(tokenizer, "all", config.general_windows, config.window_length, config.seed + 2,
                             load_corpus(config.general_corpus))
    return train, held, general
