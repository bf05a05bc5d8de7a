"""SAE-latent components for Experiment 3: which latents of a checkpoint's Experiment-2 SAEs the posterior records.

Every posterior draw already measures the head and MLP output norms on the probe batch; with SAE latents switched on
(``susceptibility.sae_latents`` > 0) it also records, per SAE layer, the mean activation over the probe batch's real
tokens of a fixed set of latents (:class:`codedyn.models.sae.SaeLatentMeans`). Recording every latent of every layer
would multiply the analysis cost by the SAE width for latents that mostly never fire on code, so the set is: the
latents Experiment 2 chose (best / correct / incorrect predictor), then the eligible (non-general) latents with the
largest |Welch t| between correct and incorrect samples on the *analysis* split, up to ``sae_latents`` per layer.
The choice uses only the analysis split, like Experiment 2's selection.

The posterior of a checkpoint therefore depends on its SAE unit: the posterior key includes a fingerprint of the SAE
weights and of the chosen latent indices, so retraining an SAE resamples exactly the posteriors that observe it.
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
        return content_hash({"weights": weights, "latents": {str(k): list(v) for k, v in self.latents.items()}})

    def names(self) -> list[str]:
        """``L<layer>.SAE<latent>`` in the order the sampler concatenates the observables (sorted keys)."""
        return [f"L{layer}.SAE{i}" for key, layer in self._ordered() for i in self.latents[layer]]

    def observables(self, input_ids, attention_mask, device: str = "cpu") -> dict:
        """Sampler observables ``{"sae_L<layer>": callable(model) -> [n latents]}`` on the given probe batch."""
        from codedyn.models.sae import SaeLatentMeans, TopKSAE

        out = {}
        for key, layer in self._ordered():
            means = SaeLatentMeans(TopKSAE.load(self.unit, layer, device), layer, input_ids, attention_mask)
            out[key] = SelectedLatents(means, tuple(self.latents[layer]))
        return out

    def _ordered(self) -> list[tuple[str, int]]:
        return sorted((f"{OBSERVABLE_PREFIX}{layer}", layer) for layer in self.latents)


@dataclass(frozen=True)
class SelectedLatents:
    """An observable restricted to some of its entries (the chosen latents of one SAE)."""

    inner: object
    indices: tuple[int, ...]

    def __call__(self, model):
        return self.inner(model)[list(self.indices)]


def choose_latents(unit: Path, per_layer: int) -> dict[int, tuple[int, ...]]:
    """Per SAE layer of the unit: Experiment 2's chosen latents first, then eligible latents by |Welch t| (analysis
    split), ``per_layer`` in all, ties broken by latent index; sorted."""
    import pandas as pd

    scores = pd.read_parquet(Path(unit) / "scores.parquet")
    selection = json.loads((Path(unit) / "selection.json").read_text())
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


def study_sae_latents(study, step: int) -> SaeLatentSet | None:
    """The SAE latents the posterior of ``step`` observes, or None when SAE components are off. The SAE unit must
    exist (the pipeline trains it first; FileNotFoundError names the command otherwise)."""
    from codedyn.experiments.emergence import emergence_unit_dir
    from codedyn.runs.store import is_completed

    per_layer = study.config.susceptibility.sae_latents
    if per_layer == 0:
        return None
    unit = emergence_unit_dir(study, step)
    if not is_completed(unit):
        raise FileNotFoundError(
            f"step {step} has no trained SAE at {unit}, which its posterior observes; run `codedyn emergence` first "
            "(or `codedyn run`), or set susceptibility.sae_latents: 0"
        )
    return SaeLatentSet(unit, choose_latents(unit, per_layer))
