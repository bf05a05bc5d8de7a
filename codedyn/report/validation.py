"""The report's validation section and its answer paragraph, formatted from the yardstick
(:mod:`codedyn.analysis.yardstick`, which computes every number here).

The table holds, for the model organism: the ground truth (the verdict contrast's onset, "defines the emergence"),
then every signal with its onset call (bracket, the change at the onset with its interval, the margin), its relation
to the emergence (leads / coincides / lags by k checkpoints, or does not find it: flat or not detected), its
co-movement with the behaviour (Spearman ρ and interval), its shape call from the run's one family, and the null
twin's onset call and co-movement beside it. Experiment 3's components are summarised in one row (every component in
a folded list below it).
"""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

from codedyn.analysis.curves import chi_group
from codedyn.analysis.onset import OnsetCall
from codedyn.analysis.yardstick import MORE, MethodReading, SignalRow, Yardstick, method_readings

_KIND_WORDS = {"onset": "onset", "flat": "flat", "not_detected": "not detected", "untestable": "not tested"}
SOURCE_NAMES = {"behaviour": "behaviour", "emergence": "Experiment 2", "influence": "Experiment 1",
                "susceptibility": "Experiment 3"}


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _bracket(call: OnsetCall | None) -> str:
    return f"({call.bracket[0]}, {call.bracket[1]}]" if call is not None and call.bracket else ""


def _number(x: float | None) -> str:
    return "" if x is None or x != x else f"{x:.3g}"


def change_text(call: OnsetCall) -> str:
    """The change (at the onset, else the largest) with its 95% interval, beside the margin."""
    if call.change is None:
        return ""
    text = f"{_number(call.change)} [{_number(call.change_low)}, {_number(call.change_high)}]"
    return text + (f" (margin ±{_number(call.margin)})" if call.margin else " (no margin)")


def noise_text(call: OnsetCall | None) -> str:
    """The curve's noise (smallest z·SE of its changes) against its margin: can the test resolve the margin?"""
    if call is None or call.noise is None:
        return ""
    if call.resolves is None:
        return f"±{_number(call.noise)}"
    verdict = "resolves it" if call.resolves else "too noisy to resolve it"
    return f"±{_number(call.noise)} vs ±{_number(call.margin)}: {verdict}"


def _co(row: SignalRow, null: bool = False) -> str:
    found = row.null_comovement if null else row.comovement
    return "" if found is None else found.text()


def _call_text(call: OnsetCall | None) -> str:
    if call is None:
        return ""
    if call.kind == "onset":
        return f"onset {_bracket(call)}"
    return {"flat": "flat", "not_detected": "not detected"}.get(call.kind, call.kind)


def _relation_text(row: SignalRow) -> str:
    text = row.relation
    if row.comovement is not None and row.comovement.tracks:
        text += ("; tracks the capability" if row.comovement.tracks > 0 else "; mirrors the capability")
    if row.null_departs:
        text += "; but the null twin departs too: a change of the data or of training, not of correctness"
    return text


def _row_cells(row: SignalRow, has_null: bool) -> list[str]:
    cells = [row.name, SOURCE_NAMES.get(row.source, row.source), _call_text(row.call), change_text(row.call),
             noise_text(row.call), _relation_text(row), _co(row), (row.shape or {}).get("verdict", "")]
    if has_null:
        cells += [_call_text(row.null_call), _co(row, null=True)]
    return cells


def _chi_summary(rows: list[SignalRow], has_null: bool) -> list[str]:
    """One line for every component's χ contrast: counts per call, the earliest onset (or the largest change)."""
    counts = Counter(_KIND_WORDS.get(r.call.kind, r.call.kind) for r in rows)
    onsets = sorted((r for r in rows if r.call.bracket), key=lambda r: r.call.bracket[1])
    shown = onsets[0] if onsets else max(rows, key=lambda r: abs(r.call.change or 0))
    what = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    tracks = sum(1 for r in rows if r.comovement is not None and r.comovement.tracks)
    group = chi_group(shown.name)
    resolving = sum(1 for r in rows if r.call.resolves)
    cells = [f"{group}, {len(rows)} components (shown: {shown.name.removeprefix(group).strip()})",
             "Experiment 3", what, change_text(shown.call),
             f"{noise_text(shown.call)}; {resolving} of {len(rows)} resolve their margin", _relation_text(shown),
             f"{_co(shown)}; {tracks} of {len(rows)} track", (shown.shape or {}).get("verdict", "")]
    if has_null:
        null_counts = Counter(_KIND_WORDS.get(r.null_call.kind, r.null_call.kind) for r in rows
                              if r.null_call is not None)
        cells += [", ".join(f"{n} {k}" for k, n in sorted(null_counts.items())), _co(shown, null=True)]
    return cells


def _tr(cells: list[str], cls: str = "") -> str:
    style = f' class="{cls}"' if cls else ""
    return f"<tr{style}>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>"


def render_validation(found: Yardstick) -> str:
    """The validation section ('' for a run without a known onset: no ground truth to validate against)."""
    if not found.is_organism:
        return ""
    has_null = found.null_dir is not None
    head = ["signal", "experiment", "onset call", "change [95% CI] (margin)", "noise vs margin",
            "relation to the emergence", "co-movement with the verdicts", "shape (one family)"]
    head += ["null twin: onset call", "null twin: ρ with the organism's verdicts"] if has_null else []
    body = []
    emergence = found.emergence
    if emergence is not None:
        cells = ["verdict contrast (ground truth)", "behaviour", _call_text(emergence), change_text(emergence),
                 noise_text(emergence), "defines the emergence (coincides with itself by construction)", "", ""]
        if has_null:
            cells += [_call_text(found.null_emergence), ""]
        body.append(_tr(cells, "event"))
    groups: dict[str, list[SignalRow]] = {}
    for row in found.signals:
        if chi_group(row.name):
            groups.setdefault(chi_group(row.name), []).append(row)
    for row in found.signals:
        group = chi_group(row.name)
        if group is None:
            body.append(_tr(_row_cells(row, has_null)))
        elif row is groups[group][0]:  # one summary row per χ table, every component folded below
            body.append(_tr(_chi_summary(groups[group], has_null)))
    details = "".join(
        f"<details><summary>Every component's {esc_group}</summary><div class=scroll><table><thead><tr>"
        + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
        + "".join(_tr(_row_cells(r, has_null)) for r in rows) + "</tbody></table></div></details>"
        for esc_group, rows in ((_esc(g), rows) for g, rows in groups.items()))
    margins = found.margins
    calibration = ", ".join(f"seed {c.get('toy_seed')} onset {c.get('onset')}" for c in margins.calibration)
    provenance = ((f"Margins: {margins.rule}; calibration null twins: {calibration}. " if margins.margins else
                   "Margins: none calibrated (every onset is a plain departure; nothing can be shown flat). ")
                  + ("This run and its twin are held out: none of their seeds is a calibration seed."
                     if found.held_out else "Warning: a seed of this run is among the calibration seeds, so its "
                     "margins were fit on itself."))
    note = ("" if has_null else "<p class=note>No null-twin run found: run <code>codedyn run --preset null</code> "
            "into <code>runs/null</code> beside this run (<code>make demo</code> does both) to add its columns.</p>")
    return (
        '<section id="validation"><h2>Validation: does each signal find the known emergence?</h2>'
        + ("<p><b>This run is a null twin</b>: bodies and verdicts are drawn independently of correctness, so "
           "nothing about correctness can emerge and no signal should depart beyond its margin.</p>"
           if found.is_null_twin else "")
        + "<p>The organism's correctness capability is planted: it cannot exist before the data onset "
        f"(step {found.onset}). Every curve is judged by the same onset test: the first checkpoint whose change "
        "from the pre-onset baseline exceeds the curve's margin, family-wise over every curve and checkpoint "
        f"({_esc(found.family)}); the ground truth is the verdict contrast's onset. The verdict readouts of "
        "Experiments 1 and 3 read nothing before the onset (the model has never seen a verdict line), so their "
        "baseline is the first checkpoint after it. 'Flat': an equivalence test "
        "shows every change inside the margin; 'not detected': the intervals are too wide to tell. Noise: the "
        "width z·SE of a curve's one-sided bound at its quietest checkpoint after the baseline; a curve whose noise "
        "exceeds its margin can never be shown flat, and only changes well past the margin can be called. "
        "Co-movement: "
        "Spearman ρ with the verdict contrast from the onset on (95% interval); on the null twin, against the "
        "organism's verdicts, where it should cover 0.</p>"
        f"<p class=note>{_esc(provenance)}</p>"
        "<div class=scroll><table><thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head)
        + "</tr></thead><tbody>" + "".join(body) + "</tbody></table></div>" + details + note + "</section>"
    )


def _names(rows: list[SignalRow], most: int = 3) -> str:
    """The curves by name, grouped by experiment; a group longer than ``most`` is counted with its first names."""
    by_source: dict[str, list[str]] = {}
    chi: dict[str, int] = {}
    for row in rows:
        group = chi_group(row.name)
        if group is None:
            by_source.setdefault(row.source, []).append(row.name)
        else:
            chi[group] = chi.get(group, 0) + 1
    for group, n in chi.items():  # one entry per χ table: its components are counted, not named
        by_source.setdefault("susceptibility", []).append(f"{group} of {n} component{'s' * (n > 1)}")
    parts = []
    for source, names in by_source.items():
        if len(names) <= most:
            parts.extend(names)
        else:
            parts.append(f"{len(names)} curves of {SOURCE_NAMES.get(source, source)} ({', '.join(names[:2])}, ...)")
    return "; ".join(parts)


def _group(rows: list[SignalRow]) -> list[SignalRow]:
    """The rows as the answer names them: each χ table's components collapse into their first one."""
    seen: set[str] = set()
    out = []
    for row in rows:
        group = chi_group(row.name)
        if group is None or group not in seen:
            out.append(row)
            seen.add(group or row.name)
    return out


def answer_sentences(found: Yardstick) -> list[str]:
    """The report's first paragraph: when the capability emerged, which signals find it and how, which do not
    (flat or not detected), what the null twin says, and the caveat that matters most. For a run without a known
    onset: which signals depart from their first checkpoint and when."""
    out: list[str] = []
    if not found.is_organism:
        moved = [r for r in found.signals if r.call.kind == "onset"]
        if not found.signals:
            return ["No curve with bootstrap replicates was stored in this run yet."]
        first = sorted(moved, key=lambda r: r.call.bracket[1])
        text = "; ".join(f"{r.name} {_bracket(r.call)}" for r in first[:8]) + ("; ..." if len(first) > 8 else "")
        out.append(f"No known answer for this run (no planted onset): {len(moved)} of {len(found.signals)} curves "
                   f"depart from their first checkpoint ({found.family})" + (f": {text}." if first else "."))
        return out
    emergence = found.emergence
    if emergence is None:
        out.append("The behaviour was not measured, so there is no known emergence to validate against.")
    elif emergence.kind == "onset":
        out.append(f"Correctness emerged: the model's own verdicts depart from their pre-onset baseline within "
                   f"{_bracket(emergence)}, after the planted data onset at step {found.onset} (verdict contrast "
                   f"change {_number(emergence.change)} [{_number(emergence.change_low)}, "
                   f"{_number(emergence.change_high)}] nats; margin ±{_number(emergence.margin)}).")
    else:
        out.append(f"Correctness did not emerge in this run: the verdict contrast is {_call_text(emergence)} "
                   f"({emergence.verdict}).")
        moved = [r for r in found.signals if r.call.kind == "onset"]
        if moved:
            out.append("Curves that depart from their baseline all the same (a change of the data or of training): "
                       + "; ".join(f"{r.name} {_bracket(r.call)}" for r in _group(moved)) + ".")
    signals = found.signals  # the ground truth is not among them (its own family)
    finds = [r for r in signals if r.call.kind == "onset" and not r.null_departs]
    tracks = [r for r in signals if r.comovement is not None and r.comovement.tracks > 0 and r.call.kind == "onset"
              and not r.null_departs]
    also_null = [r for r in signals if r.call.kind == "onset" and r.null_departs]
    flat = [r for r in signals if r.call.kind == "flat"]
    undetected = [r for r in signals if r.call.kind == "not_detected"]
    if emergence is not None and emergence.kind == "onset":
        if finds:
            out.append("Signals that find it: " + "; ".join(
                f"{r.name} ({r.relation.replace(' the emergence', '')}" + (f", {r.comovement.text()}" if
                                                                           r.comovement else "") + ")"
                for r in _group(finds)) + ".")
        else:
            out.append("No signal departs from its baseline beyond its margin where the null twin does not.")
        if tracks:
            out.append(f"Tracking the capability after the onset (ρ interval above 0): {_names(tracks)}.")
    if flat:
        out.append(f"Shown flat (every change inside its margin): {_names(flat)}.")
    if undetected:
        out.append(f"Not detected (intervals wider than the margin, so no conclusion): {_names(undetected)}.")
    if found.null_dir is None:
        out.append("No null twin was found, so a change of correctness cannot be told from a change of the data.")
    else:
        twin = found.null_emergence
        twin_text = _call_text(twin) if twin is not None else "not measured"
        out.append(f"Null twin: its verdict contrast is {twin_text}; "
                   + (f"{len(also_null)} signals depart there too ({_names(also_null)}), so their change is "
                      "one of data or training, not of correctness." if also_null else
                      "no signal that departs on the organism departs there."))
    if not found.held_out:
        out.append("Caveat: a seed of this run is among the margins' calibration seeds, so these calls are not a "
                   "held-out validation.")
    elif not found.margins.margins:
        out.append("Caveat: no margins are calibrated, so every onset is a plain departure and nothing can be "
                   "shown flat.")
    else:
        uncalibrated = [r for r in signals if not r.call.margin]
        out.append("Caveat: the margins come from " + f"{len(found.margins.calibration)} null twins"
                   + (f"; {len(uncalibrated)} curves have none calibrated ({_names(uncalibrated)})"
                      if uncalibrated else "") + ".")
    return out


def method_reasons(found: Yardstick) -> list[str]:
    """One sentence per method that misses the emergence: why (:func:`reading_sentence`); [] when there is no
    emergence or no null twin to read them against."""
    return [reading_sentence(m) for m in method_readings(found)]


def render_method_reasons(found: Yardstick) -> str:
    """The answer's list of why each method that misses the emergence misses it ('' when none does)."""
    reasons = method_reasons(found)
    if not reasons:
        return ""
    return ("<p><b>Why each method that misses it misses it</b> (changes after the baseline in units of each curve's "
            "margin; noise = z·SE at the curve's quietest checkpoint):</p><ul>"
            + "".join(f"<li>{_esc(r)}</li>" for r in reasons) + "</ul>")


def reading_sentence(m: MethodReading) -> str:
    """Why a method misses the emergence, in one sentence: blind, or too noisy at these draws (or programs)."""
    curves = f"{m.curves} curve{'s' * (m.curves != 1)}"
    method = m.method[:1].upper() + m.method[1:]
    text = (f"{method} does not find it. Its largest change after the baseline, in margins: {m.organism:.2f} on "
            f"the organism ({m.curve}, of {curves}), {m.null:.2f} on the null twin, so {m.effect:+.2f} "
            f"beyond the twin, against a noise of {m.noise:.2f} now and at least {m.noise_floor:.2f} at {MORE}x "
            f"the {m.resampled} (only their sampling error shrinks): ")
    if m.flat:
        text += (f"blind at these settings, not too noisy: that change is shown inside its margin, and more "
                 f"{m.resampled} only narrow the interval around it")
    elif m.blind:
        text += f"blind at these settings, not too noisy: more {m.resampled} cannot show a change inside that floor"
    else:
        text += (f"possibly too noisy rather than blind: more {m.resampled} (with margins calibrated at them) could "
                 "resolve it")
    if m.method.endswith("SAE best latent"):
        text += " (Experiment 2's section measures how much of the probe's direction the SAE keeps)"
    return text + "."
