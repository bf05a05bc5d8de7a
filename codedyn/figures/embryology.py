"""Figures, animation and interactive view of Experiment 4 (aligned UMAP embeddings over checkpoints).

Input is the embedding table written by :func:`codedyn.experiments.embryology.compute_embryology` (one row per
view, step and point, with x, y and metadata). Every panel of one view shares its axis limits across checkpoints,
so that a point's movement between columns (or frames) is its development, not a change of scale. UMAP axes have no
units, so ticks are hidden.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import numpy as np

from codedyn.figures.plots import _RC, FIG_WIDTH_IN, OKABE_ITO, _new_figure

LABEL_COLOURS = {"correct": OKABE_ITO[0], "incorrect": OKABE_ITO[1], "in mutation": "#000000"}
KIND_ORDER = ("keyword", "builtin", "identifier", "operator", "number", "string", "comment", "whitespace", "other")
KIND_COLOURS = dict(zip(KIND_ORDER, (*OKABE_ITO[:6], OKABE_ITO[7], "0.55", "0.8"), strict=True))
TYPE_MARKERS = {"head": "o", "mlp": "s"}
ROWS = (("tokens", "label", "tokens by sample label"), ("tokens", "kind", "tokens by kind"),
        ("components", "layer", "components (layer, type)"))


def _label_group(frame) -> np.ndarray:
    """correct / incorrect / in mutation (an incorrect sample's token inside its mutated region)."""
    group = frame["label"].to_numpy().astype(object)
    group[frame["in_mutation"].to_numpy(dtype=bool)] = "in mutation"
    return group


def _limits(frame, margin: float = 0.05) -> tuple[tuple[float, float], tuple[float, float]]:
    out = []
    for axis in ("x", "y"):
        lo, hi = float(frame[axis].min()), float(frame[axis].max())
        pad = margin * (hi - lo or 1.0)
        out.append((lo - pad, hi + pad))
    return out[0], out[1]


def _layer_colour(layer: int, layers: list[int]) -> str:
    return OKABE_ITO[layers.index(layer) % len(OKABE_ITO)] if layer in layers else "0.5"


class _Panels:
    """Draws one view / colouring of one checkpoint; returns artists whose offsets an animation can move."""

    def __init__(self, embedding):
        self.tokens = embedding[embedding["view"] == "tokens"]
        self.components = embedding[embedding["view"] == "components"]
        self.limits = {"tokens": _limits(self.tokens), "components": _limits(self.components, margin=0.15)}
        first = self.tokens[self.tokens["step"] == self.tokens["step"].iloc[0]]
        self.label_group = _label_group(first)
        self.kinds = first["kind"].to_numpy()
        comp = self.components[self.components["step"] == self.components["step"].iloc[0]]
        self.comp_meta = comp[["component", "layer", "type"]].reset_index(drop=True)
        self.comp_meta["layer"] = self.comp_meta["layer"].astype(int)  # float after the views were concatenated
        self.layers = sorted(set(self.comp_meta["layer"]))

    def coords(self, view: str, step: int) -> np.ndarray:
        frame = self.tokens if view == "tokens" else self.components
        rows = frame[frame["step"] == step].sort_values("point")
        return rows[["x", "y"]].to_numpy()

    def draw(self, ax, view: str, colouring: str, xy: np.ndarray, size: float = 2.0) -> list:
        (x0, x1), (y0, y1) = self.limits[view]
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_linewidth(0.5)
            spine.set_color("0.6")
        artists = []
        if view == "tokens":
            if colouring == "label":
                groups = (("correct", "incorrect", "in mutation"), self.label_group, LABEL_COLOURS)
            else:
                groups = (KIND_ORDER, self.kinds, KIND_COLOURS)
            for name in groups[0]:
                mask = groups[1] == name
                if not mask.any():
                    continue
                emphasised = name == "in mutation"
                artist = ax.scatter(xy[mask, 0], xy[mask, 1], s=size * (3.0 if emphasised else 1.0),
                                    c=groups[2][name], linewidths=0, alpha=0.95 if emphasised else 0.55,
                                    label=f"{name} ({int(mask.sum())})", rasterized=True, zorder=3 if emphasised else 2)
                artists.append((artist, mask))
        else:
            for kind in dict.fromkeys(self.comp_meta["type"]):
                for layer in self.layers:
                    mask = ((self.comp_meta["type"] == kind) & (self.comp_meta["layer"] == layer)).to_numpy()
                    if not mask.any():
                        continue
                    marker = TYPE_MARKERS.get(kind, "^")
                    artist = ax.scatter(xy[mask, 0], xy[mask, 1], s=22 if len(self.comp_meta) <= 40 else 6,
                                        c=_layer_colour(layer, self.layers), marker=marker, linewidths=0.4,
                                        edgecolors="white", label=f"L{layer} {kind}" if layer >= 0 else kind,
                                        zorder=3)
                    artists.append((artist, mask))
            if len(self.comp_meta) <= 24:
                texts = [ax.annotate(name, xy[k], xytext=(2.5, 2.5), textcoords="offset points", fontsize=5,
                                     color="0.25", clip_on=True)  # labels stay inside their panel
                         for k, name in enumerate(self.comp_meta["component"])]
                artists.append((texts, None))
        return artists


# Which structure measure (structure.parquet's ``labelling``) belongs to which grid row, and what the grid says.
ROW_MEASURES = {"label": "label", "kind": "kind"}
GRID_READING = (
    "How to read: rows 1-2: each dot is one code token, placed by an aligned UMAP of its per-token susceptibility "
    "vector (its χ over components); row 3: each marker is one component (● attention head, ■ MLP), placed by its "
    "χ over tokens. UMAP axes have no units; limits are shared within a row across checkpoints, so a change "
    "between columns is development, not rescaling. Colour: row 1 the sample's label (black: tokens inside a "
    "mutated span), row 2 the token kind, row 3 the layer. Right: how well the row's colouring is separated in the "
    "2-d layout (kNN balanced accuracy, k = 10, 95% CI; dotted: chance), printed in each panel too."
)


def _measure(structure, labelling: str):
    if structure is None or structure.empty:
        return None
    rows = structure[(structure["labelling"] == labelling) & (structure["space"] == "umap")]
    return None if rows.empty else rows.set_index("step")


def _structure_panel(ax, rows, steps, colour: str) -> None:
    """kNN balanced accuracy of one colouring over training, beside its grid row (checkpoint-index axis)."""
    from codedyn.figures.plots import _style_axes, step_axis, step_positions

    rows = rows.reindex(steps)
    x = step_positions(steps)
    _style_axes(ax)
    ax.fill_between(x, rows["low"], rows["high"], color=colour, alpha=0.2, linewidth=0)
    ax.plot(x, rows["accuracy"], color=colour, marker="o", markersize=2.5, linewidth=1.1)
    chance = float(rows["chance"].dropna().iloc[0]) if rows["chance"].notna().any() else None
    if chance is not None:
        ax.axhline(chance, color="0.5", linewidth=0.7, linestyle=":")
    ax.set_ylim(0, 1.02)
    step_axis(ax, steps, label=False)
    ax.tick_params(labelsize=6, length=2)
    if len(steps) > 4:
        ax.tick_params(axis="x", rotation=90)
    ax.set_ylabel("kNN bal. acc.", fontsize=6.5, labelpad=1)


def embryology_grid(embedding, steps, structure=None) -> object:
    """Rows: tokens by label, tokens by kind, components by layer / type; columns: checkpoints (shared limits);
    then, per row, the structure measure of that colouring over training (``structure``: the structure table of
    :func:`codedyn.experiments.embryology.compute_embryology`; omitted when None), and a text block stating how to
    read the grid (:data:`GRID_READING`)."""
    import textwrap

    import matplotlib as mpl

    panels = _Panels(embedding)
    n = len(steps)
    width = FIG_WIDTH_IN
    panel = (width - 1.9) / (n + (1.2 if structure is not None else 0))
    with mpl.rc_context(_RC):
        fig = _new_figure(height_in=3 * panel + 1.35, width_in=width)
        cols = n + 1 if structure is not None else n
        grid = fig.add_gridspec(len(ROWS) + 1, cols, height_ratios=[1, 1, 1, 0.5],
                                width_ratios=[1] * n + ([1.2] if structure is not None else []))
        axes = np.array([[fig.add_subplot(grid[r, c]) for c in range(n)] for r in range(len(ROWS))])
        for r, (view, colouring, title) in enumerate(ROWS):
            measure = _measure(structure, ROW_MEASURES.get(colouring, "")) if view == "tokens" else None
            for c, step in enumerate(steps):
                ax = axes[r, c]
                panels.draw(ax, view, colouring, panels.coords(view, step), size=1.6)
                if r == 0:
                    ax.set_title(f"step {step}", fontsize=8)
                if c == 0:
                    ax.set_ylabel(title, fontsize=7.5)
                if measure is not None and step in measure.index:
                    ax.annotate(f"{measure.loc[step, 'accuracy']:.2f}", xy=(0.03, 0.03), xycoords="axes fraction",
                                fontsize=6, color="0.2", gid="structure_value",
                                bbox={"boxstyle": "square,pad=0.15", "facecolor": "white", "edgecolor": "none",
                                      "alpha": 0.8})
            handles, labels = axes[r, -1].get_legend_handles_labels()
            anchor = axes[r, -1]
            if structure is not None:
                side = fig.add_subplot(grid[r, n])
                if measure is not None:
                    _structure_panel(side, measure, list(steps), "0.25")
                    if r == 0:
                        side.set_title("separation", fontsize=8)
                    anchor = side
                else:
                    side.set_axis_off()
                    anchor = side
            anchor.legend(handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=6.5,
                          markerscale=2.0 if view == "tokens" else 0.8, handletextpad=0.2, borderaxespad=0)
        reading = fig.add_subplot(grid[len(ROWS), :])
        reading.set_axis_off()
        reading.text(0, 1, textwrap.fill(GRID_READING, 128), transform=reading.transAxes, ha="left", va="top",
                     fontsize=6.5, color="0.2", gid="reading")
        fig.suptitle("Per-token susceptibility structure over training (UMAP, aligned across checkpoints)",
                     fontsize=9)
    return fig


def structure_figure(structure) -> object:
    """kNN balanced accuracy of token kind / sample label / in-mutation from the 2-d layout (solid) and from the full
    χ vectors (dashed, same colour) over training, with bootstrap intervals and chance levels (dotted)."""
    from codedyn.figures.plots import training_curves

    steps = sorted(structure["step"].unique())
    curves, styles = {}, {}
    names = {"kind": "token kind", "label": "sample label", "in_mutation": "in mutation"}
    for k, labelling in enumerate(("kind", "label", "in_mutation")):
        for space, suffix in (("umap", "2-d"), ("chi", "χ")):
            rows = structure[(structure["labelling"] == labelling) & (structure["space"] == space)]
            if rows.empty:
                continue
            rows = rows.set_index("step").reindex(steps)
            name = f"{names[labelling]} ({suffix})"
            curves[name] = (rows["accuracy"].to_numpy(), rows["low"].to_numpy(), rows["high"].to_numpy())
            styles[name] = {"colour": k, "dashed": space == "chi"}  # a χ-space curve: its 2-d partner's colour
    fig = training_curves(steps, curves, ylabel="kNN balanced accuracy\n(k = 10, leave-one-out)",
                          title="What the layout separates, over training (95% bootstrap CIs)", zero_line=False,
                          styles=styles)
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if line.get_gid() == "curve"]
    for chance in sorted(structure["chance"].unique()):
        ax.axhline(chance, color="0.6", linewidth=0.6, linestyle=":", zorder=0)
    ax.legend(lines, list(curves), loc="lower center", bbox_to_anchor=(0.5, 1.01), ncols=3, fontsize=7,
              frameon=False, handlelength=2.6)
    ax.annotate("solid: 2-d layout; dashed: full χ vectors; dotted: chance", xy=(0.01, 0.01),
                xycoords="axes fraction", fontsize=6.5, color="0.45")
    return fig


# ---------------------------------------------------------------------------------------------------- animation


def _frames(steps, tween: int):
    """(step index a, step index b, weight of b, hold?) for every frame: a hold per checkpoint, then tweens."""
    out = []
    for i in range(len(steps)):
        out.append((i, i, 0.0, True))
        if i + 1 < len(steps):
            for k in range(1, tween + 1):
                t = k / (tween + 1)
                out.append((i, i + 1, t * t * (3 - 2 * t), False))  # smoothstep easing
    return out


def animate(embedding, steps, base: Path, frame_seconds: float, progress=None, tween: int = 5) -> list[Path]:
    """``<base>.gif`` (always) and ``<base>.mp4`` (when ffmpeg is installed): the three views, moving from each
    checkpoint to the next (held ``frame_seconds`` at each checkpoint, eased in-between frames)."""
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    from codedyn.progress import SILENT

    progress = progress or SILENT
    panels = _Panels(embedding)
    coords = {view: [panels.coords(view, s) for s in steps] for view, _, _ in ROWS}
    with mpl.rc_context(_RC):
        fig = _new_figure(height_in=3.1, width_in=9.0)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(ROWS))
        movers = []
        for ax, (view, colouring, title) in zip(axes, ROWS, strict=True):
            movers.append((view, panels.draw(ax, view, colouring, coords[view][0], size=2.5)))
            ax.set_title(title, fontsize=8.5)
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncols=3 if view == "tokens" else 2,
                      fontsize=6, markerscale=2.0 if view == "tokens" else 0.8, handletextpad=0.1,
                      columnspacing=0.6)
        label = fig.suptitle("step", fontsize=10)
        fig.canvas.draw()
        fig.set_layout_engine("none")  # freeze the constrained layout: later frames only move points
        moving = [label] + [a for _, artists in movers for artist, _ in artists
                            for a in (artist if isinstance(artist, list) else [artist])]
        for artist in moving:
            artist.set_animated(True)
        canvas = fig.canvas
        canvas.draw()  # everything static (axes, legends), once
        background = canvas.copy_from_bbox(fig.bbox)
        images, durations = [], []
        frames = _frames(steps, tween)
        bar = progress.task("embryology: animation frames", total=len(frames))
        for a, b, w, hold in frames:
            canvas.restore_region(background)
            for view, artists in movers:
                xy = (1 - w) * coords[view][a] + w * coords[view][b]
                for artist, mask in artists:
                    if mask is None:
                        for k, text in enumerate(artist):
                            text.xy = xy[k]
                    else:
                        artist.set_offsets(xy[mask])
            label.set_text(f"step {steps[a]}" if hold else f"step {steps[a]} → {steps[b]}")
            for artist in moving:
                fig.draw_artist(artist)
            images.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy()))
            durations.append(int(1000 * (frame_seconds if hold else 0.08)))
            bar.advance()
    gif = base.parent / f"{base.name}.gif"
    palette = images[0].quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    quantised = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    quantised[0].save(gif, save_all=True, append_images=quantised[1:], duration=durations, loop=0, optimize=True)
    files = [gif]
    if shutil.which("ffmpeg"):
        files.append(_mp4(images, durations, base.parent / f"{base.name}.mp4"))
    return files


def _mp4(images, durations, path: Path, fps: int = 25) -> Path:
    """H.264 via ffmpeg's stdin (frames repeated to honour the per-frame durations)."""
    import subprocess

    width, height = images[0].size
    width, height = width - width % 2, height - height % 2
    command = ["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-r", str(fps), "-i", "-", "-pix_fmt", "yuv420p", "-vcodec", "libx264", str(path)]
    with subprocess.Popen(command, stdin=subprocess.PIPE) as proc:
        for image, ms in zip(images, durations, strict=True):
            raw = np.asarray(image)[:height, :width].tobytes()
            for _ in range(max(1, round(ms * fps / 1000))):
                proc.stdin.write(raw)
        proc.stdin.close()
        if proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed writing {path}")
    return path


# ---------------------------------------------------------------------------------------------------- interactive


def _token_hover(rows) -> list[str]:
    """The static part of a token's hover text (what the token is); the per-checkpoint χ comes as customdata."""
    return [
        f"<b>{html.escape(repr(t))}</b> ({k}{', in mutation' if m else ''})<br>sample {html.escape(str(s))} "
        f"[{lab}{', ' + op if op else ''}]<br>problem {html.escape(str(p))}"
        for t, k, m, s, lab, op, p in zip(rows["text"], rows["kind"], rows["in_mutation"], rows["sample_id"],
                                          rows["label"], rows["operator"], rows["problem_id"], strict=True)
    ]


TOKEN_TEMPLATE = ("%{text}<br>largest |z|: %{customdata[0]}, χ = %{customdata[1]:+.3g} "
                  "[%{customdata[2]:+.3g}, %{customdata[3]:+.3g}] (95% CI)<br>"
                  "z = %{customdata[4]:+.2f}, |z| over components %{customdata[5]:.2f}<extra></extra>")
COMPONENT_TEMPLATE = ("%{text}<br>mean χ over embedded tokens %{customdata[0]:+.3g}<br>"
                      "mean |χ| %{customdata[1]:.3g}<extra></extra>")


def interactive_html(embedding, steps, path: Path) -> Path:
    """Self-contained HTML (plotly.js inlined): tokens (colour by label or by kind, buttons) and components side
    by side, a slider and play button over checkpoints, hover details per point (static description as text,
    per-checkpoint χ as customdata, so frames carry only coordinates and numbers)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = _Panels(embedding)
    groups = [("label", name, panels.label_group == name, LABEL_COLOURS[name])
              for name in ("correct", "incorrect", "in mutation")]
    groups += [("kind", name, panels.kinds == name, KIND_COLOURS[name]) for name in KIND_ORDER]
    groups = [g for g in groups if g[2].any()]
    comp_groups = [(kind, layer) for kind in dict.fromkeys(panels.comp_meta["type"]) for layer in panels.layers
                   if ((panels.comp_meta["type"] == kind) & (panels.comp_meta["layer"] == layer)).any()]
    first_tokens = panels.tokens[panels.tokens["step"] == steps[0]].sort_values("point")
    token_text = np.asarray(_token_hover(first_tokens), dtype=object)

    def step_traces(step, full: bool):
        tokens = panels.tokens[panels.tokens["step"] == step].sort_values("point")
        xy = tokens[["x", "y"]].to_numpy()
        custom = np.stack([tokens["component"].to_numpy(dtype=object)]
                          + [tokens[c].to_numpy().round(5).astype(object)
                             for c in ("chi", "chi_low", "chi_high", "chi_z", "chi_norm")], axis=1)
        traces = []
        for colouring, name, mask, colour in groups:
            extra = {} if not full else {
                "mode": "markers", "name": name, "legendgroup": colouring, "visible": colouring == "label",
                "legendgrouptitle_text": "tokens by " + colouring, "text": list(token_text[mask]),
                "hovertemplate": TOKEN_TEMPLATE,
                "marker": {"size": 7 if name == "in mutation" else 4, "color": _css(colour), "opacity": 0.75}}
            traces.append(go.Scattergl(x=xy[mask, 0].round(4), y=xy[mask, 1].round(4),
                                       customdata=custom[mask].tolist(), **extra))
        comps = panels.components[panels.components["step"] == step].sort_values("point")
        for kind, layer in comp_groups:
            rows = comps[(comps["type"] == kind) & (comps["layer"].astype(int) == layer)]
            extra = {} if not full else {
                "mode": "markers+text" if len(comps) <= 24 else "markers", "textposition": "top right",
                "text": list(rows["component"]),
                "textfont": {"size": 9},
                "name": f"L{layer} {kind}" if layer >= 0 else kind, "legendgroup": "components",
                "legendgrouptitle_text": "components",
                "hovertemplate": COMPONENT_TEMPLATE.replace("%{text}", f"<b>%{{text}}</b> ({kind}, layer {layer})"),
                "marker": {"size": 11, "color": _css(_layer_colour(layer, panels.layers)),
                           "symbol": "square" if kind == "mlp" else "circle"}}
            traces.append(go.Scatter(x=rows["x"].round(4), y=rows["y"].round(4), xaxis="x2", yaxis="y2",
                                     customdata=rows[["chi_mean", "chi_abs_mean"]].to_numpy().tolist(), **extra))
        return traces

    fig = make_subplots(rows=1, cols=2, subplot_titles=("code tokens", "components"), horizontal_spacing=0.06)
    for trace in step_traces(steps[0], full=True):
        fig.add_trace(trace, row=1, col=1 if trace.xaxis in (None, "x") else 2)
    fig.frames = [go.Frame(data=step_traces(step, full=False), name=str(step), traces=list(range(len(fig.data))))
                  for step in steps]
    visibility = {c: [g[0] == c for g in groups] + [True] * len(comp_groups) for c in ("label", "kind")}
    (x0, x1), (y0, y1) = panels.limits["tokens"]
    (cx0, cx1), (cy0, cy1) = panels.limits["components"]
    fig.update_layout(
        title="Per-token susceptibility structure over training (aligned UMAP)", height=640, template="plotly_white",
        xaxis={"range": [x0, x1], "showticklabels": False}, yaxis={"range": [y0, y1], "showticklabels": False},
        xaxis2={"range": [cx0, cx1], "showticklabels": False}, yaxis2={"range": [cy0, cy1], "showticklabels": False},
        updatemenus=[
            {"type": "buttons", "direction": "left", "x": 0.0, "y": 1.12, "showactive": True, "buttons": [
                {"label": "colour tokens by label", "method": "restyle", "args": ["visible", visibility["label"]]},
                {"label": "colour tokens by kind", "method": "restyle", "args": ["visible", visibility["kind"]]},
            ]},
            {"type": "buttons", "x": 0.0, "y": -0.02, "xanchor": "right", "buttons": [
                {"label": "▶", "method": "animate",
                 "args": [None, {"frame": {"duration": 900, "redraw": True}, "transition": {"duration": 400},
                                 "fromcurrent": True}]},
            ]},
        ],
        sliders=[{"active": 0, "currentvalue": {"prefix": "checkpoint step "}, "pad": {"t": 30}, "steps": [
            {"label": str(step), "method": "animate",
             "args": [[str(step)], {"frame": {"duration": 0, "redraw": True}, "mode": "immediate",
                                    "transition": {"duration": 300}}]} for step in steps]}],
    )
    fig.write_html(path, include_plotlyjs=True, full_html=True, auto_play=False)
    return path


def _css(colour: str) -> str:
    """Matplotlib grey strings ("0.55") to CSS."""
    try:
        level = float(colour)
    except ValueError:
        return colour
    value = round(255 * level)
    return f"rgb({value},{value},{value})"
