"""Experiment 4: developmental visualisation (the "embryology" view of Wang et al. 2025).

At every checkpoint each code token (s, t) of the read-out samples has a vector of per-component susceptibilities
χ_{·,(s,t)} (:mod:`codedyn.experiments.token_susceptibility`); each component has a profile over tokens. Two views,
both embedded in 2-d by UMAP and aligned across checkpoints so that the sequence reads as development:

* token view: points = a fixed, seeded subset of code tokens (every in-mutation token, then a random choice up to
  ``max_tokens``), vectors = χ over components, each component z-scored over the embedded tokens (Wang et al.
  standardise per component, so a large-output component does not dominate the metric);
* component view: points = components (heads, MLPs, SAE latents when the traces carry them), vectors = the same
  z-scored χ as profiles over the embedded tokens.

Alignment (``embryology.method``): ``anchored`` (default) embeds the first checkpoint from UMAP's spectral
initialisation, then every later checkpoint starting from the previous layout (same points, ``anchored_epochs`` at
a lowered learning rate, so the layout is refined rather than rebuilt), and maps it onto that layout by a Procrustes
fit (rotation / reflection and shift, same RMS radius); ``aligned`` runs umap-learn's AlignedUMAP over all
checkpoints with identity relations. Both are seeded (``random_state``, fixed epochs) and therefore deterministic
(tested). Anchored is the default because AlignedUMAP is far slower on a few CPU cores (BENCHMARKS.md).

How much of the layout is explained by what the tokens are: at every checkpoint a leave-one-out k-nearest-neighbour
classifier (votes corrected for class frequency) on the 2-d coordinates predicts each token's kind, its sample's
label (correct / incorrect) and its in-mutation flag; balanced accuracies carry bootstrap intervals over tokens and
are compared with the same classifier in the full χ space (does the picture keep what the vectors hold?).

Outputs in ``<run>/embryology/``: ``susceptibility/step<N>.zarr`` (full per-token χ and ρ), ``embedding.parquet``
(view, step, point, x, y + metadata), ``structure.parquet`` (kNN accuracies with intervals), figures
``embryology_grid`` and ``embryology_structure`` (PNG + PDF), ``embryology.gif`` (``.mp4`` too when ffmpeg is
installed) and ``embryology.html`` (interactive, self-contained, slider over checkpoints).
"""

from __future__ import annotations

import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from codedyn.config import EmbryologyConfig

if TYPE_CHECKING:
    import pandas as pd

    from codedyn.experiments.study import Study

EMBRYOLOGY_DIR = "embryology"
VIEWS = ("tokens", "components")
KNN_NEIGHBOURS = 10


# ---------------------------------------------------------------------------------------------------- features


def select_tokens(token_id: np.ndarray, in_mutation: np.ndarray, max_tokens: int, seed: int) -> np.ndarray:
    """(sample, token) index pairs [P, 2] of the embedded tokens, sorted: every in-mutation token (a seeded subset
    if they alone exceed ``max_tokens``), then a seeded random choice of the other code tokens."""
    rng = np.random.default_rng(seed)
    real = np.asarray(token_id) >= 0
    flagged = np.argwhere(real & np.asarray(in_mutation, dtype=bool))
    others = np.argwhere(real & ~np.asarray(in_mutation, dtype=bool))
    if len(flagged) > max_tokens:
        flagged = flagged[rng.choice(len(flagged), max_tokens, replace=False)]
    room = max_tokens - len(flagged)
    if len(others) > room:
        others = others[rng.choice(len(others), room, replace=False)]
    chosen = np.concatenate([flagged, others]).reshape(-1, 2)
    return chosen[np.lexsort((chosen[:, 1], chosen[:, 0]))]


def zscore_columns(matrix: np.ndarray) -> np.ndarray:
    """Each column minus its mean over rows, divided by its standard deviation (a constant column becomes 0)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    centred = matrix - matrix.mean(axis=0)
    sd = matrix.std(axis=0)
    return np.divide(centred, sd, out=np.zeros_like(centred), where=sd > 0)


def token_features(chi: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """[P, K] vectors of the embedded tokens: χ [K, samples, tokens] at ``tokens`` (pairs), z-scored per component."""
    values = chi[:, tokens[:, 0], tokens[:, 1]].T
    if not np.isfinite(values).all():
        raise ValueError("a selected token has no susceptibility (padding position selected)")
    return zscore_columns(values)


# ---------------------------------------------------------------------------------------------------- embedding


def procrustes_onto(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``source`` [n, 2] rotated / reflected (least squares), shifted onto ``target``'s centroid and scaled to its
    RMS radius. Not the least-squares scale, which shrinks an imperfect fit towards the centroid and would make a
    chain of checkpoints collapse step by step."""
    from scipy.linalg import orthogonal_procrustes

    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    a, b = source - mu_s, target - mu_t
    norm = np.linalg.norm(a)
    if norm == 0:
        return np.broadcast_to(mu_t, source.shape).copy()
    rotation, _ = orthogonal_procrustes(a, b)
    return (a @ rotation) * (np.linalg.norm(b) / norm) + mu_t


def _umap(n_points: int, config: EmbryologyConfig, epochs: int, init, learning_rate: float = 1.0):
    """A seeded UMAP on a precomputed Euclidean distance matrix (:func:`_fit_umap`)."""
    umap = umap_with_cached_compilation()

    return umap.UMAP(
        n_neighbors=max(2, min(config.n_neighbors, n_points - 1)), min_dist=config.min_dist, n_epochs=epochs,
        init=init, learning_rate=learning_rate, random_state=config.seed, n_jobs=1, metric="precomputed",
    )


def umap_with_cached_compilation():
    """The ``umap`` module, its numba functions set to keep their compiled code on disk (under the cache home).

    umap-learn compiles its neighbour-graph and layout functions with numba at their first call in every process
    and caches few of them: about 13 CPU s of compilation per process against 0.2 s to embed a few hundred points
    (BENCHMARKS.md, "Analyses in seconds"). With caching enabled the first process compiles and stores, later ones
    (the next run, the null twin's, a test session) load the same machine code, so layouts do not change."""
    import umap

    global _UMAP_CACHING
    if not _UMAP_CACHING:
        import numba
        from numba.core.registry import CPUDispatcher

        from codedyn.paths import cache_dir

        if not os.environ.get("NUMBA_CACHE_DIR"):
            numba.config.CACHE_DIR = str(cache_dir("numba"))
        modules = [sys.modules[name] for name in list(sys.modules)
                   if name == "umap" or name.startswith("umap.")]
        for module in modules:
            for value in vars(module).values():
                if isinstance(value, CPUDispatcher):
                    value.enable_caching()
        _UMAP_CACHING = True
    return umap


_UMAP_CACHING = False


def compile_umap() -> float:
    """Compile (and store in the cache home) umap-learn's numba code by embedding a small random series the way
    a study with the default (anchored) alignment does; the CPU seconds it took.

    ``make install`` calls this once, as it byte-compiles Python: the compiled code is part of the installed
    environment, not of any analysis, and the first study's embryology (and the null twin's, beside it) then
    loads it instead of compiling it at the same time."""
    started = time.process_time()
    features = [np.random.default_rng(k).normal(size=(40, 6)) for k in range(2)]
    embed_series(features, EmbryologyConfig(method="anchored"))
    return time.process_time() - started


def _fit_umap(matrix: np.ndarray, config: EmbryologyConfig, epochs: int, init, learning_rate: float = 1.0):
    """UMAP layout [n, 2] of the rows of ``matrix`` under the Euclidean metric.

    The distances are computed here and handed to UMAP precomputed: below 4096 points umap-learn finds exact
    neighbours through scikit-learn's pairwise distances with its own metric as a Python callable, one call per
    pair of points (3 million calls, ~14 of 15 seconds of an embedding of 2500 tokens: BENCHMARKS.md, "Analyses in
    seconds"). :func:`euclidean_distances` computes them as that metric does, so the layouts are identical."""
    return _umap(matrix.shape[0], config, epochs, init, learning_rate).fit_transform(euclidean_distances(matrix))


def euclidean_distances(matrix: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances [n, n] between the rows of ``matrix``, bitwise as umap-learn's metric computes
    them on the float32 copy UMAP makes of its input: squared float32 differences summed in float64, feature by
    feature."""
    x = np.asarray(matrix, dtype=np.float32)
    total = np.zeros((x.shape[0], x.shape[0]))
    for column in x.T:
        total += np.square(column[:, None] - column[None, :]).astype(np.float64)
    return np.sqrt(total)


def embed_series(features: list[np.ndarray], config: EmbryologyConfig) -> list[np.ndarray]:
    """2-d coordinates [n, 2] per checkpoint for ``features`` [n, d] (same n points in the same order at every
    checkpoint), aligned across the series (``config.method``); float64, deterministic given ``config.seed``."""
    n = features[0].shape[0]
    if any(f.shape[0] != n for f in features):
        raise ValueError("every checkpoint must embed the same points")
    if n < 4:
        raise ValueError(f"UMAP needs at least 4 points to embed, got {n}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        warnings.filterwarnings("ignore", message=".*(spectral|Graph is not fully connected|disconnected).*")
        if config.method == "aligned":
            return _aligned(features, config)
        coords: list[np.ndarray] = []
        for matrix in features:
            matrix = _jitter_duplicates(matrix)
            if not coords:
                init = "spectral" if n > config.n_neighbors + 1 else "random"
                layout = _fit_umap(matrix, config, config.n_epochs, init)
            else:
                layout = _fit_umap(matrix, config, config.anchored_epochs, coords[-1], config.anchored_learning_rate)
                layout = procrustes_onto(np.asarray(layout, dtype=np.float64), coords[-1])
            coords.append(np.asarray(layout, dtype=np.float64))
    return coords


def _aligned(features: list[np.ndarray], config: EmbryologyConfig) -> list[np.ndarray]:
    import umap

    n = features[0].shape[0]
    identity = {i: i for i in range(n)}
    model = umap.AlignedUMAP(
        n_neighbors=max(2, min(config.n_neighbors, n - 1)), min_dist=config.min_dist, n_epochs=config.n_epochs,
        alignment_regularisation=config.alignment_regularisation, random_state=config.seed,
    ).fit([_jitter_duplicates(f) for f in features], relations=[identity] * (len(features) - 1))
    return [np.asarray(e, dtype=np.float64) for e in model.embeddings_]


def _jitter_duplicates(matrix: np.ndarray) -> np.ndarray:
    """Identical rows (e.g. several constant-χ tokens) break UMAP's neighbour graph; a fixed tiny offset per row
    (deterministic, far below the data's scale) separates them without changing the structure."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if len(np.unique(matrix.round(12), axis=0)) == matrix.shape[0]:
        return matrix
    scale = 1e-6 * (float(np.abs(matrix).max()) or 1.0)
    return matrix + scale * np.random.default_rng(12345).standard_normal(matrix.shape)


# ---------------------------------------------------------------------------------------------------- structure


def knn_predictions(points: np.ndarray, labels: np.ndarray, k: int = KNN_NEIGHBOURS,
                    prior_corrected: bool = True) -> np.ndarray:
    """Leave-one-out k-nearest-neighbour vote for every point (ties to the first class in sorted order).

    ``prior_corrected``: each class's votes are divided by its frequency, so a rare class (in-mutation tokens) is
    predicted where it is over-represented among a point's neighbours relative to its base rate; a plain majority
    vote would almost never predict it and pin the balanced accuracy at 0.5.
    """
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels)
    classes, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    k = min(k, len(points) - 1)
    _, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    votes = np.zeros((len(points), len(classes)))
    np.add.at(votes, (np.repeat(np.arange(len(points)), k), codes[neighbours[:, 1:]].reshape(-1)), 1)
    if prior_corrected:
        votes = votes / counts
    return classes[votes.argmax(axis=1)]


def balanced_accuracy_ci(labels: np.ndarray, predicted: np.ndarray, n_boot: int, seed: int,
                         level: float = 0.95) -> tuple[float, float, float]:
    """Balanced accuracy (mean per-class recall over the classes present) and its percentile interval over
    bootstrap resamples of points (all resamples' per-class counts at once)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    classes, codes = np.unique(labels, return_inverse=True)
    hit = predicted == labels

    def scores(index: np.ndarray) -> np.ndarray:  # index [B, n] -> balanced accuracy per resample [B]
        rows = np.repeat(np.arange(index.shape[0]), index.shape[1])
        flat = rows * len(classes) + codes[index].reshape(-1)
        totals = np.bincount(flat, minlength=index.shape[0] * len(classes)).reshape(-1, len(classes))
        hits = np.bincount(flat, weights=hit[index].reshape(-1).astype(np.float64),
                           minlength=totals.size).reshape(totals.shape)
        present = totals > 0
        recall = np.divide(hits, totals, out=np.zeros(totals.shape), where=present)
        return recall.sum(axis=1) / present.sum(axis=1)

    rng = np.random.default_rng(seed)
    replicates = scores(np.stack([rng.integers(0, len(labels), len(labels)) for _ in range(n_boot)]))
    alpha = (1 - level) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    return float(scores(np.arange(len(labels))[None])[0]), float(low), float(high)


def structure_table(step: int, coords: np.ndarray, vectors: np.ndarray, labels: dict[str, np.ndarray],
                    n_boot: int, seed: int):
    """One row per (space, labelling): kNN balanced accuracy with interval and the chance level 1 / classes."""
    rows = []
    for space, points in (("umap", coords), ("chi", vectors)):
        for name, values in labels.items():
            if len(np.unique(values)) < 2:
                continue
            accuracy, low, high = balanced_accuracy_ci(values, knn_predictions(points, values), n_boot, seed)
            rows.append({"step": step, "space": space, "labelling": name, "accuracy": accuracy, "low": low,
                         "high": high, "chance": 1 / len(np.unique(values))})
    return rows


# ---------------------------------------------------------------------------------------------------- metadata


def component_metadata(names) -> list[dict]:
    """Layer and type of each observable: ``L<l>.H<h>`` (head), ``L<l>.MLP``; anything else keeps its prefix as type
    (e.g. SAE latents) and a layer when its name carries ``L<l>``."""
    rows = []
    for name in names:
        name = str(name)
        layer_match = re.search(r"L(\d+)", name)
        layer = int(layer_match.group(1)) if layer_match else -1
        if re.fullmatch(r"L\d+\.H\d+", name):
            kind = "head"
        elif re.fullmatch(r"L\d+\.MLP", name):
            kind = "mlp"
        else:
            kind = re.split(r"[.\[:]", name)[0] or "other"
        rows.append({"component": name, "layer": layer, "type": kind})
    return rows


def token_metadata_frame(susceptibility, samples, tokens: np.ndarray):
    """Per embedded token: sample id, problem, label, operator, kind, in-mutation flag, text and position."""
    import pandas as pd

    by_id = samples.set_index("sample_id")
    sample_ids = np.asarray(susceptibility["sample"].values)[tokens[:, 0]]
    frame = pd.DataFrame({
        "point": np.arange(len(tokens)),
        "sample_id": sample_ids,
        "token": tokens[:, 1],
        "problem_id": by_id.loc[sample_ids, "problem_id"].to_numpy(),
        "label": by_id.loc[sample_ids, "label"].to_numpy(),
        "operator": by_id.loc[sample_ids, "operator"].fillna("").to_numpy(),
        "kind": susceptibility["token_kind"].values[tokens[:, 0], tokens[:, 1]],
        "in_mutation": susceptibility["token_in_mutation"].values[tokens[:, 0], tokens[:, 1]],
        "text": susceptibility["token_text"].values[tokens[:, 0], tokens[:, 1]],
        "token_id": susceptibility["token_id"].values[tokens[:, 0], tokens[:, 1]],
        "char_start": susceptibility["token_start"].values[tokens[:, 0], tokens[:, 1]],
    })
    return frame


# ---------------------------------------------------------------------------------------------------- run / compute


def run_embryology(study: Study, progress=None) -> EmbryologyResult:
    """Experiment 4 over the study's checkpoints, reusing (or creating) the shared posterior units."""
    from codedyn.experiments.posteriors import sample_checkpoints
    from codedyn.progress import SILENT

    sample_checkpoints(study, progress or SILENT)
    return compute_embryology(study, progress)


def aligned_components(study: Study) -> list[str]:
    """The components embedded at every checkpoint: those with one identity across checkpoints. Heads and MLPs
    always; SAE latents (``L<l>.SAE<i>``) only when each checkpoint's SAE starts from the previous one's
    (``emergence.init_from_previous``, which keeps latent identity) and the latent is recorded at every checkpoint:
    otherwise latent i of two checkpoints' SAEs are unrelated features and aligning them would be meaningless."""
    import xarray as xr

    from codedyn.experiments.posteriors import posterior_folder
    from codedyn.sampling.traces import TRACES_FILE

    per_step = [[str(n) for n in xr.open_zarr(posterior_folder(study, step) / TRACES_FILE,
                                              consolidated=False)["observable"].values] for step in study.steps]
    common = set.intersection(*(set(names) for names in per_step))
    keep_latents = study.config.emergence.init_from_previous
    return [n for n in per_step[0] if n in common and (keep_latents or ".SAE" not in n)]


@dataclass(frozen=True)
class EmbryologyResult:
    """What Experiment 4 stored under ``<run>/embryology/``."""

    folder: Path
    embedding: pd.DataFrame  # every token's and component's coordinates per checkpoint
    structure: pd.DataFrame  # kNN balanced accuracy of each labelling, per checkpoint and space
    files: list[Path]  # the figures, animation and interactive views written
    timings: dict[str, float]  # seconds per stage ("<stage>_s")


def compute_embryology(study: Study, progress=None) -> EmbryologyResult:
    """Per-token susceptibilities, aligned embeddings, tables and figures from the stored posteriors.

    Returns ``{"folder", "embedding" (DataFrame), "structure" (DataFrame), "files" (list of paths),
    "timings" (seconds per stage)}``.
    """
    import pandas as pd

    from codedyn.experiments.token_susceptibility import (
        TOKEN_SUSCEPTIBILITY_DIR,
        bootstrap_token_intervals,
        checkpoint_token_susceptibilities,
        save_token_susceptibilities,
    )
    from codedyn.progress import SILENT

    progress = progress or SILENT
    config = study.config.embryology
    out = study.output_dir(EMBRYOLOGY_DIR)
    chi_dir = out / TOKEN_SUSCEPTIBILITY_DIR
    chi_dir.mkdir(exist_ok=True)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    steps, raws, token_vectors, intervals = [], [], [], []
    components = tokens = meta = first = None
    shared = aligned_components(study)
    bar = progress.task("embryology: per-token susceptibilities", total=len(study.steps))
    for step, traces in study.posteriors():
        suscept = checkpoint_token_susceptibilities(traces.sel(observable=shared))
        save_token_susceptibilities(suscept, chi_dir / f"step{step}.zarr")
        if first is None:
            first = suscept["token_id"].values
            components = [str(c) for c in suscept["observable"].values]
            tokens = select_tokens(suscept["token_id"].values, suscept["token_in_mutation"].values,
                                   config.max_tokens, config.seed)
            meta = token_metadata_frame(suscept, study.readout_samples(), tokens)
        elif [str(c) for c in suscept["observable"].values] != components or not np.array_equal(
                suscept["token_id"].values, first):
            raise ValueError(f"step {step}: components or code tokens differ from step {steps[0]}; "
                             "checkpoints of one study must share them to be aligned")
        chi = suscept["chi"].values.astype(np.float64)
        token_vectors.append(token_features(chi, tokens))
        raws.append(chi[:, tokens[:, 0], tokens[:, 1]])  # [K, P]: only the embedded tokens are kept in memory
        healthy = traces["healthy"].values
        selected = traces["token_loss"].values[healthy][..., tokens[:, 0], tokens[:, 1]]
        low, high = bootstrap_token_intervals(traces["observed"].values[healthy], selected, config.n_bootstrap,
                                              config.seed)
        steps.append(step)
        intervals.append((low, high))
        bar.advance()
    timings["susceptibilities_s"] = time.perf_counter() - clock

    component_vectors = [v.T.copy() for v in token_vectors]  # profiles over the embedded tokens
    clock = time.perf_counter()
    bar = progress.task("embryology: aligned UMAP", total=2)
    token_coords = embed_series(token_vectors, config)
    bar.advance()
    component_coords = embed_series(component_vectors, config)
    bar.advance()
    timings["umap_s"] = time.perf_counter() - clock

    frames, structure = [], []
    parts = component_metadata(components)
    for index, step in enumerate(steps):
        raw = raws[index]
        low, high = intervals[index]
        top = np.abs(token_vectors[index]).argmax(axis=1)
        point = np.arange(len(tokens))
        frames.append(meta.assign(
            view="tokens", step=step, x=token_coords[index][:, 0], y=token_coords[index][:, 1],
            component=[components[k] for k in top], chi=raw[top, point], chi_low=low[top, point],
            chi_high=high[top, point], chi_z=token_vectors[index][point, top],
            chi_norm=np.linalg.norm(token_vectors[index], axis=1),
        ))
        frames.append(pd.DataFrame(parts).assign(
            view="components", step=step, point=np.arange(len(components)), x=component_coords[index][:, 0],
            y=component_coords[index][:, 1], chi_mean=raw.mean(axis=1), chi_abs_mean=np.abs(raw).mean(axis=1),
        ))
        labels = {"kind": meta["kind"].to_numpy(), "label": meta["label"].to_numpy(),
                  "in_mutation": meta["in_mutation"].to_numpy()}
        structure.extend(structure_table(step, token_coords[index], token_vectors[index], labels,
                                         config.n_bootstrap, config.seed))
    embedding = pd.concat(frames, ignore_index=True)
    embedding["in_mutation"] = embedding["in_mutation"].astype("boolean")  # NA on component rows
    embedding.to_parquet(out / "embedding.parquet", index=False)
    structure = pd.DataFrame(structure)
    structure.to_parquet(out / "structure.parquet", index=False)

    clock = time.perf_counter()
    files = write_views(embedding, structure, steps, out, config, progress)
    timings["figures_s"] = time.perf_counter() - clock
    return EmbryologyResult(out, embedding, structure, files, timings)


def write_views(embedding, structure, steps, out: Path, config: EmbryologyConfig, progress=None) -> list[Path]:
    """Grid and structure figures, animation and interactive HTML from the embedding table."""
    from codedyn.figures import embryology as views
    from codedyn.figures.plots import save_figure

    files = save_figure(views.embryology_grid(embedding, steps, structure), out / "embryology_grid")
    files += save_figure(views.structure_figure(structure), out / "embryology_structure")
    files += views.animate(embedding, steps, out / "embryology", config.frame_seconds, progress)
    files.append(views.interactive_html(embedding, steps, out / "embryology.html"))
    return files
