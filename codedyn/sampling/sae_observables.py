"""SAE-latent components for Experiment 3: which latents of a checkpoint's Experiment-2 SAEs the posterior records.

Every posterior draw already measures the head and MLP output norms of every read-out program; with SAE latents
switched on (``susceptibility.sae_latents`` > 0) it also records, per SAE layer and chosen latent and per program,
two readings from the same forward pass (:func:`codedyn.sampling.observables.sample_latent_readings`):

* ``L<layer>.SAE<latent>``: the latent's activation at the program's **final token** (the position Experiment 2
  scores and selects latents on);
* ``L<layer>.SAE<latent>.all_tokens``: its mean activation over the program's real tokens, a second, differently
  defined observable kept for comparison.

An observable of a set of programs is the mean of its programs' readings. Recording every latent of every layer
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

OBSERVABLE_PREFIX = "sae_L"  # layers ordered by "sae_L<layer>" (the order the stored names have always had)


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
                for name in reading_names(layer, self.latents[layer])]

    def readers(self, device: str = "cpu") -> list[tuple[int, object, tuple[int, ...]]]:
        """``(layer, TopKSAE, latent indices)`` per SAE layer in the order of :meth:`names`, for
        :class:`codedyn.sampling.observables.ReadoutObservables`."""
        from codedyn.models.sae import TopKSAE

        return [(layer, TopKSAE.load(self.unit, layer, device), tuple(self.latents[layer]))
                for _, layer in self._ordered()]

    def _ordered(self) -> list[tuple[str, int]]:
        return sorted((f"{OBSERVABLE_PREFIX}{layer}", layer) for layer in self.latents)


def reading_names(layer: int, indices) -> list[str]:
    """The names of one SAE layer's readings, in the order the readout records them: the final-token readings,
    then the all-token means."""
    from codedyn.models.sae import latent_name

    return [latent_name(layer, i) for i in indices] + [f"{latent_name(layer, i)}.all_tokens" for i in indices]


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
