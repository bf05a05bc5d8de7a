"""Thesis-quality figures: data in, ``matplotlib.figure.Figure`` out.

Conventions shared by every function here:

* Figures are built as bare ``Figure`` objects (no pyplot, no global state, no backend selection); matplotlib is
  imported inside the functions, so importing this module stays light. Save them with :func:`save_figure`.
* Width is :data:`FIG_WIDTH_IN` (6.5 in, a full text width); fonts are 7-10 pt; layout is constrained.
* Colours come from the Okabe-Ito palette (colour-blind safe), and curves also differ by marker shape so they
  survive greyscale printing.
* Uncertainty is drawn as shaded bands (confidence intervals around a curve).
* Training step is drawn on a *symmetric-log* x axis with ``linthresh=1``: logarithmic from step 1 on, linear on
  [0, 1], so the initialisation checkpoint (step 0) is drawn at its true value one decade left of step 1, instead of
  being dropped (log) or shifted to step + 1. The axis label says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIG_WIDTH_IN = 6.5
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
LLC_COLOR = "0.45"
EVENT_COLOR = "0.3"
STEP_LABEL = "Training step (symlog axis: log from 1, step 0 at left)"

_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 10,
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


def _step_axis(ax: Axes) -> None:
    from matplotlib.ticker import NullFormatter, SymmetricalLogLocator

    ax.set_xscale("symlog", linthresh=1, linscale=1)
    ax.xaxis.set_minor_locator(SymmetricalLogLocator(base=10, linthresh=1, subs=np.arange(2, 10)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(STEP_LABEL)


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


# ------------------------------------------------------------------------------------------------ training curves


def training_curves(
    steps: Sequence[int],
    curves: Mapping[str, tuple[Sequence[float], Sequence[float] | None, Sequence[float] | None]],
    ylabel: str,
    title: str = "",
    llc: tuple[Sequence[float], Sequence[float] | None, Sequence[float] | None] | None = None,
    events: Sequence[Mapping[str, Any]] = (),
    zero_line: bool = True,
    llc_label: str = "LLC",
    height_in: float = 3.6,
) -> Figure:
    """Quantities over training checkpoints, with confidence bands, optional LLC and developmental events.

    steps: checkpoint steps (x). curves: name -> (values, lows, highs), one value per step; drawn as lines with
    markers (Okabe-Ito colour + distinct marker per curve) and a shaded CI band; ``lows``/``highs`` may be None for
    no band, NaN/inf entries leave gaps. llc: optional (values, lows, highs) drawn in grey on a twin right axis
    labelled ``llc_label`` ("LLC"). events: dicts with ``step``, ``kind`` (sign_flip/peak/trough/jump/transition)
    and optional ``label`` (falls back to the kind), drawn as vertical dashed lines with a small rotated label at the
    top of the plot. zero_line: a thin y = 0 reference line, drawn only when 0 lies within the plotted data (so it
    never stretches the axis of an all-positive quantity). The x axis is symlog (see module docstring).

    Artists carry gids for inspection: "curve", "ci", "llc", "llc_ci", "zero", "event".
    """
    import matplotlib as mpl

    x = np.asarray(steps, dtype=float).reshape(-1)
    n = x.shape[0]
    if n == 0:
        raise ValueError("training_curves: no steps")
    with mpl.rc_context(_RC):
        fig = _new_figure(height_in)
        ax = fig.add_subplot()
        _style_axes(ax)
        _step_axis(ax)
        all_y: list[np.ndarray | None] = []
        for i, (name, triple) in enumerate(curves.items()):
            values, lows, highs = triple
            y = _as_float(values, n, f"curve {name!r} values")
            lo = _as_float(lows, n, f"curve {name!r} lows")
            hi = _as_float(highs, n, f"curve {name!r} highs")
            color = OKABE_ITO[i % len(OKABE_ITO)]
            _band(ax, x, lo, hi, color, alpha=0.2)
            (line,) = ax.plot(x, y, color=color, marker=MARKERS[i % len(MARKERS)], label=str(name), zorder=3)
            line.set_gid("curve")
            all_y += [y, lo, hi]
        if zero_line:
            rng = _finite_range(all_y)
            if rng is not None and rng[0] <= 0.0 <= rng[1]:
                zl = ax.axhline(0.0, color="0.2", linewidth=0.7, zorder=1.5)
                zl.set_gid("zero")
        ax.set_ylabel(ylabel)

        handles, labels = ax.get_legend_handles_labels()
        if llc is not None:
            tw = ax.twinx()
            _style_axes(tw, grid=False)
            tw.spines["right"].set_visible(True)
            values, lows, highs = llc
            y = _as_float(values, n, "llc values")
            band = _band(tw, x, _as_float(lows, n, "llc lows"), _as_float(highs, n, "llc highs"), LLC_COLOR, 0.15)
            if band is not None:
                band.set_gid("llc_ci")
            (lline,) = tw.plot(x, y, color=LLC_COLOR, linestyle="-", marker=".", linewidth=1.1, label=llc_label)
            lline.set_gid("llc")
            tw.set_ylabel(llc_label, color="0.3")
            tw.tick_params(axis="y", colors="0.3")
            # Draw the main curves above the grey LLC: raise the main axes and make its background transparent.
            ax.set_zorder(tw.get_zorder() + 1)
            ax.patch.set_visible(False)
            handles.append(lline)
            labels.append(llc_label)

        for ev in events:
            step = float(ev["step"])
            kind = str(ev.get("kind", ""))
            label = str(ev.get("label") or kind.replace("_", " "))
            vl = ax.axvline(step, color=EVENT_COLOR, linestyle=(0, (4, 2.5)), linewidth=0.9, zorder=2)
            vl.set_gid("event")
            ax.annotate(
                label,
                xy=(step, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2.5, -3),
                textcoords="offset points",
                rotation=90,
                ha="left",
                va="top",
                fontsize=7,
                color=EVENT_COLOR,
                annotation_clip=False,
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.75},
                zorder=4,
            )

        if handles:
            _legend_above(ax, handles, labels)
        if title:
            fig.suptitle(title)
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


def save_figure(fig: Figure, path_without_suffix: Path | str) -> list[Path]:
    """Write ``fig`` as PNG (200 dpi) and PDF next to each other; returns [png, pdf].

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
    pdf = base.parent / f"{base.name}.pdf"
    with mpl.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
        fig.savefig(png, dpi=PNG_DPI, format="png", facecolor="white")
        fig.savefig(pdf, format="pdf", facecolor="white", metadata={"CreationDate": None, "Creator": "codedyn"})
    return [png, pdf]
