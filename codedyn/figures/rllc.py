"""Figures of the refined LLCs (:mod:`codedyn.experiments.rllc`): pure drawing from its tables.

Figures (PNG + PDF, under ``<run>/rllc/``):

* ``rllc_heatmap``: component x checkpoint, one panel per distribution, rows in the clusters' dendrogram order
  with the cluster boundaries drawn (the main view of Wang et al. 2025); each cell shows its LLC, coloured by its
  share of the component's largest LLC over training (the embeddings' LLCs are 10-100x a head's, so one colour
  scale for all would leave every head dark); grey cells have no LLC;
* ``rllc_curves_<distribution>``: per-component trajectories with 95% intervals (the components whose LLC changes
  most over training, at most :data:`CURVES`), the full LLC in its own panel;
* ``rllc_heads_<distribution>``: every attention head's trajectory with 95% intervals, on the heads' own scale;
* ``rllc_correct_vs_incorrect``: LLC on correct minus on incorrect code, the components with the largest gaps;
* ``rllc_clusters``: the mean standardised trajectory of each cluster.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CURVES = 6  # components per curves figure


def _curve(table, component: str, distribution: str, steps: list[int]):
    part = table[(table["component"] == component) & (table["distribution"] == distribution)].set_index("step")
    part = part.reindex(steps)
    return tuple(part[c].to_numpy(dtype=float) for c in ("llc", "low", "high"))


def _full_curve(table, distribution: str, steps: list[int]):
    """The full LLC's (values, lows, highs, note): the note names the checkpoints without an LLC by step."""
    from codedyn.sampling.refined import FULL

    values, lows, highs = _curve(table, FULL, distribution, steps)
    missing = [str(s) for s, v in zip(steps, values, strict=True) if not np.isfinite(v)]
    note = f"no full LLC at step {', '.join(missing)} (status in rllc.parquet)" if missing else ""
    return values, lows, highs, note


def _heads(table, distribution: str) -> list[str]:
    """The attention heads (``L<l>.H<h>``) with an LLC at one checkpoint at least, in layer order."""
    part = table[(table["distribution"] == distribution) & table["component"].str.fullmatch(r"L\d+\.H\d+")]
    finite = part[np.isfinite(part["llc"].to_numpy(dtype=float))]
    return list(dict.fromkeys(c for c in part["component"] if c in set(finite["component"])))


def _changing(table, distribution: str, n: int) -> list[str]:
    """The ``n`` weight-refined components whose LLC spans the widest range over training."""
    from codedyn.sampling.refined import FULL

    part = table[(table["distribution"] == distribution) & (table["component"] != FULL)]
    span = part.groupby("component")["llc"].agg(lambda v: np.nanmax(v) - np.nanmin(v) if np.isfinite(v).any()
                                                 else -np.inf)
    span = span[np.isfinite(span)]  # a component without any LLC on this distribution has no curve
    return list(span.sort_values(ascending=False).head(n).index)


def write_figures(out: Path, table, sums, contrast, clusters, calls: dict) -> list[Path]:
    """Every figure of the module docstring that the tables allow; the paths written."""
    import matplotlib.pyplot as plt

    from codedyn.analysis.events import sharp_call_events
    from codedyn.figures.plots import save_figure, training_curves
    from codedyn.sampling.refined import FULL

    written: list[Path] = []
    steps = sorted(int(s) for s in table["step"].unique())
    distributions = list(dict.fromkeys(table["distribution"]))
    fig = heatmap_figure(table, clusters)
    written += save_figure(fig, out / "rllc_heatmap")
    plt.close(fig)
    for distribution in distributions:
        leaders = _changing(table, distribution, CURVES)
        if not leaders:
            continue
        curves = {c: _curve(table, c, distribution, steps) for c in leaders}
        events = sharp_call_events(calls, {f"{c}/{distribution}": c for c in leaders})  # brackets, never steps
        fig = training_curves(steps, curves, ylabel="weight-refined LLC", events=events, zero_line=True,
                              title=f"Refined LLC per component on {distribution} (95% intervals)",
                              llc=_full_curve(table, distribution, steps), llc_label="full LLC")
        written += save_figure(fig, out / f"rllc_curves_{distribution}")
        plt.close(fig)
        heads = _heads(table, distribution)
        if heads:  # every head on its own scale: beside the embeddings the heads' curves are flat lines at 0
            curves = {c: _curve(table, c, distribution, steps) for c in heads}
            events = sharp_call_events(calls, {f"{c}/{distribution}": c for c in heads})
            fig = training_curves(steps, curves, ylabel="weight-refined LLC", events=events, zero_line=True,
                                  title=f"Refined LLC per attention head on {distribution} (95% intervals)")
            written += save_figure(fig, out / f"rllc_heads_{distribution}")
            plt.close(fig)
    if len(contrast) and np.isfinite(contrast["difference"].to_numpy(dtype=float)).any():
        gap = contrast[contrast["component"] != FULL].groupby("component")["difference"].agg(
            lambda v: np.nanmax(np.abs(v)) if np.isfinite(v).any() else -np.inf)
        leaders = list(gap.sort_values(ascending=False).head(CURVES).index)
        curves = {}
        for component in leaders:
            part = contrast[contrast["component"] == component].set_index("step").reindex(steps)
            curves[component] = tuple(part[c].to_numpy(dtype=float) for c in ("difference", "low", "high"))
        fig = training_curves(steps, curves, ylabel="LLC(correct) - LLC(incorrect)",
                              title="Refined LLC on correct minus incorrect code (largest gaps, 95% intervals)")
        written += save_figure(fig, out / "rllc_correct_vs_incorrect")
        plt.close(fig)
    if (clusters["cluster"] > 0).any() and len(steps) >= 2:
        fig = cluster_figure(table, clusters)
        written += save_figure(fig, out / "rllc_clusters")
        plt.close(fig)
    return written


def heatmap_figure(table, clusters):
    """Component x checkpoint LLC, one panel per distribution (module docstring)."""
    import matplotlib.pyplot as plt

    from codedyn.analysis.curves import trajectory_matrix

    distributions = list(dict.fromkeys(table["distribution"]))
    names0 = trajectory_matrix(table, distributions[0])[0]
    height = min(14.0, 1.5 + 0.22 * len(names0))
    width = max(3.4, 0.9 + 0.55 * table["step"].nunique())  # room for the cells' numbers
    fig, axes = plt.subplots(1, len(distributions), figsize=(width * len(distributions) + 1.0, height),
                             layout="constrained", squeeze=False)
    for ax, distribution in zip(axes[0], distributions, strict=True):
        names, steps, values = trajectory_matrix(table, distribution)
        mine = clusters[clusters["distribution"] == distribution].set_index("component")
        order = sorted(range(len(names)), key=lambda i: mine["order"].get(names[i], i) if len(mine) else i)
        values, names = values[order], [names[i] for i in order]
        cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")  # no LLC: grey
        peak = np.nanmax(np.abs(np.where(np.isfinite(values), values, np.nan)), axis=1, keepdims=True,
                         initial=0.0)
        share = np.divide(values, peak, out=np.full_like(values, np.nan), where=np.isfinite(values) & (peak > 0))
        share = np.where(np.isfinite(values) & (peak == 0), 0.0, share)
        im = ax.imshow(np.ma.masked_invalid(share), aspect="auto", cmap=cmap, interpolation="nearest", vmin=0,
                       vmax=1)
        for (row, col), value in np.ndenumerate(values):
            if np.isfinite(value):
                ax.text(col, row, f"{value:.3g}", ha="center", va="center", fontsize=6,
                        color="black" if share[row, col] > 0.6 else "white")
        ax.set_xticks(range(len(steps)), [str(s) for s in steps], rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        if len(mine):
            labels = [mine["cluster"].get(n, -1) for n in names]
            for row in range(1, len(labels)):
                if labels[row] != labels[row - 1]:
                    ax.axhline(row - 0.5, color="white", linewidth=1.2)
        ax.set_xlabel("checkpoint step")
        ax.set_title(f"rLLC on {distribution}", fontsize=9)
        bar = fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02)
        bar.ax.tick_params(labelsize=7)
        bar.set_label("LLC / component's max", fontsize=7)
    return fig


def cluster_figure(table, clusters):
    """Mean z-scored trajectory of every cluster (and its members' count), one panel per distribution."""
    import matplotlib.pyplot as plt

    from codedyn.analysis.curves import trajectory_matrix

    distributions = list(dict.fromkeys(clusters["distribution"]))
    fig, axes = plt.subplots(1, len(distributions), figsize=(3.6 * len(distributions), 3.0), layout="constrained",
                             squeeze=False)
    for ax, distribution in zip(axes[0], distributions, strict=True):
        names, steps, values = trajectory_matrix(table, distribution)
        mine = clusters[(clusters["distribution"] == distribution) & (clusters["cluster"] > 0)]
        index = {n: i for i, n in enumerate(names)}
        for label, members in mine.groupby("cluster"):
            x = values[[index[n] for n in members["component"]]]
            sd = x.std(axis=1, keepdims=True)
            z = np.divide(x - x.mean(axis=1, keepdims=True), sd, out=np.zeros_like(x), where=sd > 0)
            ax.plot(range(len(steps)), z.mean(axis=0), marker="o", label=f"cluster {label} ({len(members)})")
        if len(mine):
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(steps)), [str(s) for s in steps], rotation=90, fontsize=7)
        ax.set_ylabel("mean z-scored rLLC")
        ax.set_title(f"clusters on {distribution}", fontsize=9)
    return fig
