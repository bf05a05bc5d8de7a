"""Thesis-quality figures: data in, ``matplotlib.figure.Figure`` out.

Conventions shared by every function here (and by the figures the experiments draw through them):

* Figures are built as bare ``Figure`` objects (no pyplot, no global state, no backend selection); matplotlib is
  imported inside the functions, so importing this module stays light. Save them with :func:`save_figure`.
* Width is :data:`FIG_WIDTH_IN` (6.8 in, a thesis text width) or :data:`COLUMN_WIDTH_IN` (3.3 in, one column);
  fonts are 7-9 pt at that size, so they print readably without scaling; layout is constrained.
* Colours come from the Okabe-Ito palette (colour-blind safe), and curves also differ by marker shape so they
  survive greyscale printing. Uncertainty is drawn as shaded bands (95% confidence intervals around a curve).
* **The step axis is the checkpoint index.** Every checkpoint gets the same room (``x = 0, 1, ..., n - 1``) and
  its tick is labelled by its training step (``5.5k``), so 5000, 5500 and 6000 are as far apart as 0 and 1000.
  Any step between two checkpoints (an event, a bracket end) is placed by linear interpolation in step within its
  interval (:func:`step_position`). One helper (:func:`step_axis`) sets this axis on every figure.
* Known developmental events (:mod:`codedyn.analysis.events`) are vertical lines (a step) or grey bands (a bracket
  ``(a, b]``); detected sharp transitions are drawn as bands over their bracket, never as a line "at" a step.
* The LLC gets its own panel under the curves, sharing their x axis, never a twin y axis. A checkpoint without an
  LLC (not a local minimum, e.g. the random initialisation at step 0, or not estimated) is left out of that panel
  and named in a note inside it (:func:`llc_from_table`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codedyn.analysis.curves import llc_from_table, step_tick_label  # noqa: F401 (analysis' readers, drawn here)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIG_WIDTH_IN = 6.8
COLUMN_WIDTH_IN = 3.3
PNG_DPI = 200

# Okabe & Ito (2008), reordered so that the first colours contrast best on white; yellow comes last.
OKABE_ITO = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<")
LLC_COLOR = "0.3"
EVENT_COLOR = "0.3"
EVENT_BAND_COLOR = "0.55"
SHARP_BAND_COLOR = OKABE_ITO[1]
STEP_LABEL = "Training step (one slot per checkpoint)"
HEATMAP_CMAP = "cividis"  # perceptually uniform and colour-blind safe; one sequential map for every heatmap

_RC = {
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7.5,
    "figure.titlesize": 9.5,
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.4,
    "lines.markersize": 3.5,
    "grid.linewidth": 0.5,
    "grid.color": "0.88",
    "legend.frameon": False,
    "pdf.fonttype": 42,  # embed TrueType, keeps text editable/searchable in the PDF
    "ps.fonttype": 42,
}


def _new_figure(height_in: float, width_in: float = FIG_WIDTH_IN) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained")


def _style_axes(ax: Axes, grid: bool = True) -> None:
    """Explicit per-axes styling, so ticks created lazily at draw time (outside the rc context) still match."""
    ax.tick_params(labelsize=_RC["xtick.labelsize"], width=0.6, length=3)
    ax.tick_params(which="minor", width=0.4, length=1.8)
    if grid:
        ax.grid(True, which="major", color=_RC["grid.color"], linewidth=_RC["grid.linewidth"])
        ax.set_axisbelow(True)


# ------------------------------------------------------------------------------------------------ the step axis


def _check_steps(steps: Sequence[int] | np.ndarray) -> np.ndarray:
    s = np.asarray(steps, dtype=float).reshape(-1)
    if s.size == 0:
        raise ValueError("no steps to plot")
    if np.any(np.diff(s) <= 0):
        raise ValueError(f"steps must be strictly increasing, got {s.tolist()}")
    return s


def step_positions(steps: Sequence[int] | np.ndarray) -> np.ndarray:
    """x of every checkpoint: its index (0, 1, ..., n - 1)."""
    return np.arange(_check_steps(steps).size, dtype=float)


def step_position(step: float, steps: Sequence[int] | np.ndarray) -> float | None:
    """x of any training step on the checkpoint-index axis: a checkpoint's index, or linear interpolation in step
    between the two checkpoints around it; None outside the plotted steps (the event is not drawn)."""
    s = _check_steps(steps)
    step = float(step)
    if step < s[0] or step > s[-1]:
        return None
    return float(np.interp(step, s, np.arange(s.size, dtype=float)))


def step_axis(ax: Axes, steps: Sequence[int] | np.ndarray, label: bool = True) -> None:
    """The checkpoint-index x axis of every training-curve figure: one tick per checkpoint labelled by its step
    (every k-th label when more than 24 checkpoints would crowd the width; rotated when more than 10)."""
    s = _check_steps(steps)
    n = s.size
    every = max(1, int(np.ceil(n / 24)))
    labels = [step_tick_label(v) if (k % every == 0 or k == n - 1) else "" for k, v in enumerate(s)]
    ax.set_xticks(np.arange(n), labels, rotation=45 if n > 10 else 0, ha="right" if n > 10 else "center")
    ax.xaxis.set_minor_locator(_null_locator())
    ax.set_xlim(-0.5, n - 0.5)
    if label:
        ax.set_xlabel(STEP_LABEL)


def _null_locator():
    from matplotlib.ticker import NullLocator

    return NullLocator()


# ------------------------------------------------------------------------------------------------ small helpers


def _as_float(values: Sequence[float] | np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{what}: expected {n} values (one per step), got {arr.shape[0]}")
    return np.where(np.isfinite(arr), arr, np.nan)


def _finite_range(arrays: Sequence[np.ndarray | None]) -> tuple[float, float] | None:
    vals = [a[np.isfinite(a)] for a in arrays if a is not None]
    vals = [v for v in vals if v.size]
    if not vals:
        return None
    allv = np.concatenate(vals)
    return float(allv.min()), float(allv.max())


def _band(ax: Axes, x: np.ndarray, lo: np.ndarray | None, hi: np.ndarray | None, color: str, alpha: float) -> Any:
    if lo is None or hi is None:
        return None
    ok = np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return None
    band = ax.fill_between(x, lo, hi, where=ok, color=color, alpha=alpha, linewidth=0, interpolate=False)
    band.set_gid("ci")
    return band


def _legend_above(ax: Axes, handles: Sequence[Any], labels: Sequence[str]) -> None:
    """A one-row (or few-row) frameless legend just above the axes; constrained layout makes room for it, and a
    figure suptitle then sits above the legend rather than on top of it."""
    ax.legend(
        handles,
        labels,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.01),
        ncols=min(len(handles), 4),
        handlelength=2.2,
        borderaxespad=0.2,
        fontsize=_RC["legend.fontsize"],
        frameon=False,
    )


def _event_label(ev: Mapping[str, Any]) -> str:
    kind = str(ev.get("kind", ""))
    return str(ev.get("label") or ev.get("name") or kind.replace("_", " "))


def draw_events(ax: Axes, steps: Sequence[int] | np.ndarray, events: Sequence[Mapping[str, Any]],
                labels: bool = True) -> None:
    """Events on a checkpoint-index axis: ``{"step": s}`` as a dashed vertical line, ``{"bracket": [a, b]}`` as a
    band from a to b (a sharp transition's band in vermillion, any other in grey), each labelled at the top
    (``label``, else ``name``, else the kind). Events outside the plotted steps are skipped. gids: "event",
    "event_band"."""
    for ev in events:
        label = _event_label(ev)
        bracket = ev.get("bracket")
        if bracket is not None:
            lo, hi = step_position(bracket[0], steps), step_position(bracket[1], steps)
            if lo is None or hi is None:
                continue
            sharp = str(ev.get("kind", "")) == "sharp"
            band = ax.axvspan(lo, hi, color=SHARP_BAND_COLOR if sharp else EVENT_BAND_COLOR,
                              alpha=0.16 if sharp else 0.2, linewidth=0, zorder=0.5)
            band.set_gid("event_band")
            x = lo
        else:
            x = step_position(ev["step"], steps)
            if x is None:
                continue
            line = ax.axvline(x, color=EVENT_COLOR, linestyle=(0, (4, 2.5)), linewidth=0.9, zorder=2)
            line.set_gid("event")
        if labels:
            ax.annotate(label, xy=(x, 1.0), xycoords=("data", "axes fraction"), xytext=(2.5, -3),
                        textcoords="offset points", rotation=90, ha="left", va="top", fontsize=6.5,
                        color=EVENT_COLOR, annotation_clip=False, zorder=4,
                        bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.75})


# ------------------------------------------------------------------------------------------------ the LLC


def _llc_panel(ax: Axes, x: np.ndarray, llc: Sequence[Any], label: str, steps: Sequence[int] = ()) -> None:
    values, lows, highs, *rest = llc
    n = x.shape[0]
    note = str(rest[0]) if rest and rest[0] else ""
    y = _as_float(values, n, "llc values")
    band = _band(ax, x, _as_float(lows, n, "llc lows"), _as_float(highs, n, "llc highs"), LLC_COLOR, 0.18)
    if band is not None:
        band.set_gid("llc_ci")
    (line,) = ax.plot(x, y, color=LLC_COLOR, marker="o", markersize=3, linewidth=1.1, label=label)
    line.set_gid("llc")
    ax.set_ylabel(label)
    if not note and y is not None and np.isnan(y).any():
        missing = [k for k in range(n) if np.isnan(y[k])]
        note = (f"no LLC at step {', '.join(step_tick_label(steps[k]) for k in missing)}" if len(steps) == n
                else f"no LLC at checkpoint {', '.join(str(k) for k in missing)}")  # slots only without steps
    if note:
        ax.annotate(note, xy=(0.01, 0.96), xycoords="axes fraction", ha="left", va="top", fontsize=6.5,
                    color="0.35", gid="llc_note")


# ------------------------------------------------------------------------------------------------ training curves


def training_curves(
    steps: Sequence[int],
    curves: Mapping[str, tuple[Sequence[float], Sequence[float] | None, Sequence[float] | None]],
    ylabel: str,
    title: str = "",
    llc: Sequence[Any] | None = None,
    events: Sequence[Mapping[str, Any]] = (),
    zero_line: bool = True,
    llc_label: str = "LLC",
    height_in: float = 3.4,
    width_in: float = FIG_WIDTH_IN,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> Figure:
    """Quantities over training checkpoints, with confidence bands, developmental events and optionally the LLC.

    steps: checkpoint steps, drawn on the checkpoint-index axis (:func:`step_axis`). curves: name -> (values, lows,
    highs), one value per step; lines with markers (Okabe-Ito colour + distinct marker per curve) and a shaded CI
    band; ``lows``/``highs`` may be None for no band, NaN/inf entries leave gaps. llc: optional (values, lows,
    highs[, note]) drawn in its own panel below, sharing x (see :func:`llc_from_table` for the note; NaN steps are
    left out). events: dicts with ``step`` or ``bracket`` (see :func:`draw_events`), drawn in every panel, labelled
    in the top one. zero_line: a thin y = 0 line, drawn only when 0 lies within the plotted data. styles: optional
    curve name -> {"colour": palette index, "dashed": bool} so that related curves share a colour (e.g. one
    component's χ_correct solid and χ_incorrect dashed); curves without an entry take the next colour in order.

    Artists carry gids for inspection: "curve", "ci", "llc", "llc_ci", "llc_note", "zero", "event", "event_band".
    """
    import matplotlib as mpl

    x_steps = np.asarray(steps, dtype=float).reshape(-1)
    n = x_steps.shape[0]
    if n == 0:
        raise ValueError("training_curves: no steps")
    x = step_positions(x_steps)
    with mpl.rc_context(_RC):
        if llc is None:
            fig = _new_figure(height_in, width_in)
            ax = fig.add_subplot()
            panels = [ax]
        else:
            fig = _new_figure(height_in + 1.1, width_in)
            ax, lax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.25]})
            panels = [ax, lax]
        for panel in panels:
            _style_axes(panel)
        all_y: list[np.ndarray | None] = []
        for i, (name, triple) in enumerate(curves.items()):
            values, lows, highs = triple
            y = _as_float(values, n, f"curve {name!r} values")
            lo = _as_float(lows, n, f"curve {name!r} lows")
            hi = _as_float(highs, n, f"curve {name!r} highs")
            style = (styles or {}).get(name, {})
            k = int(style.get("colour", i))
            color = OKABE_ITO[k % len(OKABE_ITO)]
            dashed = bool(style.get("dashed", False))
            _band(ax, x, lo, hi, color, alpha=0.1 if dashed else 0.2)
            (line,) = ax.plot(x, y, color=color, marker=MARKERS[i % len(MARKERS)], label=str(name), zorder=3,
                              linestyle=(0, (4, 2)) if dashed else "-")
            line.set_gid("curve")
            all_y += [y, lo, hi]
        if zero_line:
            rng = _finite_range(all_y)
            if rng is not None and rng[0] <= 0.0 <= rng[1]:
                zl = ax.axhline(0.0, color="0.2", linewidth=0.7, zorder=1.5)
                zl.set_gid("zero")
        ax.set_ylabel(ylabel)
        if llc is not None:
            _llc_panel(lax, x, llc, llc_label, x_steps)
        for k, panel in enumerate(panels):
            draw_events(panel, x_steps, events, labels=k == 0)
        step_axis(panels[-1], x_steps)
        if len(panels) > 1:
            ax.tick_params(labelbottom=False)
        handles, labels = ax.get_legend_handles_labels()
        if len(handles) > 1:  # one curve is named by the y label already
            _legend_above(ax, handles, labels)
        if title:
            fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------------------ step heatmap


def step_heatmap(
    steps: Sequence[int],
    rows: Mapping[str, Sequence[float]],
    title: str,
    cbar_label: str,
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    events: Sequence[Mapping[str, Any]] = (),
    annotate: bool = True,
    width_in: float = FIG_WIDTH_IN,
) -> Figure:
    """A (row x checkpoint) heatmap on the checkpoint-index axis, e.g. detection rate per mutation operator.

    rows: name -> one value per step (NaN = not measured, drawn light grey). One sequential map
    (:data:`HEATMAP_CMAP`) over [vmin, vmax] (None: the data's range); each cell is labelled with its value when
    ``annotate`` and the grid is small enough to read (intervals belong in a table next to the figure). Events are
    drawn as in :func:`training_curves` (bands and lines over the cells). The image carries gid "heatmap".
    """
    import matplotlib as mpl

    s = _check_steps(steps)
    names = list(rows)
    if not names:
        raise ValueError("step_heatmap: no rows")
    m = np.vstack([_as_float(rows[name], s.size, f"row {name!r}") for name in names])
    finite = m[np.isfinite(m)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    height = min(0.95 + 0.24 * len(names), 8.0)
    with mpl.rc_context(_RC):
        fig = _new_figure(height, width_in)
        ax = fig.add_subplot()
        cmap = mpl.colormaps[HEATMAP_CMAP].with_extremes(bad="0.9")
        im = ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
        im.set_gid("heatmap")
        ax.set_yticks(np.arange(len(names)), names)
        step_axis(ax, s)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if annotate and s.size <= 20 and len(names) <= 30:
            mid = (lo + hi) / 2
            for r in range(m.shape[0]):
                for c in range(m.shape[1]):
                    if np.isfinite(m[r, c]):
                        ax.text(c, r, f"{m[r, c]:.2f}", ha="center", va="center", fontsize=6,
                                color="white" if m[r, c] < mid else "black")
        draw_events(ax, s, events)
        cbar = fig.colorbar(im, ax=ax, shrink=0.9, pad=0.01, aspect=30)
        cbar.ax.tick_params(labelsize=7)
        cbar.set_label(cbar_label, fontsize=8)
        if title:
            ax.set_title(title)
    return fig


# ------------------------------------------------------------------------------------------------ SGLD loss traces


def _plot_traces(
    ax: Axes, traces: np.ndarray, init_loss: float | Sequence[float] | None, burn_in: int, lw: float
) -> np.ndarray:
    t = np.asarray(traces, dtype=float)
    if t.ndim == 1:
        t = t[None, :]
    if t.ndim != 2:
        raise ValueError(f"traces must be [chains, steps], got shape {t.shape}")
    t = np.where(np.isfinite(t), t, np.nan)  # diverged chains: gaps, not axis-breaking infinities
    chains, n_steps = t.shape
    xs = np.arange(n_steps)
    if burn_in > 0:
        span = ax.axvspan(-0.5, min(burn_in, n_steps) - 0.5, color="0.6", alpha=0.18, linewidth=0, zorder=0)
        span.set_gid("burn_in")
    for c in range(chains):
        (ln,) = ax.plot(xs, t[c], color=OKABE_ITO[c % len(OKABE_ITO)], linewidth=lw, alpha=0.85, zorder=2)
        ln.set_gid("chain")
    if init_loss is not None:
        init = np.asarray(init_loss, dtype=float).reshape(-1)
        per_chain = init.shape[0] > 1 or (np.ndim(init_loss) > 0 and chains == 1)
        if per_chain and init.shape[0] != chains:
            raise ValueError(f"init_loss: expected {chains} values (one per chain), got {init.shape[0]}")
        for c, v in enumerate(init):
            color = OKABE_ITO[c % len(OKABE_ITO)] if per_chain else "black"
            hl = ax.axhline(v, color=color, linestyle=(0, (4, 2.5)), linewidth=0.9, zorder=3)
            hl.set_gid("init")
    ax.set_xlim(-0.5, n_steps - 0.5)
    return t


def _trace_legend_handles(chains: int, init_loss: Any, burn_in: int) -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Line2D([], [], color=OKABE_ITO[0], linewidth=0.8, label=f"SGLD chains (n = {chains})")]
    if init_loss is not None:
        per_chain = np.ndim(init_loss) > 0
        label = "initial loss $L(w^*)$" + (" per chain" if per_chain else "")
        handles.append(Line2D([], [], color="black", linestyle=(0, (4, 2.5)), linewidth=0.9, label=label))
    if burn_in > 0:
        handles.append(Patch(color="0.6", alpha=0.3, linewidth=0, label=f"burn-in ({burn_in} steps)"))
    return handles


def loss_traces(
    traces: np.ndarray,
    init_loss: float | Sequence[float] | None,
    title: str = "",
    burn_in: int = 0,
    ylabel: str = "Minibatch loss (nats/token)",
    height_in: float = 3.2,
) -> Figure:
    """SGLD minibatch-loss traces, the standard sampler-health diagnostic.

    traces: [chains, steps] (a 1-D array is one chain). One thin line per chain; a dashed horizontal line at the
    loss of the initial weights (one black line for a float, one per chain in the chain's colour for a sequence);
    the first ``burn_in`` draws shaded grey. Non-finite values (diverged chains) leave gaps.
    Artists carry gids: "chain", "init", "burn_in".
    """
    import matplotlib as mpl

    with mpl.rc_context(_RC):
        fig = _new_figure(height_in)
        ax = fig.add_subplot()
        _style_axes(ax)
        t = _plot_traces(ax, traces, init_loss, burn_in, lw=0.8)
        ax.set_xlabel("SGLD step (draw index)")
        ax.set_ylabel(ylabel)
        handles = _trace_legend_handles(t.shape[0], init_loss, burn_in)
        _legend_above(ax, handles, [h.get_label() for h in handles])
        if title:
            fig.suptitle(title)
    return fig


def traces_grid(
    grid: Mapping[tuple[str, str], np.ndarray],
    init_losses: Mapping[tuple[str, str], float | Sequence[float]],
    row_label: str,
    col_label: str,
    title: str = "",
    burn_in: int = 0,
    sharey: bool = False,
    ylabel: str = "Minibatch loss (nats/token)",
) -> Figure:
    """Small multiples of SGLD loss traces over a two-way hyperparameter sweep.

    grid: (row_value, col_value) -> traces [chains, steps]; rows and columns appear in first-seen key order, missing
    combinations are left blank. init_losses: same keys -> initial loss (float, or per chain); missing keys draw no
    line. Columns are titled ``f"{col_label} = {col}"``, rows labelled ``f"{row_label} = {row}"`` on the right.
    Panels share x; y is per panel unless ``sharey`` (a diverged chain would otherwise flatten every panel).
    """
    import matplotlib as mpl

    rows = list(dict.fromkeys(k[0] for k in grid))
    cols = list(dict.fromkeys(k[1] for k in grid))
    if not rows:
        raise ValueError("traces_grid: empty grid")
    height = min(1.55 * len(rows) + 0.8, 9.0)
    with mpl.rc_context(_RC):
        fig = _new_figure(height)
        axes = fig.subplots(len(rows), len(cols), sharex=True, sharey=sharey, squeeze=False)
        max_chains = 0
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                ax = axes[i, j]
                _style_axes(ax)
                ax.tick_params(labelsize=7)
                if i == 0:
                    ax.set_title(f"{col_label} = {c}", fontsize=8.5)
                if (r, c) in grid:
                    t = _plot_traces(ax, grid[(r, c)], init_losses.get((r, c)), burn_in, lw=0.6)
                    max_chains = max(max_chains, t.shape[0])
                else:
                    ax.set_axis_off()  # the title and row label (annotations) still draw
                    ax.text(0.5, 0.5, "no run", transform=ax.transAxes, ha="center", va="center", color="0.5")
                if j == len(cols) - 1:
                    ax.annotate(
                        f"{row_label} = {r}",
                        xy=(1.04, 0.5),
                        xycoords="axes fraction",
                        rotation=270,
                        ha="left",
                        va="center",
                        fontsize=8.5,
                    )
        for j, c in enumerate(cols):  # x label and tick labels on the lowest drawn panel of each column
            present = [i for i, r in enumerate(rows) if (r, c) in grid]
            if present:
                bottom = axes[present[-1], j]
                bottom.xaxis.set_tick_params(labelbottom=True)
                bottom.set_xlabel("SGLD step", fontsize=9)
        fig.supylabel(ylabel, fontsize=9)
        any_init = next((v for v in init_losses.values() if v is not None), None)
        handles = _trace_legend_handles(max_chains, any_init, burn_in)
        handles[0].set_label(f"SGLD chains (≤ {max_chains} per panel)")
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
        if title:
            fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------------------ matrix heatmap


def matrix_heatmap(
    matrix: np.ndarray,
    labels: Sequence[str],
    title: str,
    center_zero: bool = True,
    cbar_label: str = "",
    mask_diagonal: bool = False,
    height_in: float = 5.4,
) -> Figure:
    """An N x N matrix (e.g. Bayesian influence between samples) with rows/columns grouped.

    labels: one group label per row (e.g. "correct"/"incorrect"). Rows and columns are reordered by group (groups
    in first-seen order, stable within a group), group boundaries are drawn as black lines and each group is
    labelled with its size at its centre. center_zero: diverging RdBu_r map with colour limits (-m, m), m the
    largest finite |value|; otherwise viridis over the data range. NaNs (and the diagonal when ``mask_diagonal``,
    useful because self-influence dwarfs the rest) are drawn light grey. The image carries gid "matrix".
    """
    import matplotlib as mpl

    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be square, got shape {m.shape}")
    n = m.shape[0]
    if len(labels) != n:
        raise ValueError(f"labels: expected {n} (one per row), got {len(labels)}")
    groups = list(dict.fromkeys(str(g) for g in labels))
    rank = {g: k for k, g in enumerate(groups)}
    order = np.array(sorted(range(n), key=lambda i: rank[str(labels[i])]), dtype=int)
    m = m[np.ix_(order, order)].copy()
    if mask_diagonal:
        np.fill_diagonal(m, np.nan)
    m[~np.isfinite(m)] = np.nan
    sizes = [sum(1 for g in labels if str(g) == grp) for grp in groups]
    bounds = np.cumsum([0, *sizes])

    with mpl.rc_context(_RC):
        fig = _new_figure(height_in)
        ax = fig.add_subplot()
        finite = m[np.isfinite(m)]
        if center_zero:
            lim = float(np.abs(finite).max()) if finite.size else 1.0
            lim = lim if lim > 0 else 1.0
            vmin, vmax, cmap_name = -lim, lim, "RdBu_r"
        else:
            vmin = float(finite.min()) if finite.size else 0.0
            vmax = float(finite.max()) if finite.size else 1.0
            cmap_name = "viridis"
        cmap = mpl.colormaps[cmap_name].with_extremes(bad="0.85")
        im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="equal")
        im.set_gid("matrix")
        for b in bounds[1:-1]:
            ax.axhline(b - 0.5, color="black", linewidth=0.9)
            ax.axvline(b - 0.5, color="black", linewidth=0.9)
        centres = (bounds[:-1] + bounds[1:]) / 2 - 0.5
        tick_labels = [f"{g}\n(n = {s})" for g, s in zip(groups, sizes, strict=True)]
        ax.set_xticks(centres, [t.replace("\n", " ") for t in tick_labels])
        ax.set_yticks(centres, tick_labels, rotation=90, va="center")
        ax.tick_params(length=0, labelsize=8.5)
        ax.set_xlabel("sample (column), grouped")
        ax.set_ylabel("sample (row), grouped")
        for s in ax.spines.values():
            s.set_visible(True)
            s.set_linewidth(0.8)
        cbar = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
        cbar.ax.tick_params(labelsize=8)
        if cbar_label:
            cbar.set_label(cbar_label, fontsize=9)
        if title:
            ax.set_title(title)
    return fig


# ------------------------------------------------------------------------------------------------ saving


def save_figure(fig: Figure, path_without_suffix: Path | str, pdf: bool = True) -> list[Path]:
    """Write ``fig`` as PNG (200 dpi) and PDF next to each other; returns [png, pdf] ([png] with ``pdf=False``:
    per-checkpoint diagnostics that only the report shows, where embedding the PDF's font would cost more than
    everything else the figure takes).

    A trailing ".png"/".pdf" on the path is dropped; other dots are kept ("bif_step1.5" -> "bif_step1.5.png").
    Parent directories are created. No tight bbox cropping: constrained layout already fits the figure, and the PNG
    is exactly ``width_in * 200`` pixels wide. PDF output is reproducible (no creation date) with embedded TrueType.
    """
    import matplotlib as mpl

    base = Path(path_without_suffix)
    if base.suffix.lower() in (".png", ".pdf"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    png = base.parent / f"{base.name}.png"
    with mpl.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
        fig.savefig(png, dpi=PNG_DPI, format="png", facecolor="white")
        if not pdf:
            return [png]
        vector = base.parent / f"{base.name}.pdf"
        fig.savefig(vector, format="pdf", facecolor="white", metadata={"CreationDate": None, "Creator": "codedyn"})
    return [png, vector]
