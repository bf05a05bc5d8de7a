"""Known developmental events of a study and the model organism's ground-truth readers: the reference marks of
every training-curve figure, of the validation table and of the report.

An event is a plain dict, drawn by :func:`codedyn.figures.plots.draw_events`:

* ``name``: what happened, in a few words ("induction heads form");
* ``step`` (one training step) **or** ``bracket`` (``[a, b]``: it happened after checkpoint a, by checkpoint b);
* ``kind``: where the knowledge comes from ("reference": measured independently of the signals);
* optionally ``detail``: one sentence on the criterion, for the report.

Events come from what the study itself stored, never from a guess:

* **planted data onset** (the model organism, :mod:`codedyn.data.planted`): the step the planted programs enter
  training, from the suite's config;
* **behavioural emergence**: the onset of the verdict contrast (:mod:`codedyn.analysis.onset`), which the
  behaviour analysis stores as ``behaviour/transitions.json`` key ``emergence`` and which runs before every
  analysis that draws it;
* **induction formation**: the first logged step whose induction score and in-context loss drop pass the toy
  suite's criterion (:func:`codedyn.models.toy.induction_formation`, recomputed from the stored log when the record
  lacks it), bracketed by the logged step before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codedyn.runs.layout import MANIFEST, SUITE_FILE, TRANSITIONS_FILE
from codedyn.runs.store import read_json

NULL_RUN = "null"  # the null twin's run folder beside the organism's (runs/null beside runs/organism)
EMERGENCE_KEY = "emergence"  # behaviour/transitions.json: the behavioural emergence


def suite_record_of(run_dir: Path) -> dict | None:
    """The toy-suite record (suite.json) of a run, from its manifest and the suite cache (None when absent)."""
    from codedyn.paths import cache_dir

    manifest = read_json(Path(run_dir) / MANIFEST) or {}
    suite = str(manifest.get("suite", ""))
    return read_json(cache_dir("suites") / suite / SUITE_FILE) if suite.startswith("toy-") else None


def planted_of(record: Mapping[str, Any] | None) -> dict | None:
    """The planted task's config of a suite record, when the suite has one enabled."""
    planted = ((record or {}).get("config") or {}).get("planted")
    return planted if planted and planted.get("enabled") else None


def data_onset(record: Mapping[str, Any] | None) -> int | None:
    """The planted data onset step of a suite record (None without the planted task)."""
    planted = planted_of(record)
    return int(planted["onset"]) if planted is not None else None


def run_seeds(record: Mapping[str, Any] | None) -> dict[str, int | None]:
    """The seeds that make a suite: the toy suite's and the planted task's."""
    config = (record or {}).get("config") or {}
    return {"toy_seed": config.get("seed"), "planted_seed": (config.get("planted") or {}).get("seed")}


def run_steps(run_dir: Path) -> list[int]:
    """The checkpoints of a run, from its manifest."""
    return sorted(int(s) for s in (read_json(Path(run_dir) / MANIFEST) or {}).get("steps", []))


def find_null_run(run_dir: Path) -> Path | None:
    """The null twin's run folder beside ``run_dir`` (``<runs>/null``), when it holds a study."""
    candidate = Path(run_dir).parent / NULL_RUN
    if candidate.resolve() != Path(run_dir).resolve() and (candidate / MANIFEST).is_file():
        return candidate
    return None


def emergence_of(run_dir: Path) -> dict | None:
    """The stored behavioural emergence call of a run (the verdict contrast's onset), or None."""
    found = (read_json(Path(run_dir) / "behaviour" / TRANSITIONS_FILE) or {}).get(EMERGENCE_KEY)
    return found if isinstance(found, dict) else None


def emergence_bracket(run_dir: Path) -> tuple[int, int] | None:
    """The bracket (a, b] in which the verdicts emerged, or None when they did not (or were not measured)."""
    found = emergence_of(run_dir) or {}
    between = found.get("bracket")
    return (int(between[0]), int(between[1])) if between and found.get("emerged") else None


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


def organism_events(record: Mapping[str, Any] | None, run_dir: Path | None = None) -> list[dict]:
    """The organism's known events: the planted data onset from the suite's config and, when the run measured it,
    the behavioural emergence bracket."""
    planted = planted_of(record)
    if planted is None:
        return []
    twin = " (null twin: bodies and verdicts independent of correctness)" if planted.get("null") else ""
    events = [{"name": "planted data onset" + twin, "step": int(planted["onset"]), "kind": "reference",
               "detail": f"{planted.get('share')} of the training windows carry a planted program from here on"}]
    bracket = emergence_bracket(Path(run_dir)) if run_dir is not None else None
    if bracket is not None:
        events.append({"name": "verdicts judge correctness", "bracket": list(bracket), "kind": "reference",
                       "detail": "the onset of the held-out verdict contrast: its first checkpoint that departs from "
                       "the pre-onset baseline by more than its calibrated margin (codedyn.analysis.onset)"})
    return events


def known_events(study: Any) -> list[dict]:
    """Every known event of ``study`` (a Study, a report context with ``suite_record``, or a suite record), in
    step order; an empty list when none is known."""
    record = _suite_record(study)
    events = [e for e in (induction_event(record),) if e is not None]
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
