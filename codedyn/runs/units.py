"""What every cached unit shares: its key from a record of its inputs, and one line saying why a unit is new.

A unit lives in ``<run>/units/<kind>-step<N>[-<part>]-<key>/`` where ``key`` is the hash of its *key record*: the
configuration fields that change its result (analysis-only fields left out), the suite, step and dataset, and a
format number. The record is stored in the unit's ``unit.json`` under ``key_inputs``, so when a unit is computed
next to stored units of the same kind, step and part, :func:`new_unit_note` can say which fields changed
(``posterior step 4: new unit, differs from the stored posterior-step4-1a2b3c in sampling.draws: 40 -> 80``)
instead of a new folder appearing without a word.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codedyn.runs.layout import COMPLETED, UNIT_FILE

KEY_INPUTS = "key_inputs"  # the unit.json field holding the key record
SHOWN_CHANGES = 6  # fields named in one note; the rest are counted


def unit_key(record: dict[str, Any]) -> str:
    """The key of a unit: the short hash of its key record."""
    from codedyn.runs.store import content_hash

    return content_hash(record)


def without(section: dict[str, Any], fields) -> dict[str, Any]:
    """A config section's dump without its analysis-only ``fields`` (they never change a unit)."""
    return {k: v for k, v in section.items() if k not in set(fields)}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"sampling": {"draws": 40}}`` -> ``{"sampling.draws": 40}`` (lists stay whole values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(field, old value, new value)`` for every field of two key records that differs (absent: None), sorted."""
    a, b = flatten(old), flatten(new)
    return [(name, a.get(name), b.get(name)) for name in sorted(set(a) | set(b)) if a.get(name) != b.get(name)]


def stored_neighbours(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The completed units beside ``folder`` of the same kind, step and part (the same name up to the key), with
    their key records; units that record none (an older layout) are left out."""
    folder = Path(folder)
    stem = folder.name.rpartition("-")[0]
    found = []
    for other in sorted(folder.parent.glob(f"{stem}-*")):
        if other == folder or other.name.rpartition("-")[0] != stem or not (other / COMPLETED).is_file():
            continue
        try:
            record = json.loads((other / UNIT_FILE).read_text()).get(KEY_INPUTS)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            found.append((other, record))
    return found


def new_unit_note(folder: Path, record: dict[str, Any]) -> str | None:
    """One line for a unit about to be computed beside stored ones of its kind, step and part: which fields of
    its key record differ from the closest of them (fewest differences). None when there is no such unit."""
    neighbours = stored_neighbours(folder)
    if not neighbours:
        return None
    other, changes = min(((o, changed_fields(r, record)) for o, r in neighbours), key=lambda item: len(item[1]))
    if not changes:  # the same record is the same key, hence the same folder: only a hand-edited unit.json
        return None
    shown = ", ".join(f"{name}: {_short(a)} -> {_short(b)}" for name, a, b in changes[:SHOWN_CHANGES])
    more = f" and {len(changes) - SHOWN_CHANGES} more" if len(changes) > SHOWN_CHANGES else ""
    return f"{Path(folder).name.rpartition('-')[0]}: new unit, differs from the stored {other.name} in {shown}{more}"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
