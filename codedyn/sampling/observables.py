"""Per-sample observables read in the readout's own forward passes.

Experiment 3's susceptibility χ = -Cov(φ, L) needs a component observable φ at every posterior draw. Each draw
already runs every read-out program through the model for its losses; the observables are captured by hooks in
those same passes, per program: every head's and MLP's output norm (:func:`codedyn.models.hooks.sample_component_norms`)
and, with SAE latents switched on, each chosen latent's activation at the program's final token and its mean over
the program's real tokens (:func:`sample_latent_readings`). φ of a set of programs is the mean of its programs'
readings, so an interval that resamples the read-out programs resamples the observable's programs with them
(:func:`codedyn.experiments.susceptibility.unit_susceptibility_replicates`), and no extra forward pass is spent on a
separate probe batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

OBSERVED_BY_SAMPLE = "observed_by_sample"  # the traces variable (chain, draw, sample, observable)


def sample_latent_readings(encode, resid, attention_mask, indices) -> object:
    """[B, 2n]: for each row of ``resid`` [B, T, D] (right-padded, ``attention_mask`` [B, T]) the chosen latents'
    activations (``encode``: activations [N, D] -> latents [N, m], an SAE's encoder on ``resid``'s device) at the
    row's last real token, then their means over the row's real tokens (the order of
    :func:`codedyn.sampling.sae_observables.reading_names`)."""
    import torch

    chosen = torch.as_tensor(list(indices), device=resid.device)
    z = encode(resid.reshape(-1, resid.shape[-1]).float())[:, chosen].view(*attention_mask.shape, -1)
    mask = attention_mask.to(device=resid.device, dtype=z.dtype)
    rows = torch.arange(mask.shape[0], device=resid.device)
    at_final = z[rows, attention_mask.sum(dim=1).to(resid.device) - 1]  # [B, n]
    all_tokens = (z * mask[..., None]).sum(dim=1) / mask.sum(dim=1)[:, None]  # [B, n]
    return torch.cat([at_final, all_tokens], dim=1)


@dataclass
class Recording:
    """The readings of one readout call: :meth:`collect` after each batch's forward pass fills rows ``[N, K]``."""

    model: object
    captured: dict
    saes: tuple
    n_samples: int
    values: object = None  # [N, K] once the first batch is collected

    def collect(self, batch) -> None:
        """Store the per-sample readings of the forward pass just run on ``batch`` (an
        :class:`codedyn.sampling.losses.EvalBatch`) at its samples' rows."""
        import torch

        from codedyn.models.hooks import sample_component_norms

        parts = [sample_component_norms(self.model, self.captured, batch.attention_mask)]
        for layer, encoder, indices in self.saes:
            parts.append(sample_latent_readings(encoder, self.captured[(layer, "resid")].float(),
                                                batch.attention_mask, indices))
        readings = torch.cat(parts, dim=1).float()
        if self.values is None:
            self.values = torch.full((self.n_samples, readings.shape[1]), float("nan"), device=readings.device)
        self.values[torch.as_tensor(batch.indices, device=readings.device)] = readings


@dataclass(frozen=True)
class ReadoutObservables:
    """What the readout observes per program: every component of the model and, optionally, SAE latents
    (``saes``: ``(layer, SAE encoder module, latent indices)`` in the order of their names)."""

    saes: tuple = ()

    @classmethod
    def of(cls, sae_latents=None, device: str = "cpu") -> ReadoutObservables:
        """Components only, or with the latents of a :class:`codedyn.sampling.sae_observables.SaeLatentSet`."""
        readers = [] if sae_latents is None else sae_latents.readers(device)
        return cls(tuple((layer, sae.encoder(), indices) for layer, sae, indices in readers))

    @contextmanager
    def recording(self, model, n_samples: int) -> Iterator[Recording]:
        """Hooks on ``model`` for the duration of the block (always removed); the yielded :class:`Recording`
        collects each batch's readings."""
        from codedyn.models.hooks import blocks, component_hooks, forward_hooks

        captured: dict = {}
        hooks = component_hooks(model, captured)
        layers = blocks(model)
        for layer, _, _ in self.saes:
            hooks.append((layers[layer], _store_resid(captured, layer), False))
        with forward_hooks(hooks):
            yield Recording(model, captured, self.saes, n_samples)


def _store_resid(captured: dict, layer: int):
    def hook(module, args, output):
        captured[(layer, "resid")] = output[0] if isinstance(output, tuple) else output  # resid_post [B, T, D]

    return hook
