"""The report's opening answer about the shape of each curve, and the notes on how far to trust it (the sampling
diagnostics, the LLC, the calibration). The answer about the known emergence is :mod:`codedyn.report.validation`'s.
"""

from __future__ import annotations

from codedyn.analysis.verdicts import KIND_WORDS, KINDS
from codedyn.report.context import ReportContext
from codedyn.report.markup import interval
from codedyn.runs.store import read_json

# Diagnostic thresholds behind the warnings of the sampling-diagnostics section.
MIN_DRIFT_TO_NOISE = 0.01

MAX_FRACTION_BELOW_INIT = 0.5

MAX_RHAT = 1.1

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
    where = f"(step {c})" if c == d else f"({c}, {d}]"
    if (a, b) == (c, d):
        return f"the same interval as {event['name']}"
    if a < d and c < b or (c == d and a < c <= b):
        return f"overlapping {event['name']} {where}" if c != d else f"containing {event['name']} {where}"
    if a >= d:
        return f"after {event['name']} {where}" if a > d else f"right after {event['name']} {where}"
    return f"before {event['name']} {where}"


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
        effect = interval(strongest.effect, strongest.effect_low, strongest.effect_high)
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
    calibration = read_json(context.run_dir / "calibration" / "calibration.json")
    if calibration is None:
        notes.append("SGLD settings: the preset's (codedyn calibrate not run).")
    elif not calibration.get("usable", False):
        notes.append("The SGLD calibration found no setting that passes every criterion: "
                     + "; ".join(calibration.get("reasons", [])) + ".")
    return notes

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
