"""Activation capture with forward hooks that never outlive the call that registered them.

Component observables for susceptibilities: for every attention head and every MLP of a GPT-NeoX model, the norm of
what the component writes into the residual stream, averaged over the real tokens of a fixed probe batch:

* head h of layer l: ‖z_h W_O[:, h]ᵀ‖ per token, z_h the head's attention output (the input of ``attention.dense``
  split by head), W_O the output projection's columns of that head (bias excluded: it belongs to no head);
* MLP of layer l: ‖mlp(x)‖ per token.

Hooks are registered on whatever model is passed (the sampler's private copy, typically) and removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass


@contextmanager
def forward_hooks(hooks: Sequence[tuple[object, Callable, bool]]) -> Iterator[None]:
    """Register ``(module, fn, is_pre_hook)`` hooks for the duration of the block; always removed."""
    handles = []
    try:
        for module, fn, pre in hooks:
            handles.append(module.register_forward_pre_hook(fn) if pre else module.register_forward_hook(fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


def gpt_neox_layers(model):
    base = getattr(model, "gpt_neox", None)
    if base is None:
        raise TypeError(f"{type(model).__name__} is not a GPT-NeoX model (no .gpt_neox)")
    return base.layers


def component_names(model) -> list[str]:
    """``L<l>.H<h>`` for every head, then ``L<l>.MLP``, layer by layer."""
    layers = gpt_neox_layers(model)
    heads = model.config.num_attention_heads
    names = []
    for layer in range(len(layers)):
        names.extend(f"L{layer}.H{h}" for h in range(heads))
        names.append(f"L{layer}.MLP")
    return names


@dataclass(frozen=True)
class ComponentNorms:
    """Observable φ(model): [n_components] mean output norms on a fixed probe batch."""

    input_ids: object  # LongTensor [B, T]
    attention_mask: object  # LongTensor [B, T], 1 on real tokens

    def __call__(self, model):
        import torch

        with torch.no_grad():
            return self._norms(model)

    def _norms(self, model):
        import torch

        layers = gpt_neox_layers(model)
        heads = model.config.num_attention_heads
        mask = self.attention_mask.to(torch.float32)
        captured: dict[tuple[int, str], object] = {}

        def head_hook(layer: int):
            def hook(module, args):
                captured[(layer, "heads")] = args[0]  # [B, T, H * d_head], the merged head outputs

            return hook

        def mlp_hook(layer: int):
            def hook(module, args, output):
                captured[(layer, "mlp")] = output  # [B, T, D]

            return hook

        hooks = []
        for index, layer in enumerate(layers):
            hooks.append((layer.attention.dense, head_hook(index), True))
            hooks.append((layer.mlp, mlp_hook(index), False))
        with forward_hooks(hooks):
            model(input_ids=self.input_ids, attention_mask=self.attention_mask)

        def token_mean(norms):  # [B, T] or [B, T, H] -> mean over real tokens
            weights = mask if norms.dim() == 2 else mask[..., None]
            return (norms * weights).sum(dim=(0, 1)) / mask.sum()

        values = []
        for index, layer in enumerate(layers):
            merged = captured[(index, "heads")].float()
            batch, length, width = merged.shape
            z = merged.view(batch, length, heads, width // heads)
            w_o = layer.attention.dense.weight.float().view(-1, heads, width // heads)  # [D, H, d_head]
            per_head = torch.einsum("bthd,ehd->bthe", z, w_o).norm(dim=-1)  # [B, T, H]
            values.append(token_mean(per_head))
            values.append(token_mean(captured[(index, "mlp")].float().norm(dim=-1)).reshape(1))
        return torch.cat(values)
