"""Report figures: structure of the returned Figures, saving, and import hygiene."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from codedyn.report import plots  # noqa: E402

STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000]


def _curve(rng: np.random.Generator, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = offset + rng.normal(0, 0.3, len(STEPS))
    return v, v - 0.1, v + 0.1


def _by_gid(artists, gid: str) -> list:
    return [a for a in artists if a.get_gid() == gid]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_import_does_not_load_matplotlib():
    code = "import sys, codedyn.report.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_training_curves_lines_and_bands(rng):
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    curves = {name: _curve(rng) for name in ("a", "b", "c")}
    fig = plots.training_curves(STEPS, curves, ylabel="Influence (nats²)", title="t")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"
    assert len(_by_gid(ax.lines, "curve")) == 3
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3 and all(b.get_gid() == "ci" for b in bands)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    assert ax.get_xlabel() and ax.get_ylabel() == "Influence (nats²)"
    # Step 0 is drawn at x = 0, not dropped or shifted.
    assert _by_gid(ax.lines, "curve")[0].get_xdata()[0] == 0
    # The data straddle zero, so the reference line is drawn; an all-positive quantity gets none.
    assert len(_by_gid(ax.lines, "zero")) == 1
    pos = plots.training_curves(STEPS, {"acc": _curve(rng, offset=5.0)}, ylabel="Accuracy")
    assert not _by_gid(pos.axes[0].lines, "zero")


def test_training_curves_llc_twin_axis_and_events(rng):
    curves = {"a": _curve(rng), "b": _curve(rng)}
    llc = _curve(rng, offset=30.0)
    events = [
        {"step": 64, "kind": "transition", "label": "induction heads"},
        {"step": 1000, "kind": "sign_flip"},
    ]
    fig = plots.training_curves(STEPS, curves, ylabel="y", llc=llc, events=events)
    assert len(fig.axes) == 2
    ax, twin = fig.axes
    assert twin.get_ylabel() == "LLC"
    assert twin.get_xscale() == "symlog"
    assert len(_by_gid(twin.lines, "llc")) == 1
    assert len(_by_gid(twin.collections, "llc_ci")) == 1
    assert "LLC" in [t.get_text() for t in ax.get_legend().get_texts()]
    event_x = sorted(line.get_xdata()[0] for line in _by_gid(ax.lines, "event"))
    assert event_x == [64, 1000]
    texts = [t.get_text() for t in ax.texts]
    assert "induction heads" in texts and "sign flip" in texts


def test_training_curves_without_bands_and_length_check(rng):
    v = rng.normal(size=len(STEPS))
    fig = plots.training_curves(STEPS, {"a": (v, None, None)}, ylabel="y", zero_line=False)
    assert not fig.axes[0].collections
    with pytest.raises(ValueError, match="expected"):
        plots.training_curves(STEPS, {"a": (v[:-1], None, None)}, ylabel="y")


def test_loss_traces(rng):
    traces = 3.0 + rng.normal(0, 0.05, (4, 100))
    traces[2, 50:] = np.inf  # a diverged chain must not break the plot
    fig = plots.loss_traces(traces, init_loss=3.0, title="t", burn_in=20)
    ax = fig.axes[0]
    assert len(_by_gid(ax.lines, "chain")) == 4
    init = _by_gid(ax.lines, "init")
    assert len(init) == 1 and init[0].get_ydata()[0] == 3.0
    assert len(_by_gid(ax.patches, "burn_in")) == 1
    assert ax.get_xlabel() and ax.get_ylabel()

    per_chain = plots.loss_traces(traces, init_loss=[3.0, 3.1, 2.9, 3.05])
    assert len(_by_gid(per_chain.axes[0].lines, "init")) == 4
    assert not _by_gid(per_chain.axes[0].patches, "burn_in")
    with pytest.raises(ValueError):
        plots.loss_traces(traces, init_loss=[3.0, 3.1])


def test_traces_grid(rng):
    grid = {(g, e): 3.0 + rng.normal(0, 0.05, (3, 40)) for g in ("10", "100") for e in ("1e-4", "1e-3", "1e-2")}
    del grid[("100", "1e-2")]
    inits = dict.fromkeys(grid, 3.0)
    fig = plots.traces_grid(grid, inits, row_label="γ", col_label="ε", burn_in=5)
    assert len(fig.axes) == 6
    drawn = [ax for ax in fig.axes if ax.axison]
    assert len(drawn) == 5
    assert all(len(_by_gid(ax.lines, "chain")) == 3 for ax in drawn)
    assert all(len(_by_gid(ax.lines, "init")) == 1 for ax in drawn)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["ε = 1e-4", "ε = 1e-3", "ε = 1e-2"]
    row_labels = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_text().startswith("γ")]
    assert row_labels == ["γ = 10", "γ = 100"]


def test_matrix_heatmap_symmetric_limits_and_grouping(rng):
    from matplotlib.image import AxesImage

    n = 9
    labels = ["correct", "incorrect", "correct"] * 3
    m = rng.normal(0.5, 1.0, (n, n))
    m[0, 0] = 7.0
    fig = plots.matrix_heatmap(m, labels, title="BIF", cbar_label="influence (nats²)")
    assert len(fig.axes) == 2  # heatmap + colorbar
    ax = fig.axes[0]
    (im,) = [a for a in ax.get_children() if isinstance(a, AxesImage)]
    lo, hi = im.get_clim()
    assert lo == -hi and hi == pytest.approx(7.0)
    # Rows are grouped: the 6 "correct" first (first-seen order), with one boundary line on each axis at 5.5.
    assert im.get_array()[0, 0] == pytest.approx(7.0)
    boundaries = list(ax.lines)
    assert len(boundaries) == 2
    assert {tuple(line.get_xdata()) for line in boundaries} >= {(5.5, 5.5)}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["correct (n = 6)", "incorrect (n = 3)"]
    assert fig.axes[1].get_ylabel() == "influence (nats²)"

    plain = plots.matrix_heatmap(m, labels, title="BIF", center_zero=False)
    (im2,) = [a for a in plain.axes[0].get_children() if isinstance(a, AxesImage)]
    assert im2.get_clim() == pytest.approx((m.min(), m.max()))
    with pytest.raises(ValueError):
        plots.matrix_heatmap(m, labels[:-1], title="x")


def test_save_figure_writes_png_and_pdf(tmp_path, rng):
    from PIL import Image

    fig = plots.training_curves(STEPS, {"a": _curve(rng)}, ylabel="y")
    paths = plots.save_figure(fig, tmp_path / "sub" / "curves_step1.5")
    assert [p.name for p in paths] == ["curves_step1.5.png", "curves_step1.5.pdf"]
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    with Image.open(paths[0]) as img:
        assert img.width == round(plots.FIG_WIDTH_IN * plots.PNG_DPI)
    assert paths[1].read_bytes().startswith(b"%PDF")
    # A trailing .png on the requested path is not doubled.
    assert plots.save_figure(fig, tmp_path / "again.png")[0].name == "again.png"
