"""The validation table: the model organism's known events against every signal's call.

A study on the organism suite (a toy suite with the planted task, :mod:`codedyn.data.planted`) knows three events
independently of the signals it tests:

* **data onset**: the step the planted programs enter training (by construction, from the suite's config);
* **behavioural emergence**: the bracket in which the model's own verdicts first follow correctness by more than
  the null twins' noise (the verdict contrast above ``MIN_VERDICT_CONTRAST``; :mod:`codedyn.experiments.behaviour`,
  ``behaviour/transitions.json`` key ``emergence``);
* **induction formation**: the toy suite's own induction criterion (suite.json ``formation``).

Every correctness signal's call is read from the ``transitions.json`` the experiments stored: Experiment 2's best
latent and probe AUROC per layer, Experiment 1's BIF contrasts and the LLC, Experiment 3's χ contrast when it
stores calls, and the behavioural curves themselves. For each the table gives the verdict, its bracket, the effect
with its interval (when the verdict schema carries one), and how the bracket relates to the behavioural emergence:
``brackets it`` (the same interval), ``leads`` (ends before it starts), ``lags`` (starts after it ends),
``overlaps``, or ``no event``. The null twin's column, when a null run exists (``<runs>/null`` beside the run, or
an explicit path), shows the same signal's call there: every correctness signal should read "no change".

Calls are read in both verdict schemas: ``{"verdict", "step", ...}`` (a sharp call "phase transition at step X",
bracketed by the checkpoint before X) and ``{"kind", "verdict", "bracket", "effect", "effect_low", "effect_high",
"p_value", "p_adjusted", "evidence"}``.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

NULL_RUN = "null"  # the null twin's run folder beside the organism's (runs/null beside runs/organism)
VERDICT_SIGNAL = "verdict contrast (behaviour)"  # the behavioural curve whose threshold crossing is the emergence
_AT_STEP = re.compile(r"at step (\d+)")
COLUMNS = ("run", "kind", "name", "source", "verdict", "bracket_low", "bracket_high", "effect", "effect_low",
           "effect_high", "relation")


def _read(path: Path) -> Any:
    return json.loads(Path(path).read_text()) if Path(path).is_file() else None


def suite_record_of(run_dir: Path) -> dict | None:
    """The toy-suite record (suite.json) of a run, from its manifest and the suite cache (None when absent)."""
    from codedyn.models.toy import SUITE_FILE
    from codedyn.paths import cache_dir

    manifest = _read(Path(run_dir) / "manifest.json") or {}
    suite = str(manifest.get("suite", ""))
    return _read(cache_dir("suites") / suite / SUITE_FILE) if suite.startswith("toy-") else None


def _planted(record: dict | None) -> dict | None:
    planted = ((record or {}).get("config") or {}).get("planted")
    return planted if planted and planted.get("enabled") else None


def _steps(run_dir: Path) -> list[int]:
    manifest = _read(Path(run_dir) / "manifest.json") or {}
    return sorted(int(s) for s in manifest.get("steps", []))


def read_call(call: dict, steps: list[int]) -> dict[str, Any]:
    """Verdict text, bracket and effect of one stored call, in either verdict schema."""
    verdict = str(call.get("verdict", ""))
    bracket = call.get("bracket") or call.get("between")
    if bracket is None and call.get("step") is not None:  # the older schema: "phase transition at step X"
        bracket = _bracket_before(int(call["step"]), steps)
    if bracket is None:
        match = _AT_STEP.search(verdict)
        bracket = _bracket_before(int(match.group(1)), steps) if match else None
    low, high = (int(bracket[0]), int(bracket[1])) if bracket else (None, None)
    return {"verdict": verdict, "bracket_low": low, "bracket_high": high, "effect": call.get("effect"),
            "effect_low": call.get("effect_low"), "effect_high": call.get("effect_high")}


def _bracket_before(step: int, steps: list[int]) -> list[int] | None:
    earlier = [s for s in steps if s < step]
    return [earlier[-1], step] if earlier else None


def relation(bracket: tuple[int | None, int | None], reference: tuple[int, int] | None) -> str:
    """How a signal's bracket (a, b] relates to the behavioural emergence bracket."""
    low, high = bracket
    if low is None or high is None:
        return "no event"
    if reference is None:
        return "no behavioural emergence to compare with"
    ref_low, ref_high = reference
    if (low, high) == (ref_low, ref_high):
        return "brackets the emergence"
    if high <= ref_low:
        return "leads the emergence"
    if low >= ref_high:
        return "lags the emergence"
    return "overlaps the emergence"


def unbracketed_relation(call: dict) -> str:
    """What a call without a bracket says about the emergence, with the diagnostics' reason: a gradual or
    non-monotonic curve changes but at no single step (the largest jump the scan found, and why it is not called),
    an unchanged curve does not change."""
    kind = str(call.get("kind") or call.get("verdict") or "").replace(" ", "_").replace("-", "_")
    if kind.startswith("gradual") or kind.startswith("non_monotonic"):
        jump = next((e for e in call.get("evidence") or [] if e.get("kind") == "jump" and e.get("between")), None)
        reason = ""
        if jump is not None:
            low, high = jump["between"]
            p = jump.get("p_value")
            reason = f": its largest jump, within ({low}, {high}], is not significant" + (
                f" (p = {p:.2g})" if isinstance(p, int | float) else "")
        shape = "changes gradually" if kind.startswith("gradual") else "changes non-monotonically"
        return f"no bracket: {shape}{reason}"
    if kind.startswith("no_change"):
        p = call.get("change_p_value", call.get("p_value"))
        if "within ±" in str(call.get("test", "")):
            why = str(call["test"]).split(" (")[0]
        elif isinstance(p, int | float):
            why = f"the change test finds none, p = {p:.2g}"
        else:
            why = ""
        return "does not find the emergence: no change" + (f" ({why})" if why else "")
    return "no event"


def _signals(run_dir: Path, verdict_rows=None) -> list[tuple[str, str, dict]]:
    """(name, source, call) of every correctness signal the run stored calls for, in table order."""
    found: list[tuple[str, str, dict]] = []
    behaviour = _read(run_dir / "behaviour" / "transitions.json") or {}
    for name, label in (("verdict_contrast", VERDICT_SIGNAL),
                        ("loss_gap/all", "loss gap at mutated tokens (behaviour)")):
        if isinstance(behaviour.get(name), dict):
            found.append((label, "behaviour", behaviour[name]))
    emergence = _read(run_dir / "emergence" / "transitions.json") or {}
    layers = sorted({int(m.group(1)) for key in emergence if (m := re.match(r"L(-?\d+)/", key))})
    for layer in layers:
        for predictor, label in (("best_latent", "SAE best latent AUROC"), ("probe", "probe AUROC")):
            call = emergence.get(f"L{layer}/{predictor}/auroc")
            if isinstance(call, dict):
                found.append((f"{label}, layer {layer}", "emergence", call))
    influence = _read(run_dir / "influence" / "transitions.json") or {}
    for key in sorted(influence):
        lowered = key.lower()
        if any(word in lowered for word in ("delta", "contrast", "bug_influence")):
            found.append((f"BIF {key}", "influence", influence[key]))
    found.extend(_susceptibility_contrast(run_dir, verdict_rows))
    if isinstance(influence.get("LLC/llc"), dict):
        found.append(("LLC", "influence", influence["LLC/llc"]))
    return found


def _susceptibility_contrast(run_dir: Path, verdict_rows=None) -> list[tuple[str, str, dict]]:
    """Experiment 3's χ_incorrect − χ_correct row as the report's verdict table makes it: one call per component,
    Holm-adjusted over the whole table and summarised by the strongest kind any component shows (a raw per-component
    call would fire somewhere among ~70 components by chance alone). ``verdict_rows``: the report's
    :func:`codedyn.report.verdicts.verdict_rows`, passed in by the report (this module sits below it, since
    experiments read the organism's events from here); without it there is no χ row."""
    if verdict_rows is None or not any((run_dir / "susceptibility").glob("susceptibility*.parquet")):
        return []
    rows, _ = verdict_rows(run_dir)
    found = []
    for row in rows:
        if "χ_incorrect − χ_correct" not in row.signal or row.kind == "not run":
            continue
        name, _, shown = row.signal.removeprefix("Susceptibility ").partition("; shown: ")
        verdict = f"{row.verdict} (numbers: {shown})" if shown else row.verdict
        found.append((f"χ contrast {name}", "susceptibility",
                      {"kind": row.kind, "verdict": verdict, "bracket": row.bracket, "effect": row.effect,
                       "effect_low": row.effect_low, "effect_high": row.effect_high}))
    return found


def known_event_rows(run_dir: Path, record: dict | None, run: str) -> list[dict[str, Any]]:
    """The known events of one run as table rows (kind ``event``)."""
    rows = []
    planted = _planted(record)
    if planted is not None:
        rows.append({"name": "data onset" + (" (null twin: bodies and verdicts independent of correctness)"
                                             if planted.get("null") else ""),
                     "source": "suite config", "verdict": f"planted programs from step {planted['onset']}",
                     "bracket_low": None, "bracket_high": int(planted["onset"])})
    emergence = (_read(Path(run_dir) / "behaviour" / "transitions.json") or {}).get("emergence")
    if isinstance(emergence, dict):
        between = emergence.get("between")
        rows.append({"name": "behavioural emergence", "source": "behaviour", "verdict": emergence.get("verdict", ""),
                     "bracket_low": between[0] if between else None, "bracket_high": between[1] if between else None})
    formation = (record or {}).get("formation") or {}
    if formation:
        rows.append({"name": "induction formation", "source": "suite log",
                     "verdict": "formed" if formation.get("formed") else "not formed by the last step",
                     "bracket_low": formation.get("last_step_before"),
                     "bracket_high": formation.get("first_formed_step")})
    return [{"run": run, "kind": "event", "effect": None, "effect_low": None, "effect_high": None,
             "relation": "", **row} for row in rows]


def _emergence_bracket(run_dir: Path) -> tuple[int, int] | None:
    emergence = (_read(Path(run_dir) / "behaviour" / "transitions.json") or {}).get("emergence") or {}
    between = emergence.get("between")
    return (int(between[0]), int(between[1])) if between else None


def find_null_run(run_dir: Path) -> Path | None:
    """The null twin's run folder beside ``run_dir`` (``<runs>/null``), when it holds a finished study."""
    candidate = Path(run_dir).parent / NULL_RUN
    if candidate.resolve() != Path(run_dir).resolve() and (candidate / "manifest.json").is_file():
        return candidate
    return None


def validation_table(run_dir: Path, record: dict | None = None, null_dir: Path | None = None, verdict_rows=None):
    """The tidy validation table (columns :data:`COLUMNS`): known events and every signal's call, for the run
    (``run == "organism"``) and, when a null run exists (``null_dir``, or ``<runs>/null``), for the null twin.
    ``verdict_rows`` (the report's :func:`codedyn.report.verdicts.verdict_rows`) adds the χ contrast row."""
    import pandas as pd

    run_dir = Path(run_dir)
    runs = [("organism", run_dir, record if record is not None else suite_record_of(run_dir))]
    null_dir = Path(null_dir) if null_dir is not None else find_null_run(run_dir)
    if null_dir is not None:
        runs.append(("null", null_dir, suite_record_of(null_dir)))
    rows: list[dict[str, Any]] = []
    for run, folder, suite_record in runs:
        rows.extend(known_event_rows(folder, suite_record, run))
        steps = _steps(folder)
        reference = _emergence_bracket(folder)
        for name, source, call in _signals(folder, verdict_rows):
            read = read_call(call, steps)
            related = relation((read["bracket_low"], read["bracket_high"]), reference)
            related = unbracketed_relation(call) if related == "no event" else related
            if name == VERDICT_SIGNAL and reference is not None:  # the curve the emergence bracket is read from
                related = f"defines the emergence (its threshold crossing); its own call: {related}"
            rows.append({"run": run, "kind": "signal", "name": name, "source": source, **read,
                         "relation": related})
    _mark_null_changes(rows)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _mark_null_changes(rows: list[dict[str, Any]]) -> None:
    """An organism signal whose null twin changes too (any call but "no change") gets that said in its relation:
    what moves without any correctness to learn is a change of the data or of training, not of correctness (at
    seed 1 the LLC was sharp at the data onset on both runs)."""
    null = {row["name"]: row for row in rows if row["run"] == "null" and row["kind"] == "signal"}
    for row in rows:
        twin = null.get(row["name"]) if row["run"] == "organism" and row["kind"] == "signal" else None
        if twin is None or str(twin["verdict"]).startswith("no change") or not twin["verdict"]:
            continue
        where = _bracket_text(twin["bracket_low"], twin["bracket_high"])
        row["relation"] = (f"{row['relation']}; but the null twin changes too ({twin['verdict']}"
                           f"{'' if not where or where in twin['verdict'] else ' ' + where}): a change of the data "
                           "or of training, not of correctness")


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _bracket_text(low: Any, high: Any) -> str:
    if high is None or high != high:
        return ""
    return f"({int(low)}, {int(high)}]" if low is not None and low == low else f"{int(high)}"


def _effect_text(row) -> str:
    effect = row.get("effect")
    if effect is None or effect != effect:
        return ""
    low, high = row.get("effect_low"), row.get("effect_high")
    interval = f" [{low:.3g}, {high:.3g}]" if low is not None and high is not None and low == low else ""
    return f"{effect:.3g}{interval}"


def _with_bracket(row) -> str:
    """A call with its bracket, once: most verdicts already name their interval."""
    bracket = _bracket_text(row["bracket_low"], row["bracket_high"])
    return row["verdict"] if not bracket or bracket in row["verdict"] else f"{row['verdict']} {bracket}"


def render_validation(table) -> str:
    """The validation table as an HTML section ('' when the table holds no known event: no ground truth)."""
    organism = table[table["run"] == "organism"]
    if organism.empty or not (organism["kind"] == "event").any():
        return ""
    null = table[table["run"] == "null"]
    null_calls = {r["name"]: r for _, r in null.iterrows()}
    has_null = not null.empty
    head = ["", "source", "call on the organism", "bracket", "effect [95% interval]", "relation to emergence"]
    head += ["null twin"] if has_null else []
    body = []
    for _, row in organism.iterrows():
        cells = [row["name"], row["source"], row["verdict"], _bracket_text(row["bracket_low"], row["bracket_high"]),
                 _effect_text(row), row["relation"]]
        if has_null:
            twin = null_calls.get(row["name"])
            if twin is None and row["kind"] == "event":  # the null twin's onset row carries a longer name
                twin = next((r for n, r in null_calls.items() if n.startswith(row["name"])), None)
            cells.append("" if twin is None else _with_bracket(twin))
        style = ' class="event"' if row["kind"] == "event" else ""
        body.append(f"<tr{style}>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
    note = ("" if has_null else "<p class=note>No null-twin run found (run <code>codedyn run --preset null</code> "
                                "into <code>runs/null</code> beside this run to add its column).</p>")
    return (
        '<section id="validation"><h2>Validation: known events against every signal</h2>'
        "<p>The organism's correctness capability is planted: it cannot exist before the data onset, and the "
        "behavioural emergence bracket is where the model's own verdicts first follow correctness by more than any "
        "null twin's (the verdict contrast above its threshold, named in the emergence row's call). A signal that "
        "finds the "
        "emergence brackets it (or leads it: the representation before the behaviour); on the null twin, whose "
        "programs and verdicts carry no correctness, every correctness signal should read \"no change\".</p>"
        "<table><thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
        + "".join(body) + "</tbody></table>" + note + "</section>"
    )


def validation_html(study, verdict_rows=None) -> str:
    """The validation section of a study (a Study or a run folder); '' when the study has no known events."""
    if isinstance(study, str | Path):
        return render_validation(validation_table(Path(study), verdict_rows=verdict_rows))
    return render_validation(validation_table(Path(study.run_dir), study.suite_record, verdict_rows=verdict_rows))


def validation_section(context, rows=None, verdict_rows=None) -> str:
    """The report's validation slot (a report context with ``run_dir`` and ``suite_record``); the calls are read
    from the stored transitions.json files, and the χ contrast row from ``verdict_rows`` (run folder -> the report's
    verdict rows; the report passes its own for this run). '' for a suite without the planted task: there the
    correctness capability has no known onset to validate against."""
    if _planted(context.suite_record) is None:
        return ""
    return render_validation(validation_table(Path(context.run_dir), context.suite_record,
                                              verdict_rows=verdict_rows))


def organism_events(record: dict | None, run_dir: Path | None = None) -> list[dict]:
    """The organism's known events in the report's event format (``name``, ``step`` or ``bracket``, ``kind``,
    ``detail``): the planted data onset from the suite's config and, when the run measured it, the behavioural
    emergence bracket. For ``codedyn.report.events.known_events`` to append beside the induction event."""
    events: list[dict] = []
    planted = _planted(record)
    if planted is None:
        return events
    twin = " (null twin: bodies and verdicts independent of correctness)" if planted.get("null") else ""
    events.append({"name": "planted data onset" + twin, "step": int(planted["onset"]), "kind": "reference",
                   "detail": f"{planted.get('share')} of the training windows carry a planted program from here on"})
    bracket = _emergence_bracket(Path(run_dir)) if run_dir is not None else None
    if bracket is not None:
        events.append({"name": "verdicts judge correctness", "bracket": list(bracket), "kind": "reference",
                       "detail": "the held-out verdict contrast first exceeds the null twins' noise "
                       "(MIN_VERDICT_CONTRAST, codedyn.experiments.behaviour)"})
    return events
