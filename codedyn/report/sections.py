"""The report's sections after the answer: the verdict table (with sparklines), the dataset card, one section per
experiment folder (captioned figures, folded per-checkpoint tables, folded calls), the LLC, the calibration, the
hyperparameters, the sampling diagnostics and the timings."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from codedyn.experiments.registry import EXPERIMENTS, Experiment
from codedyn.experiments.registry import captions as registered_captions
from codedyn.report.answer import MAX_FRACTION_BELOW_INIT, MAX_RHAT, MIN_DRIFT_TO_NOISE, diagnostic_warnings
from codedyn.report.context import ReportContext
from codedyn.report.markup import esc, frame_table, html_table, img, interval, not_run, section
from codedyn.runs.layout import TIMINGS_FILE, TRANSITIONS_FILE
from codedyn.runs.store import read_json

REPORT_FIGURES = "report"

NOT_EXPERIMENTS = {"units", "calibration", REPORT_FIGURES, "traces", "timings", "rllc", "validation",  # own sections
                   "coverage", "more_draws"}  # and what benchmarks sample beside a run (benchmarks/bench_*.py)

# What each figure the report draws, or shows outside an experiment's section, shows and what to look for in it, by
# file-name prefix; an experiment's own figures are captioned in its registration (codedyn.experiments.registry).
REPORT_CAPTIONS = {
    "llc": "Local learning coefficient per checkpoint with 95% CI; checkpoints that are not a local minimum (e.g. "
           "the random initialisation) are left out and named in the panel. Look for rises (the model using more "
           "effective parameters) and where they sit against the known events.",
    "loss_traces_step": "SGLD minibatch loss per chain at one checkpoint; dashed: the loss at the checkpoint's own "
                        "weights; grey: burn-in. Look for chains that settle into one stationary band above the "
                        "dashed line: drifting chains or chains below it mean the posterior is not local to w*.",
    "traces_grid_step": "SGLD loss traces over the calibration grid (ε across, nβ and γ down). Look for the "
                        "settings whose chains are stationary after burn-in and stay above the initial loss.",
}


def all_captions(experiments: Sequence[Experiment] = EXPERIMENTS) -> dict[str, str]:
    """Every caption the report knows, by file-name prefix: the experiments' (in registry order), then its own."""
    return {**registered_captions(experiments), **REPORT_CAPTIONS}


CAPTIONS = all_captions()


def captioned_figure(path: Path, caption: str = "", captions: Mapping[str, str] = CAPTIONS) -> str:
    """A figure of the run, captioned with what to look for in it (from ``captions``) unless a caption is given."""
    return img(path, caption or caption_for(path, captions))


def _caption_key(path: Path, captions: Mapping[str, str]) -> str | None:
    """The longest caption prefix the figure's file name starts with."""
    stem = Path(path).stem
    return max((k for k in captions if stem.startswith(k)), key=len, default=None)


def _figure_order(path: Path, captions: Mapping[str, str] = CAPTIONS) -> tuple[int, str]:
    """Figures in the order of their captions (each experiment lists its curves over training before per-checkpoint
    detail)."""
    key = _caption_key(path, captions)
    return (list(captions).index(key) if key is not None else len(captions), Path(path).name)


def caption_for(path: Path, captions: Mapping[str, str] = CAPTIONS) -> str:
    """The caption of a figure file: what it shows and what to look for (a generic line for unknown files)."""
    match = _caption_key(path, captions)
    if match is None:
        return f"{Path(path).stem.replace('_', ' ')}."
    return captions[match]


def sparkline(row, width: int = 120, height: int = 20) -> str:
    """An inline SVG of a row's curve on the checkpoint-index axis: the 95% band, the line, a sharp call's bracket
    shaded; '' when the row has no curve. Missing values (NaN) break the line."""
    import math

    values = row.values
    n = len(values)
    if n < 2:
        return ""
    finite = [v for v in (*values, *row.lows, *row.highs) if v == v and math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    pad = 2

    def xy(k: int, v: float) -> str:
        x = pad + k * (width - 2 * pad) / (n - 1)
        y = height - pad - (v - lo) / span * (height - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    parts = []
    if row.bracket and row.kind in ("sharp", "unresolved") and row.steps:
        import numpy as np

        a, b = (float(np.interp(s, row.steps, range(n))) for s in row.bracket)
        x0, x1 = (pad + t * (width - 2 * pad) / (n - 1) for t in (a, b))
        colour = "#D55E00" if row.kind == "sharp" else "#999"
        parts.append(f'<rect x="{x0:.1f}" y="0" width="{max(x1 - x0, 1):.1f}" height="{height}" fill="{colour}" '
                     'fill-opacity="0.18"/>')
    segments: list[list[int]] = [[]]
    for k, v in enumerate(values):
        if v == v:
            segments[-1].append(k)
        elif segments[-1]:
            segments.append([])
    for seg in segments:
        if not seg:
            continue
        if len(row.lows) == n and all(row.lows[k] == row.lows[k] and row.highs[k] == row.highs[k] for k in seg):
            band = [xy(k, row.highs[k]) for k in seg] + [xy(k, row.lows[k]) for k in reversed(seg)]
            parts.append(f'<polygon points="{" ".join(band)}" fill="#0072B2" fill-opacity="0.2"/>')
        parts.append(f'<polyline points="{" ".join(xy(k, values[k]) for k in seg)}" fill="none" stroke="#0072B2" '
                     'stroke-width="1.4"/>')
        parts += [f'<circle cx="{xy(k, values[k]).split(",")[0]}" cy="{xy(k, values[k]).split(",")[1]}" r="1.5" '
                  'fill="#0072B2"/>' for k in seg]
    label = f"{row.signal.split(';')[0]} over steps {row.steps[0]} to {row.steps[-1]}" if row.steps else row.signal
    return (f'<svg class=spark width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{esc(label)}">{"".join(parts)}</svg>')

def verdict_section(context: ReportContext, rows) -> str:
    adjusted = any(r.p_adjusted is not None for r in rows)
    body = ["<table class=verdicts><thead><tr><th>signal</th><th>curve, 95% band</th><th>verdict</th>"
            "<th class=nw>bracket (a, b]</th><th class=nw>effect [95% CI]</th>"
            f"<th class=nw>{'p adjusted' if adjusted else 'p (not adjusted)'}</th></tr></thead><tbody>"]
    for row in rows:
        bracket = f"({row.bracket[0]}, {row.bracket[1]}]" if row.bracket else ""
        p = ""
        if row.p_adjusted is not None:
            p = f"{row.p_adjusted:.2g}"
        elif row.p_value is not None:
            p = f"{row.p_value:.2g}" + (" (not adj.)" if adjusted else "")
        cls = row.kind.replace("_", "-").replace(" ", "-")
        body.append(
            f'<tr class="{esc(cls)}"><td>{esc(row.signal.split(";")[0])}'
            + (f' <span class=aside>({esc(row.signal.split(";", 1)[1].strip())})</span>' if ";" in row.signal
               else "")
            + f'</td><td class=sparkcell>{sparkline(row)}</td><td data-curve="{esc(row.curve)}">{esc(row.verdict)}'
            f"</td><td class=nw>{esc(bracket)}</td>"
            f"<td class=nw>{esc(interval(row.effect, row.effect_low, row.effect_high))}</td>"
            f"<td class=nw>{esc(p)}</td></tr>")
    body.append("</tbody></table>")
    return "".join(body)

def test_description(rows) -> str:
    """The verdict test, described once under the table (the module's TEST_DESCRIPTION, with the run's level)."""
    from codedyn.analysis import transitions

    text = str(getattr(transitions, "TEST_DESCRIPTION", ""))
    try:
        text = text.format(level=0.95, alpha=0.05, axis="log(step + 1)")
    except (KeyError, IndexError, ValueError):
        pass  # a description without (or with other) placeholders is shown as written
    fwer = next((r.fwer for r in rows if r.fwer), "")
    tests = sorted({r.test for r in rows if r.test})
    sources = sorted({r.source for r in rows if r.source})
    evidence = "".join(f"<li><b>{esc(r.signal.split(';')[0])}</b>: {esc('; '.join(r.evidence))}</li>"
                       for r in rows if r.evidence)
    return ("<div class=method><p><b>How each verdict is made</b>"
            + (f" (test {esc(', '.join(tests))})" if tests else "") + f": {esc(text)}</p>"
            + (f"<p><b>Family-wise control:</b> {esc(fwer)}.</p>" if fwer else "")
            + "<p>Bracket (a, b]: the change happened after checkpoint a and by checkpoint b; the data cannot place "
            "it more precisely. The sparkline puts every checkpoint at equal distance; a shaded span is a sharp "
            f"call's bracket. Sources: {esc(', '.join(sources))}.</p>"
            + (f"<details><summary>Evidence behind every verdict</summary><ul>{evidence}</ul></details>"
               if evidence else "") + "</div>")

def dataset_section(context: ReportContext) -> str:
    card = context.card
    if card is None:
        return "<p class=notrun>Dataset card not found (the dataset is not in this machine's cache).</p>"
    facts = [
        ["dataset", f"{card.get('source')}-{card.get('hash')}"],
        ["samples", f"{card.get('n_samples')} ({card.get('n_correct')} correct, {card.get('n_incorrect')} incorrect)"],
        ["verified pairs", card.get("n_pairs")],
        ["problems used / loaded", f"{card.get('n_problems_used')} / {card.get('n_problems_loaded')}"],
        ["candidate mutants executed", card.get("candidates_executed")],
        ["candidate outcomes", json.dumps(card.get("candidate_outcomes", {}))],
        ["failure kinds of incorrect samples", json.dumps(card.get("failure_kinds", {}))],
        ["flaky mutants replaced", card.get("flaky_mutants_replaced")],
        ["reference solutions failing their tests", card.get("failed_references") or "none"],
        ["solution lines correct / incorrect", f"{card.get('solution_lines', {}).get('correct')} / "
                                               f"{card.get('solution_lines', {}).get('incorrect')}"],
        ["sandbox isolation", json.dumps(card.get("isolation", {}))],
    ]
    splits = [[name, v.get("problems"), v.get("correct"), v.get("incorrect")]
              for name, v in card.get("splits", {}).items()]
    operators = [[name, n] for name, n in card.get("operators", {}).items()]
    return (html_table(["field", "value"], facts) + "<h3>Splits (by problem)</h3>"
            + html_table(["split", "problems", "correct", "incorrect"], splits)
            + "<h3>Mutation operators of the incorrect samples</h3>" + html_table(["operator", "samples"], operators))

def _figures(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = "**/*.png" if recursive else "*.png"
    return sorted(p for p in folder.glob(pattern) if p.is_file())

def _links(folder: Path, run_dir: Path) -> str:
    """Relative links to the interactive HTML pages and animations of an experiment."""
    items = []
    for path in sorted([*folder.glob("*.html"), *folder.glob("*.gif")]):
        rel = path.relative_to(run_dir).as_posix()
        kind = "interactive page" if path.suffix == ".html" else "animation"
        items.append(f'<li><a href="{esc(rel)}">{esc(rel)}</a> ({kind}, opens next to this report)</li>')
    return f"<ul>{''.join(items)}</ul>" if items else ""

def _key_tables(name: str, folder: Path) -> str:
    import pandas as pd

    out = []
    if name == "influence" and (folder / "influence.parquet").is_file():
        table = pd.read_parquet(folder / "influence.parquet")
        for variant in ("cov", "corr"):
            part = table[table["variant"] == variant]
            if part.empty:
                continue
            wide = part.assign(cell=[f"{v:.3g} [{lo:.3g}, {hi:.3g}]" for v, lo, hi in
                                     zip(part["value"], part["low"], part["high"], strict=True)])
            wide = wide.pivot(index="step", columns="quantity", values="cell").reset_index()
            out.append(f"<h3>Block means of the {'' if variant == 'cov' else 'normalised '}BIF, value [95% CI]</h3>"
                       + html_table([str(c) for c in wide.columns], wide.astype(object).values.tolist()))
        return "".join(out)
    if name == "emergence" and (folder / "emergence.parquet").is_file():
        table = pd.read_parquet(folder / "emergence.parquet")
        needed = {"step", "layer", "predictor", "split", "metric", "value", "low", "high"}
        if needed <= set(table.columns):
            key = table[(table["split"] == "validation") & table["predictor"].isin(["best_latent", "probe"])]
            key = key.sort_values(["layer", "metric", "predictor", "step"])
            out.append("<h3>Validation-split detection of incorrect code (best SAE latent vs linear probe)</h3>"
                       + frame_table(key[["layer", "metric", "predictor", "step", "value", "low", "high"]],
                                      "emergence/emergence.parquet", limit=80))
            out.append(_probe_direction_table(folder))
            out.append(_operator_table(folder))
            skip = {"emergence.parquet", "bootstrap_replicates.npz", "operators.parquet", "probe_direction.parquet"}
            return "".join(out) + "".join(
                f"<h3>{esc(p.name)}</h3>" + frame_table(pd.read_parquet(p), p.name)
                for p in sorted(folder.glob("*.parquet")) if p.name not in skip)
    if name == "susceptibility" and list(folder.glob("opposite_responders*.parquet")):
        for path in sorted(folder.glob("opposite_responders*.parquet")):
            ranked = pd.read_parquet(path)
            opposite = ranked[ranked["opposite"]]
            estimator = path.stem.removeprefix("opposite_responders").lstrip("_") or "covariance"
            out.append(f"<h3>Opposite responders ({esc(estimator)} estimator)</h3><p>{len(opposite)} (component, "
                       "checkpoint) pairs whose χ_correct and χ_incorrect have opposite signs with both 95% CIs "
                       "excluding zero.</p>")
            top = (opposite if len(opposite) else ranked).sort_values(["step", "gap"], ascending=[True, False])
            cols = ["step", "component", "chi_a", "low_a", "high_a", "chi_b", "low_b", "high_b", "gap", "opposite"]
            out.append(("<p>Largest gaps |χ_correct − χ_incorrect| (a = correct, b = incorrect), top 3 per "
                        "checkpoint:</p>" if not len(opposite) else "")
                       + frame_table(top[[c for c in cols if c in top.columns]].groupby("step").head(3),
                                      path.name))
        return "".join(out)
    if name == "embryology" and (folder / "structure.parquet").is_file():
        table = pd.read_parquet(folder / "structure.parquet")
        if {"step", "space", "labelling", "accuracy", "low", "high", "chance"} <= set(table.columns):
            table = table.assign(cell=[f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in
                                       zip(table["accuracy"], table["low"], table["high"], strict=True)],
                                 space=table["space"].map({"umap": "2-d layout", "chi": "χ vectors"}).fillna(
                                     table["space"]))
            wide = table.pivot_table(index=["labelling", "space", "chance"], columns="step", values="cell",
                                     aggfunc="first").reset_index()
            out.append("<h3>Structure: kNN balanced accuracy of each labelling (value [95% CI]; chance beside "
                       "it)</h3>" + html_table([str(c) for c in wide.columns], wide.astype(object).values.tolist())
                       + "<p class=note>Every token's coordinates: embryology/embedding.parquet.</p>")
            return "".join(out)
    skip = {"diagnostics.parquet"}
    for path in sorted(folder.glob("*.parquet")):
        if path.name in skip:
            continue
        out.append(f"<h3>{esc(path.name)}</h3>" + frame_table(pd.read_parquet(path), path.name))
    return "".join(out)

PROBE_DIRECTION_NOTE = (
    "u is the probe's unit direction in the raw residual, x a validation sample's final-token residual, x̂ its SAE "
    "reconstruction. variance_kept = 1 − Var(u·(x − x̂)) / Var(u·x); auroc_resid is the probe's own AUROC, "
    "auroc_reconstruction what the reconstruction keeps of it; separation_kept is the reconstruction's gap of class "
    "means along u over the residual's; max_decoder_cosine is the best-aligned latent's |cos| with u; "
    "top_latent_gap_share and latents_for_half_gap say how the reconstruction's gap spreads over latents; "
    "explained_variance is the SAE's on these samples. An AUROC of u·x̂ near 0.5 while u·x separates: the SAE loses "
    "the direction and no latent can carry it. u·x̂ separating while the top share is small: the SAE keeps the "
    "direction but no single latent holds it.")


def _probe_direction_table(folder: Path) -> str:
    """How much of the probe's direction each layer's SAE keeps, quantity x checkpoint, 'value [95% CI]'."""
    import pandas as pd

    path = folder / "probe_direction.parquet"
    if not path.is_file():
        return ""
    table = pd.read_parquet(path)
    if not {"layer", "quantity", "step", "value", "low", "high"} <= set(table.columns):
        return ""
    out = []
    for layer in sorted(table["layer"].unique()):
        part = table[table["layer"] == layer]
        reading = probe_direction_reading(part)
        if reading:
            out.append(f"<p>Layer {esc(layer)}: {esc(reading)}</p>")
        part = part.assign(cell=[f"{v:.2f}" if pd.isna(lo) else f"{v:.2f} [{lo:.2f}, {hi:.2f}]"
                                 for v, lo, hi in zip(part["value"], part["low"], part["high"], strict=True)])
        wide = part.pivot_table(index="quantity", columns="step", values="cell", aggfunc="first",
                                sort=False).reset_index()
        out.append(f"<h3>Layer {esc(layer)}: how much of the probe's correctness direction the SAE reconstructs "
                   "(validation samples, value [95% CI])</h3>"
                   + html_table([str(c) for c in wide.columns], wide.fillna("").astype(object).values.tolist()))
    return "".join(out) + f"<p class=note>{esc(PROBE_DIRECTION_NOTE)}</p>"


def probe_direction_reading(part) -> str:
    """One layer's rows of probe_direction.parquet read at its last checkpoint at which the probe's direction
    separates the classes (u·x's AUROC interval excludes 0.5): whether the SAE's reconstruction loses it (u·x̂'s
    interval covers 0.5) or keeps it, and then how much of its gap one latent holds. Empty when u·x never
    separates."""
    def row(step, quantity):
        found = part[(part["step"] == step) & (part["quantity"] == quantity)]
        return found.iloc[0] if len(found) else None

    separating = [step for step in sorted(part["step"].unique())
                  if (r := row(step, "auroc_resid")) is not None and (r["low"] > 0.5 or r["high"] < 0.5)]
    if not separating:
        return ""
    step = separating[-1]
    resid, hat = row(step, "auroc_resid"), row(step, "auroc_reconstruction")
    if hat is None:
        return ""
    head = (f"at step {step} the probe's direction u separates the validation samples (AUROC of u·x "
            f"{resid['value']:.2f} [{resid['low']:.2f}, {resid['high']:.2f}]); ")
    if hat["low"] <= 0.5 <= hat["high"]:
        return head + (f"the SAE's reconstruction loses it (u·x̂ {hat['value']:.2f} [{hat['low']:.2f}, "
                       f"{hat['high']:.2f}]), so no latent can carry it.")
    share, count, cosine = (row(step, q) for q in ("top_latent_gap_share", "latents_for_half_gap",
                                                    "max_decoder_cosine"))
    spread = ""
    if share is not None and count is not None and cosine is not None:
        spread = (f"; the latent contributing most holds {share['value']:.0%} of the reconstruction's gap along u, "
                  f"half of it takes {count['value']:.0f} latent(s), and the best-aligned latent's |cos| with u is "
                  f"{cosine['value']:.2f}")
    return head + (f"the SAE's reconstruction keeps it (u·x̂ {hat['value']:.2f} [{hat['low']:.2f}, "
                   f"{hat['high']:.2f}]){spread}.")


def _operator_table(folder: Path) -> str:
    """Detection by mutation operator, operator x checkpoint, 'value [95% CI]' per cell (the heatmap's numbers)."""
    import pandas as pd

    path = folder / "operators.parquet"
    if not path.is_file():
        return ""
    table = pd.read_parquet(path)
    if not {"layer", "predictor", "operator", "step", "value", "low", "high"} <= set(table.columns):
        return ""
    out = []
    for layer in sorted(table["layer"].unique()):
        part = table[(table["layer"] == layer) & (table["predictor"] == "best_latent")]
        if part.empty:
            continue
        part = part.assign(cell=[f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in
                                 zip(part["value"], part["low"], part["high"], strict=True)])
        wide = part.pivot_table(index="operator", columns="step", values="cell", aggfunc="first").reset_index()
        out.append(f"<h3>Layer {esc(layer)}: fraction of validation mutants the best latent flags, by operator "
                   "(value [95% CI])</h3>"
                   + html_table([str(c) for c in wide.columns], wide.fillna("").astype(object).values.tolist()))
    return "".join(out)

def experiment_section(name: str, title: str, context: ReportContext, susceptibility_calls: dict,
                       captions: Mapping[str, str] = CAPTIONS) -> str:
    """The section of one result folder: its captioned figures, links, folded tables and calls ("not run" when the
    folder is absent)."""
    folder = context.run_dir / name
    if not folder.is_dir():
        return section(name, title, not_run(title))
    parts = [f"<p class=file>{esc(folder.relative_to(context.run_dir).as_posix())}/</p>"]
    transitions = read_json(folder / TRANSITIONS_FILE)
    parts += [captioned_figure(p, captions=captions)
              for p in sorted(_figures(folder), key=lambda p: _figure_order(p, captions))]
    parts.append(_links(folder, context.run_dir))
    tables = _key_tables(name, folder)
    if tables:  # the per-step numbers behind the figures: folded, so the page reads as an argument
        parts.append(f"<details><summary>Per-checkpoint tables</summary>{tables}</details>")
    if name == "susceptibility" and susceptibility_calls:
        parts.append("<details><summary>Verdict per component and distribution</summary>"
                     + _calls_table(susceptibility_calls, "component / distribution") + "</details>")
    if transitions:
        parts.append("<details><summary>Every curve's calls (transitions.json)</summary>"
                     + _calls_table(transitions, "curve", evidence=True) + "</details>")
    if len(parts) == 1:
        parts.append("<p class=notrun>The folder exists but holds no figures or tables yet.</p>")
    return section(name, title, "".join(parts))

def _calls_table(calls: dict, first: str, evidence: bool = False) -> str:
    from codedyn.analysis.verdicts import normalise_call

    rows = []
    for key, found in sorted(calls.items()):
        call = normalise_call(found)
        bracket = f"({call['bracket'][0]}, {call['bracket'][1]}]" if call["bracket"] else ""
        p = call["p_adjusted"] if call["p_adjusted"] is not None else call["p_value"]
        row = [key, call["verdict"], bracket, interval(call["effect"], call["effect_low"], call["effect_high"]),
               "" if p is None else f"{p:.3g}"]
        rows.append(row + (["; ".join(call["evidence"])] if evidence else []))
    return html_table([first, "verdict", "bracket", "effect [95% CI]", "p (adjusted where available)"]
                  + (["evidence"] if evidence else []), rows)

def llc_section(context: ReportContext) -> str:
    import pandas as pd

    from codedyn.analysis.curves import llc_from_table
    from codedyn.analysis.events import known_events
    from codedyn.figures.plots import save_figure, training_curves

    path = context.run_dir / "influence" / "influence.parquet"
    if not path.is_file():
        return not_run("LLC (estimated from the influence posteriors)")
    table = pd.read_parquet(path)
    llc = table[table["quantity"] == "LLC"].sort_values("step")
    if llc.empty:
        return not_run("LLC")
    steps = sorted(table["step"].unique().tolist())
    values, lows, highs, note = llc_from_table(table, steps)
    figure = training_curves(steps, {"LLC": (values, lows, highs)}, ylabel="LLC = nβ (E[L] − L(w*))",
                             title="Local learning coefficient over training", events=known_events(context),
                             zero_line=False, height_in=2.8)
    if note:
        figure.axes[0].annotate(note, xy=(0.01, 0.96), xycoords="axes fraction", ha="left", va="top", fontsize=6.5,
                                color="0.35")
    png, _ = save_figure(figure, context.run_dir / REPORT_FIGURES / "llc")
    rows = [[int(s), "" if v != v else f"{v:.4g}", "" if v != v else f"[{lo:.4g}, {hi:.4g}]"]
            for s, v, lo, hi in zip(steps, values, lows, highs, strict=True)]
    return (captioned_figure(png) + (f"<p class=note>{esc(note)}.</p>" if note else "")
            + html_table(["step", "LLC", "95% CI"], rows))

def calibration_section(context: ReportContext) -> str:
    import pandas as pd

    folder = context.run_dir / "calibration"
    summary = read_json(folder / "calibration.json")
    if summary is None:
        return ("<p class=notrun>SGLD calibration: not run for this study (<code>codedyn calibrate</code>); the "
                "sampler settings below are the preset's.</p>")
    chosen = summary["chosen"]
    status = "passes every criterion" if summary["usable"] else "fails: " + "; ".join(summary["reasons"])
    parts = [f"<p>Chosen: ε = {esc(chosen['lr'])}, nβ = {esc(chosen['n_beta'])}, γ = "
             f"{esc(chosen['localization'])} ({esc(status)}), from {esc(summary['n_settings'])} settings on "
             f"checkpoints {esc(summary['steps'])} with {esc(summary['chain_length'])}; "
             f"{esc(summary['n_passing'])} pass every criterion, {esc(summary['n_rejected'])} rejected. Preset: "
             f"<code>{esc(summary['preset'])}</code>.</p>",
             f"<details><summary>Scoring rules</summary><pre>{esc(summary['rules'])}</pre></details>"]
    scores_path = folder / "scores.parquet"
    if scores_path.is_file():
        scores = pd.read_parquet(scores_path)
        keep = [c for c in scores.columns if c not in {"grid_index", "chosen"}]
        parts.append(frame_table(scores[keep], "calibration/scores.parquet", limit=20))
    parts += [captioned_figure(p) for p in _figures(folder)]
    return "".join(parts)

def config_section(context: ReportContext) -> str:
    manifest = context.manifest
    sampling = context.config.get("sampling", {})
    facts = [
        ["git commit", manifest.get("git_commit")],
        ["created", manifest.get("created")],
        ["suite", manifest.get("suite")],
        ["steps", manifest.get("steps")],
        ["dataset hash", manifest.get("data_hash")],
        ["seeds", json.dumps(manifest.get("seeds", {}))],
        ["python", manifest.get("python")],
        ["platform", manifest.get("platform")],
    ]
    packages = [[k, v] for k, v in (manifest.get("packages") or {}).items()]
    resolved = json.dumps(context.config, indent=2, sort_keys=True)
    calibration = manifest.get("calibration")
    extra = ""
    if calibration:
        extra = f"<h3>Calibration recorded in the manifest</h3><pre>{esc(json.dumps(calibration, indent=2))}</pre>"
    return (html_table(["field", "value"], facts)
            + "<h3>Sampler (one set for every checkpoint)</h3>"
            + html_table(["hyperparameter", "value"], [[k, v] for k, v in sampling.items()])
            + "<h3>Package versions</h3>" + html_table(["package", "version"], packages) + extra
            + f"<details><summary>Resolved configuration</summary><pre>{esc(resolved)}</pre></details>")

def diagnostics_section(context: ReportContext) -> str:
    import pandas as pd

    path = context.run_dir / "influence" / "diagnostics.parquet"
    if not path.is_file():
        return not_run("Sampling diagnostics (written with the influence posteriors)")
    table = pd.read_parquet(path)
    rows, classes, n_warned = [], [], 0
    for _, row in table.iterrows():
        warnings = diagnostic_warnings(row)
        n_warned += bool(warnings)
        rows.append([int(row["step"]), int(row["chain"]), bool(row["healthy"]), row["init_loss"],
                     row["mean_loss_after_burn_in"], row["fraction_below_init"], row["drift_to_noise"],
                     row["split_rhat"], row["ess_sampling_loss"], "; ".join(warnings) or "ok"])
        classes.append("warn" if warnings else "")
    head = (f"<p>{n_warned} of {len(table)} chains carry a warning (diverged; drift/noise < {MIN_DRIFT_TO_NOISE:g}; "
            f"more than {100 * MAX_FRACTION_BELOW_INIT:.0f}% of draws below the init loss; split R-hat > "
            f"{MAX_RHAT:g}).</p>")
    traces = _figures(context.run_dir / "influence" / "traces")
    trace_html = "".join(captioned_figure(p) for p in traces)
    columns = ["step", "chain", "healthy", "init loss", "mean loss after burn-in", "fraction below init",
               "drift/noise", "split R-hat", "ESS", "warnings"]
    return (head + html_table(columns, rows, classes) + _step_size_table(context)
            + (f"<details><summary>Loss traces per checkpoint ({len(traces)})</summary>{trace_html}</details>"
               if traces else ""))


def _step_size_table(context: ReportContext) -> str:
    """The step-size check (``sampling.step_size_check``) when the run made it: how many reported quantities move
    with ε beyond their combined interval, and those rows first."""
    import pandas as pd

    path = context.run_dir / "step_size" / "step_size.parquet"
    if not path.is_file():
        return ""
    table = pd.read_parquet(path).sort_values("flagged", ascending=False, kind="mergesort")
    flagged = int(table["flagged"].sum())
    head = (f"<h3>Step-size check</h3><p>The posterior of step {int(table['step'].iloc[0])} sampled again at "
            f"ε = {table['smaller_lr'].iloc[0]:.3g} (the study's ε = {table['lr'].iloc[0]:.3g}): {flagged} of "
            f"{len(table)} reported quantities move with the step size beyond their combined 95% interval "
            "(flagged: their value at the study's ε carries a discretisation bias larger than its interval).</p>")
    columns = ["quantity", "value", "low", "high", "value_smaller", "low_smaller", "high_smaller", "difference",
               "margin", "flagged"]
    return head + frame_table(table[columns], "step_size/step_size.parquet", limit=40)

def timings_section(context: ReportContext) -> str:
    timings = read_json(context.run_dir / TIMINGS_FILE)
    if timings is None:
        return "<p class=notrun>No timings recorded (<code>timings.json</code> absent).</p>"

    def flatten(prefix: str, value: Any) -> list[list[Any]]:
        if isinstance(value, dict):
            return [r for k, v in value.items() for r in flatten(f"{prefix}{k}." if prefix or k else k, v)]
        if isinstance(value, list):
            return [[prefix.rstrip("."), json.dumps(value)]]
        return [[prefix.rstrip("."), value]]

    return html_table(["entry", "value"], flatten("", timings))

def events_line(events: list[dict]) -> str:
    if not events:
        return ""
    items = []
    for event in events:
        where = (f"within ({event['bracket'][0]}, {event['bracket'][1]}]" if "bracket" in event
                 else f"at step {event['step']}")
        items.append(f"{event['name']} {where}" + (f" ({event['detail']})" if event.get("detail") else ""))
    return f"<p class=method><b>Known events</b> (grey in every figure): {esc('; '.join(items))}.</p>"
