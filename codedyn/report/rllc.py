"""The report section of the refined LLCs (:mod:`codedyn.experiments.rllc`; its figures:
:mod:`codedyn.figures.rllc`): figures embedded, the sum-versus-full sentence, the verdict counts and tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from codedyn.report.markup import esc, img

TABLE_ROWS = 30


def _frame(frame, columns: list[str]) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for _, row in frame.head(TABLE_ROWS).iterrows():
        cells = "".join(f"<td>{esc(f'{row[c]:.4g}' if isinstance(row[c], float) else row[c])}</td>"
                        for c in columns)
        body.append(f"<tr>{cells}</tr>")
    more = (f"<p class=note>{len(frame) - TABLE_ROWS} more rows in the parquet file.</p>"
            if len(frame) > TABLE_ROWS else "")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def rllc_section(run_dir: Path) -> str:
    """The HTML fragment of the refined-LLC results of a run, or a one-line "not run" note."""
    import pandas as pd

    from codedyn.experiments.rllc import RLLC_DIR, load_calls, sum_sentence

    folder = Path(run_dir) / RLLC_DIR
    if not (folder / "rllc.parquet").is_file():
        return ("<p class=notrun>not run (enable the <code>rllc</code> section of the config, or run "
                "<code>codedyn rllc</code>).</p>")
    table = pd.read_parquet(folder / "rllc.parquet")
    sums = pd.read_parquet(folder / "rllc_sum.parquet")
    calls = load_calls(folder)
    parts = [f"<p>Refined local learning coefficients of {table['component'].nunique() - 1} components on "
             f"{', '.join(dict.fromkeys(table['distribution']))} at {table['step'].nunique()} checkpoints: the "
             "LLC of the posterior in which only that component's weights move, with its loss on that sampling "
             "distribution (matched per-batch reference, healthy chains only, 95% bootstrap intervals).</p>",
             f"<p>{esc(sum_sentence(sums))}</p>"]
    missing = table[~np.isfinite(table["llc"].to_numpy(dtype=float))]
    if len(missing):
        parts.append(f"<p class=note>{len(missing)} of {len(table)} (checkpoint, component, distribution) cells "
                     f"have no LLC; their status says why (e.g. {esc(missing['status'].iloc[0])}).</p>")
    judged = {k: v for k, v in calls.items() if v.get("kind")}  # "no trajectory" calls carry no kind
    kinds = {}
    for call in judged.values():
        kinds[call["kind"]] = kinds.get(call["kind"], 0) + 1
    counts = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(kinds.items())) or "none"
    parts.append(f"<p>Trajectory verdicts (the calibrated change-point scan on the step axis) for the "
                 f"{len(judged)} (component, distribution) trajectories with an LLC at two checkpoints or more: "
                 f"{esc(counts)}; {len(calls) - len(judged)} have fewer than two checkpoints with an LLC.</p>")
    if judged:
        parts.append(_frame(pd.DataFrame([{"trajectory": k, "verdict": v["verdict"]} for k, v in sorted(
            judged.items())]), ["trajectory", "verdict"]))
    for name in ["rllc_heatmap", *sorted(p.stem for p in folder.glob("rllc_heads_*.png")),
                 *sorted(p.stem for p in folder.glob("rllc_curves_*.png")),
                 "rllc_correct_vs_incorrect", "rllc_clusters"]:
        if (folder / f"{name}.png").is_file():
            parts.append(img(folder / f"{name}.png", name.replace("_", " ")))
    parts.append("<h3>Sum of weight-refined LLCs beside the full LLC</h3>")
    parts.append(_frame(sums, ["step", "distribution", "sum_llc", "sum_low", "sum_high", "full_llc", "full_low",
                               "full_high", "ratio", "comparison"]))
    parts.append("<h3>Refined LLCs</h3>")
    parts.append(_frame(table, ["step", "component", "distribution", "llc", "low", "high", "status"]))
    return "".join(parts)
