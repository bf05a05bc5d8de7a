"""Known developmental events of a study, the reference marks of every training-curve figure and of the report.

An event is a plain dict, drawn by :func:`codedyn.report.plots.draw_events`:

* ``name``: what happened, in a few words ("induction heads form");
* ``step`` (one training step) **or** ``bracket`` (``[a, b]``: it happened after checkpoint a, by checkpoint b);
* ``kind``: where the knowledge comes from ("reference": measured independently of the signals, e.g. the toy
  suite's own induction score; further kinds such as a planted task's onset are added here);
* optionally ``detail``: one sentence on the criterion, for the report.

Events come from what the study itself stored, never from a guess: the toy suite's induction formation is the first
logged step whose induction score and in-context loss drop pass the suite's criterion
(:func:`codedyn.models.toy.induction_formation`, recomputed from the stored log when the record lacks it), bracketed
by the logged step before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _suite_record(study: Any) -> Mapping[str, Any] | None:
    """The toy-suite record (suite.json) of a Study, a report context, or the record itself."""
    if study is None:
        return None
    if isinstance(study, Mapping):
        return study
    return getattr(study, "suite_record", None)


def induction_event(record: Mapping[str, Any] | None) -> dict | None:
    """Induction-head formation of a toy suite as a bracketed event, or None when the suite records none (a
    Pythia suite, or a toy suite trained too briefly for induction heads to form)."""
    if not record:
        return None
    formation = record.get("formation")
    if not formation and record.get("log"):
        from codedyn.models.toy import induction_formation

        formation = induction_formation(list(record["log"]))
    if not formation or not formation.get("formed"):
        return None
    bracket = [int(formation["last_step_before"]), int(formation["first_formed_step"])]
    return {"name": "induction heads form", "bracket": bracket, "kind": "reference",
            "detail": f"the first logged step where the toy suite's induction criterion holds, "
                      f"{formation.get('criterion', '')}"}


def known_events(study: Any) -> list[dict]:
    """Every known event of ``study`` (a Study, a report context with ``suite_record``, or a suite record), in
    step order; an empty list when none is known."""
    events: list[dict] = []
    record = _suite_record(study)
    induction = induction_event(record)
    if induction is not None:
        events.append(induction)
    from codedyn.report.validation import organism_events  # the planted onset and behavioural emergence, if any

    events += organism_events(record, getattr(study, "run_dir", None))
    return sorted(events, key=lambda e: e["bracket"][0] if "bracket" in e else e["step"])


def sharp_call_events(calls: Mapping[str, Mapping[str, Any]], names: Mapping[str, str]) -> list[dict]:
    """The sharp calls among ``calls`` (curve -> classify_trajectory output) as bracket events to draw, one per
    distinct bracket, labelled with the short names (``names``: curve -> name) of every curve called sharp there.
    Only curves named in ``names`` count; a call without ``kind == "sharp"`` and a bracket is no event."""
    by_bracket: dict[tuple[int, int], list[str]] = {}
    for curve, name in names.items():
        found = calls.get(curve) or {}
        if found.get("kind") == "sharp" and found.get("bracket"):
            by_bracket.setdefault(tuple(int(b) for b in found["bracket"]), []).append(name)
    return [{"name": ", ".join(labels) + " sharp", "bracket": list(bracket), "kind": "sharp"}
            for bracket, labels in sorted(by_bracket.items())]
