"""``<run>/report.html``: one self-contained page per study (opens from disk, no network, no scripts).

The page answers first. In order: **the answer for this run** (plain sentences generated from the stored verdicts,
the known events and the sampling diagnostics: which signals change, where, how sharply, with what confidence, and
how far to trust it; :func:`compose_answer`); a marked slot for the validation table (ground truth against the
signals, :func:`_validation_section`); **the verdict table** (one row per signal: a sparkline of its curve, the
verdict, bracket, effect size with interval and adjusted p; the test described once under it); the dataset card;
one section per experiment folder (Experiment 1 influence, 2 emergence, 3 susceptibility, 4 embryology, then any
other result folder), each with its figures (every one captioned with what to look for, :data:`CAPTIONS`) and key
tables with confidence intervals, or "not run"; the LLC; the SGLD calibration when ``codedyn calibrate`` ran; the
hyperparameters (resolved config, manifest); the sampling diagnostics per checkpoint and chain; timings.

Figures are embedded as base64 PNG (reduced to 256 colours where that is smaller), sparklines as inline SVG.
Interactive HTML and GIF files of an experiment are linked by relative path (they sit next to the report). Every
piece of text is escaped. Figures the report draws itself (the LLC curve) are saved as PNG and PDF under
``<run>/report/``.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codedyn.analysis.verdicts import KIND_WORDS, KINDS
from codedyn.runs.layout import MANIFEST, TIMINGS_FILE

REPORT_FILE = "report.html"
REPORT_FIGURES = "report"
TABLE_ROWS = 40  # rows shown per table; the rest are counted and the file named

# Known experiment folders, in the order the seed document numbers them.
EXPERIMENTS = (
    ("influence", "Experiment 1: influence dynamics (Bayesian influence functions)"),
    ("emergence", "Experiment 2: feature emergence (SAE correctness latents)"),
    ("susceptibility", "Experiment 3: susceptibilities"),
    ("embryology", "Experiment 4: developmental visualisation"),
)
NOT_EXPERIMENTS = {"units", "calibration", REPORT_FIGURES, "traces", "timings", "rllc", "validation"}  # own sections

# Diagnostic thresholds behind the warnings of the sampling-diagnostics section.
MIN_DRIFT_TO_NOISE = 0.01
MAX_FRACTION_BELOW_INIT = 0.5
MAX_RHAT = 1.1


@dataclass(frozen=True)
class ReportContext:
    """Everything the report reads besides the run folder's result files."""

    run_dir: Path
    config: dict[str, Any]
    manifest: dict[str, Any]
    card: dict[str, Any] | None
    suite_record: dict[str, Any] | None


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _context_from_study(study) -> ReportContext:
    run_dir = Path(study.run_dir)
    manifest = _read_json(run_dir / MANIFEST) or {}
    return ReportContext(run_dir, study.config.model_dump(mode="json"), manifest, study.dataset.card,
                         study.suite_record)


def _context_from_run_dir(run_dir: Path) -> ReportContext:
    """Rebuild the context from ``<run>/manifest.json``; the dataset card and toy-suite record are looked up in the
    cache (absent ones are reported as such in the page, not raised)."""
    from codedyn.data.pairs import CARD_JSON, resolve_dataset_path
    from codedyn.models.toy import SUITE_FILE
    from codedyn.paths import cache_dir

    run_dir = Path(run_dir)
    manifest = _read_json(run_dir / MANIFEST)
    if manifest is None:
        raise FileNotFoundError(f"{run_dir}: not a codedyn run folder (no manifest.json)")
    config = manifest.get("config", {})
    card = None
    source = config.get("dataset", {}).get("source", "")
    if manifest.get("data_hash"):
        try:
            card = _read_json(resolve_dataset_path(f"{source}-{manifest['data_hash']}") / CARD_JSON)
        except FileNotFoundError:
            card = None
    record = None
    suite = str(manifest.get("suite", ""))
    if suite.startswith("toy-"):
        record = _read_json(cache_dir("suites") / suite / SUITE_FILE)
    return ReportContext(run_dir, config, manifest, card, record)


def _read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text()) if Path(path).is_file() else None


# ------------------------------------------------------------------------------------------------ html pieces


def _png_for_page(path: Path) -> bytes:
    """The PNG as embedded: the file itself, or its 256-colour version when that is smaller (plots have few
    colours; this keeps a report with dozens of figures well under its 5 MB budget)."""
    import io

    from PIL import Image

    raw = Path(path).read_bytes()
    with Image.open(io.BytesIO(raw)) as image:
        if image.mode == "P":
            return raw
        small = io.BytesIO()
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(small, "PNG",
                                                                                        optimize=True)
    return small.getvalue() if small.tell() < len(raw) else raw


def _img(path: Path, caption: str = "") -> str:
    data = base64.b64encode(_png_for_page(path)).decode("ascii")
    caption = caption or caption_for(path)
    alt = Path(path).stem.replace("_", " ")
    return (f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(caption)} <span class=file>({_esc(Path(path).name)}, PDF alongside)</span>"
            "</figcaption></figure>")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(headers: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{_esc(classes[k])}"' if classes and classes[k] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_esc(_fmt(v))}</td>" for v in row) + "</tr>")
    # A wide table scrolls inside its own box instead of widening the page.
    return f"<div class=scroll><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _frame_table(frame, name: str, limit: int = TABLE_ROWS) -> str:
    """A DataFrame as a table; value/low/high (or chi/low/high) columns shown as one 'value [low, high]' column."""
    frame = frame.copy()
    for point in ("value", "chi"):
        if {point, "low", "high"} <= set(frame.columns):
            frame[f"{point} [95% CI]"] = [f"{v:.4g} [{lo:.4g}, {hi:.4g}]"
                                          for v, lo, hi in zip(frame[point], frame["low"], frame["high"], strict=True)]
            frame = frame.drop(columns=[point, "low", "high"])
    shown = frame.head(limit)
    note = ""
    if len(frame) > limit:
        note = f"<p class=note>First {limit} of {len(frame)} rows; all of them in {_esc(name)}.</p>"
    return _table([str(c) for c in shown.columns], shown.astype(object).values.tolist()) + note


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{_esc(anchor)}"><h2>{_esc(title)}</h2>{body}</section>'


def _not_run(what: str) -> str:
    return f"<p class=notrun>{_esc(what)}: not run.</p>"


# ------------------------------------------------------------------------------------------------ captions

# What each figure shows and what to look for in it, by file-name prefix (the longest matching prefix wins).
CAPTIONS = {
    "influence_cov": "Block means of the Bayesian influence BIF = −Cov(ℓ_i, ℓ_j) between correct (C) and incorrect "
                     "(I) samples, with 95% bootstrap bands; every checkpoint has the same width. Look for where CC, "
                     "CI and II separate (the posterior treating correct and incorrect code differently), and "
                     "whether a change happens inside one checkpoint interval (a vermillion band is a sharp call's "
                     "bracket) or spreads over several; grey bands are known events. The lower panel is the LLC.",
    "influence_corr": "As the covariance figure, for the normalised BIF (−Corr): scale-free, so a change here is a "
                      "change in how samples co-vary, not only in how much the loss moves. Look for the same "
                      "separation and brackets; the lower panel is the LLC.",
    "influence_contrasts": "The correctness contrasts of the BIF, which cancel the shared mode that moves every loss "
                           "together: Δ = (CC + II)/2 − CI, the bug influence BIF(δ_p, ℓ_j) of each pair's loss "
                           "difference δ_p = ℓ_mutant − ℓ_reference on the other samples, and its gap (incorrect − "
                           "correct j), with 95% bands from one joint bootstrap. Look for a band that leaves zero: "
                           "the posterior treating correct and buggy code differently, not only all code alike.",
    "bif_matrix_step": "Normalised BIF between every pair of read-out samples at one checkpoint, rows and columns "
                       "grouped correct / incorrect (diagonal masked). Look for block structure: within-group blocks "
                       "that differ from the off-diagonal block mean correctness shapes the posterior's covariance.",
    "verdict_contrast": "The model's own verdicts on held-out planted programs: how many nats larger log p(ok) − "
                        "log p(bug) after '#' is for a spec with its own body than with another's (crossed "
                        "quadruples; leans towards ok cancel), 95% bands over operation pairs; dashed: the "
                        "emergence threshold. Look for where the curve leaves the threshold: that is the "
                        "behavioural emergence every other signal is compared with.",
    "verdict_accuracy": "Share of crossed quadruples the model orders the right way round, 95% bands. It reads "
                        "only the sign of the verdict contrast, so a model whose margins differ by thousandths of a "
                        "nat can sit far from 0.5: read it beside the contrast, never alone.",
    "loss_gap": "ℓ_mutant − ℓ_reference summed over the mutated tokens, per mutation operator, 95% bands over "
                "problems (planted: operation pairs). Look for the gap rising above zero: the model finding the bug "
                "more surprising than the correct code, which can come before its verdicts do.",
    "emergence_auroc": "Validation AUROC for detecting incorrect code from one layer, for the best SAE latent, a "
                       "linear probe on the raw residual stream and two controls (shuffled labels, a random latent), "
                       "with 95% bands. Look for the best latent leaving the controls' 0.5 band, and when relative to "
                       "the known events; the LLC is in the lower panel.",
    "emergence_f1": "F1 at the threshold tuned on the training split, same predictors and controls as the AUROC "
                    "figure. Look for the same rise; F1 also depends on the threshold carrying over to validation.",
    "operator_detection": "Fraction of validation mutants of each operator (rows) that the best latent flags, per "
                          "checkpoint (columns, equal width). Look for operators caught from the first checkpoints "
                          "versus those learned late; intervals for every cell are in the operator table below.",
    "sae_quality": "Explained variance and cross-entropy loss recovered of each layer's SAE per checkpoint (95% CIs "
                   "over held-out windows). Look for values that stay high at every checkpoint: where an SAE is "
                   "poor, that checkpoint's detection numbers say little.",
    "susceptibility_trajectories": "Standardised susceptibility χ to correct and incorrect code for the components "
                                   "with the largest gaps, 95% bands. Look for a pair of curves that split (a "
                                   "component responding differently to incorrect code) and at which checkpoints.",
    "embryology_grid": "Aligned UMAP of per-token susceptibility vectors, one column per checkpoint (the text under "
                       "the grid says what the axes and colours mean). Look for clusters that form or separate "
                       "across columns; the right-hand panels give the measured separation, so the eye is not the "
                       "judge.",
    "embryology_structure": "How well the layout and the full χ vectors separate token kind, sample label and "
                            "mutated tokens (kNN balanced accuracy, 95% CIs; dotted lines: chance). Look for curves "
                            "rising above chance, and whether the 2-d layout keeps what the χ vectors hold.",
    "llc": "Local learning coefficient per checkpoint with 95% CI; checkpoints that are not a local minimum (e.g. "
           "the random initialisation) are left out and named in the panel. Look for rises (the model using more "
           "effective parameters) and where they sit against the known events.",
    "loss_traces_step": "SGLD minibatch loss per chain at one checkpoint; dashed: the loss at the checkpoint's own "
                        "weights; grey: burn-in. Look for chains that settle into one stationary band above the "
                        "dashed line: drifting chains or chains below it mean the posterior is not local to w*.",
    "traces_grid_step": "SGLD loss traces over the calibration grid (ε across, nβ and γ down). Look for the "
                        "settings whose chains are stationary after burn-in and stay above the initial loss.",
}


def _caption_key(path: Path) -> str | None:
    stem = Path(path).stem
    return max((k for k in CAPTIONS if stem.startswith(k)), key=len, default=None)


def _figure_order(path: Path) -> tuple[int, str]:
    """Figures in the order of :data:`CAPTIONS` (the curves over training before per-checkpoint detail)."""
    key = _caption_key(path)
    return (list(CAPTIONS).index(key) if key is not None else len(CAPTIONS), Path(path).name)


def caption_for(path: Path) -> str:
    """The caption of a figure file: what it shows and what to look for (a generic line for unknown files)."""
    match = _caption_key(path)
    if match is None:
        return f"{Path(path).stem.replace('_', ' ')}."
    return CAPTIONS[match]


# ------------------------------------------------------------------------------------------------ the answer


def _interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return ""
    if low is None or high is None:
        return f"{value:.3g}"
    return f"{value:.3g} [{low:.3g}, {high:.3g}]"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.2g}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _names(rows) -> str:
    """Signal names for a sentence, with a shared first word and bracketed variant said once: "Influence CC (cov)",
    "Influence CI (cov)" -> "Influence CC and CI (cov)"."""
    groups: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        name = row.signal.split(";")[0].strip()
        head, _, rest = name.partition(" ")
        middle, tail = rest, ""
        if rest.endswith(")") and " (" in rest:
            middle, tail = rest[: rest.rindex(" (")], rest[rest.rindex(" ("):]
        if not middle:
            head, middle, tail = "", name, ""
        groups.setdefault((head, tail), []).append(middle)
    return _join([f"{head} {_join(middles)}{tail}".strip() for (head, tail), middles in groups.items()])


def _relation(bracket: list[int], event: dict) -> str:
    """How a sharp call's bracket (a, b] sits against a known event (a step, or a bracket (c, d])."""
    a, b = bracket
    c, d = event["bracket"] if "bracket" in event else (event["step"], event["step"])
    if (a, b) == (c, d):
        return f"the same interval as {event['name']}"
    if a < d and c < b or (c == d and a < c <= b):
        return f"overlapping {event['name']} ({c}, {d}]" if c != d else f"containing {event['name']} (step {c})"
    if a >= d:
        return f"after {event['name']} ({c}, {d}]" if a > d else f"right after {event['name']} ({c}, {d}]"
    return f"before {event['name']} ({c}, {d}]"


def compose_answer(rows, events: list[dict], trust: list[str]) -> list[str]:
    """The report's opening answer as plain sentences, built from the verdict rows, the known events and the
    diagnostics notes: how many signals change and how; every sharp call grouped by bracket, with its strongest
    effect and the adjusted p-values, and where it sits against the known events; the gradual, non-monotonic and
    unresolved ones; the family-wise control; what the diagnostics say about trusting it."""
    measured = [r for r in rows if r.kind != "not run"]
    if not measured:
        return ["No signal was measured in this run yet: every verdict below is 'not run'."]
    by_kind: dict[str, list] = {}
    for row in measured:
        by_kind.setdefault(row.kind, []).append(row)
    counts = ", ".join(f"{len(by_kind[k])} {KIND_WORDS[k]}" for k in KINDS if k in by_kind)
    other = [k for k in by_kind if k not in KINDS]
    if other:
        counts += ", " + ", ".join(f"{len(by_kind[k])} {k}" for k in other)
    n_not_run = len(rows) - len(measured)
    out = [f"{len(measured)} signals measured over {_steps_text(measured)}: {counts}"
           + (f" ({n_not_run} not run)." if n_not_run else ".")]
    groups: dict[tuple, list] = {}
    for row in by_kind.get("sharp", []):
        groups.setdefault(tuple(row.bracket) if row.bracket else (), []).append(row)
    for bracket, group in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        strongest = max(group, key=lambda r: abs(r.effect) if r.effect is not None else -1.0)
        where = f"within ({bracket[0]}, {bracket[1]}]" if bracket else "(no bracket recorded)"
        sentence = f"Sharp: {_names(group)} {'changes' if len(group) == 1 else 'change'} {where}"
        effect = _interval(strongest.effect, strongest.effect_low, strongest.effect_high)
        if effect:
            sentence += f"; the largest effect is {effect} ({strongest.signal.split(';')[0]}, 95% CI)"
        ps = [r.p_adjusted for r in group if r.p_adjusted is not None]
        if ps:
            sentence += f", adjusted p {_p(max(ps))}" + (" or less for each" if len(ps) > 1 else "")
        elif strongest.p_value is not None:
            sentence += f", p {_p(strongest.p_value)} (not adjusted)"
        if bracket:
            relations = [_relation(list(bracket), e) for e in events]
            if relations:
                sentence += "; " + "; ".join(relations)
        out.append(sentence + ".")
    if by_kind.get("unresolved"):
        group = by_kind["unresolved"]
        brackets = sorted({tuple(r.bracket) for r in group if r.bracket})
        where = " or ".join(f"({a}, {b}]" for a, b in brackets) or "one interval"
        out.append(f"Not resolved: {_names(group)} {'changes' if len(group) == 1 else 'change'} within {where}, "
                   "an interval this schedule cannot split; checkpoints inside it would decide sharp or gradual "
                   "(codedyn refine proposes them).")
    for kind, text in (("gradual", "Gradual (spread over several checkpoint intervals)"),
                       ("non_monotonic", "Non-monotonic (rises and falls significantly)")):
        if by_kind.get(kind):
            out.append(f"{text}: {_names(by_kind[kind])}.")
    if by_kind.get("no_change") and len(by_kind["no_change"]) <= 3:  # longer lists: counted in the first sentence
        out.append(f"No significant change: {_names(by_kind['no_change'])}.")
    fwer = next((r.fwer for r in measured if r.fwer), "")
    out.append(f"Confidence: {fwer}." if fwer else
               "Confidence: each call controls its own comparisons at the 5% level; the table is not adjusted as a "
               "whole, so expect about one false call per 20 curves.")
    return out + ([" ".join(trust)] if trust else [])  # the trust notes as one paragraph, to keep the answer short


def _steps_text(rows) -> str:
    steps = max((r.steps for r in rows), key=len, default=[])
    return f"{len(steps)} checkpoints ({steps[0]} to {steps[-1]})" if steps else "the checkpoints"


_WARNING_NAMES = (("diverged", "diverged"), ("drift/noise", "noise-dominated (drift/noise below threshold)"),
                  ("below the init", "mostly below the initial loss"), ("R-hat", f"split R-hat above {MAX_RHAT:g}"))


def trust_notes(context: ReportContext, rows) -> list[str]:
    """What the diagnostics say about trusting the calls: chain warnings (how many, which kind, at which steps),
    checkpoints without an LLC, and whether the sampler was calibrated."""
    import pandas as pd

    notes = []
    path = context.run_dir / "influence" / "diagnostics.parquet"
    if path.is_file():
        table = pd.read_parquet(path)
        found: dict[str, set] = {}
        warned = 0
        for _, row in table.iterrows():
            warnings = diagnostic_warnings(row)
            warned += bool(warnings)
            for warning in warnings:
                name = next((n for key, n in _WARNING_NAMES if key in warning), warning)
                found.setdefault(name, set()).add(int(row["step"]))
        if warned:
            kinds = "; ".join(f"{name} at step {', '.join(str(s) for s in sorted(steps))}"
                              for name, steps in found.items())
            notes.append(f"Diagnostics: {warned} of {len(table)} SGLD chains carry a warning ({kinds}); trust "
                         "calls resting on those checkpoints less.")
        else:
            notes.append(f"Diagnostics: all {len(table)} SGLD chains pass the checks (no divergence, drift/noise, "
                         f"below-init or R-hat > {MAX_RHAT:g} warning).")
    llc = next((r for r in rows if r.curve == "LLC/llc"), None)
    table_path = context.run_dir / "influence" / "influence.parquet"
    if llc is not None and llc.steps and table_path.is_file():
        from codedyn.analysis.curves import llc_from_table

        found = llc_from_table(pd.read_parquet(table_path), llc.steps)
        if found is not None and found[3]:
            note = found[3][0].upper() + found[3][1:]
            missing = {s for s, v in zip(llc.steps, found[0], strict=True) if v != v}
            if llc.bracket and any(llc.bracket[0] <= s <= llc.bracket[1] for s in missing):
                note += (f"; the LLC's call within ({llc.bracket[0]}, {llc.bracket[1]}] rests on it, so it is no "
                         "evidence of a change in the LLC")
            notes.append(note + ".")
    calibration = _read_json(context.run_dir / "calibration" / "calibration.json")
    if calibration is None:
        notes.append("SGLD settings: the preset's (codedyn calibrate not run).")
    elif not calibration.get("usable", False):
        notes.append("The SGLD calibration found no setting that passes every criterion: "
                     + "; ".join(calibration.get("reasons", [])) + ".")
    return notes


# ------------------------------------------------------------------------------------------------ verdict table


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
            f'aria-label="{_esc(label)}">{"".join(parts)}</svg>')


def _verdict_section(context: ReportContext, rows) -> str:
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
            f'<tr class="{_esc(cls)}"><td>{_esc(row.signal.split(";")[0])}'
            + (f' <span class=aside>({_esc(row.signal.split(";", 1)[1].strip())})</span>' if ";" in row.signal
               else "")
            + f'</td><td class=sparkcell>{sparkline(row)}</td><td data-curve="{_esc(row.curve)}">{_esc(row.verdict)}'
            f"</td><td class=nw>{_esc(bracket)}</td>"
            f"<td class=nw>{_esc(_interval(row.effect, row.effect_low, row.effect_high))}</td>"
            f"<td class=nw>{_esc(p)}</td></tr>")
    body.append("</tbody></table>")
    return "".join(body)


def _test_description(rows) -> str:
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
    evidence = "".join(f"<li><b>{_esc(r.signal.split(';')[0])}</b>: {_esc('; '.join(r.evidence))}</li>"
                       for r in rows if r.evidence)
    return ("<div class=method><p><b>How each verdict is made</b>"
            + (f" (test {_esc(', '.join(tests))})" if tests else "") + f": {_esc(text)}</p>"
            + (f"<p><b>Family-wise control:</b> {_esc(fwer)}.</p>" if fwer else "")
            + "<p>Bracket (a, b]: the change happened after checkpoint a and by checkpoint b; the data cannot place "
            "it more precisely. The sparkline puts every checkpoint at equal distance; a shaded span is a sharp "
            f"call's bracket. Sources: {_esc(', '.join(sources))}.</p>"
            + (f"<details><summary>Evidence behind every verdict</summary><ul>{evidence}</ul></details>"
               if evidence else "") + "</div>")


# ------------------------------------------------------------------------------------------------ sections


def _dataset_section(context: ReportContext) -> str:
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
    return (_table(["field", "value"], facts) + "<h3>Splits (by problem)</h3>"
            + _table(["split", "problems", "correct", "incorrect"], splits)
            + "<h3>Mutation operators of the incorrect samples</h3>" + _table(["operator", "samples"], operators))


def _figures(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = "**/*.png" if recursive else "*.png"
    return sorted(p for p in folder.glob(pattern) if p.is_file())


def _links(folder: Path, run_dir: Path) -> str:
    """Relative links to the interactive HTML pages and animations of an experiment."""
    items = []
    for path in sorted([*folder.glob("*.html"), *folder.glob("*.gif")]):
        rel = path.relative_to(run_dir).as_posix()
        kind = "interactive page" if path.suffix == ".html" else "animation"
        items.append(f'<li><a href="{_esc(rel)}">{_esc(rel)}</a> ({kind}, opens next to this report)</li>')
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
                       + _table([str(c) for c in wide.columns], wide.astype(object).values.tolist()))
        return "".join(out)
    if name == "emergence" and (folder / "emergence.parquet").is_file():
        table = pd.read_parquet(folder / "emergence.parquet")
        needed = {"step", "layer", "predictor", "split", "metric", "value", "low", "high"}
        if needed <= set(table.columns):
            key = table[(table["split"] == "validation") & table["predictor"].isin(["best_latent", "probe"])]
            key = key.sort_values(["layer", "metric", "predictor", "step"])
            out.append("<h3>Validation-split detection of incorrect code (best SAE latent vs linear probe)</h3>"
                       + _frame_table(key[["layer", "metric", "predictor", "step", "value", "low", "high"]],
                                      "emergence/emergence.parquet", limit=80))
            out.append(_operator_table(folder))
            skip = {"emergence.parquet", "bootstrap_replicates.npz", "operators.parquet"}
            return "".join(out) + "".join(
                f"<h3>{_esc(p.name)}</h3>" + _frame_table(pd.read_parquet(p), p.name)
                for p in sorted(folder.glob("*.parquet")) if p.name not in skip)
    if name == "susceptibility" and list(folder.glob("opposite_responders*.parquet")):
        for path in sorted(folder.glob("opposite_responders*.parquet")):
            ranked = pd.read_parquet(path)
            opposite = ranked[ranked["opposite"]]
            estimator = path.stem.removeprefix("opposite_responders").lstrip("_") or "covariance"
            out.append(f"<h3>Opposite responders ({_esc(estimator)} estimator)</h3><p>{len(opposite)} (component, "
                       "checkpoint) pairs whose χ_correct and χ_incorrect have opposite signs with both 95% CIs "
                       "excluding zero.</p>")
            top = (opposite if len(opposite) else ranked).sort_values(["step", "gap"], ascending=[True, False])
            cols = ["step", "component", "chi_a", "low_a", "high_a", "chi_b", "low_b", "high_b", "gap", "opposite"]
            out.append(("<p>Largest gaps |χ_correct − χ_incorrect| (a = correct, b = incorrect), top 3 per "
                        "checkpoint:</p>" if not len(opposite) else "")
                       + _frame_table(top[[c for c in cols if c in top.columns]].groupby("step").head(3),
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
                       "it)</h3>" + _table([str(c) for c in wide.columns], wide.astype(object).values.tolist())
                       + "<p class=note>Every token's coordinates: embryology/embedding.parquet.</p>")
            return "".join(out)
    skip = {"diagnostics.parquet"}
    for path in sorted(folder.glob("*.parquet")):
        if path.name in skip:
            continue
        out.append(f"<h3>{_esc(path.name)}</h3>" + _frame_table(pd.read_parquet(path), path.name))
    return "".join(out)


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
        out.append(f"<h3>Layer {_esc(layer)}: fraction of validation mutants the best latent flags, by operator "
                   "(value [95% CI])</h3>"
                   + _table([str(c) for c in wide.columns], wide.fillna("").astype(object).values.tolist()))
    return "".join(out)


def _experiment_section(name: str, title: str, context: ReportContext, susceptibility_calls: dict) -> str:
    folder = context.run_dir / name
    if not folder.is_dir():
        return _section(name, title, _not_run(title))
    parts = [f"<p class=file>{_esc(folder.relative_to(context.run_dir).as_posix())}/</p>"]
    transitions = _read_json(folder / "transitions.json")
    parts += [_img(p) for p in sorted(_figures(folder), key=_figure_order)]
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
    return _section(name, title, "".join(parts))


def _calls_table(calls: dict, first: str, evidence: bool = False) -> str:
    from codedyn.analysis.verdicts import normalise_call

    rows = []
    for key, found in sorted(calls.items()):
        call = normalise_call(found)
        bracket = f"({call['bracket'][0]}, {call['bracket'][1]}]" if call["bracket"] else ""
        p = call["p_adjusted"] if call["p_adjusted"] is not None else call["p_value"]
        row = [key, call["verdict"], bracket, _interval(call["effect"], call["effect_low"], call["effect_high"]),
               "" if p is None else f"{p:.3g}"]
        rows.append(row + (["; ".join(call["evidence"])] if evidence else []))
    return _table([first, "verdict", "bracket", "effect [95% CI]", "p (adjusted where available)"]
                  + (["evidence"] if evidence else []), rows)


def _llc_section(context: ReportContext) -> str:
    import pandas as pd

    from codedyn.analysis.curves import llc_from_table
    from codedyn.analysis.events import known_events
    from codedyn.report.plots import save_figure, training_curves

    path = context.run_dir / "influence" / "influence.parquet"
    if not path.is_file():
        return _not_run("LLC (estimated from the influence posteriors)")
    table = pd.read_parquet(path)
    llc = table[table["quantity"] == "LLC"].sort_values("step")
    if llc.empty:
        return _not_run("LLC")
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
    return (_img(png) + (f"<p class=note>{_esc(note)}.</p>" if note else "")
            + _table(["step", "LLC", "95% CI"], rows))


def _calibration_section(context: ReportContext) -> str:
    import pandas as pd

    folder = context.run_dir / "calibration"
    summary = _read_json(folder / "calibration.json")
    if summary is None:
        return ("<p class=notrun>SGLD calibration: not run for this study (<code>codedyn calibrate</code>); the "
                "sampler settings below are the preset's.</p>")
    chosen = summary["chosen"]
    status = "passes every criterion" if summary["usable"] else "fails: " + "; ".join(summary["reasons"])
    parts = [f"<p>Chosen: ε = {_esc(chosen['lr'])}, nβ = {_esc(chosen['n_beta'])}, γ = "
             f"{_esc(chosen['localization'])} ({_esc(status)}), from {_esc(summary['n_settings'])} settings on "
             f"checkpoints {_esc(summary['steps'])} with {_esc(summary['chain_length'])}; "
             f"{_esc(summary['n_passing'])} pass every criterion, {_esc(summary['n_rejected'])} rejected. Preset: "
             f"<code>{_esc(summary['preset'])}</code>.</p>",
             f"<details><summary>Scoring rules</summary><pre>{_esc(summary['rules'])}</pre></details>"]
    scores_path = folder / "scores.parquet"
    if scores_path.is_file():
        scores = pd.read_parquet(scores_path)
        keep = [c for c in scores.columns if c not in {"grid_index", "chosen"}]
        parts.append(_frame_table(scores[keep], "calibration/scores.parquet", limit=20))
    parts += [_img(p) for p in _figures(folder)]
    return "".join(parts)


def _config_section(context: ReportContext) -> str:
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
        extra = f"<h3>Calibration recorded in the manifest</h3><pre>{_esc(json.dumps(calibration, indent=2))}</pre>"
    return (_table(["field", "value"], facts)
            + "<h3>Sampler (one set for every checkpoint)</h3>"
            + _table(["hyperparameter", "value"], [[k, v] for k, v in sampling.items()])
            + "<h3>Package versions</h3>" + _table(["package", "version"], packages) + extra
            + f"<details><summary>Resolved configuration</summary><pre>{_esc(resolved)}</pre></details>")


def diagnostic_warnings(row) -> list[str]:
    """Warnings for one chain's diagnostics row (influence/diagnostics.parquet)."""
    warnings = []
    if not bool(row["healthy"]):
        warnings.append("diverged")
    if row["drift_to_noise"] == row["drift_to_noise"] and row["drift_to_noise"] < MIN_DRIFT_TO_NOISE:
        warnings.append(f"drift/noise {row['drift_to_noise']:.2g} < {MIN_DRIFT_TO_NOISE:g}: noise-dominated")
    if row["fraction_below_init"] > MAX_FRACTION_BELOW_INIT:
        warnings.append(f"{100 * row['fraction_below_init']:.0f}% of draws below the init loss")
    if row["split_rhat"] == row["split_rhat"] and row["split_rhat"] > MAX_RHAT:
        warnings.append(f"R-hat {row['split_rhat']:.3g} > {MAX_RHAT:g}")
    return warnings


def _diagnostics_section(context: ReportContext) -> str:
    import pandas as pd

    path = context.run_dir / "influence" / "diagnostics.parquet"
    if not path.is_file():
        return _not_run("Sampling diagnostics (written with the influence posteriors)")
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
    trace_html = "".join(_img(p) for p in traces)
    return (head + _table(["step", "chain", "healthy", "init loss", "mean loss after burn-in", "fraction below init",
                           "drift/noise", "split R-hat", "ESS", "warnings"], rows, classes)
            + (f"<details><summary>Loss traces per checkpoint ({len(traces)})</summary>{trace_html}</details>"
               if traces else ""))


def _timings_section(context: ReportContext) -> str:
    timings = _read_json(context.run_dir / TIMINGS_FILE)
    if timings is None:
        return "<p class=notrun>No timings recorded (<code>timings.json</code> absent).</p>"

    def flatten(prefix: str, value: Any) -> list[list[Any]]:
        if isinstance(value, dict):
            return [r for k, v in value.items() for r in flatten(f"{prefix}{k}." if prefix or k else k, v)]
        if isinstance(value, list):
            return [[prefix.rstrip("."), json.dumps(value)]]
        return [[prefix.rstrip("."), value]]

    return _table(["entry", "value"], flatten("", timings))


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:1.2em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.45em;margin:.2em 0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
header p{margin:.2em 0;font-size:.85em;color:#555}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em;max-width:100%}
th,td{border:1px solid #ddd;padding:.25em .5em;vertical-align:top;text-align:left}
th{background:#f3f3f3}tr.warn td{background:#fff3e0}tr.notrun td,tr.not-run td{color:#888}
table.verdicts{font-size:.78em;width:100%;line-height:1.25}
table.verdicts td,table.verdicts th{padding:.05em .45em;vertical-align:middle}.aside{color:#777;font-size:.9em}
.nw{white-space:nowrap}
table.verdicts tr.sharp td{background:#fdebe1}table.verdicts tr.unresolved td{background:#f1f1f1}
td.sparkcell{padding:1px .2em;width:122px;line-height:0}svg.spark{display:block}
#answer{background:#f5f8fc;border-left:4px solid #0072B2;padding:.35em 1em;margin:.5em 0;font-size:.95em}
#answer h2{border:0;margin:.1em 0;font-size:1.1em}#answer p{margin:.15em 0}
#summary h2{margin:.5em 0 .2em;font-size:1.1em}.method{font-size:.85em;color:#333}.method p{margin:.3em 0}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#333;max-width:60em}
.file{font-family:monospace;font-size:.8em;color:#777;display:block;overflow-wrap:anywhere}.notrun{color:#888;font-style:italic}
.note{font-size:.8em;color:#666}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em;
white-space:pre-wrap}
.scroll{overflow-x:auto;max-width:100%}
nav{font-size:.8em}nav a{margin-right:.7em}
"""




def _events_line(events: list[dict]) -> str:
    if not events:
        return ""
    items = []
    for event in events:
        where = (f"within ({event['bracket'][0]}, {event['bracket'][1]}]" if "bracket" in event
                 else f"at step {event['step']}")
        items.append(f"{event['name']} {where}" + (f" ({event['detail']})" if event.get("detail") else ""))
    return f"<p class=method><b>Known events</b> (grey in every figure): {_esc('; '.join(items))}.</p>"


def render_report(context: ReportContext) -> tuple[str, list[dict]]:
    """The report page and the verdict rows it shows: the answer first, then the validation slot, the verdict
    table (one row per signal) with the test described once, then the evidence section by section."""
    from codedyn.analysis.events import known_events
    from codedyn.analysis.verdicts import verdict_rows
    from codedyn.analysis.yardstick import write_yardstick
    from codedyn.report.validation import answer_sentences, render_validation

    rows, susceptibility_calls = verdict_rows(context.run_dir)
    events = known_events(context)
    found = write_yardstick(context.run_dir)  # onsets, relations, co-movement; stored in <run>/validation/
    shape = compose_answer(rows, events, trust_notes(context, rows))
    answer = (f"<p class=lead>{_esc(' '.join(answer_sentences(found)))}</p>"
              + f"<p><b>Shape of each curve</b> (sharp or gradual, one family): {_esc(shape[0])}</p>"
              + "".join(f"<p>{_esc(s)}</p>" for s in shape[1:]))
    summary = _verdict_section(context, rows) + _events_line(events) + _test_description(rows)
    sections = [("summary", "Verdict per signal: sharp or gradual?", summary),
                ("dataset", "Dataset card", _dataset_section(context))]
    known = {name for name, _ in EXPERIMENTS}
    experiments = [_experiment_section(name, title, context, susceptibility_calls) for name, title in EXPERIMENTS]
    others = sorted(p.name for p in context.run_dir.iterdir()
                    if p.is_dir() and p.name not in known | NOT_EXPERIMENTS and not p.name.startswith("."))
    experiments += [_experiment_section(name, name, context, {}) for name in others]
    from codedyn.report.rllc import rllc_section

    tail = [("llc", "Local learning coefficient", _llc_section(context)),
            ("rllc", "Refined LLCs per component and distribution", rllc_section(context.run_dir)),
            ("calibration", "SGLD calibration", _calibration_section(context)),
            ("hyperparameters", "Hyperparameters and provenance", _config_section(context)),
            ("diagnostics", "Sampling diagnostics", _diagnostics_section(context)),
            ("timings", "Timings", _timings_section(context))]
    nav_items = [(a, t) for a, t, _ in sections] + [(n, t) for n, t in EXPERIMENTS] + [(o, o) for o in others] + [
        (a, t) for a, t, _ in tail]
    nav = "<nav>" + "".join(f'<a href="#{_esc(a)}">{_esc(t.split(":")[0])}</a>' for a, t in nav_items) + "</nav>"
    name = context.config.get("name", context.run_dir.name)
    page = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>codedyn report: {_esc(name)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>codedyn study report: {_esc(name)}</h1>",
        f"<p>Suite {_esc(context.manifest.get('suite', '?'))}, checkpoints "
        f"{_esc(context.manifest.get('steps', '?'))}; code "
        f"{_esc(context.manifest.get('git_commit') or 'unknown commit')}; run folder "
        f"<span class=file style=display:inline>{_esc(context.run_dir)}</span></p>{nav}</header>",
        f'<section id="answer"><h2>Answer for this run</h2>{answer}</section>',
        "<!-- validation table (codedyn.report.validation) -->",
        render_validation(found),
        *[_section(a, t, b) for a, t, b in sections],
        *experiments,
        *[_section(a, t, b) for a, t, b in tail],
        "</body></html>",
    ]
    return "\n".join(page), [r.to_dict() for r in rows]


def _check_finished(run_dir: Path) -> None:
    """A report of a folder is only written for a finished run: one sentence otherwise, before any work."""
    from codedyn.runs.layout import RUN_FILE

    status = (_read_json(run_dir / RUN_FILE) or {}).get("status") if run_dir.is_dir() else None
    if status != "finished":
        what = ("does not exist" if not run_dir.exists() else "is not a codedyn run folder (no run.json)"
                if status is None else f"holds a run that is not finished (status {status!r})")
        raise FileNotFoundError(f"{run_dir} {what}: run `codedyn run` to finish it before writing its report")


def write_report(study, path: Path | None = None) -> Path:
    """Write ``<run>/report.html`` (or ``path``) for a :class:`~codedyn.experiments.study.Study` or a run folder,
    plus ``<run>/verdicts.json`` (the verdict rows, machine-readable). Returns the report's path."""
    from codedyn.runs.store import write_json, write_text

    if isinstance(study, str | Path):
        _check_finished(Path(study))
        context = _context_from_run_dir(Path(study))
    else:
        context = _context_from_study(study)
    page, verdicts = render_report(context)
    out = Path(path) if path is not None else context.run_dir / REPORT_FILE
    write_text(out, page)
    write_json(context.run_dir / "verdicts.json", verdicts)
    return out
