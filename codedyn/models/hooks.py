"""Activation capture with forward hooks that never outlive the call that registered them, on every architecture
of :data:`ARCHITECTURES` (keyed by the checkpoint config's ``model_type``; anything else is refused with one
sentence, never hooked by guesswork).

Component observables for susceptibilities: for every attention head and every MLP, the norm of what the component
writes into the residual stream, averaged over each sample's real tokens (per sample at every posterior draw,
:mod:`codedyn.sampling.observables`):

* head h of layer l: ‖z_h W_O[:, h]ᵀ‖ per token, z_h the head's attention output (the input of the attention output
  projection -- ``attention.dense`` (GPT-NeoX), ``attn.c_proj`` (GPT-2), ``self_attn.o_proj`` (Llama family) --
  split by head), W_O the projection's columns of that head (bias excluded: it belongs to no head). Grouped-query
  attention changes nothing here: every query head has its own slice of the output projection;
* MLP of layer l: ‖mlp(x)‖ per token (gated or not, the MLP module's output is what it adds to the residual).

Hooks are registered on whatever model is passed (the sampler's private copy, typically) and removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from codedyn.models.errors import SuiteError


class UnsupportedArchitecture(SuiteError):
    """A checkpoint whose ``model_type`` codedyn has no module table for."""


@dataclass(frozen=True)
class Architecture:
    """Where one transformer family keeps what codedyn hooks and restricts."""

    blocks: str
    """Attribute path from the causal LM to its list of transformer blocks (resid_post = a block's output)."""
    attention_out: str
    """Path, inside a block, of the attention output projection; its input is the concatenated head outputs."""
    mlp: str
    """Path, inside a block, of the MLP whose output is added to the residual stream."""
    conv1d: bool
    """The output projection stores its weight as [in, out] (GPT-2's Conv1D) rather than [out, in] (nn.Linear)."""
    head_share: tuple[tuple[str, int, bool], ...]
    """Per-head parameters of a weight restriction: (name suffix, multiple of d_head, times the width?): the share
    of each tensor that a head's mask must select (checked before any restricted posterior is sampled)."""


_NEOX_SHARE = (("attention.query_key_value.weight", 3, True), ("attention.query_key_value.bias", 3, False),
               ("attention.dense.weight", 1, True))
_GPT2_SHARE = (("attn.c_attn.weight", 3, True), ("attn.c_attn.bias", 3, False), ("attn.c_proj.weight", 1, True))
# Separate projections: a query head's rows of q_proj, its KV group's rows of k_proj and v_proj (shared with the
# group's other query heads), its columns of o_proj.
_LLAMA_SHARE = tuple((f"self_attn.{p}_proj.weight", 1, True) for p in "qkvo")
_QWEN2_SHARE = _LLAMA_SHARE + tuple((f"self_attn.{p}_proj.bias", 1, False) for p in "qkv")
_LLAMA = Architecture("model.layers", "self_attn.o_proj", "mlp", False, _LLAMA_SHARE)

ARCHITECTURES: dict[str, Architecture] = {
    "gpt_neox": Architecture("gpt_neox.layers", "attention.dense", "mlp", False, _NEOX_SHARE),
    "gpt2": Architecture("transformer.h", "attn.c_proj", "mlp", True, _GPT2_SHARE),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "olmo": _LLAMA,
    "qwen2": Architecture("model.layers", "self_attn.o_proj", "mlp", False, _QWEN2_SHARE),
}


def check_model_type(model_type: str | None, where: str = "this checkpoint") -> Architecture:
    """The table entry of ``model_type``, or one sentence naming what is supported."""
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitecture(
            f"{where} is a {model_type!r} model; codedyn hooks, masks and captures only the architectures in its "
            f"table ({', '.join(sorted(ARCHITECTURES))})")
    return ARCHITECTURES[model_type]


def architecture(model) -> Architecture:
    return check_model_type(getattr(getattr(model, "config", None), "model_type", None), type(model).__name__)


def _get(module, path: str):
    for part in path.split("."):
        module = getattr(module, part)
    return module


def blocks(model):
    """The transformer blocks of a model of any architecture in the table."""
    return _get(model, architecture(model).blocks)


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


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


def component_names(model) -> list[str]:
    """``L<l>.H<h>`` for every head, then ``L<l>.MLP``, layer by layer."""
    layers = blocks(model)
    heads = model.config.num_attention_heads
    names = []
    for layer in range(len(layers)):
        names.extend(f"L{layer}.H{h}" for h in range(heads))
        names.append(f"L{layer}.MLP")
    return names


def component_hooks(model, captured: dict) -> list[tuple[object, Callable, bool]]:
    """Hooks (for :func:`forward_hooks`) that store, at every forward pass, each layer's merged head outputs (the
    attention output projection's input) under ``(layer, "heads")`` and its MLP output under ``(layer, "mlp")``."""
    arch = architecture(model)

    def head_hook(layer: int):
        def hook(module, args):
            captured[(layer, "heads")] = args[0]  # [B, T, H * d_head], the merged head outputs

        return hook

    def mlp_hook(layer: int):
        def hook(module, args, output):
            captured[(layer, "mlp")] = output[0] if isinstance(output, tuple) else output  # [B, T, D]

        return hook

    hooks = []
    for index, layer in enumerate(_get(model, arch.blocks)):
        hooks.append((_get(layer, arch.attention_out), head_hook(index), True))
        hooks.append((_get(layer, arch.mlp), mlp_hook(index), False))
    return hooks


def sample_component_norms(model, captured: dict, attention_mask):
    """[B, n_components] per sample (row) of the last forward pass :func:`component_hooks` captured: every head's
    and MLP's output norm averaged over the row's real tokens, in :func:`component_names` order.

    A head's norm ‖z_h W_Oᵀ[:, h]‖ is computed as √(z_h G_h z_hᵀ) with G_h = W_O,hᵀ W_O,h (d_head x d_head), so no
    [B, T, H, D] tensor is built; the two agree to float32 round-off (tested against one head at a time)."""
    import torch

    arch = architecture(model)
    layers = _get(model, arch.blocks)
    heads, d_head = model.config.num_attention_heads, head_dim(model.config)
    mask = attention_mask.to(torch.float32)
    counts = mask.sum(dim=1)  # [B] real tokens per row

    def row_mean(norms):  # [B, T] or [B, T, H] -> [B] or [B, H], mean over each row's real tokens
        weights = mask if norms.dim() == 2 else mask[..., None]
        total = (norms * weights).sum(dim=1)
        return total / (counts if norms.dim() == 2 else counts[:, None])

    values = []
    for index, layer in enumerate(layers):
        merged = captured[(index, "heads")].float()
        batch, length, _ = merged.shape
        z = merged.view(batch, length, heads, d_head)
        weight = _get(layer, arch.attention_out).weight.float()
        weight = weight.T if arch.conv1d else weight  # [D, H * d_head]
        w_o = weight.reshape(-1, heads, d_head)  # [D, H, d_head]
        gram = torch.einsum("ehd,ehf->hdf", w_o, w_o)  # [H, d_head, d_head]
        squared = torch.einsum("bthd,hdf,bthf->bth", z, gram, z)
        values.append(row_mean(squared.clamp_min(0).sqrt()))
        values.append(row_mean(captured[(index, "mlp")].float().norm(dim=-1))[:, None])
    return torch.cat(values, dim=1)


@dataclass(frozen=True)
class ComponentNorms:
    """Observable φ(model): [n_components] output norms on a fixed batch, each row's mean over its real tokens
    averaged over the rows (every sample weighs the same, as in a posterior's per-sample readings,
    :mod:`codedyn.sampling.observables`)."""

    input_ids: object  # LongTensor [B, T]
    attention_mask: object  # LongTensor [B, T], 1 on real tokens

    def __call__(self, model):
        import torch

        captured: dict = {}
        with torch.no_grad(), forward_hooks(component_hooks(model, captured)):
            model(input_ids=self.input_ids, attention_mask=self.attention_mask)
            return sample_component_norms(model, captured, self.attention_mask).mean(dim=0)
