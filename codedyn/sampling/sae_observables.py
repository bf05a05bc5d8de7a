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

The posterior of a checkpoint therefore depends on its SAE unit: the posterior key includes the SAE unit's key
(its folder name) and the settings that choose the latents (:class:`SaeLatentSource`), never the unit's outputs, so
it is known before the SAE is trained and retraining an SAE resamples exactly the posteriors that observe it. This
module only takes what it is handed (an SAE unit folder, the latent scores and selection); which unit belongs to a
study's checkpoint, and scoring its latents, is the experiments layer's business
(:func:`codedyn.experiments.posteriors.study_sae_latents`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

OBSERVABLE_PREFIX = "sae_L"  # observable keys "sae_L<layer>" sort after "components", as the stored names do


READINGS = ("final_token", "all_tokens")


@dataclass(frozen=True)
class SaeLatentSource:
    """Which SAE latents a posterior observes, known before the SAE is trained: the SAE unit (its folder name holds
    its key), how many latents per layer and the settings that choose them."""

    unit: Path
    per_layer: int
    choice: dict  # the settings the choice depends on beyond the unit (e.g. the general-latent threshold)

    @property
    def fingerprint(self) -> str:
        """Part of the posterior key: the SAE unit's name (kind, step, key), the latent count, the choice settings
        and the readings."""
        from codedyn.runs.store import content_hash

        return content_hash({"sae_unit": Path(self.unit).name, "per_layer": self.per_layer, "choice": self.choice,
                             "readings": list(READINGS)})


@dataclass(frozen=True)
class SaeLatentSet:
    """The observed latents of one checkpoint: ``{layer: latent indices}`` chosen in the SAE unit of ``source``."""

    source: SaeLatentSource
    latents: dict[int, tuple[int, ...]]

    @property
    def unit(self) -> Path:
        return Path(self.source.unit)

    @property
    def fingerprint(self) -> str:
        return self.source.fingerprint

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


def choose_latents(choices: dict, per_layer: int) -> dict[int, tuple[int, ...]]:
    """Per SAE layer: Experiment 2's chosen latents first, then eligible latents by |Welch t| (analysis split),
    ``per_layer`` in all, ties broken by latent index; sorted. ``choices``: ``{layer: (scores, selection)}`` with
    scores a DataFrame per latent (``latent``, ``welch_t``, ``general``) and selection the chosen ``best_latent``,
    ``correct_latent`` and ``incorrect_latent`` (:func:`codedyn.experiments.emergence.latent_choices`)."""
    chosen = {}
    for layer, (part, selection) in sorted(choices.items()):
        picked = [int(selection[name]) for name in ("best_latent", "correct_latent", "incorrect_latent")]
        eligible = part[~part["general"].astype(bool)] if (~part["general"].astype(bool)).any() else part
        strength = np.abs(np.nan_to_num(eligible["welch_t"].to_numpy(dtype=float)))
        order = np.lexsort((eligible["latent"].to_numpy(), -strength))
        for latent in eligible["latent"].to_numpy()[order]:
            if len(dict.fromkeys(picked)) >= per_layer:
                break
            picked.append(int(latent))
        chosen[int(layer)] = tuple(sorted(dict.fromkeys(picked))[:per_layer])
    return chosen
