"""``<run>/report.html``: one self-contained page per study (opens from disk, no network, no scripts).

Sections, in order: the verdict table (one row per signal, see :mod:`codedyn.report.verdicts`); the dataset card;
one section per experiment folder (Experiment 1 influence, 2 emergence, 3 susceptibility, 4 embryology, then any
other result folder), each with its figures and key tables with confidence intervals, or "not run"; the LLC; the
SGLD calibration when ``codedyn calibrate`` ran; the hyperparameters (resolved config, manifest: git commit,
package versions, seeds); the sampling diagnostics per checkpoint and chain with warnings; timings when
``<run>/timings.json`` exists.

Figures are embedded as base64 PNG. Interactive HTML and GIF files of an experiment are linked by relative path
(they sit next to the report). Every piece of text is escaped. Figures the report draws itself (the LLC curve) are
saved as PNG and PDF under ``<run>/report/``.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
NOT_EXPERIMENTS = {"units", "calibration", REPORT_FIGURES, "traces"}

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
    manifest = _read_json(run_dir / "manifest.json") or {}
    return ReportContext(run_dir, study.config.model_dump(mode="json"), manifest, study.dataset.card,
                         study.suite_record)


def _context_from_run_dir(run_dir: Path) -> ReportContext:
    """Rebuild the context from ``<run>/manifest.json``; the dataset card and toy-suite record are looked up in the
    cache (absent ones are reported as such in the page, not raised)."""
    from codedyn.data.pairs import CARD_JSON, resolve_dataset_path
    from codedyn.models.toy import SUITE_FILE
    from codedyn.paths import cache_dir

    run_dir = Path(run_dir)
    manifest = _read_json(run_dir / "manifest.json")
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


def _img(path: Path, caption: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    caption = caption or Path(path).stem.replace("_", " ")
    return (f'<figure><img alt="{_esc(caption)}" src="data:image/png;base64,{data}">'
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
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


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


# ------------------------------------------------------------------------------------------------ sections


def _verdict_section(context: ReportContext, rows) -> str:
    body = ["<table class=verdicts><thead><tr><th>signal</th><th>verdict</th><th>evidence</th><th>test</th>"
            "</tr></thead><tbody>"]
    for row in rows:
        evidence = "".join(f"<li>{_esc(e)}</li>" for e in row.evidence) or "<li>none</li>"
        cls = "sharp" if row.verdict.startswith("phase transition") else "notrun" if row.verdict == "not run" else ""
        body.append(
            f'<tr class="{cls}"><td>{_esc(row.signal)}<br><span class=file>{_esc(row.source)}</span></td>'
            f"<td data-curve=\"{_esc(row.curve)}\">{_esc(row.verdict)}</td><td><ul>{evidence}</ul></td>"
            f"<td class=test>{_esc(row.test)}</td></tr>"
        )
    body.append("</tbody></table>")
    formation = (context.suite_record or {}).get("formation") or {}
    if formation.get("formed"):
        body.append(f"<p>Reference event of this suite: induction heads formed between step "
                    f"{_esc(formation['last_step_before'])} and {_esc(formation['first_formed_step'])} "
                    f"({_esc(formation['criterion'])}).</p>")
    return "".join(body)


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
            skip = {"emergence.parquet", "bootstrap_replicates.npz"}
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
    skip = {"diagnostics.parquet"}
    for path in sorted(folder.glob("*.parquet")):
        if path.name in skip:
            continue
        out.append(f"<h3>{_esc(path.name)}</h3>" + _frame_table(pd.read_parquet(path), path.name))
    return "".join(out)


def _experiment_section(name: str, title: str, context: ReportContext, susceptibility_calls: dict) -> str:
    folder = context.run_dir / name
    if not folder.is_dir():
        return _section(name, title, _not_run(title))
    parts = [f"<p class=file>{_esc(folder.relative_to(context.run_dir).as_posix())}/</p>"]
    transitions = _read_json(folder / "transitions.json")
    figures = [p for p in _figures(folder)]
    parts += [_img(p) for p in figures]
    parts.append(_links(folder, context.run_dir))
    parts.append(_key_tables(name, folder))
    if name == "susceptibility" and susceptibility_calls:
        rows = [[k, v["verdict"], f"{v['change_p_value']:.3g}" if "change_p_value" in v else ""]
                for k, v in sorted(susceptibility_calls.items())]
        parts.append("<details><summary>Transition call per component and distribution</summary>"
                     + _table(["component / distribution", "verdict", "p (any change)"], rows) + "</details>")
    if transitions:
        rows = [[k, v.get("verdict", ""), "; ".join(e.get("detail", "") for e in v.get("events", []))]
                for k, v in transitions.items()]
        parts.append("<details><summary>Every curve's calls (transitions.json)</summary>"
                     + _table(["curve", "verdict", "events"], rows) + "</details>")
    if len(parts) == 1:
        parts.append("<p class=notrun>The folder exists but holds no figures or tables yet.</p>")
    return _section(name, title, "".join(parts))


def _llc_section(context: ReportContext) -> str:
    import pandas as pd

    from codedyn.report.plots import save_figure, training_curves

    path = context.run_dir / "influence" / "influence.parquet"
    if not path.is_file():
        return _not_run("LLC (estimated from the influence posteriors)")
    table = pd.read_parquet(path)
    llc = table[table["quantity"] == "LLC"].sort_values("step")
    if llc.empty:
        return _not_run("LLC")
    events = []
    formation = (context.suite_record or {}).get("formation") or {}
    if formation.get("formed"):
        events.append({"step": formation["first_formed_step"], "kind": "transition", "label": "induction heads"})
    figure = training_curves(llc["step"].tolist(), {"LLC": (llc["value"], llc["low"], llc["high"])},
                             ylabel="LLC = nβ (E[L] − L(w*))", title="Local learning coefficient over training",
                             events=events, zero_line=False)
    png, _ = save_figure(figure, context.run_dir / REPORT_FIGURES / "llc")
    rows = [[int(r.step), f"{r.value:.4g}", f"[{r.low:.4g}, {r.high:.4g}]"] for r in llc.itertuples()]
    return (_img(png, "LLC per checkpoint with 95% CI (chain + block bootstrap)")
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
    timings = _read_json(context.run_dir / "timings.json")
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
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ddd;padding:.25em .5em;vertical-align:top;text-align:left}
th{background:#f3f3f3}tr.warn td{background:#fff3e0}tr.sharp td{background:#e8f5e9}tr.notrun td{color:#888}
td.test{font-size:.8em;color:#555;max-width:22em}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#444}
.file{font-family:monospace;font-size:.8em;color:#777}.notrun{color:#888;font-style:italic}
.note{font-size:.8em;color:#666}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em}
nav a{margin-right:1em}
"""


def render_report(context: ReportContext) -> tuple[str, list[dict]]:
    """The report page and the verdict rows it shows."""
    from codedyn.report.validation import validation_section
    from codedyn.report.verdicts import verdict_rows

    rows, susceptibility_calls = verdict_rows(context.run_dir)
    sections = [("summary", "Summary: sharp or gradual?", _verdict_section(context, rows)),
                ("dataset", "Dataset card", _dataset_section(context))]
    known = {name for name, _ in EXPERIMENTS}
    experiments = [_experiment_section(name, title, context, susceptibility_calls) for name, title in EXPERIMENTS]
    others = sorted(p.name for p in context.run_dir.iterdir()
                    if p.is_dir() and p.name not in known | NOT_EXPERIMENTS and not p.name.startswith("."))
    experiments += [_experiment_section(name, name, context, {}) for name in others]
    tail = [("llc", "Local learning coefficient", _llc_section(context)),
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
        f"<title>codedyn report: {_esc(name)}</title><style>{CSS}</style></head><body>",
        f"<h1>codedyn study report: {_esc(name)}</h1>",
        f"<p>Suite {_esc(context.manifest.get('suite', '?'))}, checkpoints "
        f"{_esc(context.manifest.get('steps', '?'))}; run folder <span class=file>{_esc(context.run_dir)}</span>; "
        f"code {_esc(context.manifest.get('git_commit') or 'unknown commit')}.</p>",
        nav,
        validation_section(context, rows),  # the model organism's ground truth against every signal
        *[_section(a, t, b) for a, t, b in sections],
        *experiments,
        *[_section(a, t, b) for a, t, b in tail],
        "</body></html>",
    ]
    return "\n".join(page), [r.to_dict() for r in rows]


def write_report(study, path: Path | None = None) -> Path:
    """Write ``<run>/report.html`` (or ``path``) for a :class:`~codedyn.experiments.study.Study` or a run folder,
    plus ``<run>/verdicts.json`` (the verdict rows, machine-readable). Returns the report's path."""
    from codedyn.runs.store import write_json, write_text

    context = _context_from_run_dir(Path(study)) if isinstance(study, str | Path) else _context_from_study(study)
    page, verdicts = render_report(context)
    out = Path(path) if path is not None else context.run_dir / REPORT_FILE
    write_text(out, page)
    write_json(context.run_dir / "verdicts.json", verdicts)
    return out
