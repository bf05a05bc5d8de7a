"""SAE-latent components for Experiment 3: which latents of a checkpoint's Experiment-2 SAEs the posterior records.

Every posterior draw already measures the head and MLP output norms on the probe batch; with SAE latents switched on
(``susceptibility.sae_latents`` > 0) it also records, per SAE layer and chosen latent, two observables from one
forward pass (:class:`SaeLatentReadings`):

* ``L<layer>.SAE<latent>``: the latent's activation at the **final token** of each probe sample (the position
  Experiment 2 scores and selects latents on), averaged over the probe samples;
* ``L<layer>.SAE<latent>.all_tokens``: its mean activation over all real tokens of the probe batch, a second,
  differently defined observable kept for comparison. Recording every latent of every layer
would multiply the analysis cost by the SAE width for latents that mostly never fire on code, so the set is: the
latents Experiment 2 chose (best / correct / incorrect predictor), then the eligible (non-general) latents with the
largest |Welch t| between correct and incorrect samples on the *analysis* split, up to ``sae_latents`` per layer.
The choice uses only the analysis split, like Experiment 2's selection.

The posterior of a checkpoint therefore depends on its SAE unit: the posterior key includes a fingerprint of the SAE
weights and of the chosen latent indices, so retraining an SAE resamples exactly the posteriors that observe it.
This module only reads an SAE unit folder it is handed (:func:`choose_latents`); which folder belongs to a study's
checkpoint is the experiments layer's business (:func:`codedyn.experiments.posteriors.study_sae_latents`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OBSERVABLE_PREFIX = "sae_L"  # observable keys "sae_L<layer>" sort after "components", as the stored names do


@dataclass(frozen=True)
class SaeLatentSet:
    """The observed latents of one checkpoint: ``{layer: latent indices}`` in the SAE unit ``unit``."""

    unit: Path
    latents: dict[int, tuple[int, ...]]

    @property
    def fingerprint(self) -> str:
        """Hash of the SAE weights and the chosen indices (part of the posterior key)."""
        from codedyn.models.sae import WEIGHTS_FILE
        from codedyn.runs.store import content_hash

        weights = {
            str(layer): hashlib.sha256((self.unit / WEIGHTS_FILE.format(layer=layer)).read_bytes()).hexdigest()
            for layer in self.latents
        }
        return content_hash({"weights": weights, "latents": {str(k): list(v) for k, v in self.latents.items()},
                             "readings": ["final_token", "all_tokens"]})

    def names(self) -> list[str]:
        """Observable names in the order the sampler concatenates them (sorted keys; per layer the final-token
        readings ``L<layer>.SAE<latent>``, then the all-token means ``L<layer>.SAE<latent>.all_tokens``)."""
        return [name for key, layer in self._ordered()
                for name in SaeLatentReadings.names_for(layer, self.latents[layer])]

    def observables(self, input_ids, attention_mask, device: str = "cpu") -> dict:
        """Sampler observables ``{"sae_L<layer>": callable(model) -> [2 x n latents]}`` on the given probe batch
        (right-padded: ``attention_mask`` marks each row's real tokens, the last of them its final token)."""
        from codedyn.models.sae import TopKSAE

        return {key: SaeLatentReadings(TopKSAE.load(self.unit, layer, device), layer, input_ids, attention_mask,
                                       tuple(self.latents[layer]))
                for key, layer in self._ordered()}

    def _ordered(self) -> list[tuple[str, int]]:
        return sorted((f"{OBSERVABLE_PREFIX}{layer}", layer) for layer in self.latents)


@dataclass(frozen=True)
class SaeLatentReadings:
    """Observable φ(model) of the chosen latents of one SAE: [final-token means (n), all-token means (n)].

    One forward pass to ``layer``'s resid_post (hooks removed, no gradients); the final-token reading is the mean
    over probe samples of each latent at the sample's last real token, the all-token one the mean over every real
    token of the batch."""

    sae: object  # codedyn.models.sae.TopKSAE
    layer: int
    input_ids: object  # LongTensor [B, T]
    attention_mask: object  # LongTensor [B, T], 1 on real tokens (right padding)
    indices: tuple[int, ...]

    @staticmethod
    def names_for(layer: int, indices) -> list[str]:
        from codedyn.models.sae import latent_name

        return [latent_name(layer, i) for i in indices] + [f"{latent_name(layer, i)}.all_tokens" for i in indices]

    def __call__(self, model):
        import torch

        from codedyn.models.activations import resid_post

        with torch.no_grad():
            resid = resid_post(model, [self.layer], self.input_ids, self.attention_mask)[self.layer]  # [B, T, D]
            sae = self.sae if self.sae.W_enc.device == resid.device else self.sae.to(resid.device)
            chosen = torch.as_tensor(list(self.indices), device=resid.device)
            z = sae.encode(resid.reshape(-1, resid.shape[-1]).float())[:, chosen]  # [B * T, n]
            mask = self.attention_mask.to(resid.device)
            final = mask.sum(dim=1) - 1  # the last real position of each row
            rows = torch.arange(mask.shape[0], device=resid.device)
            at_final = z.view(*mask.shape, -1)[rows, final].mean(dim=0)
            weights = mask.reshape(-1).to(z.dtype)
            all_tokens = (z * weights[:, None]).sum(dim=0) / weights.sum()
            return torch.cat([at_final, all_tokens])


def choose_latents(unit: Path, per_layer: int) -> dict[int, tuple[int, ...]]:
    """Per SAE layer of the unit: Experiment 2's chosen latents first, then eligible latents by |Welch t| (analysis
    split), ``per_layer`` in all, ties broken by latent index; sorted."""
    import pandas as pd

    from codedyn.runs.layout import SAE_SCORES, SAE_SELECTION

    scores = pd.read_parquet(Path(unit) / SAE_SCORES)
    selection = json.loads((Path(unit) / SAE_SELECTION).read_text())
    chosen = {}
    for layer, part in scores.groupby("layer"):
        picked = [int(selection[str(layer)][name]) for name in ("best_latent", "correct_latent", "incorrect_latent")]
        eligible = part[~part["general"].astype(bool)] if (~part["general"].astype(bool)).any() else part
        strength = np.abs(np.nan_to_num(eligible["welch_t"].to_numpy(dtype=float)))
        order = np.lexsort((eligible["latent"].to_numpy(), -strength))
        for latent in eligible["latent"].to_numpy()[order]:
            if len(dict.fromkeys(picked)) >= per_layer:
                break
            picked.append(int(latent))
        chosen[int(layer)] = tuple(sorted(dict.fromkeys(picked))[:per_layer])
    return chosen
