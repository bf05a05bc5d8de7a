"""``<run>/report.html``: one self-contained page per study (opens from disk, no network, no scripts), assembled
here from the report's modules, each with one job.

The page answers first. In order: **the answer for this run**: when (and whether) correctness emerged and which
signals find it, from the yardstick (:mod:`codedyn.report.validation`), then the shape of each curve and how far to
trust it (:mod:`codedyn.report.answer`); the **validation table** (ground truth against every signal); **the verdict
table** (one row per signal: a sparkline of its curve, the verdict, bracket, effect size with interval and adjusted
p; the test described once under it); the dataset card; one section per registered experiment with a title
(:mod:`codedyn.experiments.registry`, in its order), then one per other result folder, each with its captioned
figures and folded per-checkpoint tables, or "not run"; the LLC; the SGLD calibration when ``codedyn calibrate``
ran; the hyperparameters (resolved config, manifest); the sampling diagnostics per checkpoint and chain; timings
(:mod:`codedyn.report.sections`). HTML pieces: :mod:`codedyn.report.markup`.

Figures are embedded as base64 PNG (reduced to 256 colours where that is smaller), sparklines as inline SVG.
Interactive HTML and GIF files of an experiment are linked by relative path (they sit next to the report). Every
piece of text is escaped. Figures the report draws itself (the LLC curve) are saved as PNG and PDF under
``<run>/report/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from codedyn.experiments.registry import EXPERIMENTS, Experiment, signal_sources
from codedyn.report.answer import compose_answer, trust_notes
from codedyn.report.context import ReportContext, context_from_run_dir, context_from_study
from codedyn.report.markup import esc, section
from codedyn.report.sections import (
    NOT_EXPERIMENTS,
    all_captions,
    calibration_section,
    config_section,
    dataset_section,
    diagnostics_section,
    events_line,
    experiment_section,
    llc_section,
    test_description,
    timings_section,
    verdict_section,
)
from codedyn.runs.store import read_json

if TYPE_CHECKING:
    from codedyn.experiments.study import Study

REPORT_FILE = "report.html"

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

def render_report(context: ReportContext, experiments: Sequence[Experiment] = EXPERIMENTS) -> tuple[str, list[dict]]:
    """The report page and the verdict rows it shows: the answer first, then the validation slot, the verdict
    table (one row per signal) with the test described once, then the evidence section by section (one per
    registered experiment with a title, in registry order, then every other result folder)."""
    from codedyn.analysis.events import known_events
    from codedyn.analysis.verdicts import component_calls, verdict_rows
    from codedyn.analysis.yardstick import write_yardstick
    from codedyn.report.validation import answer_sentences, render_method_reasons, render_validation

    sources = signal_sources(experiments)
    rows, family = verdict_rows(context.run_dir, sources)
    susceptibility_calls = component_calls(family)
    events = known_events(context)
    found = write_yardstick(context.run_dir, sources)  # onsets, relations, co-movement; stored in <run>/validation/
    shape = compose_answer(rows, events, trust_notes(context, rows))
    answer = (f"<p class=lead>{esc(' '.join(answer_sentences(found)))}</p>" + render_method_reasons(found)
              + f"<p><b>Shape of each curve</b> (sharp or gradual, one family): {esc(shape[0])}</p>"
              + "".join(f"<p>{esc(s)}</p>" for s in shape[1:]))
    summary = verdict_section(context, rows) + events_line(events) + test_description(rows)
    sections = [("summary", "Verdict per signal: sharp or gradual?", summary),
                ("dataset", "Dataset card", dataset_section(context))]
    titled = [(e.name, e.title) for e in experiments if e.title is not None]
    captions = all_captions(experiments)
    known = {name for name, _ in titled}
    parts = [experiment_section(name, title, context, susceptibility_calls, captions) for name, title in titled]
    others = sorted(p.name for p in context.run_dir.iterdir()
                    if p.is_dir() and p.name not in known | NOT_EXPERIMENTS and not p.name.startswith("."))
    parts += [experiment_section(name, name, context, {}, captions) for name in others]
    from codedyn.report.rllc import rllc_section

    tail = [("llc", "Local learning coefficient", llc_section(context)),
            ("rllc", "Refined LLCs per component and distribution", rllc_section(context.run_dir)),
            ("calibration", "SGLD calibration", calibration_section(context)),
            ("hyperparameters", "Hyperparameters and provenance", config_section(context)),
            ("diagnostics", "Sampling diagnostics", diagnostics_section(context)),
            ("timings", "Timings", timings_section(context))]
    nav_items = [(a, t) for a, t, _ in sections] + titled + [(o, o) for o in others] + [
        (a, t) for a, t, _ in tail]
    nav = "<nav>" + "".join(f'<a href="#{esc(a)}">{esc(t.split(":")[0])}</a>' for a, t in nav_items) + "</nav>"
    name = context.config.get("name", context.run_dir.name)
    page = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>codedyn report: {esc(name)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>codedyn study report: {esc(name)}</h1>",
        f"<p>Suite {esc(context.manifest.get('suite', '?'))}, checkpoints "
        f"{esc(context.manifest.get('steps', '?'))}; code "
        f"{esc(context.manifest.get('git_commit') or 'unknown commit')}; run folder "
        f"<span class=file style=display:inline>{esc(context.run_dir)}</span></p>{nav}</header>",
        f'<section id="answer"><h2>Answer for this run</h2>{answer}</section>',
        "<!-- validation table (codedyn.report.validation) -->",
        render_validation(found),
        *[section(a, t, b) for a, t, b in sections],
        *parts,
        *[section(a, t, b) for a, t, b in tail],
        "</body></html>",
    ]
    return "\n".join(page), [r.to_dict() for r in rows]

def _check_finished(run_dir: Path) -> None:
    """A report of a folder is only written for a finished run: one sentence otherwise, before any work."""
    from codedyn.runs.layout import RUN_FILE

    status = (read_json(run_dir / RUN_FILE) or {}).get("status") if run_dir.is_dir() else None
    if status != "finished":
        what = ("does not exist" if not run_dir.exists() else "is not a codedyn run folder (no run.json)"
                if status is None else f"holds a run that is not finished (status {status!r})")
        raise FileNotFoundError(f"{run_dir} {what}: run `codedyn run` to finish it before writing its report")

def write_report(study: Study | Path | str, path: Path | None = None,
                 experiments: Sequence[Experiment] = EXPERIMENTS) -> Path:
    """Write ``<run>/report.html`` (or ``path``) for a :class:`~codedyn.experiments.study.Study` or a run folder,
    plus ``<run>/verdicts.json`` (the verdict rows, machine-readable), over the registered ``experiments``. Returns
    the report's path."""
    from codedyn.runs.store import write_json, write_text

    if isinstance(study, str | Path):
        _check_finished(Path(study))
        context = context_from_run_dir(Path(study))
    else:
        context = context_from_study(study)
    page, verdicts = render_report(context, experiments)
    out = Path(path) if path is not None else context.run_dir / REPORT_FILE
    write_text(out, page)
    write_json(context.run_dir / "verdicts.json", verdicts)
    return out
