"""Report figures: structure of the returned Figures, saving, and import hygiene."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from codedyn.figures import plots  # noqa: E402

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
    code = "import sys, codedyn.figures.plots; print('matplotlib' in sys.modules)"
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
    assert len(_by_gid(ax.lines, "curve")) == 3
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3 and all(b.get_gid() == "ci" for b in bands)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    assert ax.get_xlabel() and ax.get_ylabel() == "Influence (nats²)"
    # The data straddle zero, so the reference line is drawn; an all-positive quantity gets none.
    assert len(_by_gid(ax.lines, "zero")) == 1
    pos = plots.training_curves(STEPS, {"acc": _curve(rng, offset=5.0)}, ylabel="Accuracy")
    assert not _by_gid(pos.axes[0].lines, "zero")


def test_every_checkpoint_gets_the_same_room():
    """The x axis is the checkpoint index, labelled by step: 5000 -> 5500 is as wide as 0 -> 1000."""
    steps = [0, 1000, 3000, 5000, 5500, 6000, 7000]
    fig = plots.training_curves(steps, {"a": (np.arange(7.0), None, None)}, ylabel="y")
    ax = fig.axes[0]
    x = _by_gid(ax.lines, "curve")[0].get_xdata()
    assert list(x) == list(range(7))
    assert np.ptp(np.diff(x)) == 0
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1k", "3k", "5k", "5.5k", "6k", "7k"]
    assert ax.get_xlim() == (-0.5, 6.5)
    # Steps between checkpoints interpolate linearly within their interval; outside the steps there is no place.
    assert plots.step_position(5250, steps) == pytest.approx(3.5)
    assert plots.step_position(500, steps) == pytest.approx(0.5)
    assert plots.step_position(8000, steps) is None
    assert [plots.step_tick_label(v) for v in (0, 512, 1000, 5500, 143000, 1_200_000)] == [
        "0", "512", "1k", "5.5k", "143k", "1.2M"]
    with pytest.raises(ValueError, match="increasing"):
        plots.step_positions([0, 10, 10])


def test_llc_in_its_own_panel_and_events(rng):
    curves = {"a": _curve(rng), "b": _curve(rng)}
    llc = _curve(rng, offset=30.0)
    events = [
        {"step": 64, "kind": "transition", "label": "induction heads"},
        {"step": 1000, "kind": "sign_flip"},
        {"bracket": [128, 256], "kind": "sharp", "label": "a sharp"},
        {"name": "planted onset", "bracket": [2, 4], "kind": "reference"},
        {"step": 99999, "kind": "peak"},  # outside the steps: not drawn
    ]
    fig = plots.training_curves(STEPS, curves, ylabel="y", llc=llc, events=events)
    assert len(fig.axes) == 2
    ax, panel = fig.axes
    assert panel.get_ylabel() == "LLC"
    # Its own panel under the curves, sharing x, not a twin axis on top of them.
    assert panel.get_position().y1 <= ax.get_position().y0 + 1e-9
    assert panel.get_shared_x_axes().joined(ax, panel)
    assert len(_by_gid(panel.lines, "llc")) == 1 and len(_by_gid(panel.collections, "llc_ci")) == 1
    assert not _by_gid(ax.lines, "llc")
    event_x = sorted(line.get_xdata()[0] for line in _by_gid(ax.lines, "event"))
    assert event_x == [STEPS.index(64), STEPS.index(1000)]
    bands = _by_gid(ax.patches, "event_band")
    assert len(bands) == 2 and len(_by_gid(panel.patches, "event_band")) == 2  # drawn in both panels
    texts = [t.get_text() for t in ax.texts]
    assert {"induction heads", "sign flip", "a sharp", "planted onset"} <= set(texts)
    assert not [t for t in panel.texts if t.get_text() == "induction heads"]  # labelled once, at the top


def test_llc_left_out_where_not_a_local_minimum():
    import pandas as pd

    steps = [0, 10, 100, 1000]
    table = pd.DataFrame({"step": steps, "quantity": "LLC", "variant": "llc", "value": [-391.0, 5.0, 9.0, np.inf],
                          "low": [-400.0, 4.0, 8.0, 0.0], "high": [-380.0, 6.0, 10.0, 1.0],
                          "local_minimum": [False, True, True, True]})
    values, lows, highs, note = plots.llc_from_table(table, steps + [5000])
    assert np.isnan(values[0]) and values[1] == 5.0 and values[2] == 9.0 and np.isnan(values[3])
    assert np.isnan(values[4])
    assert "step 0 (not a local minimum)" in note and "step 1k (no finite estimate)" in note
    assert "step 5k (not estimated)" in note
    # The reverse flag, and no flag at all: only non-finite values are left out.
    flipped = table.drop(columns="local_minimum").assign(not_local_minimum=[True, False, False, False])
    assert np.isnan(plots.llc_from_table(flipped, steps)[0][0])
    plain = plots.llc_from_table(table.drop(columns="local_minimum"), steps)
    assert np.isnan(plain[0][0]) and "step 0 (negative: the chains fell below L(w*)" in plain[3]
    straddling = table.drop(columns="local_minimum").assign(high=[1.0, 6.0, 10.0, 1.0])
    assert plots.llc_from_table(straddling, steps)[0][0] == -391.0  # an interval reaching 0 is kept
    assert plots.llc_from_table(table[table["quantity"] == "none"], steps) is None
    fig = plots.training_curves(steps + [5000], {"a": (np.arange(5.0), None, None)}, ylabel="y",
                                llc=(values, lows, highs, note))
    panel = fig.axes[1]
    assert [t.get_text() for t in panel.texts if t.get_gid() == "llc_note"] == [note]
    assert np.isnan(_by_gid(panel.lines, "llc")[0].get_ydata()[0])
    # Without a note of its own the panel names the missing checkpoints by step, not by slot.
    fig = plots.training_curves([1000, 3000], {"a": (np.arange(2.0), None, None)}, ylabel="y",
                                llc=([np.nan, 1.0], [np.nan, 0.5], [np.nan, 1.5]))
    assert [t.get_text() for t in fig.axes[1].texts if t.get_gid() == "llc_note"] == ["no LLC at step 1k"]


def test_step_heatmap_operator_by_step(rng):
    from matplotlib.image import AxesImage

    steps = [0, 1000, 5000, 5500]
    rows = {f"op{i}": rng.uniform(0, 1, 4) for i in range(5)}
    rows["op2"][1] = np.nan
    fig = plots.step_heatmap(steps, rows, title="detection", cbar_label="flagged",
                             events=[{"name": "induction", "bracket": [1000, 5000], "kind": "reference"}])
    ax = fig.axes[0]
    (im,) = [a for a in ax.get_children() if isinstance(a, AxesImage)]
    assert im.get_gid() == "heatmap" and im.get_array().shape == (5, 4) and im.get_clim() == (0.0, 1.0)
    assert np.ma.is_masked(im.get_array()[2, 1]) or np.isnan(im.get_array()[2, 1])
    assert [t.get_text() for t in ax.get_yticklabels()] == list(rows)
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1k", "5k", "5.5k"]
    cells = [t.get_text() for t in ax.texts if t.get_text()[:1].isdigit()]
    assert len(cells) == 19 and f"{rows['op0'][0]:.2f}" in cells
    assert len(_by_gid(ax.patches, "event_band")) == 1
    assert fig.axes[1].get_ylabel() == "flagged"
    with pytest.raises(ValueError):
        plots.step_heatmap(steps, {}, title="x", cbar_label="y")


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
    # A report-only diagnostic: the PNG alone.
    assert [p.name for p in plots.save_figure(fig, tmp_path / "only", pdf=False)] == ["only.png"]
    assert not (tmp_path / "only.pdf").exists()


def test_related_curves_share_a_colour(rng):
    curves = {name: _curve(rng) for name in ("h / correct", "h / incorrect", "m / correct")}
    styles = {"h / correct": {"colour": 0}, "h / incorrect": {"colour": 0, "dashed": True},
              "m / correct": {"colour": 1}}
    fig = plots.training_curves(STEPS, curves, ylabel="χ", styles=styles)
    lines = _by_gid(fig.axes[0].lines, "curve")
    assert lines[0].get_color() == lines[1].get_color() == plots.OKABE_ITO[0]
    assert lines[2].get_color() == plots.OKABE_ITO[1]
    assert lines[0].get_linestyle() == "-" and lines[1].get_linestyle() == "--"
