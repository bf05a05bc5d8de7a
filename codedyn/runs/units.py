"""What every cached unit shares: its key from a record of its inputs, and one line saying why a unit is new.

A unit lives in ``<run>/units/<kind>-step<N>[-<part>]-<key>/`` where ``key`` is the hash of its *key record*: the
configuration fields that change its result (analysis-only fields left out), the suite, step and dataset, and a
format number. The record is stored in the unit's ``unit.json`` under ``key_inputs``, so when a unit is computed
next to stored units of the same kind, step and part, :func:`new_unit_note` can say which fields changed
(``posterior step 4: new unit, differs from the stored posterior-step4-1a2b3c in sampling.draws: 40 -> 80``)
instead of a new folder appearing without a word.

It also holds what a run plans with: a :class:`Unit` (one piece of per-checkpoint work: kind, step, part, the
folders it stores, known before it runs, and the units it waits for) and a :class:`Registry` of
:class:`UnitKind` records, each holding the plain functions that plan, locate and compute units of one kind. The
registry knows no experiment: :mod:`codedyn.pipeline` registers the study's kinds, and the executor ships a unit to
a Ray task as data, its kind found by name in the worker's registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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


def stored_neighbours(folder: Path, ignore: Collection[Path] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """The completed units beside ``folder`` of the same kind, step and part (the same name up to the key), with
    their key records; units that record none (an older layout) and the folders in ``ignore`` are left out."""
    folder = Path(folder)
    stem = folder.name.rpartition("-")[0]
    skip = {Path(f) for f in ignore}
    found = []
    for other in sorted(folder.parent.glob(f"{stem}-*")):
        if (other == folder or other in skip or other.name.rpartition("-")[0] != stem
                or not (other / COMPLETED).is_file()):
            continue
        try:
            record = json.loads((other / UNIT_FILE).read_text()).get(KEY_INPUTS)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            found.append((other, record))
    return found


def new_unit_note(folder: Path, record: dict[str, Any], ignore: Collection[Path] = ()) -> str | None:
    """One line for a unit about to be computed beside stored ones of its kind, step and part: which fields of
    its key record differ from the closest of them (fewest differences). None when there is no such unit.

    ``ignore``: folders that are no earlier version of this unit, e.g. the other units of a sweep that share its
    kind and step (calibration's settings at one checkpoint), so a resumed sweep says nothing about its own
    units."""
    neighbours = stored_neighbours(folder, ignore)
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


# ------------------------------------------------------------------------------------------ units and their kinds


@dataclass(frozen=True)
class Unit:
    """One cached piece of per-checkpoint work: a registered kind at one step (and one part of it, for a kind with
    parts, e.g. one component), with the folders it stores when they are known before it runs (the first is the
    main one) and the ids of the units that must be stored before it starts."""

    kind: str
    step: int
    after: tuple[str, ...] = ()
    part: str | None = None
    folders: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        """The kind and its part: ``posterior``, ``rllc:L0.H1``."""
        return f"{self.kind}:{self.part}" if self.part is not None else self.kind

    @property
    def id(self) -> str:
        return unit_id(self.name, self.step)

    @property
    def folder(self) -> Path | None:
        """The main folder (None when the kind cannot say before computing)."""
        return self.folders[0] if self.folders else None


def unit_id(name: str, step: int) -> str:
    return f"{name}-step{step}"


Outputs = Mapping[Path, "dict[str, Any] | None"]


@dataclass(frozen=True)
class UnitKind:
    """One kind of per-checkpoint unit: plain functions of the study (no lookup by name). For a kind with ``parts``,
    ``run`` and ``outputs`` take the part as their last argument."""

    name: str
    run: Callable[..., Path]  # (study, step, progress[, part]) -> the main folder, computed and stored if missing
    outputs: Callable[..., Outputs] | None = None  # (study, step[, part]) -> {folder: its key record, or None when
    # the kind keeps none}, every folder the unit stores, the main one first. A unit whose folders are all
    # completed is not computed again; without ``outputs`` its ``run`` is called and finds its own cache.
    after: tuple[str, ...] = ()  # kinds of the same checkpoint that must be stored first (registered before)
    needs: Callable[[Any, int], Iterable[str]] | None = None  # (study, step) -> ids of further units stored first
    # (e.g. the same kind at the previous checkpoint, for work that starts from its predecessor's result)
    enabled: Callable[[Any], bool] | None = None  # (study) -> part of this study? None: always
    parts: Callable[[Any, int], Sequence[str]] | None = None  # (study, step) -> one unit per part


class Registry:
    """Unit kinds by name, in registration order: a kind's ``after`` names kinds registered before it."""

    def __init__(self, kinds: Iterable[UnitKind] = ()) -> None:
        self._kinds: dict[str, UnitKind] = {}
        for kind in kinds:
            self.register(kind)

    def register(self, kind: UnitKind) -> UnitKind:
        if kind.name in self._kinds or ":" in kind.name:
            raise ValueError(f"unit kind {kind.name!r} is registered already or has a ':' in its name")
        unknown = [a for a in kind.after if a not in self._kinds]
        if unknown:
            raise ValueError(f"unit kind {kind.name} depends on {unknown}, which are not registered before it")
        self._kinds[kind.name] = kind
        return kind

    def __getitem__(self, name: str) -> UnitKind:
        """The kind of ``name`` (a part is ignored: ``rllc:L0.H1`` is an ``rllc``)."""
        found = self._kinds.get(name.partition(":")[0])
        if found is None:
            raise KeyError(f"no unit kind {name!r}; registered: {list(self._kinds)}")
        return found

    def __iter__(self) -> Iterator[UnitKind]:
        return iter(self._kinds.values())

    def __len__(self) -> int:
        return len(self._kinds)

    def only(self, *names: str) -> Registry:
        """A registry of some of these kinds (in this order)."""
        return Registry(self[name] for name in names)

    def plan(self, study) -> list[Unit]:
        """Every unit of the study, checkpoint by checkpoint, each after the units it depends on, with the folders
        it will store. It reads the study's configuration and inputs only, never what a run stored."""
        kinds = [kind for kind in self if kind.enabled is None or kind.enabled(study)]
        units = []
        for step in study.steps:
            for kind in kinds:
                extra = tuple(kind.needs(study, step)) if kind.needs else ()
                after = tuple(unit_id(a, step) for a in kind.after) + extra
                for part in (kind.parts(study, step) if kind.parts else [None]):
                    units.append(Unit(kind.name, step, after, part, tuple(self.outputs(study, kind, step, part))))
        return units

    def outputs(self, study, kind: UnitKind | str, step: int, part: str | None = None) -> dict[Path, Any]:
        """``{folder: key record or None}`` of one unit (empty when its kind cannot say before computing)."""
        kind = self[kind] if isinstance(kind, str) else kind
        if kind.outputs is None:
            return {}
        return {Path(f): r for f, r in kind.outputs(study, step, *_part(part)).items()}

    def run(self, study, unit: Unit, progress) -> Path:
        """Compute and store ``unit``; its main folder."""
        return Path(self[unit.kind].run(study, unit.step, progress, *_part(unit.part)))

    def notes(self, study, unit: Unit) -> list[str]:
        """The :func:`new_unit_note` of every missing folder of ``unit`` that has a key record."""
        from codedyn.runs.store import is_completed

        found = []
        for folder, record in self.outputs(study, unit.kind, unit.step, unit.part).items():
            if record is not None and not is_completed(folder):
                note = new_unit_note(folder, record)
                if note:
                    found.append(note)
        return found


def is_stored(unit: Unit) -> bool:
    """Every folder of ``unit`` is completed (False when its folders are not known before computing)."""
    from codedyn.runs.store import is_completed

    return bool(unit.folders) and all(is_completed(f) for f in unit.folders)


def _part(part: str | None) -> tuple[str, ...]:
    return (part,) if part is not None else ()
