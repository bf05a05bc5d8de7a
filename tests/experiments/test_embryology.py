"""Experiment 4: the aligned UMAP wrapper against planted structure, determinism, Procrustes, token selection, and
an end-to-end run on a tiny study that reruns from the stored posteriors."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from codedyn.config import EmbryologyConfig
from codedyn.experiments.embryology import (
    balanced_accuracy_ci,
    component_metadata,
    embed_series,
    knn_predictions,
    procrustes_onto,
    select_tokens,
    token_features,
    zscore_columns,
)

FAST = EmbryologyConfig(n_epochs=60, anchored_epochs=30, n_neighbors=10, n_bootstrap=50)


def _clusters(n=240, d=8, checkpoints=3, seed=0):
    """Two well-separated Gaussian clusters whose separation grows over the checkpoints, plus drifting noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n // 2)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    base = rng.normal(size=(n, d))
    series = [base + 0.2 * c * rng.normal(size=(n, d)) + np.outer(2 * labels - 1, direction) * (4 + 2 * c)
              for c in range(checkpoints)]
    return series, labels


def test_planted_clusters_are_separated_at_every_checkpoint():
    from sklearn.metrics import silhouette_score

    series, labels = _clusters()
    coords = embed_series(series, FAST)
    assert len(coords) == 3 and all(c.shape == (240, 2) for c in coords)
    for xy in coords:
        assert np.mean(knn_predictions(xy, labels) == labels) > 0.97
        assert silhouette_score(xy, labels) > 0.5
    # A structureless control: random vectors give no separation of the same labels.
    rng = np.random.default_rng(1)
    noise = embed_series([rng.normal(size=(240, 8))], FAST)[0]
    assert np.mean(knn_predictions(noise, labels) == labels) < 0.7


def test_embedding_is_deterministic_given_the_seed():
    series, _ = _clusters(n=120)
    first, second = embed_series(series, FAST), embed_series(series, FAST)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    other = embed_series(series, FAST.model_copy(update={"seed": 1}))
    assert not np.array_equal(other[0], first[0])


def _independent(series, config):
    """The unanchored baseline: one UMAP per checkpoint, each Procrustes-fitted onto the previous one."""
    coords = embed_series(series[:1], config)
    for matrix in series[1:]:
        coords.append(procrustes_onto(embed_series([matrix], config)[0], coords[-1]))
    return coords


def _displacement(coords):
    spread = np.linalg.norm(coords[0] - coords[0].mean(axis=0), axis=1).mean()
    steps = zip(coords[:-1], coords[1:], strict=True)
    return np.array([np.median(np.linalg.norm(b - a, axis=1)) / spread for a, b in steps])


def test_anchoring_keeps_slowly_drifting_points_in_place():
    """Four clusters whose points drift a little per checkpoint: the anchored layouts move far less between
    checkpoints than independent UMAPs aligned after the fact (whose clusters trade places)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 60)
    start = 3 * rng.normal(size=(4, 8))[labels] + rng.normal(size=(240, 8))
    series = [start + 0.1 * c * rng.normal(size=start.shape) for c in range(4)]
    config = FAST.model_copy(update={"anchored_epochs": 30})
    anchored, independent = _displacement(embed_series(series, config)), _displacement(_independent(series, config))
    assert anchored.max() < 0.2
    assert anchored.mean() < 0.6 * independent.mean()


def test_procrustes_recovers_a_similarity_transform():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(50, 2))
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = 3.0 * (target @ rotation) * np.array([1, -1]) + np.array([5.0, -2.0])  # rotated, reflected, scaled
    np.testing.assert_allclose(procrustes_onto(source, target), target, atol=1e-10)
    # An imperfect fit keeps the target's size (a least-squares scale would shrink it by the correlation).
    noisy = procrustes_onto(source + rng.normal(size=source.shape) * 3, target)
    centred = target - target.mean(axis=0)
    assert np.linalg.norm(noisy - noisy.mean(axis=0)) == pytest.approx(np.linalg.norm(centred))


def test_select_tokens_keeps_mutations_skips_padding_and_is_seeded():
    token_id = np.full((4, 6), -1)
    token_id[:, :4] = 7
    in_mutation = np.zeros((4, 6), bool)
    in_mutation[1, 2] = in_mutation[3, 0] = True
    chosen = select_tokens(token_id, in_mutation, max_tokens=6, seed=0)
    assert chosen.shape == (6, 2) and (token_id[chosen[:, 0], chosen[:, 1]] >= 0).all()
    assert {(1, 2), (3, 0)} <= {tuple(p) for p in chosen}
    np.testing.assert_array_equal(chosen, select_tokens(token_id, in_mutation, 6, 0))
    assert len({tuple(p) for p in chosen}) == 6
    assert len(select_tokens(token_id, in_mutation, 100, 0)) == 16  # all real tokens


def test_token_features_zscore_each_component():
    chi = np.random.default_rng(0).normal(size=(3, 2, 5)) * np.array([1.0, 100.0, 0.0])[:, None, None]
    tokens = np.array([[0, 0], [0, 3], [1, 1], [1, 4]])
    features = token_features(chi, tokens)
    assert features.shape == (4, 3)
    np.testing.assert_allclose(features[:, :2].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(features[:, :2].std(axis=0), 1)
    assert (features[:, 2] == 0).all()  # a component that responds to nothing stays at 0
    np.testing.assert_allclose(zscore_columns(chi[:, tokens[:, 0], tokens[:, 1]].T), features)
    chi[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="padding"):
        token_features(chi, tokens)


def test_knn_and_balanced_accuracy_match_sklearn():
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    points = rng.normal(size=(80, 2))
    labels = np.where(points[:, 0] + 0.5 * rng.normal(size=80) > 0, "a", "b")
    ours = knn_predictions(points, labels, k=5, prior_corrected=False)
    theirs = cross_val_predict(KNeighborsClassifier(n_neighbors=5), points, labels, cv=LeaveOneOut())
    np.testing.assert_array_equal(ours, theirs)  # k odd, two classes: no ties to break differently
    accuracy, low, high = balanced_accuracy_ci(labels, ours, n_boot=200, seed=0)
    assert accuracy == pytest.approx(balanced_accuracy_score(labels, ours))
    assert low <= accuracy <= high


def test_prior_corrected_knn_finds_a_rare_clustered_class():
    """10 rare points clustered inside 190 common ones: a majority vote hardly predicts the rare class (balanced
    accuracy near 0.5), the prior-corrected vote finds it."""
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(size=(190, 2)), 0.25 * rng.normal(size=(10, 2)) + 0.5])
    labels = np.array([False] * 190 + [True] * 10)
    plain = balanced_accuracy_ci(labels, knn_predictions(points, labels, prior_corrected=False), 50, 0)[0]
    corrected = balanced_accuracy_ci(labels, knn_predictions(points, labels), 50, 0)[0]
    assert plain < 0.6 and corrected > 0.85


def test_component_metadata():
    rows = component_metadata(["L0.H3", "L1.MLP", "sae.L1[12]", "other"])
    assert [(r["layer"], r["type"]) for r in rows] == [(0, "head"), (1, "mlp"), (1, "sae"), (-1, "other")]


# ---------------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_embryology(shared_home, tiny_run, tmp_path_factory):
    """Experiment 4 on the session's tiny study, in a run folder of its own (the report tests read the shared one
    without Experiment 4) holding a copy of the shared posterior units: the embryology settings are not in the
    posterior key, so nothing is sampled again."""
    import shutil

    from codedyn.config import load_config
    from codedyn.experiments.embryology import run_embryology
    from codedyn.experiments.study import prepare_study
    from codedyn.runs.layout import UNITS_DIR
    from tests.studies import TINY_STUDY, home

    overrides = {**TINY_STUDY, "embryology": {"max_tokens": 150, "n_epochs": 40, "anchored_epochs": 20,
                                              "n_bootstrap": 20, "frame_seconds": 0.5}}
    run_dir = tmp_path_factory.mktemp("embryology") / "run"
    shutil.copytree(tiny_run / UNITS_DIR, run_dir / UNITS_DIR)
    with home(shared_home):
        study = prepare_study(load_config("default", overrides), run_dir)
        yield study, run_embryology(study)


def test_end_to_end_writes_every_output(tiny_embryology):
    import xarray as xr

    from codedyn.experiments.token_susceptibility import token_susceptibilities

    study, result = tiny_embryology
    folder = result.folder
    for name in ("embryology_grid", "embryology_structure"):
        assert (folder / f"{name}.png").stat().st_size > 0 and (folder / f"{name}.pdf").stat().st_size > 0
    from PIL import Image

    with Image.open(folder / "embryology.gif") as gif:
        assert gif.n_frames == 3 + 2 * 5  # a hold per checkpoint, five eased frames between consecutive ones
    page = (folder / "embryology.html").read_text()
    assert "plotly" in page and "<script src=" not in page  # self-contained: plotly.js inlined
    embedding = pd.read_parquet(folder / "embedding.parquet")
    tokens = embedding[embedding["view"] == "tokens"]
    assert sorted(set(embedding["step"])) == [0, 4, 12]
    assert tokens.groupby("step").size().nunique() == 1 and len(tokens) == 3 * tokens["point"].nunique()
    assert tokens["point"].nunique() <= 150 and np.isfinite(tokens[["x", "y"]]).all().all()
    assert tokens["in_mutation"].any() and set(tokens["label"]) == {"correct", "incorrect"}
    assert (tokens["chi_low"] <= tokens["chi"] + 1e-9).all() and (tokens["chi"] <= tokens["chi_high"] + 1e-9).all()
    components = embedding[embedding["view"] == "components"]
    assert set(components["component"]) == {"L0.H0", "L0.H1", "L0.MLP", "L1.H0", "L1.H1", "L1.MLP"}
    chi = xr.open_zarr(folder / "susceptibility" / "step4.zarr", consolidated=False)
    assert chi["chi"].dims == ("observable", "sample", "token") and chi.sizes["observable"] == 6
    traces = dict(study.posteriors())[4]
    healthy = traces["healthy"].values
    direct, _ = token_susceptibilities(traces["observed"].values[healthy], traces["token_loss"].values[healthy])
    np.testing.assert_allclose(chi["chi"].values, direct.astype(np.float32), rtol=1e-6, equal_nan=True)
    structure = pd.read_parquet(folder / "structure.parquet")
    assert {"kind", "label", "in_mutation"} <= set(structure["labelling"]) and set(structure["space"]) == {"umap",
                                                                                                         "chi"}
    assert (structure["low"] <= structure["accuracy"]).all() and (structure["accuracy"] <= structure["high"]).all()


def test_posterior_traces_carry_token_losses_and_metadata(tiny_embryology):
    study, _ = tiny_embryology
    _, traces = next(study.posteriors())
    means = np.nanmean(traces["token_loss"].values.astype(np.float64), axis=-1)
    np.testing.assert_allclose(means, traces["sample_loss"].values, rtol=1e-6)
    real = traces["token_id"].values >= 0
    assert (np.isfinite(traces["init_token_loss"].values) == real).all()
    incorrect = np.array(["mutant" in s for s in traces["sample"].values])
    flagged = traces["token_in_mutation"].values
    # Every read-out mutant has its changed tokens inside its window (those that do not fit are left out), flagged;
    # no other sample has a flag.
    assert flagged[incorrect].any(axis=1).all() and incorrect.sum() >= 3
    assert not flagged[~incorrect].any()
    kinds = set(np.unique(traces["token_kind"].values[real]))
    assert {"keyword", "identifier", "operator", "whitespace"} <= kinds


@pytest.fixture()
def no_sampling(monkeypatch):
    import codedyn.sampling.posterior as posterior

    def forbidden(*args, **kwargs):
        raise AssertionError("a stored posterior unit was sampled again")

    monkeypatch.setattr(posterior, "sample_posterior", forbidden)


def test_compute_reruns_from_stored_posteriors_and_is_reproducible(tiny_embryology, no_sampling):
    from codedyn.experiments.embryology import compute_embryology, run_embryology

    study, result = tiny_embryology
    again = compute_embryology(study)
    pd.testing.assert_frame_equal(again.embedding, result.embedding)  # identical coordinates
    pd.testing.assert_frame_equal(run_embryology(study).structure, result.structure)


def test_cli_embryology(tiny_embryology, shared_home, tmp_path, monkeypatch):
    import json

    import yaml
    from typer.testing import CliRunner

    from codedyn.cli import app
    from tests.studies import TINY_STUDY

    study, result = tiny_embryology
    monkeypatch.setenv("CODEDYN_HOME", str(shared_home))  # the study's dataset and suite, already built
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(json.loads(json.dumps({**TINY_STUDY, "embryology": {
        "n_epochs": 40, "anchored_epochs": 20, "n_bootstrap": 20, "frame_seconds": 0.5}}))))
    outcome = CliRunner().invoke(app, ["embryology", "--preset", str(preset), "--max-tokens", "150",
                                       "--out", str(study.run_dir)])
    assert outcome.exit_code == 0, outcome.output
    assert outcome.stdout.strip().endswith(str(result.folder))
    embedding = pd.read_parquet(result.folder / "embedding.parquet")
    pd.testing.assert_frame_equal(embedding, result.embedding)


def test_precomputed_distances_give_umaps_own_euclidean_layout():
    """The embedding hands UMAP distances computed as its Euclidean metric computes them (fast, in numpy): the
    layout is bitwise the one UMAP makes from the features themselves (its slow per-pair path)."""
    import umap

    from codedyn.experiments.embryology import _fit_umap, euclidean_distances

    rng = np.random.default_rng(4)
    features = rng.normal(size=(150, 12)) * rng.uniform(0.1, 10, 12)
    direct = umap.UMAP(n_neighbors=FAST.n_neighbors, min_dist=FAST.min_dist, n_epochs=FAST.n_epochs, init="spectral",
                       random_state=FAST.seed, n_jobs=1).fit_transform(features)
    np.testing.assert_array_equal(_fit_umap(features, FAST, FAST.n_epochs, "spectral"), direct)
    distances = euclidean_distances(features)
    np.testing.assert_allclose(distances, np.linalg.norm(features[:, None] - features[None], axis=2), rtol=1e-6)
    assert (np.diag(distances) == 0).all() and (distances == distances.T).all()


def test_umaps_numba_functions_keep_their_compiled_code():
    """Every numba function of umap-learn caches its compilation on disk (later processes load it)."""
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    from codedyn.experiments.embryology import umap_with_cached_compilation

    umap = umap_with_cached_compilation()
    dispatchers = [f for f in vars(umap.umap_).values() if isinstance(f, CPUDispatcher)]
    assert dispatchers and all(not isinstance(f._cache, NullCache) for f in dispatchers)
    assert umap_with_cached_compilation() is umap


def test_compiling_umap_stores_its_machine_code_for_later_processes():
    """``make install``'s warm-up leaves umap-learn's compiled layout code in the numba cache directory."""
    import numba

    from codedyn.experiments.embryology import compile_umap

    assert compile_umap() > 0
    stored = {path.name.split(".")[0] for path in Path(numba.config.CACHE_DIR).rglob("*.nbi")}
    assert {"umap_", "layouts"} <= stored  # the neighbour graph's and the layout's functions
